"""Function-coupled verification (Wen, Li, Jiang, Xu, §4.4) and the survey of the suspect that bounds a
key's shared choices (DESIGN §6.1 rule 3): the key's triggers rebuilt over this node's copy of the
owner's data, the share the suspect labels with their part's t, and the null of that share."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from contracts.bounds import rate_upper_bound
from contracts.errors import DataError, SchemeError
from contracts.infos import FUNCTION_COUPLED_SURVEY_BLENDS, FUNCTION_COUPLED_SURVEY_PAIRS, FunctionCoupledInfo
from mtlsign.streams import key_permutation
from mtlsign.verify import Verdict
from schemes.data.community import claim_data
from schemes.data.dataset import Dataset
from schemes.watermarks._function_coupled_triggers import (
    NAME,
    Triple,
    blends,
    build_triggers,
    candidate_triples,
    dataset_digest,
    part_sizes,
)
from schemes.watermarks.base import Suspect, predict_labels, read_info


def _parse(info: Mapping[str, Any], verifier: Mapping[str, torch.Tensor]) -> FunctionCoupledInfo:
    """The info through its one schema (the community's split included); the verifier must be empty."""
    typed = read_info(FunctionCoupledInfo, info)
    if len(verifier):
        raise SchemeError("function-coupled verifier must be empty: the triggers come from the key, never the claimant")
    return typed


def _community_copy(info: FunctionCoupledInfo) -> Dataset:
    """This node's copy of the owner's data (split as the community splits it: the schema's rule)."""
    data = claim_data(info.dataset, info.input_shape, info.mean, info.std, NAME)
    if dataset_digest(data) != info.dataset_sha256:
        # This node's copy, or the claimant's digest: an `error` vote either way, never a wrong verdict.
        raise DataError(f"function-coupled: this node's copy of {info.dataset!r} differs from the owner's")
    return data


def _rebuild(key: bytes, info: FunctionCoupledInfo, triples: list[Triple]) -> tuple[torch.Tensor, torch.Tensor]:
    """The key's verification triggers and labels over this node's copy of the owner's data."""
    data = _community_copy(info)
    return build_triggers(key, data, triples, info.n_verify, info.mode, info.r, info.candidate)


def verify(suspect: Suspect, key: bytes, verifier: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> Verdict:
    """§4.4: the authentication success rate, the share of the 90 triggers the suspect labels with
    their part's t."""
    typed = _parse(info, verifier)
    triples = candidate_triples(key, typed.num_classes, typed.candidate)
    threshold, n = typed.threshold, typed.n_verify
    triggers, labels = _rebuild(key, typed, triples)
    correct = predict_labels(suspect, triggers) == labels
    hits = int(correct.sum())
    # Null per answer: t is uniform over the K − 2 classes that are not bases, whatever a
    # key-independent model answers for the blends. Answers to one pair's blends are not
    # independent: `survey` measures that shared choice on the suspect.
    details = {"targets": [t[0] for t in triples], "bases": [list(t[1:]) for t in triples], "n": n,
               "target_answers": hits, "part_answers": [int(c.sum()) for c in torch.split(correct, part_sizes(n))],
               "chance_rate": 1 / (typed.num_classes - 2), "choices": FunctionCoupledInfo.CANDIDATES}  # fmt: skip
    return Verdict(hits / n >= threshold, hits / n, threshold, details)


#: The survey's fresh blends per ordered base pair, and the most base pairs it asks about: at 20
#: blends, the upper rates of pairs answered t half the time left 1.5e-6 on an owner's LeNet-5
#: (digits, 5 parts); at 80, 6.6e-8 (measured on three keys: 20 → 80 lowered each 20-fold).
SURVEY_BLENDS, SURVEY_PAIRS = FUNCTION_COUPLED_SURVEY_BLENDS, FUNCTION_COUPLED_SURVEY_PAIRS


def survey(suspect: Suspect, seed: bytes, verifier: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> Verdict:
    """The null of the shared choices, measured on the suspect (DESIGN §6.1 rule 3).

    A part's answers share one triple (t, b1, b2), and a watermark generalises over its classes,
    not its pairs: measured, a model watermarked on (7, 9, 6) labels blends of fresh 9/6 pairs 7 at
    0.98, and a plain digits model labels some other pair's blends one class at 0.8-0.97. So the
    binomial tail over n answers says nothing about a key whose triples the suspect answers so
    generically. The survey asks the suspect about `SURVEY_BLENDS` blends of fresh pairs (drawn
    from `seed`, the claim's control seed) of every ordered base pair (at most `SURVEY_PAIRS`, drawn
    from the seed when there are more), and takes for each triple r̄, the Clopper-Pearson upper
    bound (α = 10⁻³) on the rate at which the suspect labels its blends t. A part of m answers,
    its triple uniform, then gets c right with probability at most the mean over triples of
    P[Bin(m, r̄) = c]; the parts drawn independently, the score is the chance that their sum
    reaches the threshold. (A key's parts have distinct base pairs, which only lowers that chance
    while fewer than one triple in eight is answered generically.) With one part, as in the paper,
    the score is at least about 1/360 on 10 classes for any suspect that answers its own triple."""
    typed = _parse(info, verifier)
    data = _community_copy(typed)
    classes, n, threshold = typed.num_classes, typed.n_verify, typed.threshold
    pairs = [(b1, b2) for b1 in range(classes) for b2 in range(classes) if b1 != b2]
    if len(pairs) > SURVEY_PAIRS:
        pairs = [pairs[int(i)] for i in key_permutation(seed, NAME, "survey/pairs", len(pairs))[:SURVEY_PAIRS]]
    fresh = [
        blends(seed, data, (-1, b1, b2), SURVEY_BLENDS, typed.mode, typed.r, f"survey/{i}")
        for i, (b1, b2) in enumerate(pairs)
    ]
    labels = predict_labels(suspect, torch.cat(fresh)).view(len(pairs), SURVEY_BLENDS)
    hits: list[int] = []
    for (b1, b2), answers in zip(pairs, labels, strict=True):
        counts = torch.bincount(answers.clamp(0, classes), minlength=classes + 1)
        hits += [int(counts[t]) for t in range(classes) if t not in (b1, b2)]
    # One upper bound per distinct count (at most SURVEY_BLENDS + 1), not per triple: 720 searches took 0.6 s.
    upper = {h: rate_upper_bound(h, SURVEY_BLENDS) for h in set(hits)}
    rates = [upper[h] for h in hits]
    generic = sum(h >= threshold * SURVEY_BLENDS for h in hits)
    share = pooled_tail(rates, part_sizes(n), math.ceil(threshold * n - 1e-9))
    details = {"n": len(pairs) * SURVEY_BLENDS, "pairs": len(pairs), "triples": len(rates), "generic": generic}
    return Verdict(False, share, 0.0, details)


def pooled_tail(rates: list[float], sizes: list[int], k: int) -> float:
    """P[X_1 + … + X_P ≥ k], X_j independent, each Bin(m_j, r) with r drawn uniformly from `rates`."""
    total = [1.0]  # distribution of the sum so far
    for m in sizes:
        part = [sum(math.comb(m, c) * r**c * (1 - r) ** (m - c) for r in rates) / len(rates) for c in range(m + 1)]
        total = [
            sum(total[i] * part[c - i] for i in range(max(0, c - m), min(c, len(total) - 1) + 1))
            for c in range(len(total) + m)
        ]
    return min(1.0, sum(total[k:]))
