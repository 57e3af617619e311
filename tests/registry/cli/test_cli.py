"""The `wmnode` command line: exit codes, messages, files it writes."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from contracts.identity import read_identity
from node_config import example_config
from registry.cli import main
from registry.community.config import EXAMPLE_SECRET, load_config
from tests.helpers import free_ports


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.output


def test_keygen_writes_a_0600_key_and_prints_the_public_key(tmp_path: Path) -> None:
    code, out = run("keygen", "--out", str(tmp_path / "k"))
    assert code == 0
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600
    assert f"public key: {read_identity(tmp_path / 'k').public_hex}" in out
    code, out = run("keygen", "--out", str(tmp_path / "k"))
    assert code == 1 and "already exists; refusing to overwrite" in out


def _config(tmp_path: Path, host: str, secret: str | None) -> Path:
    raft, api = free_ports(2)
    secret_line = f'secret = "{secret}"\n' if secret else ""
    path = tmp_path / "n.toml"
    path.write_text(
        f'community = "c"\nname = "a"\nraft = "{host}:{raft}"\napi = "{host}:{api}"\n{secret_line}'
        f'[[members]]\nname = "a"\nraft = "{host}:{raft}"\napi = "{host}:{api}"\n'
    )
    return path


@pytest.mark.parametrize(
    ("secret", "flags", "fragment"),
    [
        (None, (), "no community secret"),
        (None, ("--dev",), "--dev without a secret is for loopback only"),
        (EXAMPLE_SECRET, (), "example community secret cannot be used off loopback"),
    ],
)
def test_start_refuses_an_unprotected_non_loopback_node(
    tmp_path: Path, secret: str | None, flags: tuple[str, ...], fragment: str
) -> None:
    code, out = run(
        "start", "--config", str(_config(tmp_path, "192.0.2.10", secret)), "--data-dir", str(tmp_path / "d"), *flags
    )
    assert code == 1
    assert fragment in out
    assert not (tmp_path / "d").exists()


def test_start_refuses_a_loopback_node_without_a_secret_unless_dev(tmp_path: Path) -> None:
    code, out = run("start", "--config", str(_config(tmp_path, "127.0.0.1", None)), "--data-dir", str(tmp_path / "d"))
    assert code == 1 and "or pass --dev" in out


def test_status_of_an_unreachable_node_fails_clearly() -> None:
    (port,) = free_ports(1)
    code, out = run("status", "--node", f"http://127.0.0.1:{port}")
    assert code == 1 and f"cannot reach node http://127.0.0.1:{port}" in out


def test_publish_checks_the_record_before_anything_else(tmp_path: Path) -> None:
    run("keygen", "--out", str(tmp_path / "k"))
    (tmp_path / "r.json").write_text(json.dumps({"scheme": "mtlsign"}))
    code, out = run("publish", "--identity", str(tmp_path / "k"), "--record", str(tmp_path / "r.json"))
    assert code == 1 and "must have exactly the fields" in out


def test_publish_takes_its_community_from_the_environment_and_warns_without_one(tmp_path: Path) -> None:
    run("keygen", "--out", str(tmp_path / "k"))
    (tmp_path / "r.json").write_text(json.dumps({"scheme": "mtlsign"}))
    args = ("publish", "--identity", str(tmp_path / "k"), "--record", str(tmp_path / "r.json"))
    code, out = run(*args)
    assert code == 1 and "warning: no --config: checkpoints were not checked against a community" in out
    code, out = run(*args, env={"WMNODE_PUBLISH_CONFIG": str(example_config(1))})
    assert code == 1 and "must have exactly the fields" in out and "warning" not in out


def test_monitor_needs_a_community_config() -> None:
    code, out = run("monitor", "--once")
    assert code == 2 and "Missing option '--config'" in out


def test_an_encrypted_identity_takes_the_passphrase_from_the_environment(tmp_path: Path) -> None:
    CliRunner().invoke(main, ["keygen", "--out", str(tmp_path / "k"), "--passphrase"], input="pw-123456\npw-123456\n")
    assert b"ENCRYPTED" in (tmp_path / "k").read_bytes()
    (tmp_path / "r.json").write_text(json.dumps({"scheme": "x"}))
    code, out = run(
        "publish",
        "--identity",
        str(tmp_path / "k"),
        "--record",
        str(tmp_path / "r.json"),
        env={"WMNODE_PASSPHRASE": "wrong"},
    )
    assert code == 1 and "wrong passphrase" in out


@pytest.mark.cluster
def test_the_example_config_starts_as_it_is_and_warns_about_its_secret(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "registry.cli",
            "start",
            "--config",
            str(example_config(1)),
            "--data-dir",
            str(tmp_path / "d"),
            "--no-judges",  # it claims nothing: no judge processes to import torch meanwhile
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # The example builds reference models at start: into this test's folder, not ~/.cache.
        env={**os.environ, "PYTHONUNBUFFERED": "1", "WMNODE_REFERENCE_CACHE": str(tmp_path / "references")},
    )
    try:
        deadline, seen = time.monotonic() + 30, ""
        assert proc.stdout is not None
        while "serving" not in seen:
            assert time.monotonic() < deadline and proc.poll() is None, seen
            seen += proc.stdout.readline()
        assert "EXAMPLE community secret" in seen
        assert load_config(example_config(1)).me.key[:16] in seen  # the example identity matches its entry
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)
    assert proc.returncode == 0


def test_node_key_creates_a_private_key_file_and_prints_its_public_half(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text(
        example_config(1).read_text().replace('identity_seed = "wmnode-example-node1-not-for-real-use"', "")
    )
    result = CliRunner().invoke(main, ["node-key", "--config", str(config), "--data-dir", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    key_file = tmp_path / "d" / "node.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert result.output.strip() == read_identity(key_file).public_hex
    again = CliRunner().invoke(main, ["node-key", "--config", str(config), "--data-dir", str(tmp_path / "d")])
    assert again.output == result.output  # created once, read afterwards
