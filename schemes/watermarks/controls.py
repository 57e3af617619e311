"""A null measured on the suspect itself (DESIGN §6.1 rule 3): control keys nobody knew in advance.

Reference models show what models independent of the claimant answer; they are public, so a
claimant can search keys offline until the references fail. Controls cannot be searched against:
a judge derives `count` control keys from a seed fixed only when the claim commits (its leaf hash),
verifies each on the suspect with the claim's own info and verifier artifact, and uses them twice:

* the per-answer rate p of the vote's bound is at least the one-sided Clopper-Pearson upper bound
  (registry.bounds.rate_upper_bound, α = 10⁻³) on the controls' pooled answers, so answers that
  move together (new label's one ε, function-coupled's one base pair, a normalisation that sends
  every input to one class) raise p instead of hiding behind the independence the bound assumes;
* a control that scores near the threshold (at least halfway from the scheme's chance rate to the
  threshold) marks a generic suspect: one that answers so for any key. The vote is `not-owner`,
  whatever the claimant's own score.

A prediction API is asked once for every input of the claim and its controls together (two passes
over the schemes' verification: one records the inputs, one replays the answers), so the controls
cost batches, not round trips. Every scheme's inputs come from the key, never from earlier answers,
which is what makes the replay exact.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn

from contracts.bounds import bound_text, rate_upper_bound
from contracts.errors import SchemeError
from schemes.watermarks.base import Predict, Scheme, Suspect, Verdict

__all__ = ["NEAR", "ControlFigures", "control_figures", "control_keys", "verify_with_controls"]

#: A control is near the threshold from this fraction of the way between chance and the threshold.
NEAR = 0.5
#: The confidence level of the controls' rate bound.
ALPHA = 1e-3
_DOMAIN = b"wmnode/control-key/v1"


def control_keys(seed: bytes, count: int) -> list[bytes]:
    """`count` 32-byte control keys from `seed` (the claim's leaf hash): SHA-256(domain ‖ seed ‖ i)."""
    return [hashlib.sha256(_DOMAIN + seed + i.to_bytes(4, "big")).digest() for i in range(count)]


@dataclass(frozen=True)
class ControlFigures:
    """What the controls showed: how many, the best score, how many came near, the rate bound."""

    count: int
    max_score: float
    near: int
    near_score: float
    rate_bound: float

    def text(self) -> str:
        """The vote's `controls` field: "COUNT:MAX_PER_MILLE:NEAR:RATE_BOUND" ("" without controls)."""
        if not self.count:
            return ""
        per_mille = max(0, min(1000, round(1000 * self.max_score)))
        return f"{self.count}:{per_mille}:{self.near}:{bound_text(self.rate_bound)}"


def control_figures(controls: list[Verdict], chance: float, threshold: float) -> ControlFigures:
    """Pool the controls' answers; count those near `threshold` (see the module docstring)."""
    near_score = chance + NEAR * (threshold - chance)
    if not controls:
        return ControlFigures(0, 0.0, 0, near_score, 0.0)
    hits = sum(round(v.score * int(v.details.get("n", 0))) for v in controls)
    total = sum(int(v.details.get("n", 0)) for v in controls)
    scores = [float(v.score) for v in controls]
    near = sum(1 for s in scores if s >= near_score)
    return ControlFigures(len(controls), max(scores), near, near_score, rate_upper_bound(hits, total, ALPHA))


def verify_with_controls(
    scheme: Scheme,
    suspect: Suspect,
    key: bytes,
    controls: list[bytes],
    verifier: Mapping[str, torch.Tensor],
    info: Mapping[str, Any],
    seed: bytes = b"",
) -> tuple[Verdict, list[Verdict], Verdict | None]:
    """The claim's verdict, its controls' verdicts and the scheme's survey of its shared choice
    (None for a scheme without one, or without a `seed`); an API is asked for all inputs at once."""
    runs: list[Callable[[Suspect], Verdict]] = [partial(scheme.verify, key=key, verifier=verifier, info=info)]
    runs += [partial(scheme.verify_control, key=key, control_key=c, verifier=verifier, info=info) for c in controls]
    survey = scheme.survey if seed else None
    if survey is not None:
        runs.append(partial(survey, seed=seed, verifier=verifier, info=info))
    if isinstance(suspect, nn.Module):
        verdicts = [run(suspect) for run in runs]
    else:
        verdicts = _batched(suspect, runs)
    if survey is not None:
        return verdicts[0], verdicts[1:-1], verdicts[-1]
    return verdicts[0], verdicts[1:], None


class _Recorder:
    """A Predict that records its inputs and answers class 0 (the first pass)."""

    def __init__(self) -> None:
        self.inputs: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().cpu())
        return torch.zeros(x.shape[0], dtype=torch.int64)


class _Replayer:
    """A Predict that answers, call by call, what the real suspect answered to the recorded inputs."""

    def __init__(self, inputs: list[torch.Tensor], answers: torch.Tensor) -> None:
        self.inputs, self.answers, self.call, self.at = inputs, answers, 0, 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.call >= len(self.inputs) or not torch.equal(self.inputs[self.call], x.detach().cpu()):
            raise SchemeError("the verification asked other inputs the second time; it cannot be batched")
        out = self.answers[self.at : self.at + x.shape[0]]
        self.call, self.at = self.call + 1, self.at + x.shape[0]
        return out


def _batched(predict: Predict, runs: list[Callable[[Suspect], Verdict]]) -> list[Verdict]:
    recorders = []
    for run in runs:
        recorder = _Recorder()
        run(recorder)
        recorders.append(recorder)
    inputs = [x for r in recorders for x in r.inputs]
    answers = predict(torch.cat(inputs)) if inputs else torch.zeros(0, dtype=torch.int64)
    answers = torch.as_tensor(answers).to("cpu", torch.int64).reshape(-1)
    out, at = [], 0
    for run, recorder in zip(runs, recorders, strict=True):
        count = sum(x.shape[0] for x in recorder.inputs)
        out.append(run(_Replayer(recorder.inputs, answers[at : at + count])))
        at += count
    return out
