"""New label: KsGen, the extra class Δ, Ver with its query figures (§3.2), and the issue's bars."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import torch
from torch import nn

from schemes import new_label
from schemes.base import SchemeError
from schemes.data import load_dataset
from schemes.zoo import create_model

KEY = hashlib.sha256(b"new label owner").digest()
OTHER = hashlib.sha256(b"new label other owner").digest()
SHAPE = (1, 28, 28)


def _info(**changes: Any) -> dict[str, Any]:
    info = {
        "scheme": "new-label",
        "delta": 10,
        "beta": 0.3,
        "n": 8,
        "threshold": 0.25,
        "input_shape": list(SHAPE),
        "mean": [0.2],
        "std": [0.3],
    }
    return {**info, **changes}


def _x_verify(n: int = 8) -> dict[str, torch.Tensor]:
    return {"x_verify": torch.rand((n, *SHAPE), generator=torch.Generator().manual_seed(0))}


class _Answers(nn.Module):
    """A stand-in suspect: answers Δ exactly for inputs carrying `pattern` (its correlation)."""

    def __init__(self, pattern: torch.Tensor, outputs: int = 11) -> None:
        super().__init__()
        self.pattern = nn.Parameter(pattern.flatten(), requires_grad=False)
        self.outputs = outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keyed = (x.flatten(1) * self.pattern).mean(1) > 0.5
        logits = torch.zeros(x.shape[0], self.outputs)
        logits[:, 0] = 1.0
        if self.outputs > 10:
            logits[keyed, 10] = 2.0
        return logits


def test_ksgen_adds_beta_epsilon_in_pixels_clips_then_normalises() -> None:
    x = torch.tensor([[[[0.0, 0.5, 0.95]]]])
    eps = torch.tensor([[[-1.0, 1.0, 1.0]]])
    mean, std = torch.tensor([0.5]).view(1, 1, 1), torch.tensor([0.25]).view(1, 1, 1)
    out = new_label.key_samples(x, eps, 0.1, mean, std)
    assert torch.allclose(out, (torch.tensor([[[[0.0, 0.6, 1.0]]]]) - 0.5) / 0.25)


def test_epsilon_is_one_key_derived_gaussian_pattern() -> None:
    eps = new_label.epsilon(KEY, SHAPE)
    assert eps.shape == SHAPE and torch.equal(eps, new_label.epsilon(KEY, SHAPE))
    assert not torch.equal(eps, new_label.epsilon(OTHER, SHAPE))
    assert abs(float(eps.mean())) < 0.15 and 0.85 < float(eps.std()) < 1.15


def test_verify_counts_delta_answers_in_the_keys_order() -> None:
    eps = new_label.epsilon(KEY, SHAPE)
    verdict = new_label.verify(_Answers(eps), KEY, _x_verify(), _info())
    assert verdict.passed and verdict.score == 1.0 and verdict.details["q_first"] == 1
    assert verdict.details["expected_queries"] == pytest.approx(1.0)
    wrong_key = new_label.verify(_Answers(eps), OTHER, _x_verify(), _info())
    assert not wrong_key.passed and wrong_key.score == 0.0 and wrong_key.details["q_first"] is None


def test_a_model_without_class_delta_can_never_pass() -> None:
    verdict = new_label.verify(_Answers(new_label.epsilon(KEY, SHAPE), outputs=10), KEY, _x_verify(), _info())
    assert not verdict.passed and verdict.details["delta_answers"] == 0


def test_query_figures_follow_section_3_2() -> None:
    answers = torch.tensor([False, False, True, True, False, True, False, False, True, False])
    figures = new_label._query_figures(answers)
    p, n = 0.4, 10
    assert figures["q_first"] == 3 and figures["delta_answers"] == 4
    assert figures["expected_queries"] == pytest.approx((1 - (n * p + 1) * (1 - p) ** n) / p)
    expected = sum((i + 1) * (1 - p) ** i * p for i in range(n))  # the paper's sum, term by term
    assert figures["expected_queries"] == pytest.approx(expected)
    assert figures["query_bound"] == pytest.approx(2.5) and figures["expected_queries"] <= 2.5
    assert figures["acc_at_q"]["2"] == pytest.approx(1 - 0.6**2)


@pytest.mark.parametrize(
    ("info", "fragment"),
    [
        (_info(extra=1), "must hold exactly"),
        (_info(scheme="mtlsign"), "must hold exactly"),
        (_info(input_shape=[1, 28]), "input_shape must be three"),
        (_info(mean=[0.1, 0.2]), "mean must hold one number per channel"),
        (_info(std=[0.0]), "std must be positive"),
        (_info(delta=True), "delta must be a class index"),
        (_info(n=0), "n must be an integer"),
        (_info(beta=2.0), "beta must be in"),
        (_info(threshold="0.5"), "threshold must be in"),
    ],
)
def test_bad_info_is_refused_by_name(info: dict[str, Any], fragment: str) -> None:
    with pytest.raises(SchemeError, match=fragment):
        new_label.verify(_Answers(torch.zeros(SHAPE)), KEY, _x_verify(), info)


@pytest.mark.parametrize(
    ("verifier", "fragment"),
    [
        ({}, "exactly x_verify"),
        ({**_x_verify(), "other": torch.zeros(1)}, "exactly x_verify"),
        (_x_verify(7), r"shaped \(8, 1, 28, 28\)"),
        ({"x_verify": _x_verify()["x_verify"] * 2}, r"pixels in \[0, 1\]"),
        ({"x_verify": _x_verify()["x_verify"].double()}, "float32"),
    ],
)
def test_a_malformed_verifier_is_refused(verifier: dict[str, torch.Tensor], fragment: str) -> None:
    with pytest.raises(SchemeError, match=fragment):
        new_label.verify(_Answers(torch.zeros(SHAPE)), KEY, verifier, _info())


def test_config_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="beta"):
        new_label.Config(beta=0.0)
    with pytest.raises(ValueError, match="threshold"):
        new_label.Config(threshold=1.5)


@pytest.mark.bars
@pytest.mark.timeout(1800)
def test_default_embedding_meets_the_issue_bars() -> None:
    """Digits, LeNet-5, default Config: fidelity within 1.5 points, p̂ ≥ 0.95, and another
    owner's new-label model answers Δ to at most 1 % of this key's samples (all test images)."""
    data = load_dataset("digits", seed=0)
    models = {}
    for name, key in (("owner", KEY), ("other", OTHER)):
        torch.manual_seed(0)
        model = create_model("lenet5", num_classes=11, input_shape=data.input_shape)
        models[name] = new_label.embed(model, data, key, new_label.Config())
    report = models["owner"].report
    assert report["accuracy"] >= report["clean_accuracy"] - 0.015
    assert report["wm_score"] >= 0.95 and report["wm_score_all_test"] >= 0.95
    assert report["delta_rate_on_clean_test"] <= 0.01
    mean, std = new_label._pixel_stats(SHAPE, data.mean, data.std)
    queries = new_label.key_samples(
        new_label._pixels(data.x_test, mean, std), new_label.epsilon(KEY, SHAPE), 0.3, mean, std
    )
    other = models["other"].model
    assert float((other(queries).argmax(1) == 10).float().mean()) <= 0.01
    owner = models["owner"]
    assert not new_label.verify(other, KEY, owner.verifier, owner.info).passed
    torch.manual_seed(1)
    clean = create_model("lenet5", num_classes=10, input_shape=data.input_shape)
    assert not new_label.verify(clean, KEY, owner.verifier, owner.info).passed
