"""The community's data (schemes/community.py): the split every member rebuilds verification inputs
from, and the refusals that tell an owner, before any training, what no community could verify."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from contracts.datasets import COMMUNITY_SPLIT_SEED, COMMUNITY_TEST_FRACTION, EMBEDDED_DATASETS
from contracts.errors import DataError, SchemeError
from schemes.data import community
from schemes.data.community import community_data, dataset_digest, pixels, require_community_data
from schemes.data.dataset import Dataset
from schemes.data.datasets import load_dataset

SHAPE = (1, 28, 28)


def _copy(data: Dataset, **changes: object) -> Dataset:
    fields = {
        "name": data.name, "x_train": data.x_train.clone(), "y_train": data.y_train.clone(),
        "x_test": data.x_test.clone(), "y_test": data.y_test.clone(), "num_classes": data.num_classes,
        "input_shape": data.input_shape, "mean": data.mean, "std": data.std,
    }  # fmt: skip
    return Dataset(**{**fields, **changes})  # type: ignore[arg-type]


def test_the_community_split_is_digits_at_seed_0_and_a_fifth_for_testing() -> None:
    assert EMBEDDED_DATASETS == {"digits": 10}
    assert (COMMUNITY_SPLIT_SEED, COMMUNITY_TEST_FRACTION) == (0, 0.2)
    data = community_data("digits", SHAPE)
    assert dataset_digest(data) == dataset_digest(load_dataset("digits", seed=0, test_fraction=0.2))
    assert (data.x_train.shape[0], data.x_test.shape[0], data.num_classes) == (1438, 359, 10)
    assert community_data("digits", SHAPE) is data  # loaded once per process and shape
    wider = community_data("digits", (3, 32, 32))
    assert wider.input_shape == (3, 32, 32) and torch.equal(wider.y_test, data.y_test)  # the same split


@pytest.mark.parametrize("name", ["mnist", "cifar10", "npz", "Digits"])
def test_community_data_refuses_a_set_no_member_holds(name: str) -> None:
    with pytest.raises(SchemeError, match=f"^'{name}' is not a data set every member holds \\(digits\\)$"):
        community_data(name, SHAPE)


def test_a_node_that_cannot_load_its_copy_says_so_as_a_data_error() -> None:
    """Not the claimant's scheme error: a node that cannot load the data votes `error`."""
    with pytest.raises(DataError, match="cannot load the community's copy of 'digits': input_shape must have 1 or 3"):
        community_data("digits", (2, 28, 28))


def test_require_community_data_accepts_the_community_split_at_any_input_shape() -> None:
    for shape in (SHAPE, (1, 32, 32)):
        data = load_dataset("digits", input_shape=shape)
        reference = require_community_data(data, "new-label")
        assert reference is community_data("digits", shape) and dataset_digest(reference) == dataset_digest(data)


@pytest.mark.parametrize(
    "split", [{"seed": 3}, {"seed": 1}, {"seed": 0, "test_fraction": 0.25}, {"seed": 0, "test_fraction": 0.1}]
)
def test_require_community_data_refuses_another_split_and_names_the_communitys(split: dict[str, object]) -> None:
    with pytest.raises(SchemeError) as refused:
        require_community_data(load_dataset("digits", **split), "passport")  # type: ignore[arg-type]
    assert str(refused.value) == (
        "passport: this 'digits' data is not the community's split (seed 0, test fraction 0.2), so no node could "
        "rebuild the verification inputs"
    )


def test_require_community_data_refuses_altered_data_under_the_communitys_name() -> None:
    """A relabelled test sample or a touched pixel: the name and split are right, the content is not."""
    data = community_data("digits", SHAPE)
    relabelled = data.y_test.clone()
    relabelled[0] = (relabelled[0] + 1) % 10
    touched = data.x_train.clone()
    touched[5, 0, 14, 14] += 1e-3
    for altered in (_copy(data, y_test=relabelled), _copy(data, x_train=touched)):
        with pytest.raises(SchemeError, match="blind: this 'digits' data is not the community's split"):
            require_community_data(altered, "blind")
    assert require_community_data(_copy(data), "blind") is data  # an equal copy is the community's


def test_require_community_data_refuses_a_set_no_member_holds_and_says_what_would_work() -> None:
    foreign = _copy(community_data("digits", SHAPE), name="fashion-mnist")
    with pytest.raises(SchemeError) as refused:
        require_community_data(foreign, "function-coupled")
    assert str(refused.value) == (
        "function-coupled: no community could verify a claim on a model watermarked over 'fashion-mnist': its "
        "verification inputs must be rebuilt from the key over data every member holds (digits); embed over one of "
        "those, have the community pin this data (`[[datasets]]` with its manifest, and pass its config to "
        "`embed --config`), or use mtlsign, whose key samples are generated from the key alone"
    )


@pytest.fixture
def pinned(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """A community that pins one small .npz set as 'tiny' (and forgets it after the test)."""
    gen = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(
        path,
        x_train=gen.integers(0, 256, (40, 8, 8), dtype=np.uint8), y_train=np.arange(40) % 4,
        x_test=gen.integers(0, 256, (12, 8, 8), dtype=np.uint8), y_test=np.arange(12) % 4,
    )  # fmt: skip
    monkeypatch.setattr(community, "_PINNED", {})
    community_data.cache_clear()
    yield path
    community_data.cache_clear()


def test_a_pinned_set_is_held_under_its_community_name(pinned: Path) -> None:
    community.pin("tiny", "npz", pinned, 4)
    assert community.held_datasets() == ["digits", "tiny"]
    data = community_data("tiny", (1, 8, 8))
    own = load_dataset("npz", input_shape=(1, 8, 8), path=pinned)
    assert data.name == "tiny" and dataset_digest(data) == dataset_digest(own)  # the split its file carries
    assert require_community_data(replace(own, name="tiny"), "blind") is data
    with pytest.raises(SchemeError, match="blind: no community could verify .* over 'npz'.*\\(digits, tiny\\)"):
        require_community_data(own, "blind")  # the same file under its format's name is not the pinned set
    with pytest.raises(SchemeError, match="^'other' is not a data set every member holds \\(digits, tiny\\)$"):
        community_data("other", (1, 8, 8))


def test_the_digest_covers_both_splits_and_is_deterministic() -> None:
    data = community_data("digits", SHAPE)
    digest = dataset_digest(data)
    assert len(digest) == 64 and digest == dataset_digest(_copy(data))
    swapped = _copy(data, x_train=data.x_test, y_train=data.y_test, x_test=data.x_train, y_test=data.y_train)
    assert dataset_digest(swapped) != digest  # train then test, not a bag of samples
    fewer = _copy(data, x_test=data.x_test[:-1], y_test=data.y_test[:-1])
    assert dataset_digest(fewer) != digest


def test_pixels_undoes_the_normalisation_and_clamps() -> None:
    data = community_data("digits", SHAPE)
    back = pixels(data.x_test[:4], data.mean, data.std)
    assert back.device.type == "cpu" and back.shape == (4, *SHAPE)
    assert torch.allclose((back - data.mean[0]) / data.std[0], data.x_test[:4], atol=1e-5)
    assert float(back.min()) >= 0.0 and float(back.max()) <= 1.0
    x = torch.tensor([-10.0, 0.0, 10.0]).view(1, 3, 1, 1)
    assert pixels(x, (0.5, 0.5, 0.5), (0.1, 0.2, 0.3)).flatten().tolist() == [0.0, 0.5, 1.0]
