"""A data set ready for a model (`Dataset`), and the conversions every loader shares: fitting images
to a shape, per-channel statistics, normalisation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from numbers import Real
from typing import Any, Generic, Protocol, TypeAlias

import numpy as np
import torch
import torch.nn.functional as F
from typing_extensions import TypeVar  # a default for a type variable (PEP 696) before Python 3.13

from contracts.encoding import is_int
from contracts.errors import DataError

__all__ = ["Dataset", "Images", "ImagesT", "LazyImages"]


class LazyImages(Protocol):
    """Images decoded on indexing (an image folder's `FolderImages`): a length and an index."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: Any) -> torch.Tensor: ...


#: What a `Dataset` holds as images: a tensor, or for image folders a lazy view that decodes on indexing.
Images: TypeAlias = "torch.Tensor | LazyImages"
#: The images of a `Dataset`; a bare `Dataset` holds tensors, as every format but `folder` returns.
ImagesT = TypeVar("ImagesT", bound="torch.Tensor | LazyImages", default=torch.Tensor)


_CHUNK = 4096  # images converted at a time: bounds the float copies made while resizing
_MIN_STD = 1e-6


@dataclass(frozen=True, eq=False)
class Dataset(Generic[ImagesT]):
    """A train/test pair ready for a model: x float32 (N, C, H, W) normalised, y int64 (N,).

    x is a tensor (`Dataset`, `Dataset[torch.Tensor]`), or a `FolderImages` for image folders
    (`Dataset[FolderImages]`); `classes` names the classes where the format has names (image
    folders), else it is empty."""

    name: str
    x_train: ImagesT = field(repr=False)
    y_train: torch.Tensor = field(repr=False)
    x_test: ImagesT = field(repr=False)
    y_test: torch.Tensor = field(repr=False)
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...] = ()


#: A per-channel (mean, std) in [0, 1]-pixel units.
_Stats: TypeAlias = tuple[tuple[float, ...], tuple[float, ...]]


def _check_shape(shape: object) -> tuple[int, int, int]:
    dims = tuple(shape) if isinstance(shape, tuple | list) else ()
    if len(dims) != 3 or not all(is_int(d, 1) for d in dims):
        raise DataError(f"input_shape must be three positive integers (C, H, W), got {shape!r}")
    if dims[0] not in (1, 3):
        raise DataError(f"input_shape must have 1 or 3 channels, got {dims[0]}")
    return dims[0], dims[1], dims[2]


def _fit(images: np.ndarray, shape: tuple[int, int, int]) -> torch.Tensor:
    """Images (N, C, H, W) as stored -> float32 in [0, 1], with the requested channels and size."""
    out = torch.empty((len(images), *shape), dtype=torch.float32)
    for start in range(0, len(images), _CHUNK):
        out[start : start + _CHUNK] = _fit_chunk(images[start : start + _CHUNK], shape)
    return out


def _fit_chunk(chunk: np.ndarray, shape: tuple[int, int, int]) -> torch.Tensor:
    # A fresh, writable copy: sources may be read-only views of file bytes.
    x = torch.from_numpy(np.array(chunk, dtype=np.float32, order="C", copy=True))
    if chunk.dtype == np.uint8:
        x /= 255.0
    if x.shape[1] == 3 and shape[0] == 1:
        luma = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32)  # ITU-R BT.601
        x = (x * luma.view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
    if tuple(x.shape[2:]) != shape[1:]:
        x = F.interpolate(x, size=shape[1:], mode="bilinear", align_corners=False)
    if x.shape[1] == 1 and shape[0] == 3:
        x = x.expand(-1, 3, -1, -1)
    return x


def _channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (population) std, accumulated in float64 chunk by chunk."""
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, len(x), _CHUNK):
        chunk_total, chunk_squares = _channel_sums(x[start : start + _CHUNK])
        total += chunk_total
        squares += chunk_squares
    return _stats_from_sums(total, squares, x.shape[0] * x.shape[2] * x.shape[3])


def _channel_sums(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel sum and sum of squares of images (N, C, H, W), in float64."""
    wide = x.double()
    return wide.sum(dim=(0, 2, 3)), wide.square().sum(dim=(0, 2, 3))


def _stats_from_sums(total: torch.Tensor, squares: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (population) std from `_channel_sums` over `count` pixels per channel."""
    count = max(count, 1)
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt()
    return mean, torch.where(std < _MIN_STD, torch.ones_like(std), std)


def _check_normalisation(value: object) -> _Stats:
    """A given (mean, std): two equally long sequences of finite numbers, every std > 0."""
    parts = tuple(value) if isinstance(value, tuple | list) else ()
    rows = [tuple(p) if isinstance(p, Sequence) and not isinstance(p, str | bytes) else () for p in parts]
    try:
        values = [float(v) for row in rows for v in row if isinstance(v, Real) and not isinstance(v, bool)]
    except OverflowError:  # an int too large for a float
        values = []
    shaped = len(rows) == 2 and 0 < len(rows[0]) == len(rows[1]) and len(values) == 2 * len(rows[0])
    if not shaped or not all(math.isfinite(v) for v in values) or not all(v > 0 for v in values[len(rows[0]) :]):
        raise DataError(f"normalisation must be (mean, std): one finite value per channel each, std > 0; got {value!r}")
    return tuple(values[: len(rows[0])]), tuple(values[len(rows[0]) :])


def _given_stats(given: _Stats, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A checked (mean, std) as float64 tensors, refused unless it has one value per channel."""
    if len(given[0]) != channels:
        raise DataError(f"normalisation gives {len(given[0])} values per statistic for images of {channels} channels")
    return torch.tensor(given[0], dtype=torch.float64), torch.tensor(given[1], dtype=torch.float64)


def _normalise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    shift = mean.float().view(1, -1, 1, 1)
    scale = std.float().view(1, -1, 1, 1)
    return x.sub_(shift).div_(scale)


# --- files --------------------------------------------------------------------------------------
