"""Data sets (DESIGN §4.7): scikit-learn's digits; local MNIST/Fashion-MNIST, CIFAR, .npz and image folders.

`load_dataset(name)` returns a frozen `Dataset`: float32 images (N, C, H, W) resized to the requested
input shape and normalised per channel with the mean and std of the training split (in [0, 1]-pixel
units), or with the `normalisation=(mean, std)` the caller gives, and int64 labels. Image folders
(`folder`, see `schemes.folder`) come back as lazy `FolderImages` that decode files on indexing;
every other set as tensors. Nothing is ever fetched: besides `digits`, which ships inside
scikit-learn, every set is read from local files in its standard format, and every file is treated
as untrusted input: sizes are checked before reading (at most `MAX_FILE_BYTES`), headers and shapes
are parsed strictly, and any defect is a `DataError` naming the file.

Choices the standard formats leave open:

* Splits. `digits` is split by a stratified permutation drawn from `np.random.default_rng(seed)`:
  `round(test_fraction * n_c)` samples of each class c go to the test split (at least one while the
  class has two). The other sets keep the train/test split their files carry; `seed` and
  `test_fraction` do not change them.
* Shapes. Images are resized with bilinear interpolation (`align_corners=False`); a grey image
  asked for in three channels repeats its channel, a colour image asked for in one channel becomes
  ITU-R BT.601 luma (0.299 R + 0.587 G + 0.114 B). Defaults: (1, 28, 28) for digits and the MNIST
  sets, (3, 32, 32) for CIFAR, and the stored shape for .npz.
* CIFAR python batches are pickles, and nothing a stranger sent is unpickled (DESIGN §4.5). They are
  read by a restricted unpickler that resolves no global except those numpy writes for a plain
  array (`_reconstruct`, `ndarray`, `dtype`, and `_frombuffer` of pickle protocol 5), and even those
  are replaced by stand-ins that only accept integer dtypes and build the array from its raw bytes
  with `np.frombuffer`; numpy's own unpickling code never runs. A `pickle.dump` by Python 3 at
  protocol 2 needs `_codecs.encode` for its bytes and is refused: write protocol 3 or later.
* .npz images may be uint8 (0..255) or float (0..1), shaped (N, H, W), (N, H, W, C) or (N, C, H, W)
  with C in {1, 3}. A 4-D array is channel-last when its last dimension is 1 or 3 and its second is
  not; otherwise channel-first, so (N, 3, 8, 3) is read as channel-first. The number of classes is
  one more than the largest label.
* A given `normalisation` needs one finite mean and one std > 0 per channel of the returned images.
* A channel whose training std is below 1e-6 (a constant channel) gets std 1, so normalising never
  divides by zero.

This module names the sets and makes a `Dataset` of each; the strict readers of the standard file
formats are `schemes.data._formats`, of image folders `schemes.data.folder`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeAlias, overload

import numpy as np
import torch

from contracts.encoding import is_int, is_number
from contracts.errors import DataError
from schemes.data._formats import MAX_FILE_BYTES, Raw, read_cifar, read_idx_set, read_npz_set
from schemes.data.dataset import (
    Dataset,
    _channel_stats,
    _check_normalisation,
    _check_shape,
    _fit,
    _given_stats,
    _normalise,
    _Stats,
)
from schemes.data.folder import FolderImages, _folder_dataset

__all__ = ["MAX_FILE_BYTES", "list_datasets", "load_dataset"]


@dataclass(frozen=True)
class _Request:
    name: str
    path: Path | None
    seed: int
    test_fraction: float
    input_shape: tuple[int, int, int] | None  # as asked for; None: the format's default
    normalisation: _Stats | None  # as given, its form checked (its channels are checked once known)


_REGISTRY: dict[str, Callable[[_Request], Dataset[Any]]] = {}


def _register(
    *names: str, default_shape: tuple[int, int, int] | None
) -> Callable[[Callable[[_Request], Raw]], Callable[[_Request], Raw]]:
    """Register a loader of arrays; `default_shape` None: the shape the files store."""

    def decorate(load: Callable[[_Request], Raw]) -> Callable[[_Request], Raw]:
        for name in names:
            _REGISTRY[name] = partial(_from_arrays, load, default_shape)
        return load

    return decorate


def list_datasets() -> list[str]:
    """The names `load_dataset` knows, sorted."""
    return sorted(_REGISTRY)


_Normalisation: TypeAlias = tuple[Sequence[float], Sequence[float]]
_TensorSets: TypeAlias = Literal["cifar10", "cifar100", "digits", "fashion-mnist", "mnist", "npz"]


@overload
def load_dataset(
    name: Literal["folder"],
    *,
    input_shape: tuple[int, int, int] | None = None,
    path: Path | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
    normalisation: _Normalisation | None = None,
) -> Dataset[FolderImages]: ...


@overload
def load_dataset(
    name: _TensorSets,
    *,
    input_shape: tuple[int, int, int] | None = None,
    path: Path | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
    normalisation: _Normalisation | None = None,
) -> Dataset[torch.Tensor]: ...


@overload
def load_dataset(
    name: str,
    *,
    input_shape: tuple[int, int, int] | None = None,
    path: Path | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
    normalisation: _Normalisation | None = None,
) -> Dataset[Any]: ...


def load_dataset(
    name: str,
    *,
    input_shape: tuple[int, int, int] | None = None,
    path: Path | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
    normalisation: _Normalisation | None = None,
) -> Dataset[Any]:
    """Load data set `name`, resized to `input_shape` (C, H, W) and normalised by its training split.

    `path` is the directory of the local files (a file for `npz`); `seed` and `test_fraction` choose
    the split of sets that ship without one (`digits`); `normalisation` (mean, std), one value per
    channel in [0, 1]-pixel units, replaces the training split's own.
    """
    build = _REGISTRY.get(name)
    if build is None:
        raise DataError(f"unknown data set {name!r}; known: {', '.join(list_datasets())}")
    if not is_int(seed, 0):
        raise DataError(f"seed must be a non-negative integer, got {seed!r}")
    if not is_number(test_fraction) or not 0 < test_fraction < 1:
        raise DataError(f"test_fraction must be strictly between 0 and 1, got {test_fraction!r}")
    wanted = _check_shape(input_shape) if input_shape is not None else None  # before any reading
    given = _check_normalisation(normalisation) if normalisation is not None else None
    return build(_Request(name, None if path is None else Path(path), seed, float(test_fraction), wanted, given))


def _from_arrays(
    load: Callable[[_Request], Raw], default_shape: tuple[int, int, int] | None, request: _Request
) -> Dataset:
    raw = load(request)
    shape = request.input_shape or default_shape or _check_shape(raw.x_train.shape[1:])
    x_train, x_test = _fit(raw.x_train, shape), _fit(raw.x_test, shape)
    given = request.normalisation
    mean, std = _channel_stats(x_train) if given is None else _given_stats(given, shape[0])
    return Dataset(
        name=request.name,
        x_train=_normalise(x_train, mean, std),
        y_train=torch.from_numpy(raw.y_train.astype(np.int64)),
        x_test=_normalise(x_test, mean, std),
        y_test=torch.from_numpy(raw.y_test.astype(np.int64)),
        num_classes=raw.num_classes,
        input_shape=shape,
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
    )


# --- local paths ---------------------------------------------------------------------------------


def _require_path(request: _Request, *, directory: bool) -> Path:
    kind = "a directory" if directory else "a file"
    if request.path is None:
        raise DataError(f"{request.name} is read from local files: pass path= ({kind})")
    found = request.path.is_dir() if directory else request.path.is_file()
    if not found:
        raise DataError(f"{request.name}: {request.path} is not {kind}")
    return request.path


# --- image folders (schemes.folder) --------------------------------------------------------------


def _load_folder(request: _Request) -> Dataset[FolderImages]:
    if request.path is not None and request.path.is_symlink():  # before is_dir, which follows links
        raise DataError(f"{request.path}: an image folder may not be a symbolic link")
    root = _require_path(request, directory=True)
    return _folder_dataset(request.name, root, request.input_shape, request.normalisation)


_REGISTRY["folder"] = _load_folder


# --- digits (scikit-learn) ----------------------------------------------------------------------


@_register("digits", default_shape=(1, 28, 28))
def _load_digits(request: _Request) -> Raw:
    if request.path is not None:
        raise DataError("digits ships inside scikit-learn and takes no path")
    from sklearn.datasets import load_digits  # here, not at the top: importing this module stays light

    bunch = load_digits()
    images = (np.asarray(bunch.images, dtype=np.float32) / 16.0)[:, None]  # values 0..16
    labels = np.asarray(bunch.target, dtype=np.int64)
    train, test = _stratified_split(labels, request.seed, request.test_fraction)
    return Raw(images[train], labels[train], images[test], labels[test], 10)


def _stratified_split(labels: np.ndarray, seed: int, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test): test_fraction of every class in the test split, shuffled by the seed."""
    rng = np.random.default_rng(seed)
    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = min(max(round(test_fraction * len(members)), 1), len(members) - 1)
        test.append(members[:n_test])
        train.append(members[n_test:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


# --- the standard formats (schemes.data._formats) -----------------------------------------------


@_register("mnist", "fashion-mnist", default_shape=(1, 28, 28))
def _load_idx_set(request: _Request) -> Raw:
    return read_idx_set(_require_path(request, directory=True))


@_register("cifar10", "cifar100", default_shape=(3, 32, 32))
def _load_cifar(request: _Request) -> Raw:
    return read_cifar(_require_path(request, directory=True), request.name)


@_register("npz", default_shape=None)
def _load_npz(request: _Request) -> Raw:
    return read_npz_set(_require_path(request, directory=False))
