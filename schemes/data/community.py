"""The data every member holds, split as the community splits it (DESIGN §6.1 rule 1).

A node checks the verification inputs it rebuilds from the key over this data, never inputs a
claimant shipped: `community_data` is what a judge draws from, and `require_community_data` is
what `embed` calls before any training, so an owner learns at once when a community could not
rebuild the watermark's inputs (and what would work instead).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from contracts.datasets import COMMUNITY_SPLIT_SEED, COMMUNITY_TEST_FRACTION, EMBEDDED_DATASETS
from contracts.errors import DataError, SchemeError
from contracts.infos import MEAN_RANGE, STD_RANGE, image_normalisation
from schemes.data.dataset import Dataset
from schemes.data.datasets import load_dataset
from schemes.data.folder import FolderImages, folder_manifest

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
def community_data(
    name: str,
    input_shape: tuple[int, int, int],
    normalisation: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
) -> Dataset[Any]:
    """Data set `name` at `input_shape`: an embedded one split with the community's seed and test
    fraction, or a pinned one as its files split it; normalised by its training split's statistics,
    or by `normalisation` (mean, std) when given."""
    if name not in EMBEDDED_DATASETS and name not in _PINNED:
        raise SchemeError(f"{name!r} is not a data set every member holds ({', '.join(held_datasets())})")
    try:
        if name in _PINNED:
            fmt, path, _ = _PINNED[name]
            return replace(
                load_dataset(fmt, input_shape=input_shape, path=path, normalisation=normalisation), name=name
            )
        return load_dataset(
            name,
            input_shape=input_shape,
            seed=COMMUNITY_SPLIT_SEED,
            test_fraction=COMMUNITY_TEST_FRACTION,
            normalisation=normalisation,
        )
    except DataError as exc:  # the node's own fault, not the claimant's: an `error` vote
        raise DataError(f"cannot load the community's copy of {name!r}: {exc}") from exc


def _close(a: Sequence[float], b: Sequence[float]) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= 1e-6 for x, y in zip(a, b, strict=True))


def claim_data(
    name: str, input_shape: tuple[int, int, int], mean: Sequence[float], std: Sequence[float], scheme: str
) -> Dataset[Any]:
    """The community's copy of `name`, normalised as the claim's info says (the normalisation the
    owner's model was trained with): the data's own statistics, or one within `MEAN_RANGE` and
    `STD_RANGE`; any other is refused."""
    own = community_data(name, input_shape)
    if _close(mean, own.mean) and _close(std, own.std):
        return own
    if len(mean) != input_shape[0] or len(std) != input_shape[0]:
        raise SchemeError(f"{scheme} info: mean and std need one value per channel ({input_shape[0]})")
    if not image_normalisation(mean, std):  # registry.infos: the bounds a node checks too
        raise SchemeError(
            f"{scheme} info: mean {list(mean)} and std {list(std)} are neither the normalisation of the "
            f"community's {name!r} nor an image normalisation (means in [{MEAN_RANGE[0]:g}, {MEAN_RANGE[1]:g}], "
            f"stds in [{STD_RANGE[0]:g}, {STD_RANGE[1]:g}])"
        )
    return community_data(name, input_shape, (tuple(float(m) for m in mean), tuple(float(v) for v in std)))


def dataset_digest(data: Dataset[Any]) -> str:
    """SHA-256 of the split as loaded: float32 images and int64 labels, train then test; for an image
    folder, its files' manifest (which fixes the split and the labels), the shape and normalisation
    instead of every decoded image."""
    digest = hashlib.sha256()
    if isinstance(data.x_train, FolderImages):
        digest.update(b"folder\0" + _manifest(str(data.x_train.root)).encode())
        digest.update(repr((data.input_shape, data.mean, data.std, data.x_test.root == data.x_train.root)).encode())
        return digest.hexdigest()
    for tensor, dtype in ((data.x_train, torch.float32), (data.y_train, torch.int64),
                          (data.x_test, torch.float32), (data.y_test, torch.int64)):  # fmt: skip
        digest.update(tensor.detach().cpu().to(dtype).contiguous().numpy().tobytes())
    return digest.hexdigest()


@functools.lru_cache(maxsize=8)
def _manifest(root: str) -> str:
    """An image folder's manifest, read once per process (a pinned copy is checked at node start)."""
    return folder_manifest(Path(root))


def require_community_data(data: Dataset[Any], scheme: str) -> Dataset[Any]:
    """The community's copy of `data`, refusing data from which no node could rebuild `scheme`'s inputs."""
    if data.name not in EMBEDDED_DATASETS and data.name not in _PINNED:
        raise SchemeError(
            f"{scheme}: no community could verify a claim on a model watermarked over {data.name!r}: its "
            f"verification inputs must be rebuilt from the key over data every member holds "
            f"({', '.join(held_datasets())}); embed over one of those, have the community pin this data "
            "(`[[datasets]]` with its manifest, and pass its config to `embed --config`), or use mtlsign, whose "
            "key samples are generated from the key alone"
        )
    reference = claim_data(data.name, data.input_shape, data.mean, data.std, scheme)
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
