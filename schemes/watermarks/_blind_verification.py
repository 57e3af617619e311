"""Blind watermark's verification (Li, Hu, Zhang, Guo, Eq. 4, §4.2): what every node rebuilds from the
key (the targets t_key and the covers D'), the shipped key samples checked against the info, and the
verdict of a suspect and of a control key (`schemes.watermarks.blind` says why each is so)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch

from contracts.bounds import binomial_tail
from contracts.errors import SchemeError
from contracts.infos import BlindInfo
from mtlsign.streams import key_integers, key_permutation
from mtlsign.verify import Verdict
from schemes.data._imaging import logo_sha256, ssim
from schemes.data.community import claim_data, pixels
from schemes.watermarks.base import Suspect, predict_labels, read_info

NAME = "blind"


def key_targets(key: bytes, n: int, num_classes: int) -> torch.Tensor:
    """Balanced t_key: t_i = π(i) mod K for the key's permutation π of range(n)."""
    return torch.from_numpy(key_permutation(key, NAME, "targets", n) % num_classes)


def _cover_classes(key: bytes, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Each cover's class (t_i + r_i) mod K, r_i ∈ 1..K−1 from the key: never its target."""
    offsets = torch.from_numpy(key_integers(key, NAME, "offsets", num_classes - 1, targets.shape[0]) + 1)
    return (targets + offsets) % num_classes


def key_covers(key: bytes, targets: torch.Tensor, y_train: torch.Tensor, num_classes: int) -> torch.Tensor:
    """D' (Alg. 1 line 1): for each t_i, a training index of class (t_i + r_i) mod K, r_i ∈ 1..K−1."""
    if num_classes < 2:
        raise SchemeError("blind: the task needs at least two classes")
    wanted = _cover_classes(key, targets, num_classes).tolist()
    labels = y_train.cpu().numpy()
    order = key_permutation(key, NAME, "covers", labels.shape[0])
    queues: dict[int, Iterator[int]] = {c: iter(order[labels[order] == c].tolist()) for c in range(num_classes)}
    covers = []
    for cls in wanted:
        index = next(queues[cls], None)
        if index is None:
            raise SchemeError(f"blind: too few training samples of class {cls} for {targets.shape[0]} key samples")
        covers.append(index)
    return torch.tensor(covers, dtype=torch.int64)


def cover_ssim(key: bytes, samples: torch.Tensor, info: BlindInfo) -> torch.Tensor:
    """SSIM (Eq. 8) of each key sample to its key-chosen cover in the community's copy of the data."""
    data = claim_data(info.dataset, info.input_shape, info.mean, info.std, NAME)
    covers = key_covers(key, key_targets(key, info.n, info.num_classes), data.y_train, info.num_classes)
    return ssim(pixels(data.x_train[covers], data.mean, data.std), pixels(samples, data.mean, data.std))


def _key_samples_from(verifier: Mapping[str, torch.Tensor], info: BlindInfo) -> torch.Tensor:
    """The verifier's key samples, after checking both tensors against info (the logo by its SHA-256)."""
    shape, n = info.input_shape, info.n
    if set(verifier) != {"key_samples", "logo"}:
        raise SchemeError("blind verifier must hold exactly key_samples and logo")
    samples, logo = verifier["key_samples"], verifier["logo"]
    if samples.dtype != torch.float32 or tuple(samples.shape) != (n, *shape):
        raise SchemeError(f"blind verifier: key_samples must be float32 shaped ({n}, {', '.join(map(str, shape))})")
    if not bool(torch.isfinite(samples).all()):
        raise SchemeError("blind verifier: key_samples must be finite")
    if logo.dtype != torch.uint8 or tuple(logo.shape) != shape[1:]:
        raise SchemeError(f"blind verifier: logo must be uint8 shaped ({shape[1]}, {shape[2]})")
    if logo_sha256(logo) != info.logo_sha256:
        raise SchemeError("blind verifier: the logo does not match info's logo_sha256")
    return samples


def verify(suspect: Suspect, key: bytes, verifier: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> Verdict:
    """Eq. 4: acc_g = the fraction of the key samples the suspect labels t_key; passed iff acc_g > T_acc.

    A sample counts only within `min_ssim` of its key-chosen cover (see the scheme's docstring).
    details["null_tail"] is P[Bin(n, 1/(K−1)) ≥ matches]: about the chance that a model which
    ignores this key matches as often (its targets are uniform over the K − 1 other classes)."""
    typed = read_info(BlindInfo, info)
    samples = _key_samples_from(verifier, typed)
    n, classes = typed.n, typed.num_classes
    close = cover_ssim(key, samples, typed) >= typed.min_ssim
    hit = predict_labels(suspect, samples) == key_targets(key, n, classes)
    matches = int((hit & close).sum())
    score = matches / n
    chance = 1 / (classes - 1)
    details = {"n": n, "matches": matches, "samples_near_cover": int(close.sum()), "chance_rate": chance,
               "null_tail": binomial_tail(n, matches, chance)}  # fmt: skip
    return Verdict(score > typed.threshold, score, typed.threshold, details)


def control(
    suspect: Suspect, key: bytes, control_key: bytes, verifier: Mapping[str, torch.Tensor], info: Mapping[str, Any]
) -> Verdict:
    """What stands in for a control key (DESIGN §6.1 rule 3): blind's key samples are the encoder's
    output, shipped rather than derived, so another key would find no sample near its covers. A
    control keeps the claim's samples and their SSIM check and draws other targets from the control
    key, each neither the claim's target nor the cover's class: a suspect that answers the shipped
    samples for reasons of its own (one class everywhere, the samples' look) matches these as often
    as the claim's, a watermarked one almost never."""
    typed = read_info(BlindInfo, info)
    samples = _key_samples_from(verifier, typed)
    n, classes = typed.n, typed.num_classes
    targets = key_targets(key, n, classes)
    covers = _cover_classes(key, targets, classes)
    picks = key_integers(control_key, NAME, "control-targets", max(1, classes - 2), n).tolist()
    others = []
    for t, c, pick in zip(targets.tolist(), covers.tolist(), picks, strict=True):
        free = [k for k in range(classes) if k not in (t, c)] or [t]
        others.append(free[pick % len(free)])
    close = cover_ssim(key, samples, typed) >= typed.min_ssim
    hit = predict_labels(suspect, samples) == torch.tensor(others, dtype=torch.int64)
    matches = int((hit & close).sum())
    details = {"n": n, "matches": matches, "chance_rate": 1 / (classes - 1)}
    return Verdict(matches / n > typed.threshold, matches / n, typed.threshold, details)
