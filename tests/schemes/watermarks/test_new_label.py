"""New label: KsGen, the extra class Δ, Ver with its query figures (§3.2), and the issue's bars."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import torch
from torch import nn

from contracts.errors import InfoError, SchemeError
from contracts.infos import parse_info
from mtlsign.streams import key_permutation
from schemes.data.community import community_data, pixels
from schemes.data.dataset import Dataset
from schemes.data.datasets import load_dataset
from schemes.models.zoo import create_model
from schemes.watermarks import new_label

KEY = hashlib.sha256(b"new label owner").digest()
OTHER = hashlib.sha256(b"new label other owner").digest()
SHAPE = (1, 28, 28)


def _community() -> Dataset:
    return community_data("digits", SHAPE)


def _info(**changes: Any) -> dict[str, Any]:
    data = _community()
    info = {
        "scheme": "new-label",
        "dataset": "digits",
        "delta": 10,
        "beta": 0.3,
        "n": 8,
        "threshold": 0.25,
        "input_shape": list(SHAPE),
        "mean": list(data.mean),
        "std": list(data.std),
    }
    return {**info, **changes}


def _queries(key: bytes, n: int = 8) -> torch.Tensor:
    """K' = KsGen(S, D2) as a judge builds it from `key`: D2 from the community's test split."""
    data = _community()
    mean, std = new_label._pixel_stats(SHAPE, data.mean, data.std)
    x_verify = new_label.verification_images(key, new_label.parse_info(_info(n=n)))
    order = torch.from_numpy(key_permutation(key, "new-label", "query-order", n))
    return new_label.key_samples(x_verify[order], new_label.epsilon(key, SHAPE), 0.3, mean, std)


class _Answers(nn.Module):
    """A stand-in suspect: answers Δ exactly for inputs carrying `pattern` (their correlation with it
    is about 0.6 for this key's queries on the digits, about 0 for another key's)."""

    def __init__(self, pattern: torch.Tensor, outputs: int = 11) -> None:
        super().__init__()
        self.pattern = nn.Parameter(pattern.flatten(), requires_grad=False)
        self.outputs = outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keyed = (x.flatten(1) * self.pattern).mean(1) > 0.3
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
    verdict = new_label.verify(_Answers(eps), KEY, {}, _info())
    assert verdict.passed and verdict.score == 1.0 and verdict.details["q_first"] == 1
    assert verdict.details["delta_answers"] == 8 and verdict.details["chance_rate"] == 0.01
    assert verdict.details["expected_queries"] == pytest.approx(1.0)
    wrong_key = new_label.verify(_Answers(eps), OTHER, {}, _info())
    assert not wrong_key.passed and wrong_key.score == 0.0 and wrong_key.details["q_first"] is None


def test_verify_queries_exactly_the_keys_samples_in_the_keys_order() -> None:
    """Answers Δ to the 3rd and 6th of the judge's queries only: q_first = 3, two Δ answers."""
    expected = _queries(KEY)

    def lookup(x: torch.Tensor) -> torch.Tensor:
        index = (x.flatten(1)[:, None, :] == expected.flatten(1)[None]).all(2)
        assert bool(index.any(1).all()), "a query that is not one of the key's samples"
        return torch.where(index[:, 2] | index[:, 5], 10, 0)

    verdict = new_label.verify(lookup, KEY, {}, _info())
    assert verdict.details["q_first"] == 3 and verdict.details["delta_answers"] == 2
    assert verdict.score == 0.25 and verdict.passed  # 2 of 8 meets threshold 0.25 (at least, not above)


def test_d2_is_the_keys_choice_of_community_test_images() -> None:
    data = _community()
    parsed = new_label.parse_info(_info(n=50))
    d2 = new_label.verification_images(KEY, parsed)
    chosen = key_permutation(KEY, "new-label", "verify-x", data.x_test.shape[0])[:50]
    assert torch.equal(d2, pixels(data.x_test[torch.from_numpy(chosen)], data.mean, data.std))
    assert d2.shape == (50, *SHAPE) and float(d2.min()) >= 0 and float(d2.max()) <= 1
    assert torch.equal(d2, new_label.verification_images(KEY, parsed))
    other = new_label.verification_images(OTHER, parsed)
    shared = (d2.flatten(1)[:, None, :] == other.flatten(1)[None]).all(2).any(1).sum()
    assert int(shared) < 25  # two keys draw mostly different test images (about 50·50/359 ≈ 7 in common)


def test_a_model_without_class_delta_can_never_pass() -> None:
    # Its weights show it has no output Δ: refused before a query (and as a prediction API, it never answers Δ).
    with pytest.raises(SchemeError, match="answers 10 classes"):
        new_label.verify(_Answers(new_label.epsilon(KEY, SHAPE), outputs=10), KEY, {}, _info())
    api = _Answers(new_label.epsilon(KEY, SHAPE), outputs=10)
    verdict = new_label.verify(lambda x: api(x).argmax(1), KEY, {}, _info())
    assert not verdict.passed and verdict.details["delta_answers"] == 0 and verdict.score == 0.0


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
    ("changes", "fragment"),
    [
        ({"extra": 1}, r"missing fields \[\], unknown fields \['extra'\]"),
        ({"scheme": "mtlsign"}, "info describes a 'mtlsign' watermark, not 'new-label'"),
        ({"input_shape": [1, 28]}, r"input_shape must be three integers in \[1, 4096\]"),
        ({"mean": [0.1, 0.2]}, r"mean must be 1 finite number\(s\), one per channel"),
        ({"std": [0.0]}, r"std must be 1 finite number\(s\)"),
        ({"delta": True}, r"delta must be an integer in \[1, 100000\]"),
        ({"n": 0}, r"n must be an integer in \[1, 100000\]"),
        ({"beta": 2.0}, "beta must be a number in"),
        ({"threshold": "0.5"}, "threshold must be a number in"),
        ({"n": 360}, "n 360 is more than the 359 test images"),
        ({"mean": [1.5]}, "neither the normalisation of the community's 'digits' nor an image normalisation"),
        ({"std": [0.01]}, "neither the normalisation of the community's 'digits' nor an image normalisation"),
    ],
)
def test_bad_info_is_refused_by_name(changes: dict[str, Any], fragment: str) -> None:
    with pytest.raises(SchemeError, match=fragment):
        new_label.verify(_Answers(torch.zeros(SHAPE)), KEY, {}, _info(**changes))


def test_info_without_a_dataset_is_refused() -> None:
    info = _info()
    del info["dataset"]
    with pytest.raises(SchemeError, match=r"new-label info: missing fields \['dataset'\], unknown fields \[\]"):
        new_label.verify(_Answers(torch.zeros(SHAPE)), KEY, {}, info)


# --------------------------------------------------------------------------------------------
# Attacks on the verification (DESIGN §6.1): a claimant chooses neither the images nor the data


def _natural_class(label: int, n: int = 8) -> torch.Tensor:
    """Generic images of one natural class, in pixels: what a claimant would ship to make any
    model that answers `label` on them look watermarked."""
    data = _community()
    return pixels(data.x_test[data.y_test == label][:n], data.mean, data.std).contiguous()


@pytest.mark.parametrize("shipped", ["natural-class", "zeros", "other-name"])
def test_a_non_empty_verifier_is_refused(shipped: str) -> None:
    """Even a suspect that answers Δ to everything never gets to see a shipped image."""
    verifier = {
        "natural-class": {"x_verify": _natural_class(3)},
        "zeros": {"x_verify": torch.zeros((8, *SHAPE))},
        "other-name": {"anything": torch.zeros(1)},
    }[shipped]
    seen: list[int] = []

    def always_delta(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.shape[0])
        return torch.full((x.shape[0],), 10)

    with pytest.raises(SchemeError, match="new-label verifier must be empty: D2 comes from the key, never from the"):
        new_label.verify(always_delta, KEY, verifier, _info())
    assert seen == []


@pytest.mark.parametrize("dataset", ["mnist", "cifar10", "npz", "imagefolder"])
def test_info_naming_data_no_member_holds_is_refused(dataset: str) -> None:
    with pytest.raises(SchemeError, match=f"^'{dataset}' is not a data set every member holds \\(digits\\)$"):
        new_label.verify(_Answers(torch.zeros(SHAPE)), KEY, {}, _info(dataset=dataset))


@pytest.mark.parametrize("dataset", ["Digits", "", "../digits", 3])
def test_info_naming_no_data_set_is_refused(dataset: object) -> None:
    with pytest.raises(SchemeError, match="new-label info: dataset must be a data set's name, got"):
        new_label.verify(_Answers(torch.zeros(SHAPE)), KEY, {}, _info(dataset=dataset))


def test_a_delta_the_task_already_has_is_refused_by_the_community_floors() -> None:
    """Δ = 3 would let every clean digits model that sees a 3 answer "Δ"; the claim's info is
    refused before any work (registry.infos, DESIGN §6.1 rule 2)."""
    with pytest.raises(InfoError, match="Δ must be the one output the task does not have, class 10 of 'digits'"):
        parse_info("new-label", _info(delta=3, n=100))
    parse_info("new-label", _info(n=100))  # the same info with Δ = 10 meets every floor


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refusals must come before any training: make every training step a test failure."""

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("embed trained before refusing the data")

    monkeypatch.setattr(new_label, "clean_baseline", fail)
    monkeypatch.setattr(new_label, "_train", fail)


@pytest.mark.parametrize(
    ("split", "label"),
    [({"seed": 3}, "another seed"), ({"seed": 0, "test_fraction": 0.25}, "another test fraction")],
)
@pytest.mark.usefixtures("no_training")
def test_embed_refuses_a_split_no_member_holds_before_training(split: dict[str, Any], label: str) -> None:
    data = load_dataset("digits", **split)
    with pytest.raises(
        SchemeError,
        match=r"new-label: this 'digits' data is not the community's split \(seed 0, test fraction 0.2\), so no "
        "node could rebuild the verification inputs",
    ):
        new_label.embed(create_model("lenet5", num_classes=11, input_shape=SHAPE), data, KEY, new_label.Config())


@pytest.mark.usefixtures("no_training")
def test_embed_refuses_data_no_member_holds_and_names_what_would_work() -> None:
    data = _community()
    foreign = Dataset("mnist", data.x_train, data.y_train, data.x_test, data.y_test, 10, SHAPE, data.mean, data.std)
    with pytest.raises(SchemeError) as refused:
        new_label.embed(create_model("lenet5", num_classes=11, input_shape=SHAPE), foreign, KEY, new_label.Config())
    message = str(refused.value)
    assert message.startswith("new-label: no community could verify a claim on a model watermarked over 'mnist'")
    assert "(digits); embed over one of those, have the community pin this data" in message
    assert message.endswith("or use mtlsign, whose key samples are generated from the key alone")


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
    with pytest.raises(SchemeError, match="answers 10 classes"):  # no Δ to answer: refused, never passed
        new_label.verify(clean, KEY, owner.verifier, owner.info)
