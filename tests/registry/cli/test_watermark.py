"""`wmnode schemes`, and `wmnode embed` / `verify` driving any scheme by name with `--option`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contracts.identity import Identity, write_identity
from registry.cli import main
from schemes import list_schemes

FIELDS = {"clean_accuracy", "accuracy", "wm_score", "threshold", "seconds"}


@pytest.fixture
def identity(tmp_path: Path) -> Path:
    path = tmp_path / "owner.key"
    write_identity(Identity(Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))), path)
    return path


def test_schemes_lists_every_registered_scheme_one_line_each() -> None:
    result = CliRunner().invoke(main, ["schemes"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert [line.split()[0] for line in lines] == [s.name for s in list_schemes()]
    assert all(("black-box" in line) != ("white-box" in line) for line in lines)
    listed = json.loads(CliRunner().invoke(main, ["schemes", "--json"]).output)
    assert {"mtlsign", "new-label"} <= {entry["name"] for entry in listed}
    assert all("seed" in entry["options"] for entry in listed)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--scheme", "nope"], "unknown scheme 'nope'; known schemes:"),
        (["--scheme", "new-label", "-o", "epoch=2"], "has no option 'epoch'"),
        (["--scheme", "new-label", "-o", "epochs=two"], "option 'epochs' takes a int"),
        (["--scheme", "new-label", "-o", "epochs"], "is not NAME=VALUE"),
        (["--scheme", "new-label", "-o", "beta=5"], "0 < beta"),
    ],
)
def test_embed_refuses_bad_schemes_and_options_before_training(
    args: list[str], fragment: str, identity: Path, tmp_path: Path
) -> None:
    result = CliRunner().invoke(main, ["embed", "--identity", str(identity), "--out", str(tmp_path / "b"), *args])
    assert result.exit_code != 0
    assert fragment in result.output
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_embed_and_verify_a_black_box_scheme_through_the_cli(identity: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "bundle"
    args = ["embed", "--scheme", "new-label", "--identity", str(identity), "--out", str(out), "--json"]
    result = runner.invoke(main, [*args, "-o", "epochs=8", "--n", "50"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert FIELDS <= set(report) and report["scheme"] == "new-label"
    assert json.loads((out / "info.json").read_text())["n"] == 50
    assert json.loads((out / "model.json").read_text())["num_classes"] == 11  # the extra class Δ
    result = runner.invoke(main, ["verify", "--bundle", str(out), "--suspect", str(out), "--json"])
    assert result.exit_code == 0, result.output
    verdict = json.loads(result.stdout)
    assert verdict["passed"] is True and {"score", "threshold"} <= set(verdict)


def test_embed_warns_when_the_watermark_did_not_take(identity: Path, tmp_path: Path) -> None:
    # One epoch of function-coupled's 30: the bundle is written (nothing lost), and the owner is told
    # before publishing that a claim on it would be lost.
    out = tmp_path / "weak"
    args = ["embed", "--scheme", "function-coupled", "--identity", str(identity), "--out", str(out)]
    result = CliRunner().invoke(main, [*args, "-o", "epochs=1", "-o", "n_train=20", "-o", "n_verify=20"])
    assert result.exit_code == 0, result.output
    assert (out / "info.json").is_file()
    score = float(result.stdout.split("watermark ")[1].split()[0])
    assert score < 0.9, score
    assert "warning: the watermark did not take: score" in result.stderr and "before publishing" in result.stderr
