"""Algorithm 1 of MTLSign: rebuild D_WM from the key, run the watermark branch, compare with γ."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from contracts.infos import MtlsignInfo
from mtlsign.dwm import WatermarkSet, build_dwm
from mtlsign.head import WatermarkHead, tap_features

#: §4.1: "We selected γ = 0.7" for N = 600.
DEFAULT_GAMMA = 0.7


@dataclass(frozen=True)
class WatermarkInfo:
    """What a verifier needs besides the key and cWM's weights (published as `info`); its schema is
    `contracts.infos.MtlsignInfo`, the one the node checks a claim's info with."""

    n: int
    gamma: float
    taps: tuple[str, ...]
    pool: int
    hidden: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    scheme: str = "mtlsign"

    def to_json(self) -> dict[str, Any]:
        """A JSON object: tuples become lists, so the dict equals its own JSON round trip."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, obj: object) -> WatermarkInfo:
        """`obj` through MTLSign's one schema (`MtlsignInfo`: fields, types, 2 ≤ n ≤ 100000,
        0.5 < γ ≤ 1, ...); InfoError names the first bad field."""
        typed = MtlsignInfo.from_json(obj)
        return cls(typed.n, typed.gamma, typed.taps, typed.pool, typed.hidden, typed.input_shape, typed.mean, typed.std)


@dataclass(frozen=True)
class Verdict:
    """A statistical verdict (STYLE §7): never a bare bool."""

    passed: bool
    score: float
    threshold: float
    details: dict[str, Any] = field(default_factory=dict)


def branch_logits(model: nn.Module, head: WatermarkHead, taps: tuple[str, ...], x: torch.Tensor) -> torch.Tensor:
    _, features = tap_features(model, taps, x)
    logits: torch.Tensor = head(features)
    return logits


@torch.no_grad()
def branch_accuracy(
    model: nn.Module, head: WatermarkHead, info: WatermarkInfo, dwm: WatermarkSet, batch: int = 256
) -> float:
    was = model.training, head.training
    model.eval()
    head.eval()
    correct = 0
    for start in range(0, dwm.x.shape[0], batch):
        logits = branch_logits(model, head, info.taps, dwm.x[start : start + batch])
        correct += int((logits.argmax(1) == dwm.y[start : start + batch]).sum())
    model.train(was[0])
    head.train(was[1])
    return correct / dwm.x.shape[0]


def verify(
    model: nn.Module, key: bytes, head: WatermarkHead, info: WatermarkInfo, gamma: float | None = None
) -> Verdict:
    """Algorithm 1: build f_WM from M and cWM; generate D_WM from key; pass iff ≥ γ·N correct."""
    threshold = info.gamma if gamma is None else gamma
    device = next(model.parameters()).device
    dwm = build_dwm(key, info.n, info.input_shape, info.mean, info.std, device=device)
    score = branch_accuracy(model, head.to(device), info, dwm)
    correct = round(score * info.n)
    return Verdict(score >= threshold, score, threshold, {"n": info.n, "correct": correct})
