"""The function-coupled scheme: Eq. 4–8 mechanics, key-derived triggers, strict info, and one full
embedding on the digits data against the issue's bars (the `bars` marker)."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from contracts.errors import DataError, InfoError, SchemeError
from contracts.infos import parse_info
from schemes.data.community import community_data
from schemes.data.dataset import Dataset
from schemes.data.datasets import load_dataset
from schemes.models.zoo import create_model
from schemes.training.loops import Labelled, train_classifier
from schemes.watermarks import function_coupled as fc
from schemes.watermarks.base import get_scheme, make_config

KEY = hashlib.sha256(b"function-coupled test key").digest()
OTHER_KEY = hashlib.sha256(b"function-coupled other key").digest()
SHAPE = (1, 28, 28)
PINNED_TRIPLES = [(4, 5, 7), (7, 2, 3), (1, 0, 2), (8, 1, 6), (7, 8, 1)]
PINNED_PAIRS = ([1290, 324, 382], [1078, 586, 576])


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits", seed=0)


def _lenet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create_model("lenet5", num_classes=10, input_shape=SHAPE)


def _masks(model: nn.Module, p: float, seed: int = 0) -> dict[str, torch.Tensor]:
    return fc.draw_masks(model, fc.masked_weight_names(model), p, torch.Generator().manual_seed(seed))


def _info(**overrides: object) -> dict[str, Any]:
    """A valid info over the community's digits (every node rebuilds the triggers from the key)."""
    data = community_data("digits", SHAPE)
    info: dict[str, Any] = {
        "scheme": "function-coupled", "version": 2, "mode": "invisible", "r": 0.5, "n_train": 200, "n_verify": 90,
        "threshold": 0.9, "candidate": 0, "num_classes": 10, "input_shape": [1, 28, 28], "mean": list(data.mean),
        "std": list(data.std), "dataset": "digits", "split_seed": 0, "test_fraction": 0.2,
        "dataset_sha256": fc.dataset_digest(data),
    }  # fmt: skip
    info.update(overrides)
    return info


def _answering(label: int) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: torch.full((x.shape[0],), label)


# --------------------------------------------------------------------------------------------
# Masked training: Eq. 4–8


def test_masks_cover_conv_and_linear_weights_but_not_the_classifier() -> None:
    model = _lenet()
    assert fc.masked_weight_names(model) == ["block1.0.weight", "block2.0.weight", "block3.1.weight", "block4.0.weight"]
    masks = _masks(model, 0.3)
    kept = torch.cat([m.flatten() for m in masks.values()]).float().mean()
    assert abs(float(kept) - 0.7) < 0.01  # M ~ Bernoulli(1 − p): p is the drop probability
    assert torch.equal(masks["block2.0.weight"], _masks(model, 0.3)["block2.0.weight"])


def test_masked_forward_is_eq4_and_inference_is_eq5() -> None:
    model, p = _lenet().train(), 0.3
    masks = _masks(model, p)
    x = torch.randn(8, *SHAPE)
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for name, param in reference.named_parameters():
            if name in masks:
                param.mul_(masks[name]).div_(1 - p)
    assert torch.allclose(fc.masked_forward(model, masks, p, x), reference(x), atol=1e-5)
    plain = copy.deepcopy(model).eval()
    model.eval()
    assert torch.equal(model(x), plain(x))  # Eq. 5: the model's own weights, unmasked and unscaled
    assert not torch.allclose(model(x), reference.eval()(x), atol=1e-3)


def test_eq6_gradient_is_masked_and_scaled() -> None:
    model, p = _lenet(), 0.25
    masks = _masks(model, p)
    x, y = torch.randn(16, *SHAPE), torch.randint(0, 10, (16,))
    F.cross_entropy(fc.masked_forward(model, masks, p, x), y).backward()  # type: ignore[no-untyped-call]
    effective = copy.deepcopy(model)
    with torch.no_grad():
        for name, param in effective.named_parameters():
            if name in masks:
                param.mul_(masks[name]).div_(1 - p)
    F.cross_entropy(effective(x), y).backward()  # type: ignore[no-untyped-call]
    params, grads = dict(model.named_parameters()), dict(effective.named_parameters())
    for name, mask in masks.items():
        grad = params[name].grad
        assert grad is not None and bool((grad[~mask] == 0).all())
        assert torch.allclose(grad, grads[name].grad * mask / (1 - p), atol=1e-6)  # type: ignore[operator]


def test_an_update_leaves_masked_entries_unchanged() -> None:
    model, p = _lenet(), 0.3
    masks = _masks(model, p)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = {n: v.detach().clone() for n, v in model.named_parameters()}
    x, y = torch.randn(16, *SHAPE), torch.randint(0, 10, (16,))
    for _ in range(3):  # Adam's moments would move zero-gradient entries from the second step on
        fc.masked_step(model, masks, p, optimiser, x, y)
    fc.finetune_step(model, masks, p, Labelled(x, y), lr=1e-2)
    after = dict(model.named_parameters())
    for name, mask in masks.items():
        assert torch.equal(after[name][~mask], before[name][~mask])
        assert not torch.equal(after[name][mask], before[name][mask])
    assert not torch.equal(after["head.weight"], before["head.weight"])  # the classifier is not masked


def test_finetune_step_is_eq7_on_eq8_mean_loss() -> None:
    model, p, lr = _lenet(), 0.2, 0.5
    masks = _masks(model, p)
    x, y = torch.randn(300, *SHAPE), torch.randint(0, 10, (300,))  # more than one chunk
    expected = copy.deepcopy(model)
    loss = F.cross_entropy(fc.masked_forward(expected, masks, p, x), y)  # Eq. 8: mean over all of X_ft
    loss.backward()  # type: ignore[no-untyped-call]
    with torch.no_grad():
        for param in expected.parameters():
            param.sub_(lr * param.grad)  # type: ignore[operator]
    assert abs(fc.finetune_step(model, masks, p, Labelled(x, y), lr) - float(loss.detach())) < 1e-5
    for (name, got), want in zip(model.named_parameters(), expected.parameters(), strict=True):
        assert torch.allclose(got, want, atol=1e-5), name
        assert got.grad is None


def test_one_mask_per_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn: list[dict[str, torch.Tensor]] = []
    real = fc.draw_masks

    def counting(*args: Any) -> dict[str, torch.Tensor]:
        drawn.append(real(*args))
        return drawn[-1]

    monkeypatch.setattr(fc, "draw_masks", counting)
    steps: list[tuple[int, int]] = []
    monkeypatch.setattr(fc, "masked_step", lambda model, masks, *_: steps.append((len(drawn), id(masks))) or 0.0)
    x, y = torch.randn(40, *SHAPE), torch.randint(0, 10, (40,))
    config = fc.Config(epochs=3, batch_size=16)
    fc._train_watermarked(_lenet(), Labelled(x, y), Labelled(x[:5], y[:5]), KEY, config, None)
    assert len(drawn) == 3 and len(steps) == 9
    assert [epoch for epoch, _ in steps] == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert not torch.equal(drawn[0]["block1.0.weight"], drawn[1]["block1.0.weight"])


# --------------------------------------------------------------------------------------------
# Triggers (§4.1)


def test_the_triples_come_from_the_key_with_distinct_base_pairs_and_t_no_base_class() -> None:
    assert fc.candidate_triples(KEY, 10, 0) == fc.candidate_triples(KEY, 10, 0)
    sets = [fc.candidate_triples(hashlib.sha256(bytes([i])).digest(), 10, 0) for i in range(200)]
    assert all(len(triples) == fc.PARTS for triples in sets)
    assert all(len(set(triple)) == 3 for triples in sets for triple in triples)  # t ∉ {b1, b2}, b1 ≠ b2
    assert all(len({frozenset(t[1:]) for t in triples}) == fc.PARTS for triples in sets)  # one label per pair
    firsts = {triples[0] for triples in sets}
    assert len(firsts) > 100 and {t for t, _, _ in firsts} == set(range(10))
    assert fc.candidate_triples(KEY, 10, 0) != fc.candidate_triples(KEY, 10, 1)
    assert len(fc.candidate_triples(KEY, 4, 0)) == fc.PARTS  # 6 pairs on 4 classes
    with pytest.raises(SchemeError, match="at least 4 classes"):
        fc.candidate_triples(KEY, 3, 0)
    assert fc.part_sizes(90) == [18] * 5 and fc.part_sizes(92) == [19, 19, 18, 18, 18]


def test_triggers_are_rebuilt_bit_for_bit_from_the_key(digits: Dataset) -> None:
    triples = fc.candidate_triples(KEY, 10, 0)
    first, labels = fc.build_triggers(KEY, digits, triples, 200, "invisible", 0.5, 0)
    assert first.shape == (200, *SHAPE) and first.dtype == torch.float32
    assert labels.tolist() == [t for t, _, _ in triples for _ in range(40)]
    again, _ = fc.build_triggers(KEY, digits, triples, 200, "invisible", 0.5, 0)
    assert torch.equal(first, again)
    verify_set, verify_labels = fc.build_triggers(KEY, digits, triples, 90, "invisible", 0.5, 0)
    for j in range(fc.PARTS):  # each part prefix-stable: the verification triggers are trained on
        assert torch.equal(verify_set[18 * j : 18 * (j + 1)], first[40 * j : 40 * j + 18])
    p, q = fc.base_pairs(KEY, digits.y_train, triples[0], 40, "0/0")
    assert bool((digits.y_train[p] == triples[0][1]).all()) and bool((digits.y_train[q] == triples[0][2]).all())
    assert len(set(zip(p.tolist(), q.tolist(), strict=True))) == 40  # distinct pairs
    assert torch.equal(first[:40], 0.5 * digits.x_train[p] + 0.5 * digits.x_train[q])  # Eq. 3b
    other, _ = fc.build_triggers(OTHER_KEY, digits, triples, 90, "invisible", 0.5, 0)
    assert not torch.equal(verify_set, other)
    # Pinned draws: a change here would change every node's trigger sets.
    assert triples == PINNED_TRIPLES, triples
    assert (p[:3].tolist(), q[:3].tolist()) == PINNED_PAIRS, (p[:3].tolist(), q[:3].tolist())


def test_direct_fusion_layout() -> None:
    mean, std = (0.3,), (0.5,)
    first_pixels, second_pixels = torch.rand(2, *SHAPE), torch.rand(2, *SHAPE)
    fused = fc.fuse((first_pixels - 0.3) / 0.5, (second_pixels - 0.3) / 0.5, "direct", 0.5, mean, std)
    pixels = fused * 0.5 + 0.3
    assert fused.shape == (2, *SHAPE)
    assert torch.allclose(pixels[:, :, :14, :14], F.avg_pool2d(first_pixels, 2), atol=1e-6)  # b1 top-left
    assert torch.allclose(pixels[:, :, 14:, 14:], F.avg_pool2d(second_pixels, 2), atol=1e-6)  # b2 bottom-right
    assert torch.allclose(pixels[:, :, :14, 14:], torch.ones(1), atol=1e-6)  # white quadrants (Eq. 2b)
    assert torch.allclose(pixels[:, :, 14:, :14], torch.ones(1), atol=1e-6)


def test_screening_skips_a_candidate_one_of_whose_triples_the_clean_model_already_answers() -> None:
    second = {t for t, _, _ in fc.candidate_triples(KEY, 10, 1)}
    t0 = next(t for t, _, _ in fc.candidate_triples(KEY, 10, 0) if t not in second)  # one part's target

    class Constant(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dummy = nn.Parameter(torch.zeros(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.one_hot(torch.full((x.shape[0],), t0), 10).float() + self.dummy

    data = Dataset("toy", torch.randn(200, *SHAPE), torch.arange(200) % 10, torch.zeros(0), torch.zeros(0), 10,
                   SHAPE, (0.0,), (1.0,))  # fmt: skip
    candidate, triples, rate = fc._screen(KEY, Constant(), data, fc.Config(n_train=90))
    assert (candidate, triples, rate) == (1, fc.candidate_triples(KEY, 10, 1), 0.0)


# --------------------------------------------------------------------------------------------
# Verification (§4.4) and its inputs


def test_verify_takes_a_prediction_function(digits: Dataset) -> None:
    triples = fc.candidate_triples(KEY, 10, 0)
    triggers, labels = fc.build_triggers(KEY, digits, triples, 90, "invisible", 0.5, 0)
    verdict = fc.verify(_table(triggers, labels), KEY, {}, _info())
    assert verdict.passed and verdict.score == 1.0 and verdict.threshold == 0.9
    assert verdict.details == {
        "targets": [t for t, _, _ in triples],
        "bases": [[b1, b2] for _, b1, b2 in triples],
        "n": 90,
        "target_answers": 90,
        "part_answers": [18] * 5,
        "chance_rate": 1 / 8,
        "choices": 4,
    }
    # One answer for every input: right on the parts with that target only.
    t = triples[0][0]
    one = fc.verify(_answering(t), KEY, {}, _info())
    assert not one.passed and one.details["target_answers"] == 18 * sum(p[0] == t for p in triples)


@pytest.mark.parametrize(
    ("info", "message"),
    [
        ({"version": 1}, "version must be 2, got '1'"),
        ({"version": 2.0}, "version must be 2, got '2.0'"),
        ({"mode": "visible"}, "mode must be invisible or direct, got 'visible'"),
        ({"r": 1.5}, r"r must be a number in \[0, 1\], got '1.5'"),
        ({"n_verify": 201}, r"n_verify must be an integer in \[1, 200\]"),
        ({"n_verify": True}, "n_verify must be an integer"),
        ({"threshold": 0}, r"threshold must be a number in \[1e-09, 1\]"),
        ({"threshold": float("nan")}, "threshold must be a number"),
        ({"candidate": 4}, r"candidate must be an integer in \[0, 3\], got '4'"),
        ({"num_classes": 3}, "num_classes must be an integer"),
        ({"input_shape": [1, 28]}, "input_shape must be three integers"),
        ({"mean": [0.3, 0.3]}, r"mean must be 1 finite number\(s\), one per channel"),
        ({"std": [0.0]}, r"std must be 1 finite number\(s\), one per channel"),
        ({"dataset": ""}, "dataset must be a data set's name"),
        ({"dataset_sha256": "AB" * 32}, "dataset_sha256 must be 64 lowercase hex digits"),
        ({"test_fraction": None}, "split_seed and test_fraction must not be null: the triggers must come from a"),
        ({"split_seed": -1}, r"split_seed must be an integer in \[0, 4294967295\]"),
        ({"test_fraction": 1.0}, r"test_fraction must be a number in \[1e-09, 1\]"),
        ({"split_seed": 3}, r"the data must be split as the community splits it \(split_seed 0, test_fraction 0.2\)"),
        ({"split_seed": None, "test_fraction": None}, "split_seed and test_fraction must not be null"),
        ({"dataset": "mnist", "split_seed": None, "test_fraction": None}, "split_seed and test_fraction must not"),
        ({"extra": 1}, r"missing fields \[\], unknown fields \['extra'\]"),
    ],
)
def test_bad_info_is_refused_with_its_reason(info: dict[str, Any], message: str) -> None:
    with pytest.raises(SchemeError, match=f"function-coupled info: {message}"):
        fc.verify(_answering(0), KEY, {}, _info(**info))


def test_info_for_another_scheme_is_refused() -> None:
    with pytest.raises(SchemeError, match="^info describes a 'mtlsign' watermark, not 'function-coupled'$"):
        fc.verify(_answering(0), KEY, {}, _info(scheme="mtlsign"))


def test_missing_info_fields_are_named() -> None:
    info = _info()
    del info["candidate"]
    with pytest.raises(SchemeError, match=r"missing fields \['candidate'\], unknown fields \[\]"):
        fc.verify(_answering(0), KEY, {}, info)
    with pytest.raises(SchemeError, match="info must be a JSON object"):
        fc.verify(_answering(0), KEY, {}, [])  # type: ignore[arg-type]


def _table(triggers: torch.Tensor, labels: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """A suspect that answers each of `triggers` (bit for bit) with its label, and other inputs
    with the label + 1 of the nearest trigger."""

    def predict(x: torch.Tensor) -> torch.Tensor:
        distance = (x.flatten(1)[:, None, :] - triggers.flatten(1)[None]).abs().sum(2)
        nearest = distance.argmin(1)
        exact = distance.min(1).values == 0
        return torch.where(exact, labels[nearest], (labels[nearest] + 1) % 10)

    return predict


def test_verify_queries_the_triggers_the_key_derives_over_the_community_split(digits: Dataset) -> None:
    triples = fc.candidate_triples(KEY, 10, 0)
    triggers, labels = fc.build_triggers(KEY, digits, triples, 90, "invisible", 0.5, 0)
    honest = fc.verify(_table(triggers, labels), KEY, {}, _info())
    assert honest.passed and honest.details["target_answers"] == 90
    nearly = triggers.clone()
    nearly[::9, 0, 5, 5] += 1e-3  # a model that knows 80 of the 90 triggers (off by 1e-3 on the others)
    verdict = fc.verify(_table(nearly, labels), KEY, {}, _info())
    assert not verdict.passed and verdict.details["target_answers"] == 80 and verdict.score == pytest.approx(80 / 90)
    assert not fc.verify(_table(triggers, labels), OTHER_KEY, {}, _info()).passed
    with pytest.raises(DataError, match="this node's copy of 'digits' differs from the owner's"):
        fc.verify(_table(triggers, labels), KEY, {}, _info(dataset_sha256="0" * 64))


# --------------------------------------------------------------------------------------------
# Attacks on the verification (DESIGN §6.1): shipped triggers, other data


@pytest.mark.parametrize("shipped", ["the-keys-own", "natural-class", "other-name"])
def test_shipped_triggers_are_refused(shipped: str, digits: Dataset) -> None:
    """Whatever a claimant ships (even the key's own triggers) is refused before any query: a judge
    only ever queries the triggers it rebuilds."""
    triple = fc.candidate_triples(KEY, 10, 0)[0]
    verifier = {
        "the-keys-own": {"triggers": fc.build_triggers(KEY, digits, [triple] * 5, 90, "invisible", 0.5, 0)[0]},
        "natural-class": {"triggers": digits.x_train[digits.y_train == triple[0]][:90].clone()},
        "other-name": {"x": torch.zeros(1)},
    }[shipped]
    seen: list[int] = []

    def always_t(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.shape[0])
        return torch.full((x.shape[0],), triple[0])

    with pytest.raises(
        SchemeError, match="function-coupled verifier must be empty: the triggers come from the key, never the claimant"
    ):
        fc.verify(always_t, KEY, verifier, _info())
    assert seen == []


def test_a_split_other_than_the_communitys_is_refused_by_its_floors() -> None:
    """At the scheme level any split every node can load rebuilds; a claim must use the community's,
    so a claimant cannot shop for a split whose triggers a stranger's model happens to answer."""
    other = load_dataset("digits", seed=3)
    with pytest.raises(InfoError, match=r"split as the community splits it \(split_seed 0, test_fraction 0.2\)"):
        parse_info("function-coupled", _info(split_seed=3, dataset_sha256=fc.dataset_digest(other)))
    parse_info("function-coupled", _info())


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refusals must come before any training: make every training step a test failure."""

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("embed trained before refusing the data")

    monkeypatch.setattr(fc, "train_classifier", fail)
    monkeypatch.setattr(fc, "_train_watermarked", fail)


@pytest.mark.parametrize("split", [{"seed": 3}, {"seed": 0, "test_fraction": 0.25}])
@pytest.mark.usefixtures("no_training")
def test_embed_refuses_a_split_no_verifier_could_rebuild(split: dict[str, Any]) -> None:
    odd = load_dataset("digits", **split)
    with pytest.raises(
        SchemeError,
        match=r"function-coupled: this 'digits' data is not the community's split \(seed 0, test fraction 0.2\), so "
        "no node could rebuild the verification inputs",
    ):
        fc.embed(_lenet(), odd, KEY, fc.Config(epochs=1))


@pytest.mark.usefixtures("no_training")
def test_embed_refuses_data_no_member_holds(digits: Dataset) -> None:
    foreign = Dataset("cifar10", digits.x_train, digits.y_train, digits.x_test, digits.y_test, 10, SHAPE,
                      digits.mean, digits.std)  # fmt: skip
    with pytest.raises(SchemeError) as refused:
        fc.embed(_lenet(), foreign, KEY, fc.Config(epochs=1))
    message = str(refused.value)
    assert message.startswith("function-coupled: no community could verify a claim on a model watermarked over 'cif")
    assert "(digits); embed over one of those, have the community pin this data" in message
    assert message.endswith("or use mtlsign, whose key samples are generated from the key alone")


def test_config_is_validated_and_registered() -> None:
    scheme = get_scheme("function-coupled")
    assert scheme.black_box and scheme.config is fc.Config
    assert make_config(scheme, {"mode": "direct", "p": "0.2"}) == fc.Config(mode="direct", p=0.2)
    with pytest.raises(SchemeError, match="need mode in"):
        make_config(scheme, {"mode": "corners"})
    with pytest.raises(SchemeError, match="n_verify ≤ n_train"):
        make_config(scheme, {"n_train": "50"})


# --------------------------------------------------------------------------------------------
# One full embedding (the bars)


@pytest.mark.bars
@pytest.mark.timeout(1800)
def test_embed_meets_the_bars_on_digits(digits: Dataset) -> None:
    """Default Config: accuracy within 1.5 points of the clean reference and score ≥ 0.95; verify
    fails on an independently trained clean LeNet and on a model watermarked under another key."""
    config = fc.Config()
    steps: list[int] = []
    wm = fc.embed(_lenet(0), digits, KEY, config, progress=lambda step, total, _: steps.append(step))
    report = wm.report
    assert steps == list(range(1, 2 * config.epochs + 1))
    assert set(report) >= {"clean_accuracy", "accuracy", "wm_score", "threshold", "seconds", "cpu_seconds"}
    assert report["accuracy"] >= report["clean_accuracy"] - 0.015, report
    assert report["wm_score"] >= 0.95, report
    assert wm.verifier == {} and (wm.info["split_seed"], wm.info["test_fraction"]) == (0, 0.2)
    assert fc.verify(wm.model, KEY, wm.verifier, wm.info).passed

    clean = train_classifier(
        _lenet(1), digits.x_train, digits.y_train, epochs=config.epochs, lr=config.lr, batch_size=config.batch_size,
        generator=torch.Generator().manual_seed(1),
    )  # fmt: skip
    on_clean = fc.verify(clean, KEY, wm.verifier, wm.info)
    assert not on_clean.passed, on_clean

    other = fc.embed(_lenet(0), digits, OTHER_KEY, config)
    mine = fc.candidate_triples(KEY, 10, wm.info["candidate"])
    theirs = fc.candidate_triples(OTHER_KEY, 10, other.info["candidate"])
    assert mine != theirs  # different behaviours
    assert other.report["wm_score"] >= 0.95
    on_other = fc.verify(other.model, KEY, wm.verifier, wm.info)
    assert not on_other.passed, on_other
    print(
        f"clean {report['clean_accuracy']:.4f} acc {report['accuracy']:.4f} score {report['wm_score']:.3f} "
        f"clean-model {on_clean.score:.3f} other-key {on_other.score:.3f} (triples {mine} / {theirs}) "
        f"embed {report['seconds']:.1f} s wall {report['cpu_seconds']:.1f} s CPU"
    )


def test_the_survey_bounds_a_key_whose_triples_the_suspect_answers_generically() -> None:
    """A suspect that answers 3 to everything answers every triple with t = 3 (72 of 720): a key of
    five uniform triples passes when all five are such, (1/10)⁵; the other triples' upper rates
    (0 of 80 seen) add next to nothing."""
    seed = hashlib.sha256(b"survey seed").digest()
    survey = fc.survey(_answering(3), seed, {}, _info())
    assert survey.details == {"n": 7200, "pairs": 90, "triples": 720, "generic": 72}
    assert 1e-5 <= survey.score <= 1.01e-5
    one_part = fc.pooled_tail([1.0] * 72 + [0.0] * 648, [90], 81)  # the paper's one triple a key
    assert one_part == pytest.approx(0.1)
