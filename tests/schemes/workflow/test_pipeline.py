"""The bundle and the CLI around it: embed (small), verify a copy and a stranger, samples."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contracts.identity import Identity, write_identity
from registry.cli import main
from schemes.models.zoo import ModelCard, create_model, save_model
from schemes.workflow.bundle import BundleError, load_bundle
from schemes.workflow.pipeline import embed_to_bundle

# The module's bundle fixture trains a small MTLSign embedding (about 45 s on an idle 2-core
# machine); its first test gets room for a loaded one.
pytestmark = pytest.mark.timeout(900)

SMALL = {"n": 128, "clean_epochs": 8, "embed_epochs": 40, "da_attacks": 1, "da_epochs": 3}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle")
    # A fixed owner and nonce: the same key, so the same small embedding, on every run.
    owner = Identity(Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
    report = embed_to_bundle(owner, "lenet5", "digits", out, overrides=SMALL, nonce=b"workflow-test-01")
    assert report["wm_score"] > 0.9
    return out


@pytest.mark.slow
def test_the_bundle_holds_no_private_key_and_reloads(bundle: Path) -> None:
    names = sorted(p.name for p in bundle.iterdir())
    assert names == ["info.json", "key.json", "model.json", "model.safetensors", "report.json", "verifier.safetensors"]
    assert set(json.loads((bundle / "key.json").read_text())) == {"nonce", "owner", "key_proof"}
    assert b"PRIVATE KEY" not in b"".join(p.read_bytes() for p in bundle.iterdir())
    loaded = load_bundle(bundle)
    assert loaded.info["n"] == 128 and loaded.info["scheme"] == "mtlsign" and len(loaded.key.key) == 32


@pytest.mark.slow
def test_verify_cli_finds_the_watermark_in_a_copy_and_not_in_a_stranger(bundle: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    shutil.copytree(
        bundle, tmp_path / "copy", ignore=shutil.ignore_patterns("key.json", "info.json", "verifier*", "report*")
    )
    result = runner.invoke(main, ["verify", "--bundle", str(bundle), "--suspect", str(tmp_path / "copy"), "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["passed"] is True and answer["score"] > 0.9 and answer["threshold"] == 0.7
    torch.manual_seed(1)
    stranger = create_model("lenet5", num_classes=10, input_shape=(1, 28, 28))
    card = ModelCard("lenet5", 10, (1, 28, 28), (0.3,), (0.3,))
    save_model(stranger, card, tmp_path / "stranger")
    result = runner.invoke(main, ["verify", "--bundle", str(bundle), "--suspect", str(tmp_path / "stranger")])
    assert result.exit_code == 1 and "watermark not found" in result.output


@pytest.mark.slow
def test_samples_cli_writes_pngs_with_their_integers(bundle: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["mtlsign", "samples", "--bundle", str(bundle), "--n", "4", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    listing = json.loads((tmp_path / "samples.json").read_text())
    assert [e["file"] for e in listing] == [f"sample_{i:04d}.png" for i in range(4)]
    assert all(e["label"] in (0, 1) and e["integer"] >= 0 for e in listing)
    png = (tmp_path / "sample_0000.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and png[16:24] == (112).to_bytes(4, "big") * 2  # 28 px × 4


@pytest.mark.slow
def test_a_tampered_key_record_is_refused(bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    record = json.loads((copy / "key.json").read_text())
    record["owner"] = Identity.generate().public_hex
    (copy / "key.json").write_text(json.dumps(record))
    result = CliRunner().invoke(main, ["verify", "--bundle", str(copy), "--suspect", str(copy)])
    assert result.exit_code == 1 and "key_proof is not the owner's signature" in result.output
    (copy / "key.json").write_text("[]")
    with pytest.raises(BundleError, match="exactly the strings nonce, owner and key_proof"):
        load_bundle(copy)


def test_embed_cli_needs_an_identity(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["embed", "--identity", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "does not exist" in result.output
    write_identity(Identity.generate(), tmp_path / "k")
    result = CliRunner().invoke(
        main, ["embed", "--identity", str(tmp_path / "k"), "--out", str(tmp_path / "o"), "--arch", "vgg99"]
    )
    assert result.exit_code == 1 and "unknown model 'vgg99'" in result.output
