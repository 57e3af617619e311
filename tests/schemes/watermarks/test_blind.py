"""Blind watermark: SSIM, the logo, the key schedule, strict info/verifier parsing, and the issue's bars."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch
from PIL import Image
from torch import nn

from contracts.bounds import binomial_tail
from contracts.errors import InfoError, SchemeError
from contracts.infos import BlindInfo, parse_info
from schemes.data._imaging import Discriminator, Encoder, file_logo, gaussian_window, logo_sha256, ssim, text_logo
from schemes.data.community import community_data
from schemes.data.dataset import Dataset
from schemes.data.datasets import load_dataset
from schemes.models.zoo import create_model
from schemes.training.loops import accuracy, train_classifier
from schemes.watermarks import blind
from schemes.watermarks.base import get_scheme, make_config, predict_labels

KEY = hashlib.sha256(b"blind watermark owner").digest()
OTHER = hashlib.sha256(b"blind watermark other owner").digest()
SHAPE = (1, 28, 28)
N = 20


def _logo() -> torch.Tensor:
    return text_logo("ACME", SHAPE[1:])


def _community() -> Dataset:
    return community_data("digits", SHAPE)


def _info(**changes: Any) -> dict[str, Any]:
    data = _community()
    info = {
        "scheme": "blind",
        "dataset": "digits",
        "min_ssim": 0.9,
        "n": N,
        "threshold": 0.8,
        "num_classes": 10,
        "input_shape": list(SHAPE),
        "mean": list(data.mean),
        "std": list(data.std),
        "alpha": 3.0,
        "beta": 5.0,
        "gamma": 0.1,
        "delta": 1.0,
        "epochs": 50,
        "logo_sha256": logo_sha256(_logo()),
        "logo_source": "text",
        "encoder": "residual-cnn-32",
        "discriminator": "mlp-64-32",
    }
    return {**info, **changes}


def _covers(key: bytes = KEY, n: int = N) -> torch.Tensor:
    """The key's covers in the community's training split (normalised, as the model takes them)."""
    data = _community()
    return data.x_train[blind.key_covers(key, blind.key_targets(key, n, 10), data.y_train, 10)].clone()


def _verifier(n: int = N) -> dict[str, torch.Tensor]:
    """Key samples that are their covers exactly: SSIM 1, the best an encoder could do."""
    return {"key_samples": _covers(n=n), "logo": _logo()}


class _Lookup(nn.Module):
    """A stand-in suspect that answers `labels[i]` for the i-th key sample (found by exact match)."""

    def __init__(self, samples: torch.Tensor, labels: torch.Tensor) -> None:
        super().__init__()
        self.samples = nn.Parameter(samples.flatten(1), requires_grad=False)
        self.labels = labels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index = (x.flatten(1)[:, None, :] == self.samples[None]).all(2).float().argmax(1)
        return nn.functional.one_hot(self.labels[index], 10).float()


# -------------------------------------------------------------------------------------------- SSIM


def test_ssim_of_identical_images_is_one() -> None:
    x = torch.rand((3, 2, 16, 16), generator=torch.Generator().manual_seed(1))
    assert torch.allclose(ssim(x, x), torch.ones(3), atol=1e-6)


def test_ssim_falls_with_noise_and_is_symmetric() -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.rand((2, 1, 28, 28), generator=gen)
    small = (x + 0.02 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    large = (x + 0.3 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    assert (ssim(x, small) > ssim(x, large)).all() and (ssim(x, large) < 0.9).all()
    assert torch.allclose(ssim(x, large), ssim(large, x))


def test_ssim_of_a_constant_shift_is_the_luminance_term() -> None:
    """Flat images: variances and covariance vanish, so SSIM = (2μxμy + C1)/(μx² + μy² + C1) inside."""
    x, y = torch.full((1, 1, 256, 256), 0.4), torch.full((1, 1, 256, 256), 0.6)
    centre = (2 * 0.4 * 0.6 + 1e-4) / (0.4**2 + 0.6**2 + 1e-4)
    value = float(ssim(x, y))
    assert value < 1 and value == pytest.approx(centre, abs=0.01)  # zero padding perturbs the border only


def test_ssim_window_is_a_normalised_gaussian() -> None:
    window = gaussian_window()
    assert window.shape == (11, 11) and float(window.sum()) == pytest.approx(1.0)
    assert int(window.argmax()) == 60 and torch.allclose(window, window.T)


def test_ssim_refuses_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="one shape"):
        ssim(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 9))


# -------------------------------------------------------------------------------------------- logo


def test_a_text_logo_is_uint8_centred_and_deterministic() -> None:
    logo = text_logo("ACME", (28, 28))
    assert logo.dtype == torch.uint8 and logo.shape == (28, 28)
    assert torch.equal(logo, text_logo("ACME", (28, 28)))
    assert int(logo.max()) > 128 and int(logo[:4].max()) == 0 and int(logo[-4:].max()) == 0
    assert not torch.equal(logo, text_logo("WXYZ", (28, 28)))
    rows = logo.float().sum(1).nonzero().flatten()
    assert abs(float(rows.float().mean()) - 13.5) < 3  # vertically centred


def test_a_long_text_logo_is_shrunk_to_fit() -> None:
    logo = text_logo("a rather long owner name", (28, 28))
    assert int(logo[:, 0].max()) == 0 and int(logo[:, -1].max()) == 0 and int(logo.max()) > 0


@pytest.mark.parametrize("text", ["", "x" * 33, "tab\there"])
def test_a_bad_logo_text_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="printable characters"):
        text_logo(text, (28, 28))
    with pytest.raises(ValueError, match="printable characters"):
        blind.Config(logo_text=text)


def test_a_logo_file_is_read_grey_and_resized(tmp_path: Path) -> None:
    pixels = torch.zeros(56, 56, 3, dtype=torch.uint8)
    pixels[:28, :, 0] = 255  # a red top half
    Image.fromarray(pixels.numpy(), "RGB").save(tmp_path / "logo.png")
    logo = file_logo(tmp_path / "logo.png", (28, 28))
    assert logo.dtype == torch.uint8 and logo.shape == (28, 28)
    assert int(logo[:13].min()) == int(logo[:13].max()) == 76  # ITU-R 601 luma of pure red
    assert int(logo[15:].max()) == 0


def test_make_logo_prefers_the_file_then_the_text_then_the_key(tmp_path: Path) -> None:
    Image.new("L", (10, 10), 200).save(tmp_path / "logo.png")
    from_file, source = blind.make_logo(KEY, blind.Config(logo_path=str(tmp_path / "logo.png")), (28, 28))
    assert source == "file" and int(from_file.min()) == 200
    from_text, source = blind.make_logo(KEY, blind.Config(logo_text="ACME"), (28, 28))
    assert source == "text" and torch.equal(from_text, text_logo("ACME", (28, 28)))
    from_key, source = blind.make_logo(KEY, blind.Config(), (28, 28))
    assert source == "key" and torch.equal(from_key, blind.make_logo(KEY, blind.Config(), (28, 28))[0])
    assert not torch.equal(from_key, blind.make_logo(OTHER, blind.Config(), (28, 28))[0])


def test_an_unreadable_logo_file_is_a_scheme_error(tmp_path: Path) -> None:
    (tmp_path / "logo.png").write_bytes(b"not an image")
    with pytest.raises(SchemeError, match="cannot read the logo image"):
        blind.make_logo(KEY, blind.Config(logo_path=str(tmp_path / "logo.png")), (28, 28))
    with pytest.raises(SchemeError, match="cannot read the logo image"):
        blind.make_logo(KEY, blind.Config(logo_path=str(tmp_path / "missing.png")), (28, 28))


# -------------------------------------------------------------------------------------------- key schedule


def _labels(n: int = 400, classes: int = 10) -> torch.Tensor:
    return torch.arange(n) % classes


def test_targets_are_balanced_and_come_from_the_key() -> None:
    targets = blind.key_targets(KEY, 100, 10)
    assert targets.dtype == torch.int64 and torch.bincount(targets, minlength=10).tolist() == [10] * 10
    assert torch.equal(targets, blind.key_targets(KEY, 100, 10))
    assert not torch.equal(targets, blind.key_targets(OTHER, 100, 10))
    assert set(torch.bincount(blind.key_targets(KEY, 25, 10)).tolist()) == {2, 3}


def test_covers_are_distinct_and_never_of_the_target_class() -> None:
    y = _labels()
    targets = blind.key_targets(KEY, 100, 10)
    covers = blind.key_covers(KEY, targets, y, 10)
    assert covers.shape == (100,) and len(set(covers.tolist())) == 100
    assert not (y[covers] == targets).any()
    assert torch.equal(covers, blind.key_covers(KEY, targets, y, 10))
    assert not torch.equal(covers, blind.key_covers(OTHER, targets, y, 10))
    offsets = (y[covers] - targets) % 10
    assert set(offsets.tolist()) == set(range(1, 10))  # every offset 1..K−1 occurs


def test_too_few_cover_candidates_is_a_scheme_error() -> None:
    with pytest.raises(SchemeError, match="too few training samples of class"):
        blind.key_covers(KEY, blind.key_targets(KEY, 100, 10), _labels(40), 10)
    with pytest.raises(SchemeError, match="at least two classes"):
        blind.key_covers(KEY, torch.zeros(3, dtype=torch.int64), torch.zeros(9, dtype=torch.int64), 1)


def test_encoder_and_discriminator_weights_come_from_the_key() -> None:
    state = torch.random.get_rng_state()
    first = blind._keyed(Encoder(1, 8), KEY, "encoder-init", torch.device("cpu"))
    again = blind._keyed(Encoder(1, 8), KEY, "encoder-init", torch.device("cpu"))
    other = blind._keyed(Encoder(1, 8), OTHER, "encoder-init", torch.device("cpu"))
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is never drawn from
    for a, b, c in zip(first.parameters(), again.parameters(), other.parameters(), strict=True):
        assert torch.equal(a, b) and not torch.equal(a, c)
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        out = first(x, torch.zeros(1, 1, 28, 28))
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    disc = blind._keyed(Discriminator(SHAPE), KEY, "discriminator-init", torch.device("cpu"))
    assert disc(x).shape == (2,)


def test_binomial_tail() -> None:
    assert binomial_tail(10, 0, 0.1) == 1.0 and binomial_tail(10, 11, 0.1) == 0.0
    assert binomial_tail(2, 1, 0.5) == pytest.approx(0.75)
    assert binomial_tail(100, 81, 1 / 9) < 1e-50


# -------------------------------------------------------------------------------------------- verify


def test_verify_counts_key_targets_and_passes_above_the_threshold() -> None:
    verifier = _verifier()
    targets = blind.key_targets(KEY, N, 10)
    owner = blind.verify(_Lookup(verifier["key_samples"], targets), KEY, verifier, _info())
    assert owner.passed and owner.score == 1.0 and owner.threshold == 0.8
    assert owner.details["n"] == N and owner.details["matches"] == N and owner.details["null_tail"] < 1e-15
    assert owner.details["samples_near_cover"] == N and owner.details["chance_rate"] == pytest.approx(1 / 9)
    wrong_key = blind.verify(_Lookup(verifier["key_samples"], targets), OTHER, verifier, _info())
    assert not wrong_key.passed and wrong_key.score < 0.5
    exactly = targets.clone()
    exactly[:4] = (exactly[:4] + 1) % 10  # 16 of 20 = 0.8: not above T_acc
    at_bar = blind.verify(_Lookup(verifier["key_samples"], exactly), KEY, verifier, _info())
    assert not at_bar.passed and at_bar.score == 0.8 and at_bar.details["matches"] == 16


def test_verify_takes_a_prediction_function() -> None:
    verifier = _verifier()
    model = _Lookup(verifier["key_samples"], blind.key_targets(KEY, N, 10))

    def predict(x: torch.Tensor) -> torch.Tensor:  # a remote API: plain integers back
        return torch.tensor(model(x).argmax(1).tolist())

    verdict = blind.verify(predict, KEY, verifier, _info())
    assert verdict.passed and verdict.score == 1.0


def test_the_verifier_survives_safetensors(tmp_path: Path) -> None:
    verifier = _verifier()
    safetensors.torch.save_file(verifier, str(tmp_path / "v.safetensors"))
    reloaded = safetensors.torch.load_file(str(tmp_path / "v.safetensors"))
    model = _Lookup(verifier["key_samples"], blind.key_targets(KEY, N, 10))
    assert blind.verify(model, KEY, reloaded, _info()).score == 1.0


def _without(name: str) -> dict[str, Any]:
    return {k: v for k, v in _info().items() if k != name}


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"extra": 1}, r"blind info: missing fields \[\], unknown fields \['extra'\]"),
        ({"scheme": "new-label"}, "info describes a 'new-label' watermark, not 'blind'"),
        ({"input_shape": [1, 28]}, "input_shape must be three"),
        ({"input_shape": [1, 28, 28.0]}, "input_shape must be three"),
        ({"mean": [0.1, 0.2]}, r"mean must be 1 finite number\(s\), one per channel"),
        ({"std": [0.0]}, r"std must be 1 finite number\(s\), one per channel"),
        ({"n": 0}, r"n must be an integer in \[1, 10000\]"),
        ({"n": 10_001}, r"n must be an integer in \[1, 10000\]"),
        ({"n": True}, "n must be an integer"),
        ({"num_classes": 1}, "num_classes must be an integer"),
        ({"epochs": "50"}, "epochs must be an integer"),
        ({"threshold": 1.0}, r"threshold must be a number in \[1e-09, 1\)"),
        ({"threshold": "0.8"}, "threshold must be a number"),
        ({"gamma": -0.1}, "gamma must be a number"),
        ({"logo_sha256": "ABC"}, "logo_sha256 must be 64 lowercase hex"),
        ({"logo_source": "path"}, "logo_source must be file, key or text"),
        ({"encoder": "unet"}, r"encoder must be residual-cnn-<channels> \(1-9999 channels\), got 'unet'"),
        ({"discriminator": "cnn"}, "discriminator must be mlp-64-32, got 'cnn'"),
        ({"min_ssim": 1.5}, r"min_ssim must be a number in \[0, 1\]"),
        ({"min_ssim": "0.9"}, "min_ssim must be a number"),
        ({"mean": [-0.5]}, "neither the normalisation of the community's 'digits' nor an image normalisation"),
        ({"std": [2.5]}, "neither the normalisation of the community's 'digits' nor an image normalisation"),
    ],
)
def test_bad_info_is_refused_by_name(changes: dict[str, Any], fragment: str) -> None:
    with pytest.raises(SchemeError, match=fragment):
        blind.verify(lambda x: torch.zeros(x.shape[0]), KEY, _verifier(), _info(**changes))


@pytest.mark.parametrize("name", ["logo_sha256", "dataset", "min_ssim"])
def test_info_missing_a_field_is_refused(name: str) -> None:
    with pytest.raises(SchemeError, match=rf"blind info: missing fields \['{name}'\], unknown fields \[\]"):
        blind.verify(lambda x: torch.zeros(x.shape[0]), KEY, _verifier(), _without(name))


def _tampered(**changes: torch.Tensor) -> dict[str, torch.Tensor]:
    return {**_verifier(), **changes}


@pytest.mark.parametrize(
    ("broken", "fragment"),
    [
        ("no-logo", "exactly key_samples and logo"),
        ("extra", "exactly key_samples and logo"),
        ("too-few", r"float32 shaped \(20, 1, 28, 28\)"),
        ("float64", "float32 shaped"),
        ("nan", "must be finite"),
        ("float-logo", r"logo must be uint8 shaped \(28, 28\)"),
        ("short-logo", "logo must be uint8 shaped"),
        ("other-logo", "does not match info's logo_sha256"),
    ],
)
def test_a_malformed_or_tampered_verifier_is_refused(broken: str, fragment: str) -> None:
    verifier = {
        "no-logo": lambda: {"key_samples": _covers()},
        "extra": lambda: _tampered(extra=torch.zeros(1)),
        "too-few": lambda: _verifier(N - 1),
        "float64": lambda: _tampered(key_samples=_covers().double()),
        "nan": lambda: _tampered(key_samples=torch.full((N, *SHAPE), float("nan"))),
        "float-logo": lambda: _tampered(logo=_logo().float()),
        "short-logo": lambda: _tampered(logo=_logo()[:27]),
        "other-logo": lambda: _tampered(logo=text_logo("EVIL", (28, 28))),
    }[broken]()
    with pytest.raises(SchemeError, match=fragment):
        blind.verify(lambda x: torch.zeros(x.shape[0]), KEY, verifier, _info())


# -------------------------------------------------------------------------------------------- attacks


def _answers_targets(key: bytes = KEY) -> Callable[[torch.Tensor], torch.Tensor]:
    """A suspect that answers the key's target t_i for the i-th key sample, whatever it is shown: the
    best any model could do, so only the binding of the samples to their covers can stop a claim."""
    targets = blind.key_targets(key, N, 10)
    return lambda x: targets[: x.shape[0]].clone()


def test_generic_images_of_the_target_class_do_not_count() -> None:
    """The 'generic natural class' attack: ship, for each t_i, a training image *of class t_i*. Every
    clean digits classifier would answer t_i, so the claim would pass on any model; none of these
    images is within min_ssim of its key-chosen cover, so none counts."""
    data = _community()
    targets = blind.key_targets(KEY, N, 10)
    natural = torch.stack([data.x_train[data.y_train == int(t)][i] for i, t in enumerate(targets)])
    verifier = {"key_samples": natural.contiguous(), "logo": _logo()}
    suspect = _Lookup(natural, targets)  # answers every shipped image with its target (its true class)
    assert bool((predict_labels(suspect, natural) == targets).all())
    verdict = blind.verify(suspect, KEY, verifier, _info())
    assert not verdict.passed and verdict.score == 0.0
    assert verdict.details["matches"] == 0 and verdict.details["samples_near_cover"] == 0
    assert verdict.details["null_tail"] == 1.0
    assert float(blind.cover_ssim(KEY, natural, BlindInfo.from_json(_info())).max()) < 0.9


def test_another_keys_covers_do_not_count() -> None:
    """Samples bound to the covers of another key (the other owner's, say) are not this key's."""
    theirs = _covers(OTHER)
    verdict = blind.verify(_answers_targets(), KEY, {"key_samples": theirs, "logo": _logo()}, _info())
    assert not verdict.passed and verdict.details["samples_near_cover"] == 0 and verdict.score == 0.0


def test_samples_count_only_near_their_covers() -> None:
    """Covers themselves and slightly noised covers (SSIM ≥ 0.96) count; heavily noised ones (SSIM <
    0.8) do not, even when the suspect answers them all with their targets."""
    covers, std = _covers(), _community().std[0]
    noise = torch.randn(covers.shape, generator=torch.Generator().manual_seed(0)) / std
    samples = covers.clone()
    samples[:10] += 0.01 * noise[:10]  # 0.01 of the pixel range
    samples[10:15] += 0.1 * noise[10:15]  # 0.1 of the pixel range
    close = blind.cover_ssim(KEY, samples, BlindInfo.from_json(_info()))
    assert bool((close[:10] > 0.96).all()) and bool((close[10:15] < 0.8).all())
    assert torch.allclose(close[15:], torch.ones(5))
    verdict = blind.verify(_answers_targets(), KEY, {"key_samples": samples, "logo": _logo()}, _info())
    assert verdict.details["samples_near_cover"] == 15 and verdict.details["matches"] == 15
    assert verdict.score == 0.75 and not verdict.passed  # 15 of 20 is below T_acc = 0.8
    strict = blind.verify(_answers_targets(), KEY, {"key_samples": samples, "logo": _logo()}, _info(min_ssim=0.99))
    assert strict.details["samples_near_cover"] == 5 + int((close[:10] >= 0.99).sum())


def test_min_ssim_below_the_communitys_floor_is_refused() -> None:
    """A claimant cannot switch the binding off (min_ssim 0 counts any image): registry.infos refuses
    info below the community's floor before any work (DESIGN §6.1 rule 2)."""
    with pytest.raises(InfoError, match="blind info: min_ssim 0 is below the community's floor 0.9"):
        parse_info("blind", _info(n=100, min_ssim=0.0))
    parse_info("blind", _info(n=100))


def test_info_naming_data_no_member_holds_is_refused() -> None:
    with pytest.raises(SchemeError, match=r"^'mnist' is not a data set every member holds \(digits\)$"):
        blind.verify(_answers_targets(), KEY, _verifier(), _info(dataset="mnist"))


@pytest.mark.parametrize("split", [{"seed": 3}, {"seed": 0, "test_fraction": 0.25}])
def test_embed_refuses_a_split_no_member_holds_before_training(
    split: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("embed trained before refusing the data")

    monkeypatch.setattr(blind, "_clean_reference", fail)
    monkeypatch.setattr(blind, "_train", fail)
    with pytest.raises(SchemeError, match=r"blind: this 'digits' data is not the community's split \(seed 0"):
        blind.embed(create_model("lenet5", num_classes=10, input_shape=SHAPE), load_dataset("digits", **split), KEY)


def test_config_refuses_nonsense() -> None:
    for bad, fragment in [
        ({"threshold": 1.0}, "threshold"),
        ({"freeze_fraction": 1.0}, "freeze_fraction"),
        ({"delta": -1.0}, "delta"),
        ({"lr_decay": 0.0}, "lr_decay"),
        ({"logo_text": "A", "logo_path": "a.png"}, "not both"),
    ]:
        with pytest.raises(ValueError, match=fragment):
            blind.Config(**bad)  # type: ignore[arg-type]


def test_the_scheme_is_registered_black_box() -> None:
    scheme = get_scheme("blind")
    assert scheme is blind.SCHEME and scheme.black_box and scheme.extra_classes == 0
    assert make_config(scheme, {"logo_text": "ACME", "logo_path": "none"}) == blind.Config(logo_text="ACME")


# -------------------------------------------------------------------------------------------- the bars


@pytest.mark.bars
@pytest.mark.timeout(1800)
def test_default_embedding_meets_the_issue_bars(record_property: Callable[[str, object], None]) -> None:
    """Digits, LeNet-5, default Config: fidelity within 1.5 points of the clean reference, score ≥ 0.95,
    and the key's trigger set fails on an independently trained clean model and on another owner's
    blind-watermarked model."""
    data = load_dataset("digits", seed=0)
    embedded, cpu_seconds = {}, {}
    for name, key in (("owner", KEY), ("other", OTHER)):
        torch.manual_seed(0)
        model = create_model("lenet5", num_classes=10, input_shape=data.input_shape)
        started = time.process_time()
        embedded[name] = blind.embed(model, data, key, blind.Config())
        cpu_seconds[name] = time.process_time() - started
    owner = embedded["owner"]
    report = owner.report
    assert report["accuracy"] >= report["clean_accuracy"] - 0.015
    own = blind.verify(owner.model, KEY, owner.verifier, owner.info)
    assert report["wm_score"] >= 0.95 and own.passed
    # Every shipped sample stays bound to its key-chosen cover (DESIGN §6.1 rule 1).
    assert report["key_ssim_min"] >= owner.info["min_ssim"] and own.details["samples_near_cover"] == own.details["n"]
    torch.manual_seed(1)
    clean = train_classifier(
        create_model("lenet5", num_classes=10, input_shape=data.input_shape),
        data.x_train,
        data.y_train,
        epochs=30,
        lr=1e-3,
        batch_size=64,
        generator=torch.Generator().manual_seed(1),
    )
    on_clean = blind.verify(clean, KEY, owner.verifier, owner.info)
    on_other = blind.verify(embedded["other"].model, KEY, owner.verifier, owner.info)
    for name in ("clean_accuracy", "accuracy", "wm_score", "key_ssim", "key_ssim_min", "key_mse", "seconds"):
        record_property(name, report[name])
    record_property("embed_cpu_seconds", cpu_seconds["owner"])
    record_property("independent_clean_accuracy", accuracy(clean, data.x_test, data.y_test))
    record_property("other_key_accuracy", embedded["other"].report["accuracy"])
    record_property("clean_model_score", on_clean.score)
    record_property("other_key_score", on_other.score)
    assert not on_clean.passed and not on_other.passed
