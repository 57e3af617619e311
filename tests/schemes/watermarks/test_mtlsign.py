"""The MTLSign scheme: what its verification refuses, and a small MTLSign embedding on the digits
data (slow); the full-size figures come from benchmarks/mtlsign_robustness.py."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest
import torch

from contracts.errors import SchemeError
from mtlsign.bound import PAPER_GUESS_ACCURACY_MAX
from mtlsign.head import WatermarkHead, head_input_size
from mtlsign.verify import WatermarkInfo
from schemes.data.datasets import load_dataset
from schemes.models.zoo import create_model
from schemes.training.attacks import prune_global_l1
from schemes.watermarks.mtlsign import Config, embed, verify

KEY = hashlib.sha256(b"embed test key").digest()
SHAPE = (1, 28, 28)


def _random_head(model: torch.nn.Module, info: WatermarkInfo) -> dict[str, torch.Tensor]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        head = WatermarkHead(head_input_size(model, info.taps, info.input_shape, info.pool), info.hidden, info.pool)
    return dict(head.state_dict())


@pytest.mark.parametrize(
    "taps",
    [("block3.1",), ("block1", "block2"), ("block3", "block2", "block1"), ("block1", "block2", "block3", "block4")],
)
def test_info_taps_other_than_the_architectures_are_refused(taps: tuple[str, ...]) -> None:
    """cWM reads the early layers the zoo names for the architecture (§3.2); a claimant pointing it at
    other layers (deep ones a head can read any model's class from) is refused before any query."""
    model = create_model("lenet5", num_classes=10, input_shape=SHAPE)
    info = WatermarkInfo(600, 0.7, taps, 4, 64, SHAPE, (0.3,), (0.32,))
    with pytest.raises(SchemeError, match=r"mtlsign info: taps \[.*\] are not this architecture's \['block1', "):
        verify(model, KEY, _random_head(model, info), info.to_json())


def test_a_head_that_ignores_the_key_fails_and_the_verdict_states_its_chance_rate() -> None:
    model = create_model("lenet5", num_classes=10, input_shape=SHAPE)
    info = WatermarkInfo(600, 0.7, tuple(model.wm_taps), 4, 64, SHAPE, (0.3,), (0.32,))  # type: ignore[arg-type]
    verdict = verify(model, KEY, _random_head(model, info), info.to_json())
    assert not verdict.passed and verdict.threshold == 0.7 and verdict.score < 0.7
    assert verdict.details["n"] == 600 and verdict.details["chance_rate"] == PAPER_GUESS_ACCURACY_MAX == 0.575


@pytest.mark.slow
def test_embed_learns_the_watermark_and_keeps_the_task() -> None:
    torch.manual_seed(0)
    data = load_dataset("digits")
    model = create_model("lenet5", num_classes=10, input_shape=data.input_shape)
    # 25 epochs left this key mid-way on 2 threads (accuracy 0.891, wm 0.633: the rounding of the
    # CPU's kernels decides the path); at 30, 4 seeds on 1 and 2 threads all settled (>= 0.953, >= 0.96).
    config = replace(Config(), n=128, clean_epochs=8, embed_epochs=30, da_attacks=1, da_epochs=3)
    wm = embed(model, data, KEY, config)
    report = wm.report
    assert set(report) >= {"clean_accuracy", "accuracy", "wm_score", "threshold", "seconds", "mean_parameter_deviation"}
    assert report["clean_accuracy"] > 0.9
    assert report["accuracy"] > report["clean_accuracy"] - 0.03
    assert report["wm_score"] > 0.9
    assert verify(wm.model, KEY, wm.verifier, wm.info).passed
    assert verify(prune_global_l1(wm.model, 0.3), KEY, wm.verifier, wm.info).passed
    assert not verify(wm.model, hashlib.sha256(b"wrong").digest(), wm.verifier, wm.info).passed


@pytest.mark.slow
def test_r_da_raises_the_watermark_accuracy_after_fine_tuning() -> None:
    """Issue: R_DA (λ2 > 0) against λ2 = 0, same seed and budget, then the thief's fine-tuning."""
    from schemes.training.attacks import fine_tune

    data = load_dataset("digits")
    gen = torch.Generator().manual_seed(99)
    subset = torch.randperm(data.x_train.shape[0], generator=gen)[: data.x_train.shape[0] // 10]
    scores = {}
    for lambda_da in (0.0, 1.0):
        torch.manual_seed(0)
        model = create_model("lenet5", num_classes=10, input_shape=data.input_shape)
        config = replace(Config(), n=200, clean_epochs=10, embed_epochs=40, lambda_da=lambda_da, da_every=4)
        wm = embed(model, data, KEY, config)
        assert wm.report["wm_score"] > 0.9
        stolen = fine_tune(
            wm.model, data.x_train[subset], data.y_train[subset], epochs=20, lr=1e-3, batch_size=64, seed=99
        )
        scores[lambda_da] = verify(stolen, KEY, wm.verifier, wm.info).score
    # R_DA at least halves the watermark's error after the thief's tuning, and passes Algorithm 1.
    assert 1 - scores[1.0] <= 0.5 * (1 - scores[0.0]), scores
    assert scores[1.0] >= 0.8, scores
