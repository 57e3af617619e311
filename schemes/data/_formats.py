"""The standard local formats of DESIGN §4.7, read strictly (`schemes.data.datasets` says how): MNIST's
IDX files, CIFAR's python batches (without unpickling code) and plain .npz arrays, each into the
arrays as stored. Every file is untrusted: its size is checked before it is read, headers and shapes
are parsed strictly, and any defect is a DataError naming the file."""

from __future__ import annotations

import gzip
import math
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from contracts.encoding import is_int
from contracts.errors import DataError
from schemes.data._plainpickle import PICKLE_ERRORS, Refused, load_plain

#: No data file (nor, for compressed files, its decompressed payload) may be larger than this.
MAX_FILE_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class Raw:
    """Images (N, C, H, W) as stored: uint8 means 0..255, float means 0..1."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int


def check_size(file: Path) -> None:
    try:
        size = file.stat().st_size
    except OSError as exc:
        raise DataError(f"cannot read {file}: {exc}") from exc
    if size > MAX_FILE_BYTES:
        raise DataError(f"{file} is {size} bytes, over the limit of {MAX_FILE_BYTES} bytes")


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def read_exact(stream: _Readable, size: int) -> bytes:
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


# --- MNIST and Fashion-MNIST (IDX files) --------------------------------------------------------

_IDX_IMAGES = 0x00000803  # unsigned bytes, 3 dimensions (count, rows, columns)
_IDX_LABELS = 0x00000801  # unsigned bytes, 1 dimension (count)


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
    check_size(file)
    ndim = magic & 0xFF
    try:
        with gzip.open(file, "rb") if file.suffix == ".gz" else file.open("rb") as stream:
            header = read_exact(stream, 4 + 4 * ndim)
            dims = _idx_dims(file, header, magic)
            payload = read_exact(stream, math.prod(dims))
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
    elif isinstance(value, list) and all(is_int(v) for v in value):
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
    check_size(file)
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


def _read_npz(file: Path) -> dict[str, np.ndarray]:
    check_size(file)
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


def read_idx_set(folder: Path) -> Raw:
    """MNIST or Fashion-MNIST: the `train` and `t10k` IDX image and label files in `folder`."""
    x_train, y_train = _idx_split(folder, "train")
    x_test, y_test = _idx_split(folder, "t10k")
    return Raw(x_train[:, None], y_train, x_test[:, None], y_test, 10)


def read_cifar(folder: Path, name: str) -> Raw:
    """CIFAR-10 or CIFAR-100 (`name`): its batches in `folder` or in the folder its archive unpacks to."""
    layout = _CIFAR[name]
    if not (folder / layout.train[0]).is_file() and (folder / layout.folder).is_dir():
        folder = folder / layout.folder
    x_train, y_train = _cifar_batches(folder, layout.train, layout)
    x_test, y_test = _cifar_batches(folder, layout.test, layout)
    return Raw(x_train, y_train, x_test, y_test, layout.num_classes)


def read_npz_set(file: Path) -> Raw:
    """A plain .npz holding x_train, y_train, x_test and y_test; classes: one more than the largest label."""
    arrays = _read_npz(file)
    x_train, x_test = _npz_images(file, arrays, "x_train"), _npz_images(file, arrays, "x_test")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(f"{file}: x_train images are {x_train.shape[1:]} but x_test images are {x_test.shape[1:]}")
    y_train = _npz_labels(file, arrays, "y_train", len(x_train))
    y_test = _npz_labels(file, arrays, "y_test", len(x_test))
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    return Raw(x_train, y_train, x_test, y_test, num_classes)
