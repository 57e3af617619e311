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
"""

from __future__ import annotations

import gzip
import math
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal, Protocol, TypeAlias, overload

import numpy as np
import torch

from contracts.errors import DataError
from schemes.data._plainpickle import PICKLE_ERRORS, Refused, load_plain
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


#: No data file (nor, for compressed files, its decompressed payload) may be larger than this.
MAX_FILE_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class _Request:
    name: str
    path: Path | None
    seed: int
    test_fraction: float
    input_shape: tuple[int, int, int] | None  # as asked for; None: the format's default
    normalisation: _Stats | None  # as given, its form checked (its channels are checked once known)


@dataclass(frozen=True)
class _Raw:
    """Images (N, C, H, W) as stored: uint8 means 0..255, float means 0..1."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int


_REGISTRY: dict[str, Callable[[_Request], Dataset[Any]]] = {}


def _register(
    *names: str, default_shape: tuple[int, int, int] | None
) -> Callable[[Callable[[_Request], _Raw]], Callable[[_Request], _Raw]]:
    """Register a loader of arrays; `default_shape` None: the shape the files store."""

    def decorate(load: Callable[[_Request], _Raw]) -> Callable[[_Request], _Raw]:
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
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, int | float) or not 0 < test_fraction < 1:
        raise DataError(f"test_fraction must be strictly between 0 and 1, got {test_fraction!r}")
    wanted = _check_shape(input_shape) if input_shape is not None else None  # before any reading
    given = _check_normalisation(normalisation) if normalisation is not None else None
    return build(_Request(name, None if path is None else Path(path), seed, float(test_fraction), wanted, given))


def _from_arrays(
    load: Callable[[_Request], _Raw], default_shape: tuple[int, int, int] | None, request: _Request
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


# --- shapes and normalisation ------------------------------------------------------------------


def _require_path(request: _Request, *, directory: bool) -> Path:
    kind = "a directory" if directory else "a file"
    if request.path is None:
        raise DataError(f"{request.name} is read from local files: pass path= ({kind})")
    found = request.path.is_dir() if directory else request.path.is_file()
    if not found:
        raise DataError(f"{request.name}: {request.path} is not {kind}")
    return request.path


def _check_size(file: Path) -> None:
    try:
        size = file.stat().st_size
    except OSError as exc:
        raise DataError(f"cannot read {file}: {exc}") from exc
    if size > MAX_FILE_BYTES:
        raise DataError(f"{file} is {size} bytes, over the limit of {MAX_FILE_BYTES} bytes")


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def _read_exact(stream: _Readable, size: int) -> bytes:
    """Up to `size` bytes; fewer only where the stream ends."""
    parts: list[bytes] = []
    left = size
    while left > 0:
        part = stream.read(min(left, 1 << 24))
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


# --- image folders (schemes.folder) --------------------------------------------------------------


def _load_folder(request: _Request) -> Dataset[FolderImages]:
    if request.path is not None and request.path.is_symlink():  # before is_dir, which follows links
        raise DataError(f"{request.path}: an image folder may not be a symbolic link")
    root = _require_path(request, directory=True)
    return _folder_dataset(request.name, root, request.input_shape, request.normalisation)


_REGISTRY["folder"] = _load_folder


# --- digits (scikit-learn) ----------------------------------------------------------------------


@_register("digits", default_shape=(1, 28, 28))
def _load_digits(request: _Request) -> _Raw:
    if request.path is not None:
        raise DataError("digits ships inside scikit-learn and takes no path")
    from sklearn.datasets import load_digits  # here, not at the top: importing this module stays light

    bunch = load_digits()
    images = (np.asarray(bunch.images, dtype=np.float32) / 16.0)[:, None]  # values 0..16
    labels = np.asarray(bunch.target, dtype=np.int64)
    train, test = _stratified_split(labels, request.seed, request.test_fraction)
    return _Raw(images[train], labels[train], images[test], labels[test], 10)


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


# --- MNIST and Fashion-MNIST (IDX files) --------------------------------------------------------

_IDX_IMAGES = 0x00000803  # unsigned bytes, 3 dimensions (count, rows, columns)
_IDX_LABELS = 0x00000801  # unsigned bytes, 1 dimension (count)


@_register("mnist", "fashion-mnist", default_shape=(1, 28, 28))
def _load_idx_set(request: _Request) -> _Raw:
    folder = _require_path(request, directory=True)
    x_train, y_train = _idx_split(folder, "train")
    x_test, y_test = _idx_split(folder, "t10k")
    return _Raw(x_train[:, None], y_train, x_test[:, None], y_test, 10)


def _idx_split(folder: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    image_file = _find_idx(folder, f"{prefix}-images-idx3-ubyte")
    label_file = _find_idx(folder, f"{prefix}-labels-idx1-ubyte")
    images = _read_idx(image_file, _IDX_IMAGES)
    labels = _read_idx(label_file, _IDX_LABELS)
    if len(images) != len(labels):
        raise DataError(f"{image_file} holds {len(images)} images but {label_file} holds {len(labels)} labels")
    bad = np.flatnonzero(labels >= 10)
    if bad.size:
        raise DataError(f"{label_file}: label {labels[bad[0]]} at index {bad[0]} is not below 10")
    return images, labels


def _find_idx(folder: Path, stem: str) -> Path:
    plain, packed = folder / stem, folder / f"{stem}.gz"
    for candidate in (plain, packed):
        if candidate.is_file():
            return candidate
    raise DataError(f"missing {plain} (also tried {packed})")


def _read_idx(file: Path, magic: int) -> np.ndarray:
    """An IDX file of unsigned bytes, parsed strictly: magic, dimensions, exact length."""
    _check_size(file)
    ndim = magic & 0xFF
    try:
        with gzip.open(file, "rb") if file.suffix == ".gz" else file.open("rb") as stream:
            header = _read_exact(stream, 4 + 4 * ndim)
            dims = _idx_dims(file, header, magic)
            payload = _read_exact(stream, math.prod(dims))
            trailing = bool(stream.read(1))
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read {file}: {exc}") from exc
    if len(payload) < math.prod(dims):
        raise DataError(f"{file} is truncated: its header promises {math.prod(dims)} data bytes, found {len(payload)}")
    if trailing:
        raise DataError(f"{file} is longer than its header says (trailing bytes after the data)")
    return np.frombuffer(payload, dtype=np.uint8).reshape(dims)


def _idx_dims(file: Path, header: bytes, magic: int) -> tuple[int, ...]:
    if len(header) < 4:
        raise DataError(f"{file} is too short for an IDX header")
    found = int.from_bytes(header[:4], "big")
    if found != magic:
        raise DataError(f"{file} has bad magic 0x{found:08x}, expected 0x{magic:08x}")
    if len(header) < 4 + 4 * (magic & 0xFF):
        raise DataError(f"{file} is truncated inside its IDX header")
    dims = tuple(int.from_bytes(header[i : i + 4], "big") for i in range(4, len(header), 4))
    if 0 in dims:
        raise DataError(f"{file} has an empty dimension in its header: {dims}")
    if len(header) + math.prod(dims) > MAX_FILE_BYTES:
        raise DataError(f"{file}: dimensions {dims} need more than the limit of {MAX_FILE_BYTES} bytes")
    return dims


# --- CIFAR-10 and CIFAR-100 (python batches, read without unpickling code) ----------------------


@dataclass(frozen=True)
class _CifarLayout:
    folder: str  # the folder the archive unpacks to; the batches may also sit in `path` itself
    train: tuple[str, ...]
    test: tuple[str, ...]
    label_key: str
    num_classes: int


_CIFAR = {
    "cifar10": _CifarLayout(
        "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), "labels", 10
    ),
    "cifar100": _CifarLayout("cifar-100-python", ("train",), ("test",), "fine_labels", 100),
}


@_register("cifar10", "cifar100", default_shape=(3, 32, 32))
def _load_cifar(request: _Request) -> _Raw:
    layout = _CIFAR[request.name]
    folder = _require_path(request, directory=True)
    if not (folder / layout.train[0]).is_file() and (folder / layout.folder).is_dir():
        folder = folder / layout.folder
    x_train, y_train = _cifar_batches(folder, layout.train, layout)
    x_test, y_test = _cifar_batches(folder, layout.test, layout)
    return _Raw(x_train, y_train, x_test, y_test, layout.num_classes)


def _cifar_batches(folder: Path, names: tuple[str, ...], layout: _CifarLayout) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for name in names:
        if not (folder / name).is_file():
            raise DataError(f"missing {folder / name}")
        x, y = _read_cifar_batch(folder / name, layout)
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def _read_cifar_batch(file: Path, layout: _CifarLayout) -> tuple[np.ndarray, np.ndarray]:
    record = _restricted_load(file)
    if not isinstance(record, dict):
        raise DataError(f"{file} does not hold a CIFAR batch (a dict), but a {type(record).__name__}")
    fields = {key.decode("latin-1") if isinstance(key, bytes) else key: value for key, value in record.items()}
    for key in ("data", layout.label_key):
        if key not in fields:
            raise DataError(f"{file} has no {key!r} entry")
    data = fields["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{file}: 'data' must be a uint8 array of shape (N, 3072), found {found}")
    labels = _cifar_labels(file, fields[layout.label_key], layout, len(data))
    return data.reshape(-1, 3, 32, 32), labels  # rows are 1024 red, 1024 green, 1024 blue, row-major


def _cifar_labels(file: Path, value: object, layout: _CifarLayout, count: int) -> np.ndarray:
    key = layout.label_key
    if isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype.kind in "iu":
        labels = value.astype(np.int64)
    elif isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        labels = np.array(value, dtype=np.int64) if value else np.zeros(0, dtype=np.int64)
    else:
        raise DataError(f"{file}: {key!r} must be a list of integers")
    if len(labels) != count:
        raise DataError(f"{file} holds {count} images but {len(labels)} {key}")
    bad = np.flatnonzero((labels < 0) | (labels >= layout.num_classes))
    if bad.size:
        raise DataError(f"{file}: {key} {labels[bad[0]]} at index {bad[0]} is outside 0..{layout.num_classes - 1}")
    return labels


def _restricted_load(file: Path) -> object:
    _check_size(file)
    try:
        with file.open("rb") as stream:
            return load_plain(stream)
    except Refused as exc:
        raise DataError(f"{file} refused: {exc}") from exc
    except OSError as exc:
        raise DataError(f"cannot read {file}: {exc}") from exc
    except PICKLE_ERRORS as exc:
        raise DataError(f"{file} is not a readable CIFAR batch: {exc}") from exc


# --- plain .npz arrays --------------------------------------------------------------------------

_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


@_register("npz", default_shape=None)
def _load_npz(request: _Request) -> _Raw:
    file = _require_path(request, directory=False)
    arrays = _read_npz(file)
    x_train, x_test = _npz_images(file, arrays, "x_train"), _npz_images(file, arrays, "x_test")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(f"{file}: x_train images are {x_train.shape[1:]} but x_test images are {x_test.shape[1:]}")
    y_train = _npz_labels(file, arrays, "y_train", len(x_train))
    y_test = _npz_labels(file, arrays, "y_test", len(x_test))
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    return _Raw(x_train, y_train, x_test, y_test, num_classes)


def _read_npz(file: Path) -> dict[str, np.ndarray]:
    _check_size(file)
    try:
        with zipfile.ZipFile(file) as archive:  # check the unpacked size before numpy reads anything
            unpacked = sum(info.file_size for info in archive.infolist())
        if unpacked > MAX_FILE_BYTES:
            raise DataError(f"{file} unpacks to {unpacked} bytes, over the limit of {MAX_FILE_BYTES} bytes")
        with np.load(file, allow_pickle=False) as archive:
            missing = [key for key in _NPZ_KEYS if key not in archive.files]
            if missing:
                raise DataError(f"{file} lacks {', '.join(missing)} (needs {', '.join(_NPZ_KEYS)})")
            return {key: archive[key] for key in _NPZ_KEYS}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"cannot read {file} as .npz: {exc}") from exc


def _npz_images(file: Path, arrays: dict[str, np.ndarray], key: str) -> np.ndarray:
    """(N, C, H, W), uint8 or float32; see the module docstring for how the layout is told."""
    x = arrays[key]
    if x.dtype.kind == "f":
        if x.size and not (np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1):
            raise DataError(f"{file}: float {key} must lie in [0, 1]")
        x = x.astype(np.float32, copy=False)
    elif x.dtype != np.uint8:
        raise DataError(f"{file}: {key} has dtype {x.dtype}; expected uint8 (0..255) or float (0..1)")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[3] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    elif x.ndim != 4 or x.shape[1] not in (1, 3):
        raise DataError(f"{file}: {key} has shape {x.shape}; expected (N, H, W) or N images with 1 or 3 channels")
    if len(x) == 0 or 0 in x.shape:
        raise DataError(f"{file}: {key} is empty ({x.shape})")
    return x


def _npz_labels(file: Path, arrays: dict[str, np.ndarray], key: str, count: int) -> np.ndarray:
    y = arrays[key]
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DataError(f"{file}: {key} must be a 1-D integer array, found {y.dtype} {y.shape}")
    if len(y) != count:
        raise DataError(f"{file}: {key} holds {len(y)} labels for {count} images")
    if y.min() < 0:
        raise DataError(f"{file}: {key} holds a negative label ({y.min()})")
    return y.astype(np.int64)
