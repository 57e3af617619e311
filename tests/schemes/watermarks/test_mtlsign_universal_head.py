"""The universal-head attack on MTLSign (§3.2 unambiguity, Algorithm 1), on LeNet-5 and digits.

An adversary who wants to "own" every LeNet-5 without co-training any of them fits ONE cWM to the
frozen tap outputs of several independently trained LeNet-5s, for the D_WM of a key of its own,
and then runs Algorithm 1 with that head on models it never saw. Unambiguity needs every such
reading to stay below γ: the labels l_key are random bits, and a backbone that was never trained
on D_WM^key gives a head nothing that carries them from one model to the next.

pool 4 is the default head; pool 8 (block1's 14×14 maps at 8×8, block2's 5×5 maps spread to 8×8)
is the larger head an attacker would try next; the community caps pool at 4 for fear of it
(registry/infos.py, MtlsignFloors.max_pool). Both stay below γ here, so both are asserted. What the
head does on a backbone it was not fitted to is answer one label for nearly every sample, so the
score there is about the share of that label in l_key: ≈ 0.5, and far from γ at the floor N = 600.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from mtlsign.dwm import build_dwm
from mtlsign.head import WatermarkHead, pooled, tap_features
from mtlsign.verify import DEFAULT_GAMMA, WatermarkInfo, verify
from schemes.data.dataset import Dataset
from schemes.data.datasets import load_dataset
from schemes.models.zoo import create_model
from schemes.training.loops import batches, train_classifier
from schemes.watermarks import mtlsign
from schemes.watermarks.base import Watermarked, make_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # about a minute on two idle cores

ATTACKER_KEY = hashlib.sha256(b"universal head: the attacker's key").digest()
OWNER_KEY = hashlib.sha256(b"universal head: an honest owner's key").digest()

N = 128  # the attacker's D_WM; at N = 128 a chance reading has σ ≈ 0.044, so γ = 0.7 is 4.5σ out
HIDDEN = 256
FITTED_SEEDS = (0, 1, 2, 3)  # the LeNet-5s the attacker fits its head to
UNSEEN_SEEDS = (10, 11, 12, 13)  # LeNet-5s trained the same way that the attacker never sees
OWNER_SEED = 20
CLEAN_EPOCHS, CLEAN_LR, BATCH = 8, 1e-3, 64
#: The scheme's quick embedding, with test_mtlsign_embed's shorter joint phase: only the verdict
#: under the owner's key has to hold, not the robustness the full budget buys.
OWNER_OPTIONS = {**mtlsign.SCHEME.quick, "embed_epochs": 25}
HEAD_EPOCHS, HEAD_LR = 400, 1e-3


@dataclass(frozen=True)
class Zoo:
    data: Dataset
    fitted: list[nn.Module]
    unseen: list[nn.Module]
    watermarked: Watermarked  # MTLSign under OWNER_KEY, a key the attacker does not hold


def _lenet(data: Dataset, seed: int) -> nn.Module:
    torch.manual_seed(seed)  # the initial weights, in the one place a model is created (as workflow.py)
    return create_model("lenet5", num_classes=data.num_classes, input_shape=data.input_shape)


def _clean(data: Dataset, seed: int) -> nn.Module:
    return train_classifier(
        _lenet(data, seed), data.x_train, data.y_train, epochs=CLEAN_EPOCHS, lr=CLEAN_LR, batch_size=BATCH,
        generator=torch.Generator().manual_seed(seed),
    )  # fmt: skip


@pytest.fixture(scope="module")
def zoo() -> Zoo:
    data = load_dataset("digits")
    config = make_config(mtlsign.SCHEME, OWNER_OPTIONS)
    watermarked = mtlsign.embed(_lenet(data, OWNER_SEED), data, OWNER_KEY, config)
    return Zoo(data, [_clean(data, s) for s in FITTED_SEEDS], [_clean(data, s) for s in UNSEEN_SEEDS], watermarked)


def _init_head(head: WatermarkHead, generator: torch.Generator) -> None:
    """nn.Linear's default initialisation, drawn from `generator` instead of the global RNG."""
    for layer in head.net:
        if isinstance(layer, nn.Linear):
            nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
            bound = 1 / math.sqrt(layer.in_features)
            nn.init.uniform_(layer.bias, -bound, bound, generator=generator)


def _fit_universal_head(models: list[nn.Module], data: Dataset, pool: int) -> tuple[WatermarkHead, WatermarkInfo]:
    """One cWM for ATTACKER_KEY's D_WM over the frozen taps of every model in `models`."""
    taps: tuple[str, ...] = tuple(models[0].wm_taps)  # type: ignore[arg-type]
    info = WatermarkInfo(N, DEFAULT_GAMMA, taps, pool, HIDDEN, data.input_shape, tuple(data.mean), tuple(data.std))
    dwm = build_dwm(ATTACKER_KEY, N, data.input_shape, data.mean, data.std)
    with torch.no_grad():  # the backbones are frozen: pool their taps once (WatermarkHead.forward pools the same way)
        features = torch.cat(
            [torch.cat([pooled(t, pool) for t in tap_features(m.eval(), taps, dwm.x)[1]], dim=1) for m in models]
        )
    labels = dwm.y.repeat(len(models))
    generator = torch.Generator().manual_seed(pool)
    head = WatermarkHead(features.shape[1], HIDDEN, pool)
    _init_head(head, generator)
    optimiser = torch.optim.Adam(head.parameters(), lr=HEAD_LR)
    head.train()
    for _ in range(HEAD_EPOCHS):
        for index in batches(labels.shape[0], BATCH, generator):
            loss = nn.functional.cross_entropy(head.net(features[index]), labels[index])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
    return head.eval(), info


def test_the_other_key_model_carries_its_owners_watermark(zoo: Zoo) -> None:
    """Premise of case (b): the model is really MTLSign-watermarked (under OWNER_KEY)."""
    verdict = mtlsign.verify(zoo.watermarked.model, OWNER_KEY, zoo.watermarked.verifier, zoo.watermarked.info)
    assert verdict.passed, verdict


@pytest.mark.parametrize("pool", [4, 8])
def test_a_universal_head_reads_no_lenet5_it_was_not_fitted_to(
    zoo: Zoo, pool: int, record_property: Callable[[str, object], None]
) -> None:
    """(a) unseen clean LeNet-5s and (b) a LeNet-5 watermarked under another key all score < γ
    under Algorithm 1 with the attacker's key and head; the head does fit its own models."""
    head, info = _fit_universal_head(zoo.fitted, zoo.data, pool)
    fitted = [verify(m, ATTACKER_KEY, head, info) for m in zoo.fitted]
    unseen = [verify(m, ATTACKER_KEY, head, info) for m in zoo.unseen]
    other_key = verify(zoo.watermarked.model, ATTACKER_KEY, head, info)
    scores = {
        "fitted": [v.score for v in fitted],
        "unseen": [v.score for v in unseen],
        "other_key": other_key.score,
    }
    for name, value in scores.items():
        record_property(f"pool{pool}_{name}", value)
    print(f"pool {pool}: " + " | ".join(f"{k} {v}" for k, v in scores.items()))

    # The attack was carried out: on the models it was fitted to, the head reads the key's labels,
    # on average past γ and far better than on any model it never saw.
    mean_fitted = sum(scores["fitted"]) / len(fitted)
    assert mean_fitted >= DEFAULT_GAMMA + 0.05, scores
    assert mean_fitted >= max([*scores["unseen"], other_key.score]) + 0.2, scores
    # Unambiguity: it reads none of the others.
    for verdict in [*unseen, other_key]:
        assert not verdict.passed and verdict.score < DEFAULT_GAMMA, scores
