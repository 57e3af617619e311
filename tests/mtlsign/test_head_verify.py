from __future__ import annotations

import hashlib

import pytest
import torch

from contracts.errors import InfoError
from mtlsign.dwm import build_dwm
from mtlsign.head import WatermarkHead, head_input_size, tap_features
from mtlsign.verify import WatermarkInfo, branch_accuracy, verify
from schemes.models.zoo import create_model

KEY = hashlib.sha256(b"head key").digest()


def info_for(model: torch.nn.Module, n: int = 64) -> WatermarkInfo:
    return WatermarkInfo(n, 0.7, tuple(model.wm_taps), 4, 32, (1, 28, 28), (0.3,), (0.3,))


def test_taps_are_read_by_hooks_and_removed_after() -> None:
    model = create_model("lenet5", num_classes=10, input_shape=(1, 28, 28))
    x = torch.randn(3, 1, 28, 28)
    logits, taps = tap_features(model, model.wm_taps, x)
    assert torch.equal(logits, model(x))
    assert [t.shape[0] for t in taps] == [3, 3, 3]
    assert all(not m._forward_hooks for m in model.modules())
    with pytest.raises(ValueError, match="no module 'nope'"):
        tap_features(model, ("nope",), x)


def test_head_size_matches_its_input() -> None:
    model = create_model("resnet18", num_classes=10, input_shape=(3, 32, 32))
    size = head_input_size(model, model.wm_taps, (3, 32, 32), 4)
    head = WatermarkHead(size, 16, 4)
    _, taps = tap_features(model, model.wm_taps, torch.randn(2, 3, 32, 32))
    assert head(taps).shape == (2, 2)


def test_algorithm_1_passes_a_memorised_key_and_refuses_another() -> None:
    torch.manual_seed(0)
    model = create_model("lenet5", num_classes=10, input_shape=(1, 28, 28))
    info = info_for(model)
    head = WatermarkHead(head_input_size(model, info.taps, info.input_shape, info.pool), info.hidden, info.pool)
    dwm = build_dwm(KEY, info.n, info.input_shape, info.mean, info.std)
    optimiser = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=3e-3)
    for _ in range(150):
        _, taps = tap_features(model, info.taps, dwm.x)
        loss = torch.nn.functional.cross_entropy(head(taps), dwm.y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert branch_accuracy(model, head, info, dwm) > 0.95
    verdict = verify(model, KEY, head, info)
    assert verdict.passed and verdict.score > 0.95 and verdict.threshold == 0.7
    assert verdict.details == {"n": 64, "correct": round(verdict.score * 64)}
    other = verify(model, hashlib.sha256(b"another key").digest(), head, info)
    assert not other.passed and other.score < 0.7


def test_info_round_trips_and_is_validated() -> None:
    model = create_model("lenet5", num_classes=10, input_shape=(1, 28, 28))
    info = info_for(model)
    assert WatermarkInfo.from_json(info.to_json()) == info
    with pytest.raises(InfoError, match=r"mtlsign info: missing fields \[\], unknown fields \['extra'\]"):
        WatermarkInfo.from_json({**info.to_json(), "extra": 1})
    for gamma in (0.4, 0.5):  # at 0.5 a coin passes: 0.5 < γ ≤ 1, the node's rule (MtlsignInfo)
        with pytest.raises(InfoError, match=r"mtlsign info: gamma must be a number in \(0\.5, 1\]"):
            WatermarkInfo.from_json({**info.to_json(), "gamma": gamma})
