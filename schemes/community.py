"""The data every member holds, split as the community splits it (DESIGN §6.1 rule 1).

A node checks the verification inputs it rebuilds from the key over this data, never inputs a
claimant shipped: `community_data` is what a judge draws from, and `require_community_data` is
what `embed` calls before any training, so an owner learns at once when a community could not
rebuild the watermark's inputs (and what would work instead).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import replace
from pathlib import Path

import torch

from registry.infos import COMMUNITY_SPLIT_SEED, COMMUNITY_TEST_FRACTION, EMBEDDED_DATASETS
from schemes.base import SchemeError
from schemes.data import DataError, Dataset, load_dataset

#: Data sets the community pins (name -> format, path, classes); the node checked their manifests.
_PINNED: dict[str, tuple[str, Path, int]] = {}


def pin(name: str, fmt: str, path: Path, num_classes: int) -> None:
    """Make a pinned data set (registry.infos.PinnedDataset) available under its community name."""
    if _PINNED.get(name) != (fmt, path, num_classes):
        _PINNED[name] = (fmt, path, num_classes)
        community_data.cache_clear()


def held_datasets() -> list[str]:
    return sorted([*EMBEDDED_DATASETS, *_PINNED])


@functools.lru_cache(maxsize=4)
def community_data(name: str, input_shape: tuple[int, int, int]) -> Dataset:
    """Data set `name` at `input_shape`: an embedded one split with the community's seed and test
    fraction, or a pinned one as its files split it."""
    if name not in EMBEDDED_DATASETS and name not in _PINNED:
        raise SchemeError(f"{name!r} is not a data set every member holds ({', '.join(held_datasets())})")
    try:
        if name in _PINNED:
            fmt, path, _ = _PINNED[name]
            return replace(load_dataset(fmt, input_shape=input_shape, path=path), name=name)
        return load_dataset(
            name, input_shape=input_shape, seed=COMMUNITY_SPLIT_SEED, test_fraction=COMMUNITY_TEST_FRACTION
        )
    except DataError as exc:  # the node's own fault, not the claimant's: an `error` vote
        raise DataError(f"cannot load the community's copy of {name!r}: {exc}") from exc


def dataset_digest(data: Dataset) -> str:
    """SHA-256 of the split as loaded (float32 images, int64 labels, train then test)."""
    digest = hashlib.sha256()
    for tensor, dtype in ((data.x_train, torch.float32), (data.y_train, torch.int64),
                          (data.x_test, torch.float32), (data.y_test, torch.int64)):  # fmt: skip
        digest.update(tensor.detach().cpu().to(dtype).contiguous().numpy().tobytes())
    return digest.hexdigest()


def require_community_data(data: Dataset, scheme: str) -> Dataset:
    """The community's copy of `data`, refusing data from which no node could rebuild `scheme`'s inputs."""
    if data.name not in EMBEDDED_DATASETS and data.name not in _PINNED:
        raise SchemeError(
            f"{scheme}: no community could verify a claim on a model watermarked over {data.name!r}: its "
            f"verification inputs must be rebuilt from the key over data every member holds "
            f"({', '.join(held_datasets())}); embed over one of those, have the community pin this data "
            "(`[[datasets]]` with its manifest), or use mtlsign, whose key samples are generated from the key alone"
        )
    reference = community_data(data.name, data.input_shape)
    if dataset_digest(reference) != dataset_digest(data):  # a pinned set: the same files, the same split
        raise SchemeError(
            f"{scheme}: this {data.name!r} data is not the community's split (seed {COMMUNITY_SPLIT_SEED}, "
            f"test fraction {COMMUNITY_TEST_FRACTION}), so no node could rebuild the verification inputs"
        )
    return reference


def pixels(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """Normalised (N, C, H, W) images back in [0, 1] pixel units, on the CPU."""
    channels = x.shape[1]
    m = torch.tensor(mean, dtype=torch.float32).view(1, channels, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, channels, 1, 1)
    return (x.cpu() * s + m).clamp(0.0, 1.0)
