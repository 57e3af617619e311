"""The claimant picks the normalisation (issue: a decision that holds for any model), as it was done.

A squatter publishes new-label and function-coupled records before any victim exists, with a
degenerate normalisation in its info (mean 0 / std 0.1; mean 1), and later claims models it never
touched. With the suspect fed the info's encoding (the check switched off: `scheme.verify` as the
judge called it before), random keys pass; through the judge, which feeds the suspect its own
card's normalisation and verifies control keys, none is `owner`, while the victim's honest claim
on the same model is.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from contracts.errors import SchemeError
from contracts.identity import Identity, derive_owner_key
from contracts.references import ReferenceSpec
from registry.judge import process as judging
from schemes.data.community import claim_data, community_data
from schemes.models.zoo import model_to_bytes
from schemes.watermarks.base import get_scheme
from schemes.watermarks.function_coupled import dataset_digest
from schemes.workflow.bundle import load_bundle
from schemes.workflow.references import build_reference
from tests.cluster.community import embed_marked

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def job(tmp: Path, model_bytes: bytes, info: dict[str, Any], key: bytes) -> dict[str, Any]:
    (tmp / "suspect").write_bytes(model_bytes)
    (tmp / "info.json").write_text(json.dumps(info))
    save_file({}, str(tmp / "verifier"))  # both schemes ship nothing: their inputs come from the key
    return {
        "op": "judge", "scheme": info["scheme"], "key": key.hex(), "info_path": str(tmp / "info.json"),
        "verifier_path": str(tmp / "verifier"), "model_path": str(tmp / "suspect"), "predict_uri": None,
        "fetch": {"allow_loopback": True, "allow_private": False, "allow_hosts": [], "max_bytes": 2**28,
                  "timeout_s": 5.0},
        "references": [], "threshold_floor": 0.0, "max_false_positive": 1e-6, "datasets": [],
        "build": {"architectures": ["*"], "max_parameters": 10**8}, "control_seed": os.urandom(32).hex(),
        "controls": 8, "tries": 1,
    }  # fmt: skip


def squat(tmp: Path, model: Any, card: Any, info: dict[str, Any], keys: int) -> tuple[int, int]:
    """(keys that pass with the check off, keys the judge decides `owner`)."""
    scheme = get_scheme(info["scheme"])
    winners = []
    for _ in range(keys):
        key = os.urandom(32)
        if scheme.verify(model, key, {}, info).passed:  # fed the info's encoding, as before
            winners.append(key)
    data = model_to_bytes(model, card)
    owners = sum(judging.judge(job(tmp, data, info, key))["verdict"] == "owner" for key in winners)
    return len(winners), owners


def test_a_degenerate_normalisation_wins_nothing_against_a_new_label_model(tmp_path: Path) -> None:
    victim = Identity.generate()
    embed_marked(victim, "new-label", tmp_path / "victim")
    bundle = load_bundle(tmp_path / "victim")
    honest = judging.judge(job(tmp_path, model_to_bytes(bundle.model, bundle.card), bundle.info, bundle.key.key))
    assert honest["verdict"] == "owner", honest["reason"]
    # Which encoding lets random keys through depends on the victim's model (mean 0 / std 0.1: 292,
    # 300, 267, 9 and 0 of 300 on five embeddings), and the squatter chooses it after seeing the model:
    # the one of a grid that lets most of 20 random keys through, then 300 keys at it.
    scheme = get_scheme("new-label")
    grid = [{**bundle.info, "mean": [mean], "std": [std]} for mean in (0.0, 0.25, 0.5, 0.75, 1.0) for std in (0.1, 0.5)]
    probe = [os.urandom(32) for _ in range(20)]
    chosen = max(grid, key=lambda info: sum(scheme.verify(bundle.model, k, {}, info).passed for k in probe))
    passed, owners = squat(tmp_path, bundle.model, bundle.card, chosen, 300)
    print(f"new label, chosen mean {chosen['mean'][0]:g} / std {chosen['std'][0]:g}: {passed} of 300 random keys "
          f"pass with the check off, {owners} owner")  # fmt: skip
    assert passed >= 1  # the attack, with the check switched off: a random key is no owner of anything
    assert owners == 0


def test_a_degenerate_normalisation_wins_nothing_against_a_plain_model(tmp_path: Path) -> None:
    model, card = build_reference(ReferenceSpec("plain", "lenet5", "digits", (1, 28, 28), seed=3, epochs=8))
    std = list(community_data("digits", (1, 28, 28)).std)
    encoded = claim_data("digits", (1, 28, 28), [1.0], std, "function-coupled")
    info = {"scheme": "function-coupled", "version": 2, "mode": "invisible", "r": 0.5, "n_train": 200,
            "n_verify": 90, "threshold": 0.9, "candidate": 0, "num_classes": 10, "input_shape": [1, 28, 28],
            "mean": [1.0], "std": std, "dataset": "digits", "split_seed": 0, "test_fraction": 0.2,
            "dataset_sha256": dataset_digest(encoded)}  # fmt: skip
    passed = owners = 0
    for candidate in range(4):  # the claimant's choice among its key's candidates, all of them
        got = squat(tmp_path, model, card, {**info, "candidate": candidate}, 200)
        passed, owners = passed + got[0], owners + got[1]
    print(f"function-coupled, mean 1: {passed} of 800 (key, candidate) pairs pass with the check off, {owners} owner")
    # Version 1 (one triple a key): 7-10 of 800 passed with the check off. Version 2's five triples
    # close this by themselves (0 of 800 measured), so only the judged side is asserted.
    assert owners == 0


#: Nonces the searcher grinds per scheme. CI runs 1,000 (under a minute each); the issue's 10,000
#: are measured with WMNODE_SEARCH_NONCES=10000 (README, "A null calibration").
SEARCH_NONCES = int(os.environ.get("WMNODE_SEARCH_NONCES", "1000"))


@pytest.mark.timeout(3600)
@pytest.mark.parametrize("scheme_name", ["new-label", "function-coupled"])
def test_a_key_searched_against_the_references_and_a_model_of_its_own_wins_nothing(
    tmp_path: Path, scheme_name: str
) -> None:
    """The searcher holds a model of its own watermarked with the scheme and the community's public
    references (they rebuild bit for bit), and grinds nonces for the key its own model answers best
    while every reference fails it; it then claims a victim's model with that key, at the card's
    normalisation. The key was never embedded in the victim: `not-owner`."""
    searcher, victim = Identity.generate(), Identity.generate()
    embed_marked(searcher, scheme_name, tmp_path / "searcher")
    embed_marked(victim, scheme_name, tmp_path / "victim")
    own, target = load_bundle(tmp_path / "searcher"), load_bundle(tmp_path / "victim")
    references = [build_reference(ReferenceSpec(r, "lenet5", "digits", (1, 28, 28), seed=1, epochs=8))[0]
                  for r in ("plain", "new-label")]  # fmt: skip
    scheme, info = get_scheme(scheme_name), own.info
    best: tuple[float, bytes] = (-1.0, b"")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 30 ms a key on one thread; several threads on a shared machine crawl
    started = time.perf_counter()
    try:
        for _ in range(SEARCH_NONCES):
            key = derive_owner_key(searcher, os.urandom(16)).key
            score = scheme.verify(own.model, key, {}, info).score
            if score > best[0] and not any(_passes(scheme, ref, key, info) for ref in references):
                best = (score, key)
    finally:
        torch.set_num_threads(threads)
    searched = time.perf_counter() - started
    vote = judging.judge(job(tmp_path, model_to_bytes(target.model, target.card), info, best[1]))
    print(f"{scheme_name}: best of {SEARCH_NONCES} searched keys {best[0]:.3f} on the searcher's own model "
          f"({searched:.0f} s); on the victim's: {vote['verdict']}: {vote['reason'][:200]}")  # fmt: skip
    assert vote["verdict"] == "not-owner", vote["reason"]
    honest = judging.judge(job(tmp_path, model_to_bytes(target.model, target.card), target.info, target.key.key))
    assert honest["verdict"] == "owner", honest["reason"]  # the honest path of the same test


def _passes(scheme: Any, model: Any, key: bytes, info: dict[str, Any]) -> bool:
    try:
        return bool(scheme.verify(model, key, {}, info).passed)
    except SchemeError:  # a reference without Δ cannot answer it: it passes nothing
        return False
