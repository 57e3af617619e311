"""Image folders (torchvision's ImageFolder layout) as a data set, decoded file by file when indexed.

`load_dataset("folder", path=DIR)` reads DIR/train/<class>/... and DIR/val/<class>/... or
DIR/test/<class>/... (both val/ and test/ is refused: the test split would be ambiguous). It keeps
file names and labels, never decoded images, so memory does not grow with the pixels: a
`FolderImages` decodes the files an index asks for, every time it is asked. Choices:

* Classes: the sub-folders of train/, sorted as Python sorts str (as torchvision does); a class's
  index is its position. Every class folder of the test split must be a train class, and every
  train class must hold an image.
* Files: everything under a class folder, recursively, ordered by the path relative to DIR as a
  str ("/"-separated). Names starting with "." are skipped (hidden folders are not entered); only
  `IMAGE_EXTENSIONS` count, in any case; other files and anything not a regular file are ignored.
  A symbolic link anywhere the loader looks is refused, as `registry.infos.manifest_digest` does.
* Caps: `MAX_IMAGE_BYTES` per file (from stat, before the file is opened), `MAX_IMAGE_PIXELS` per
  image (from its header, before a pixel is decoded: Pillow's own bomb check only warns below twice
  its limit), `MAX_IMAGES` images in both splits, `MAX_CLASSES` classes.
* Decoding: only Pillow's BMP, JPEG, PNG, PPM, TIFF and WebP decoders run, whatever a file is named
  (so never EPS, which starts Ghostscript); a multi-frame file gives its first frame. Grey modes
  ("1", "L", "LA") are read as L, 16-bit grey ("I;16", "I") as v / 65535 clipped to [0, 1], and every
  other mode as RGB, as torchvision's loader reads it: alpha dropped, palettes looked up,
  transparency ignored. Floating-point pixels ("F") are refused. Any decoder failure is a
  `DataError` naming the file.
* Shapes and values: as for the other formats (`schemes.data`): bilinear resizing, BT.601 luma for
  colour asked for in one channel, the grey channel repeated for three. Default shape: the first
  training image's size, 3 channels if it reads as colour (palette images do), else 1.
  Normalisation: the given (mean, std), else the training split's, from one streaming pass with
  float64 sums.
* `folder_manifest(DIR)` is the manifest a community pins (`[[datasets]]`); it covers every file
  under DIR, those the loader skips too.
"""

from __future__ import annotations

import array
import logging
import os
import stat
import struct
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image

from contracts.datasets import manifest_digest
from contracts.errors import ConfigError, DataError
from schemes.data.dataset import Dataset, _channel_sums, _fit_chunk, _given_stats, _Stats, _stats_from_sums

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_CLASSES",
    "MAX_IMAGES",
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_PIXELS",
    "FolderImages",
    "folder_manifest",
]

log = logging.getLogger(__name__)

MAX_IMAGE_BYTES = 64 * 1024**2
MAX_IMAGE_PIXELS = 64_000_000
MAX_IMAGES = 10_000_000
MAX_CLASSES = 100_000
#: The file extensions that count as images (compared in lower case).
IMAGE_EXTENSIONS = frozenset({".bmp", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp"})

_DECODERS = ("BMP", "JPEG", "PNG", "PPM", "TIFF", "WEBP")  # Pillow's names; PPM also reads .pgm
_GREY = frozenset({"1", "L", "LA"})
_DEEP_GREY = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
# What Pillow's decoders raise on a hostile file (SyntaxError and struct.error from plugin parsers).
_DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    OverflowError,
    RuntimeError,
    struct.error,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
_INDEX_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
_STATS_BATCH_BYTES = 1 << 21  # float32 images decoded at a time by the statistics pass: a small, fixed peak


class FolderImages(torch.utils.data.Dataset[torch.Tensor]):
    """One split of an image folder as a lazy, read-only float32 (N, C, H, W) tensor on the CPU.

    Indexing decodes just the files asked for (nothing is cached) and returns them resized and
    normalised as the other formats' tensors are: an int gives (C, H, W); a slice, or a 1-D integer
    (or bool) tensor, numpy array or list gives (k, C, H, W). A map-style torch `Dataset`: the file
    list is one bytes blob with offsets, so an instance pickles small, and a DataLoader's workers
    get it whole. Built by `load_dataset("folder", ...)`.
    """

    def __init__(
        self,
        root: Path,
        paths: bytes,
        offsets: np.ndarray,
        input_shape: tuple[int, int, int],
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        """`paths`: the relative paths (os.fsencode'd) end to end, image i at offsets[i]:offsets[i + 1]."""
        self._root = os.fspath(root)
        self._paths = paths
        self._offsets = offsets
        self._input_shape = input_shape
        self._mean = tuple(float(v) for v in mean)
        self._std = tuple(float(v) for v in std)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __repr__(self) -> str:
        return f"FolderImages({self._root!r}, {len(self)} images as {self._input_shape})"

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), *self._input_shape))

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def ndim(self) -> int:
        return 4

    @property
    def root(self) -> Path:
        return Path(self._root)

    @property
    def mean(self) -> tuple[float, ...]:
        return self._mean

    @property
    def std(self) -> tuple[float, ...]:
        return self._std

    def relative_path(self, i: int) -> str:
        """Image i's path relative to the data set's folder, "/"-separated."""
        i = self._position(i)
        return os.fsdecode(self._paths[int(self._offsets[i]) : int(self._offsets[i + 1])])

    def relative_paths(self) -> Iterator[str]:
        return (self.relative_path(i) for i in range(len(self)))

    def files(self) -> Iterator[Path]:
        return (Path(self._root, rel) for rel in self.relative_paths())

    def item(self, i: int) -> torch.Tensor:
        """Image i, decoded, resized and normalised: float32 (C, H, W)."""
        mean, std = self._scales()
        return (self._fitted(self._position(i))[0] - mean) / std

    def __getitem__(self, index: int | np.integer | slice | list[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
        if isinstance(index, int | np.integer) and not isinstance(index, bool | np.bool_):
            return self.item(int(index))
        if isinstance(index, torch.Tensor) and index.ndim == 0 and index.dtype in _INDEX_DTYPES:
            return self.item(int(index))
        rows = self._rows(index)
        out = torch.empty((len(rows), *self._input_shape), dtype=torch.float32)
        for row, i in enumerate(rows.tolist()):
            out[row] = self._fitted(i)[0]
        mean, std = self._scales()
        return out.sub_(mean).div_(std)  # as schemes.data._normalise

    def _with_stats(self, mean: Sequence[float], std: Sequence[float]) -> FolderImages:
        return FolderImages(Path(self._root), self._paths, self._offsets, self._input_shape, mean, std)

    def _scales(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.tensor(self._mean, dtype=torch.float32).view(-1, 1, 1)
        return mean, torch.tensor(self._std, dtype=torch.float32).view(-1, 1, 1)

    def _fitted(self, i: int) -> torch.Tensor:
        return _fit_chunk(_decode(os.path.join(self._root, self.relative_path(i)))[None], self._input_shape)

    def _position(self, i: int) -> int:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of range for {n} images")
        return i % n

    def _rows(self, index: object) -> np.ndarray:
        """The non-negative positions a slice or a 1-D index selects."""
        n = len(self)
        if isinstance(index, slice):
            span = range(n)[index]
            return np.arange(span.start, span.stop, span.step, dtype=np.int64)
        if isinstance(index, torch.Tensor):
            index = index.detach().cpu().numpy()
        elif isinstance(index, list):
            index = np.array(index) if index else np.zeros(0, dtype=np.int64)
        if not isinstance(index, np.ndarray):
            raise TypeError(f"FolderImages takes an int, a slice or a 1-D index, not {type(index).__name__}")
        if index.ndim != 1 or index.dtype.kind not in "biu":
            raise IndexError(f"a 1-D index of integers or bools is needed, got {index.dtype} {index.shape}")
        if index.dtype.kind == "b":
            if len(index) != n:
                raise IndexError(f"a bool index of length {len(index)} for {n} images")
            return np.flatnonzero(index)
        rows = index.astype(np.int64)
        bad = np.flatnonzero((rows < -n) | (rows >= n))
        if bad.size:
            raise IndexError(f"index {rows[bad[0]]} is out of range for {n} images")
        return rows % max(n, 1)


def folder_manifest(root: Path | str) -> str:
    """The manifest SHA-256 a community pins for this folder (`[[datasets]]` manifest_sha256).

    `registry.infos.manifest_digest` over every regular file under `root`, hidden and non-image
    files included; a symbolic link is refused."""
    try:
        return manifest_digest(Path(root))
    except ConfigError as exc:
        raise DataError(str(exc)) from exc
    except OSError as exc:
        raise DataError(f"cannot read {root}: {exc.strerror or exc}") from exc


# --- the data set ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Listing:
    paths: bytes  # relative paths end to end, as FolderImages keeps them
    offsets: np.ndarray  # int64 (N + 1,)
    labels: np.ndarray  # int64 (N,)


def _folder_dataset(
    name: str, root: Path, input_shape: tuple[int, int, int] | None, normalisation: _Stats | None
) -> Dataset[FolderImages]:
    """What `load_dataset("folder", ...)` returns; the arguments are checked there."""
    root = Path(os.path.abspath(root))  # the images stay readable when the working directory changes
    test_split = _test_split(root)
    classes = _class_names(root, "train")
    if not classes:
        raise DataError(f"{root / 'train'} holds no class folders (ImageFolder layout: train/<class>/<image>)")
    train = _listing(root, "train", classes, classes, MAX_IMAGES)
    test_classes = _class_names(root, test_split)
    unknown = sorted(set(test_classes) - set(classes))
    if unknown:
        more = f" and {len(unknown) - 20} more" if len(unknown) > 20 else ""
        raise DataError(f"{root / test_split} has class folders that train/ lacks: {', '.join(unknown[:20])}{more}")
    test = _listing(root, test_split, test_classes, classes, MAX_IMAGES - (len(train.offsets) - 1))
    shape = input_shape or _native_shape(os.path.join(root, _first_path(train)))
    plain = FolderImages(root, train.paths, train.offsets, shape, (0.0,) * shape[0], (1.0,) * shape[0])
    mean, std = _streamed_stats(plain) if normalisation is None else _given_stats(normalisation, shape[0])
    stats = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    counts = len(plain), len(test.labels), len(classes)
    log.info("image folder %s: %d training and %d test images, %d classes", root, *counts)
    return Dataset(
        name=name,
        x_train=plain._with_stats(*stats),
        y_train=torch.from_numpy(train.labels),
        x_test=FolderImages(root, test.paths, test.offsets, shape, *stats),
        y_test=torch.from_numpy(test.labels),
        num_classes=len(classes),
        input_shape=shape,
        mean=stats[0],
        std=stats[1],
        classes=tuple(classes),
    )


def _streamed_stats(images: FolderImages) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of un-normalised images, a bounded batch at a time."""
    channels, height, width = images.shape[1:]
    batch = max(1, _STATS_BATCH_BYTES // (4 * channels * height * width))
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, len(images), batch):
        batch_total, batch_squares = _channel_sums(images[start : start + batch])
        total += batch_total
        squares += batch_squares
    return _stats_from_sums(total, squares, len(images) * height * width)


def _first_path(listing: _Listing) -> str:
    return os.fsdecode(listing.paths[: int(listing.offsets[1])])


def _native_shape(file: str) -> tuple[int, int, int]:
    channels, height, width = _decode(file).shape
    return channels, height, width


# --- listing the folders ---------------------------------------------------------------------------


def _test_split(root: Path) -> str:
    """The test split's folder, "val" or "test"; refuses a root without train/ or with both."""
    found = {entry.name: entry.is_dir(follow_symlinks=False) for entry in _entries(root, "")}
    if not found.get("train"):
        raise DataError(f"{root} has no train/ folder (ImageFolder layout: train/<class>/<image>, val/ or test/ alike)")
    present = [split for split in ("val", "test") if split in found]
    if len(present) == 2:
        raise DataError(f"{root} holds both val/ and test/, so the test split is ambiguous: remove val/ or test/")
    if not present:
        raise DataError(f"{root} has no val/ or test/ folder for the test split")
    if not found[present[0]]:
        raise DataError(f"{root / present[0]} is not a folder")
    return present[0]


def _class_names(root: Path, split: str) -> list[str]:
    names: list[str] = []
    for entry in _entries(root, split):
        if not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False):
            names.append(entry.name)
            if len(names) > MAX_CLASSES:
                raise DataError(f"{root / split} holds more than {MAX_CLASSES} class folders")
    return sorted(names)


def _listing(root: Path, split: str, names: list[str], classes: list[str], limit: int) -> _Listing:
    """The images of class folders `names` of `split`, labelled by their position in `classes`."""
    label = {name: i for i, name in enumerate(classes)}
    blob = bytearray()
    offsets = array.array("q", [0])
    counts: list[int] = []
    for name in names:
        found = _images_under(root, f"{split}/{name}", limit - (len(offsets) - 1))
        if not found and split == "train":
            raise DataError(f"{root / split / name} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        for rel in found:
            blob += os.fsencode(rel)
            offsets.append(len(blob))
        counts.append(len(found))
    if len(offsets) == 1:
        raise DataError(f"{root / split} holds no images")
    labels = np.repeat(np.array([label[name] for name in names], dtype=np.int64), counts)
    return _Listing(bytes(blob), np.array(offsets, dtype=np.int64), labels)


def _images_under(root: Path, folder: str, limit: int) -> list[str]:
    """The image files under root/folder, recursively, as sorted relative paths."""
    found: list[str] = []
    pending = [folder]
    while pending:
        current = pending.pop()
        for entry in _entries(root, current):
            if entry.name.startswith("."):
                continue
            rel = f"{current}/{entry.name}"
            if entry.is_dir(follow_symlinks=False):
                pending.append(rel)
            elif entry.is_file(follow_symlinks=False) and os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
                found.append(rel)
                if len(found) > limit:
                    raise DataError(f"{root} holds more than {MAX_IMAGES} images")
    return sorted(found)


def _entries(root: Path, folder: str) -> Iterator[os.DirEntry[str]]:
    """The entries of root/folder, refusing symbolic links (hidden entries included)."""
    where = os.path.join(root, folder)
    try:
        with os.scandir(where) as listing:
            for entry in listing:
                if entry.is_symlink():
                    raise DataError(f"{entry.path}: an image folder may not hold symbolic links")
                yield entry
    except OSError as exc:
        raise DataError(f"cannot list {where}: {exc.strerror or exc}") from exc


# --- decoding ------------------------------------------------------------------------------------


def _decode(file: str) -> np.ndarray:
    """(C, H, W): uint8 for 8-bit pixels, float32 in [0, 1] for 16-bit grey; C is 1 (grey) or 3."""
    with _open_image_file(file) as stream:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)  # raised and refused, not printed
                with Image.open(stream, formats=_DECODERS) as image:
                    width, height = image.size
                    if width * height > MAX_IMAGE_PIXELS:
                        raise DataError(f"{file} is {width}x{height} pixels, over the limit of {MAX_IMAGE_PIXELS}")
                    return _pixels(file, image)
        except _DECODE_ERRORS as exc:
            raise DataError(f"cannot decode {file}: {exc}") from exc


def _pixels(file: str, image: Image.Image) -> np.ndarray:
    if image.mode in _GREY:
        return np.asarray(image.convert("L"))[None]
    if image.mode in _DEEP_GREY:
        deep = np.asarray(image).astype(np.float32)
        return (np.clip(deep, 0, 65535) / np.float32(65535))[None]
    if image.mode == "F":
        raise DataError(f"{file} has floating-point pixels (mode F), which are not supported")
    image.info.pop("transparency", None)  # alpha is dropped anyway; Pillow would warn about some forms
    return np.asarray(image.convert("RGB")).transpose(2, 0, 1)


def _open_image_file(file: str) -> BinaryIO:
    """The file opened for reading once stat says it is a regular file within MAX_IMAGE_BYTES."""
    try:
        before = os.lstat(file)
        if stat.S_ISLNK(before.st_mode):
            raise DataError(f"{file}: an image folder may not hold symbolic links")
        if not stat.S_ISREG(before.st_mode):
            raise DataError(f"{file} is not a regular file")
        if before.st_size > MAX_IMAGE_BYTES:
            raise DataError(f"{file} is {before.st_size} bytes, over the limit of {MAX_IMAGE_BYTES} bytes for an image")
        handle = os.open(file, _OPEN_FLAGS)  # no link followed, no wait on a FIFO swapped in
    except OSError as exc:
        raise DataError(f"cannot read {file}: {exc.strerror or exc}") from exc
    after = os.fstat(handle)
    if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino) or after.st_size > MAX_IMAGE_BYTES:
        os.close(handle)
        raise DataError(f"{file} changed while it was opened")
    return os.fdopen(handle, "rb")
