"""Digital passport's verification (Fan, Ng, Chan, §3.2): the key's evaluation set, accuracy with a set
of passports, the verifier artifact (M_p and the noise profile M_{p^e(c)}) checked against the info,
and the verdict of a suspect and of a control key (`schemes.watermarks.passport` says why each is so)."""

from __future__ import annotations

import copy
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from contracts.errors import SchemeError
from contracts.infos import PassportInfo
from mtlsign.streams import key_permutation
from mtlsign.verify import Verdict
from schemes.data.community import claim_data
from schemes.data.dataset import Dataset
from schemes.models._passport_layer import (
    KINDS,
    Passports,
    attached,
    fake_passports,
    noisy_passports,
    passport_layers,
    passport_shapes,
    t1_passports,
    uses,
)
from schemes.training.loops import accuracy
from schemes.watermarks.base import Suspect, read_info, require_module

NAME = "passport"
#: The verifier artifact's tensors besides T2/T3 passports: M_p and the noise profile.
FIXED_TENSORS = ("expected_acc", "noise_levels", "noise_mean", "noise_std")
#: Verification also runs the suspect with a few fake T1 passports (a public seed, not the key's):
#: ownership rests on the *key's* passport making the model work where others paralyse it (§2.4),
#: so a suspect that works with any passport (V2, see the scheme's docstring) proves nothing and fails.
_VERIFY_FAKES, _VERIFY_FAKE_SEED = 5, -1


def accuracy_with(
    model: nn.Module, version: str, passports: Mapping[str, Passports], x: torch.Tensor, y: torch.Tensor
) -> float:
    """Accuracy with `passports` attached (γ, β computed from them and the weights)."""
    with attached(model, version, passports):
        return accuracy(model, x, y)


def noise_accuracies(
    model: nn.Module,
    key: bytes,
    version: str,
    passports: Mapping[str, Passports],
    levels: list[float],
    draws: int,
    x: torch.Tensor,
    y: torch.Tensor,
) -> list[list[float]]:
    """Accuracy with p^e(c), for every level c and draw (§3.2 step 3)."""
    return [
        [accuracy_with(model, version, noisy_passports(key, passports, c, d), x, y) for d in range(draws)]
        for c in levels
    ]


def evaluation_set(key: bytes, data: Dataset, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """§3.2's pre-determined test set: the key's choice of n test samples, with their true labels."""
    chosen = torch.from_numpy(key_permutation(key, NAME, "eval-x", data.x_test.shape[0])[:n])
    return data.x_test[chosen].cpu().contiguous(), data.y_test[chosen].cpu().contiguous()


@dataclass(frozen=True)
class _Artifact:
    """The verifier artifact, checked: M_p, the noise profile per level, and T2/T3 passports."""

    expected_acc: float
    noise_levels: list[float]
    noise_mean: list[float]
    noise_std: list[float]
    passports: dict[str, Passports]


def _tensor(
    verifier: Mapping[str, torch.Tensor], name: str, dtype: torch.dtype, shape: tuple[int, ...]
) -> torch.Tensor:
    value = verifier[name]
    if not isinstance(value, torch.Tensor) or value.dtype != dtype or tuple(value.shape) != shape:
        raise SchemeError(f"passport verifier: {name} must be {dtype} shaped {shape}")
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        raise SchemeError(f"passport verifier: {name} holds non-finite values")
    return value


def _parse_verifier(verifier: Mapping[str, torch.Tensor], info: PassportInfo) -> _Artifact:
    carried = {
        f"{kind}/{path}": (path, i)
        for path in info.layers
        for i, (kind, needed) in enumerate(zip(KINDS, uses(info.version), strict=True))
        if needed and info.passport_type != "T1"
    }
    expected = {*FIXED_TENSORS, *carried}
    if (
        not isinstance(verifier, Mapping)
        or set(verifier) != expected
        or not all(isinstance(v, torch.Tensor) for v in verifier.values())
    ):
        raise SchemeError(f"passport verifier must hold exactly the tensors {sorted(expected)}")
    levels = verifier["noise_levels"]
    if levels.dim() != 1 or levels.shape[0] > 32:
        raise SchemeError("passport verifier: noise_levels must hold at most 32 levels")
    k = levels.shape[0]
    expected_acc = float(_tensor(verifier, "expected_acc", torch.float32, (1,))[0])
    levels_, mean, std = (_tensor(verifier, name, torch.float32, (k,)).tolist() for name in FIXED_TENSORS[1:])
    if not (
        0 <= expected_acc <= 1
        and all(0 < c <= 1 for c in levels_)
        and all(0 <= m <= 1 for m in mean)
        and all(0 <= s <= 1 for s in std)
    ):
        raise SchemeError("passport verifier: accuracies and std must lie in [0, 1], noise levels in (0, 1]")
    passports: dict[str, list[torch.Tensor | None]] = {path: [None, None] for path in info.layers}
    for name, (path, i) in carried.items():
        passports[path][i] = _tensor(verifier, name, torch.float32, info.layers[path])
    pairs = {path: (pair[0], pair[1]) for path, pair in passports.items()}
    return _Artifact(expected_acc, levels_, mean, std, pairs)


def _suspect_problem(model: nn.Module, shapes: Mapping[str, tuple[int, ...]], x_eval: torch.Tensor) -> str | None:
    """Why the suspect cannot hold this passport watermark, or None."""
    layers = passport_layers(model)
    if not layers:
        return "the suspect has no passport layers"
    if set(layers) != set(shapes):
        return f"the suspect's passport layers {sorted(layers)} are not the watermarked model's {sorted(shapes)}"
    try:
        found = passport_shapes(model, x_eval[:1].to(next(model.parameters()).device))
    except RuntimeError as exc:
        return f"the suspect cannot run the verification inputs: {exc}"
    wrong = sorted(path for path in shapes if found.get(path) != tuple(shapes[path]))
    return f"the suspect's passport layers {wrong} take other input shapes" if wrong else None


def verify(suspect: Suspect, key: bytes, verifier: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> Verdict:
    """§3.2: γ, β recomputed from the suspect's weights and the key's passports (never the cached
    ones); pass iff the accuracy on x_eval is at least M_p − δ, the noise profile agrees, and fake
    passports paralyse the suspect (their mean accuracy stays below M_p − δ)."""
    return _verify(suspect, key, verifier, info, score_only=False)


def control(
    suspect: Suspect, key: bytes, control_key: bytes, verifier: Mapping[str, torch.Tensor], info: Mapping[str, Any]
) -> Verdict:
    """A control key's verification (DESIGN §6.1 rule 3): the accuracy with its passports on its own
    x_eval, which is all a judge reads of a control (its score and n); the noise profile and the
    fakes, 1 + levels × draws + 5 more passes, are the claim's alone."""
    return _verify(suspect, control_key, verifier, info, score_only=True)


def _evaluation_inputs(key: bytes, info: PassportInfo) -> tuple[torch.Tensor, torch.Tensor]:
    data = claim_data(info.dataset, info.input_shape, info.mean, info.std, NAME)
    if info.num_classes != data.num_classes or info.n_eval > data.x_test.shape[0]:
        raise SchemeError(f"passport info: num_classes and n_eval do not fit the community's {info.dataset!r}")
    return evaluation_set(key, data, info.n_eval)


def _verify(
    suspect: Suspect, key: bytes, verifier: Mapping[str, torch.Tensor], info: Mapping[str, Any], *, score_only: bool
) -> Verdict:
    model = require_module(NAME, suspect)
    typed = read_info(PassportInfo, info)
    artifact = _parse_verifier(verifier, typed)
    threshold = artifact.expected_acc - typed.delta
    x, y = _evaluation_inputs(key, typed)
    base = {"version": typed.version, "passport_type": typed.passport_type}
    problem = _suspect_problem(model, typed.layers, x)
    if problem is not None:
        return Verdict(False, 0.0, threshold, {**base, "reason": problem})
    model = copy.deepcopy(model).eval()  # attaching passports never touches the caller's model
    passports = t1_passports(key, typed.version, typed.layers) if typed.passport_type == "T1" else artifact.passports
    score = accuracy_with(model, typed.version, passports, x, y)
    if score_only:
        return Verdict(score >= threshold, score, threshold, {**base, "n": typed.n_eval, "score_only": True})
    profile = _noise_profile(model, key, typed, artifact, passports, x, y)
    noise_ok = all(level["agrees"] for level in profile)
    fakes = [
        accuracy_with(model, typed.version, fake_passports(_VERIFY_FAKE_SEED, i, typed.version, typed.layers), x, y)
        for i in range(_VERIFY_FAKES)
    ]
    paralysed = statistics.fmean(fakes) < threshold
    details = {
        **base,
        "expected_accuracy": artifact.expected_acc,
        "noise_profile": profile,
        "noise_agrees": noise_ok,
        "fake_passport_accuracy": statistics.fmean(fakes),
        "fakes_paralyse": paralysed,
        "n": typed.n_eval,
        # Null: a model independent of the key runs with the key's passports as with a fake one.
        "chance_rate": max(1 / typed.num_classes, max(fakes)),
    }
    return Verdict(score >= threshold and noise_ok and paralysed, score, threshold, details)


def _noise_profile(
    model: nn.Module,
    key: bytes,
    info: PassportInfo,
    artifact: _Artifact,
    passports: Mapping[str, Passports],
    x: torch.Tensor,
    y: torch.Tensor,
) -> list[dict[str, Any]]:
    """§3.2 step 3: per level, the mean accuracy over the draws against the recorded one, agreeing
    within max(noise_sigmas · std, noise_floor)."""
    noise = noise_accuracies(model, key, info.version, passports, artifact.noise_levels, info.noise_draws, x, y)
    profile = []
    for c, accs, mean, std in zip(artifact.noise_levels, noise, artifact.noise_mean, artifact.noise_std, strict=True):
        got, tolerance = statistics.fmean(accs), max(info.noise_sigmas * std, info.noise_floor)
        profile.append({"level": c, "accuracy": got, "expected": mean, "tolerance": tolerance,
                        "agrees": abs(got - mean) <= tolerance})  # fmt: skip
    return profile
