"""Data sets a community pins by a manifest of their files (DESIGN §6.1 rule 1)."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from contracts.datasets import check_pinned, manifest_digest, parse_datasets
from contracts.errors import ConfigError, InfoError
from contracts.infos import parse_info
from contracts.policy import DEFAULT_POLICY
from registry.community.config import parse_config


def _npz(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    np.savez(
        path,
        x_train=rng.integers(0, 255, (40, 8, 8), dtype=np.uint8),
        y_train=np.arange(40) % 4,
        x_test=rng.integers(0, 255, (20, 8, 8), dtype=np.uint8),
        y_test=np.arange(20) % 4,
    )
    return path


def test_the_manifest_is_sha256_of_sorted_file_hashes_and_paths(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "a.bin").write_bytes(b"one")
    (tmp_path / "b" / "c.bin").write_bytes(b"two")
    lines = "".join(
        f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in (("a.bin", b"one"), ("b/c.bin", b"two"))
    )
    assert manifest_digest(tmp_path) == hashlib.sha256(lines.encode()).hexdigest()
    single = manifest_digest(tmp_path / "a.bin")
    assert single == hashlib.sha256(f"{hashlib.sha256(b'one').hexdigest()}  a.bin\n".encode()).hexdigest()


def test_a_changed_or_added_file_or_a_link_fails_the_pin(tmp_path: Path) -> None:
    data = tmp_path / "set"
    data.mkdir()
    (data / "x.bin").write_bytes(b"pixels")
    table = [{"name": "tiny", "format": "npz", "path": "set", "manifest_sha256": manifest_digest(data),
              "num_classes": 4}]  # fmt: skip
    (pinned,) = parse_datasets(table, "cfg: datasets", tmp_path)
    check_pinned(pinned)
    (data / "extra.bin").write_bytes(b"planted")
    with pytest.raises(ConfigError, match="not the community's"):
        check_pinned(pinned)
    (data / "extra.bin").unlink()
    (data / "link").symlink_to(data / "x.bin")
    with pytest.raises(ConfigError, match="symbolic link"):
        check_pinned(pinned)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "digits"}, "other than"),
        ({"format": "pickle"}, "format must be one of"),
        ({"manifest_sha256": "00"}, "64 lowercase hex"),
        ({"num_classes": 1}, "num_classes 2-100000"),
        ({"extra": 1}, "exactly"),
    ],
)
def test_bad_dataset_tables_are_refused(change: dict[str, object], message: str, tmp_path: Path) -> None:
    table = {"name": "tiny", "format": "npz", "path": "x.npz", "manifest_sha256": "a" * 64, "num_classes": 4}
    with pytest.raises(ConfigError, match=message):
        parse_datasets([{**table, **change}], "cfg: datasets", tmp_path)


def test_an_info_may_name_a_pinned_set_only_in_a_community_that_pins_it(tmp_path: Path) -> None:
    file = _npz(tmp_path / "tiny.npz")
    table = [{"name": "tiny", "format": "npz", "path": "tiny.npz", "manifest_sha256": manifest_digest(file),
              "num_classes": 4}]  # fmt: skip
    policy = replace(DEFAULT_POLICY, datasets=parse_datasets(table, "cfg", tmp_path))
    info = {"scheme": "new-label", "dataset": "tiny", "delta": 4, "beta": 0.3, "n": 100, "threshold": 0.25,
            "input_shape": [1, 8, 8], "mean": [0.5], "std": [0.25]}  # fmt: skip
    assert parse_info("new-label", info, policy).queries == 100
    with pytest.raises(InfoError, match="'tiny' is not one every member holds"):
        parse_info("new-label", info)
    with pytest.raises(InfoError, match="Δ must be the one output the task does not have, class 4"):
        parse_info("new-label", {**info, "delta": 2}, policy)


def test_a_node_config_pins_data_sets_into_its_verification_policy(tmp_path: Path) -> None:
    file = _npz(tmp_path / "tiny.npz")
    key = "a" * 64
    raw = {
        "community": "c", "name": "n1", "raft": "127.0.0.1:7000", "api": "127.0.0.1:8000",
        "members": [{"name": "n1", "raft": "127.0.0.1:7000", "api": "127.0.0.1:8000", "key": key}],
        "datasets": [{"name": "tiny", "format": "npz", "path": "tiny.npz", "manifest_sha256": manifest_digest(file),
                      "num_classes": 4}],
    }  # fmt: skip
    config = parse_config(raw, "cfg", tmp_path)
    assert config.verification.classes_of("tiny") == 4
    assert config.verification.datasets[0].path == file


def test_judges_rebuild_inputs_from_the_pinned_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from schemes.data import community
    from schemes.data.community import community_data, pin
    from schemes.watermarks import new_label

    monkeypatch.setattr(community, "_PINNED", {})  # the process-wide pins stay as other tests expect them
    community_data.cache_clear()
    file = _npz(tmp_path / "tiny.npz")
    pin("tiny", "npz", file, 4)
    data = community_data("tiny", (1, 8, 8))
    assert data.name == "tiny" and data.x_test.shape == (20, 1, 8, 8)
    info = {"scheme": "new-label", "dataset": "tiny", "delta": 4, "beta": 0.3, "n": 10, "threshold": 0.25,
            "input_shape": [1, 8, 8], "mean": list(data.mean), "std": list(data.std)}  # fmt: skip
    key = hashlib.sha256(b"k").digest()
    images = new_label.verification_images(key, new_label.parse_info(info))
    assert images.shape == (10, 1, 8, 8)
    other = new_label.verification_images(hashlib.sha256(b"other").digest(), new_label.parse_info(info))
    assert not bool((images == other).all())  # the key chooses which test images
    community_data.cache_clear()
