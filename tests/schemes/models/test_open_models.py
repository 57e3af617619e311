"""Watermarking the owner's own trained model (`wmnode embed --model`), and nodes judging open
architectures under the community's limits. A tiny timm network keeps these seconds long; the
`slow` suite does the same with ResNet-18 on image folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contracts.datasets import COMMUNITY_SPLIT_SEED, COMMUNITY_TEST_FRACTION
from contracts.identity import Identity, write_identity
from registry.cli import main
from registry.judge.process import judge
from schemes.data.datasets import load_dataset
from schemes.models.zoo import ModelCard, load_model, model_to_bytes, save_model
from schemes.training.loops import accuracy, train_classifier
from tests.helpers import digit_folder

SHAPE = (1, 16, 16)


@pytest.fixture(scope="module")
def given(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """The owner's model: timm's test_resnet trained on digits, saved in the Hub layout."""
    data = load_dataset("digits", input_shape=SHAPE, seed=COMMUNITY_SPLIT_SEED, test_fraction=COMMUNITY_TEST_FRACTION)
    card = ModelCard("timm:test_resnet", 10, SHAPE, data.mean, data.std, model_args={"in_chans": 1}, classifier="fc")
    torch.manual_seed(0)
    model = card.build()
    train_classifier(model, data.x_train, data.y_train, epochs=3, lr=1e-3, batch_size=64,
                     generator=torch.Generator().manual_seed(0))  # fmt: skip
    out = tmp_path_factory.mktemp("given")
    save_model(model, card, out)
    return out, accuracy(model, data.x_test, data.y_test)


@pytest.fixture
def identity(tmp_path: Path) -> Path:
    path = tmp_path / "owner.key"
    write_identity(Identity(Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))), path)
    return path


def test_new_label_watermarks_the_given_model_by_fine_tuning(given: tuple[Path, float], identity: Path,
                                                             tmp_path: Path) -> None:  # fmt: skip
    model_dir, given_accuracy = given
    out = tmp_path / "bundle"
    args = ["embed", "--scheme", "new-label", "--model", str(model_dir), "--identity", str(identity),
            "--out", str(out), "--json", "-o", "epochs=4"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    # The fidelity baseline is the given model itself, on the same test split.
    assert report["clean_accuracy"] == pytest.approx(given_accuracy) and report["baseline"] == "the given model"
    assert report["accuracy"] >= given_accuracy - 0.05, report
    # Said before any training: who could verify a claim on the result.
    assert "verifiable by communities that hold 'digits'" in result.stderr and report["verifiable"]
    config = json.loads((out / "config.json").read_text())  # the result is in the Hub layout too
    assert config["architecture"] == "timm:test_resnet" and config["num_classes"] == 11
    # Normalisation is the card's, never recomputed; the trained classifier was extended, not reset.
    given_config = json.loads((model_dir / "config.json").read_text())
    assert config["pretrained_cfg"]["mean"] == given_config["pretrained_cfg"]["mean"]
    result = CliRunner().invoke(main, ["verify", "--bundle", str(out), "--suspect", str(out)])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["verify", "--bundle", str(out), "--suspect", str(model_dir)])
    assert result.exit_code == 1, result.output  # the given model does not carry the watermark


def test_the_classifier_keeps_its_trained_rows(given: tuple[Path, float], identity: Path, tmp_path: Path) -> None:
    from schemes.workflow.pipeline import _start_from_given

    model, card = load_model(given[0])
    wider = ModelCard(card.arch, 11, card.input_shape, card.mean, card.std, model_args=card.model_args)
    started = _start_from_given(model, card, wider, 10).eval()
    x = torch.randn(4, *SHAPE)
    torch.testing.assert_close(started(x)[:, :10], model(x))


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--arch", "lenet5"], "give one of them"),
        (["--scheme", "passport"], "passport layers cannot take their place"),  # test_resnet's deep stem
        (["--dataset", "npz"], "path"),
    ],
)
def test_embed_refuses_before_training(given: tuple[Path, float], identity: Path, tmp_path: Path,
                                       args: list[str], fragment: str) -> None:  # fmt: skip
    base = ["embed", "--model", str(given[0]), "--identity", str(identity), "--out", str(tmp_path / "b")]
    result = CliRunner().invoke(main, [*base, *args])
    assert result.exit_code != 0 and fragment in result.output + str(result.exception), result.output


def test_a_model_of_other_classes_is_refused(given: tuple[Path, float], identity: Path, tmp_path: Path) -> None:
    x = (torch.rand(40, 16, 16) * 255).to(torch.uint8).numpy()
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.arange(40) % 3, x_test=x, y_test=np.arange(40) % 3)
    base = ["embed", "--model", str(given[0]), "--identity", str(identity), "--out", str(tmp_path / "b")]
    result = CliRunner().invoke(main, [*base, "--dataset", "npz", "--data-path", str(tmp_path / "d.npz")])
    assert result.exit_code != 0 and "answers 10 classes but the data set has 3" in result.output, result.output


def _job(tmp_path: Path, model_bytes: bytes, build: dict[str, object]) -> dict[str, object]:
    (tmp_path / "suspect").write_bytes(model_bytes)
    (tmp_path / "info.json").write_text(json.dumps({"scheme": "new-label"}))
    (tmp_path / "verifier").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    return {
        "scheme": "new-label", "key": "00" * 32, "info_path": str(tmp_path / "info.json"),
        "verifier_path": str(tmp_path / "verifier"), "model_path": str(tmp_path / "suspect"), "predict_uri": None,
        "fetch": {"allow_loopback": False, "allow_private": False, "allow_hosts": [], "max_bytes": 2**28,
                  "timeout_s": 5.0},
        "references": [], "threshold_floor": 0.0, "max_false_positive": 1e-6, "datasets": [], "build": build,
        "control_seed": "00" * 32, "controls": 8,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        ({"architectures": ["lenet5", "torchvision:*"], "max_parameters": 10**8}, "not one this community builds"),
        ({"architectures": ["timm:*"], "max_parameters": 100_000}, "over the cap of 100,000"),
    ],
)
def test_a_node_builds_only_what_its_community_allows(given: tuple[Path, float], tmp_path: Path,
                                                      build: dict[str, object], reason: str) -> None:  # fmt: skip
    model, card = load_model(given[0])
    vote = judge(_job(tmp_path, model_to_bytes(model, card), build))
    assert vote["verdict"] == "not-owner" and reason in vote["reason"], vote


def test_a_pinned_image_folder_streams_through_workers_and_verifies(
    given: tuple[Path, float], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from contracts.datasets import PinnedDataset
    from schemes.data import community
    from schemes.data.folder import folder_manifest
    from schemes.workflow.pipeline import embed_to_bundle, verify_suspect

    monkeypatch.setattr(community, "_PINNED", {})
    monkeypatch.setenv("WMNODE_LOADER_WORKERS", "2")  # the DataLoader path, with worker processes
    community.community_data.cache_clear()
    folder = digit_folder(tmp_path / "digits-folder", 24, 6)
    pinned = PinnedDataset("folder-digits", "folder", folder, folder_manifest(folder), 10)
    identity = Identity(Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33))))
    with pytest.raises(Exception, match="no community could verify"):  # the same files, not pinned
        embed_to_bundle(identity, "lenet5", "folder", tmp_path / "b0", scheme="new-label", data_path=folder,
                        overrides={"epochs": 1}, model_path=given[0])  # fmt: skip
    report = embed_to_bundle(identity, "lenet5", "folder-digits", tmp_path / "b", scheme="new-label",
                             overrides={"epochs": 6, "n": 40}, model_path=given[0], pinned=[pinned])  # fmt: skip
    assert report["wm_score"] >= report["threshold"], report
    assert verify_suspect(tmp_path / "b", tmp_path / "b").passed
    (folder / "train" / "3" / "000.png").write_bytes(b"changed")
    with pytest.raises(Exception, match="not the community's"):
        embed_to_bundle(identity, "lenet5", "folder-digits", tmp_path / "b2", scheme="new-label",
                        overrides={"epochs": 1}, model_path=given[0], pinned=[pinned])  # fmt: skip
    community.community_data.cache_clear()


def test_new_label_refuses_a_suspect_whose_delta_is_one_of_its_own_classes() -> None:
    from contracts.errors import SchemeError
    from schemes.data.community import community_data
    from schemes.watermarks import new_label

    data = community_data("digits", (1, 28, 28))
    info = {"scheme": "new-label", "dataset": "digits", "delta": 10, "beta": 0.3, "n": 100, "threshold": 0.25,
            "input_shape": [1, 28, 28], "mean": list(data.mean), "std": list(data.std)}  # fmt: skip
    wide = ModelCard("lenet5", 100, (1, 28, 28), data.mean, data.std).build()  # class 10 is an ordinary one
    with pytest.raises(SchemeError, match="answers 100 classes"):
        new_label.verify(wide, bytes(32), {}, info)
