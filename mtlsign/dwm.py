"""D_WM^key of MTLSign §3.2: {(π_key[i] mapped to an input, l_key[i])}, as model-ready tensors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from mtlsign.pikey import KeySequence, key_sequence
from mtlsign.qr import qr_modules, render


@dataclass(frozen=True)
class WatermarkSet:
    """Inputs x (N, C, H, W), normalised as the model expects, labels y (N,), and where they came from."""

    x: torch.Tensor
    y: torch.Tensor
    sequence: KeySequence


def build_dwm(
    key: bytes,
    n: int,
    input_shape: tuple[int, int, int],
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device | str | None = None,
) -> WatermarkSet:
    """Rebuild D_WM from the key alone, bit for bit on any machine (the pixels are exact 0/1 before
    the normalisation, which is one fixed affine map per channel)."""
    channels = input_shape[0]
    if len(mean) != channels or len(std) != channels or any(s <= 0 for s in std):
        raise ValueError(f"mean and std need {channels} values each, std > 0")
    built = _build(key, n, tuple(input_shape), tuple(float(m) for m in mean), tuple(float(s) for s in std))
    return WatermarkSet(built.x.to(device), built.y.to(device), built.sequence)


@lru_cache(maxsize=4)
def _build(
    key: bytes, n: int, input_shape: tuple[int, int, int], mean: tuple[float, ...], std: tuple[float, ...]
) -> WatermarkSet:
    """On the CPU, kept for the next call: a judge verifies one key on the suspect and on every
    reference model, and the inputs are read, never written."""
    channels, height, width = input_shape
    sequence = key_sequence(key, n)
    images = render(qr_modules(sequence.integers, sequence.m), channels, height, width)
    shift = np.asarray(mean, dtype=np.float32)[None, :, None, None]
    scale = np.asarray(std, dtype=np.float32)[None, :, None, None]
    x = torch.from_numpy((images - shift) / scale)
    y = torch.from_numpy(sequence.labels)
    return WatermarkSet(x, y, sequence)
