"""Claim admission (DESIGN §6.1 rules 1-2, §6.2): what a claim's info, verifier artifact and suspect
must be before anyone verifies it, each rule in one place.

Two callers apply the same rules: the API, before a claim commits, so that no judge is ever started
for a claim that cannot pass and the claimant learns why at once (registry.serve.api); and every
node's verifier, before it judges a committed claim, since the member that admitted it may not have
checked (registry.serve.verifier). A refusal is an `InfoError` (a `RejectedError`: the API answers
409, the verifier votes `not-owner`) or another `RejectedError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from contracts.bundle import MAX_INFO_BYTES, MAX_VERIFIER_BYTES
from contracts.cards import card_from_artifact, safetensors_header, tensor_names
from contracts.encoding import parse_json
from contracts.errors import RejectedError
from contracts.infos import Info, check_against_card, check_verifier, parse_info
from contracts.policy import VerificationPolicy
from registry.log.messages import ARTIFACT, Claim, uri_kind

__all__ = [
    "check_published_artifacts",
    "check_suspect",
    "check_verifier_file",
    "info_bytes",
    "read_info",
]


def info_bytes(path: Path) -> bytes:
    """A claim's info as stored: at most `MAX_INFO_BYTES` (no more than one byte past it is read)."""
    with path.open("rb") as handle:
        data = handle.read(MAX_INFO_BYTES + 1)
    if len(data) > MAX_INFO_BYTES:
        raise RejectedError(f"the info is over {MAX_INFO_BYTES} bytes")
    return data


def read_info(scheme: str, data: bytes, policy: VerificationPolicy) -> Info:
    """The typed info of a claim on a `scheme` publish: a JSON object (decimals allowed: it holds β
    and thresholds) within the community's floors and caps."""
    return parse_info(scheme, parse_json(data, limit=MAX_INFO_BYTES, floats=True), policy)


def check_verifier_file(info: Info, path: Path) -> None:
    """The verifier artifact is small, and ships nothing the scheme derives from the key (rule 1)."""
    if path.stat().st_size > MAX_VERIFIER_BYTES:
        raise RejectedError(f"the verifier artifact is over {MAX_VERIFIER_BYTES} bytes")
    check_verifier(info, tensor_names(safetensors_header(path)))


def check_suspect(info: Info, path: Path, policy: VerificationPolicy, checkpoints: frozenset[str]) -> dict[str, Any]:
    """The suspect's card, read from its safetensors header (no torch), once it fits the info: an
    architecture the community builds (or a public checkpoint's it admitted), within its caps."""
    card = card_from_artifact(safetensors_header(path))
    check_against_card(info, card, policy, checkpoints)
    return card


def check_published_artifacts(claim: Claim, info_hash: str, verifier_hash: str) -> None:
    """DESIGN §6.1: the info and verifier judged are the ones the publish committed to, not others
    uploaded beside them (a claim naming another info would commit, and every node vote `error`).
    An artifact URI must name the published hash; a URL's bytes are checked against it on arrival."""
    named = (
        (claim.info_uri, info_hash, "info_uri is not the info its publish names (info_hash)"),
        (
            claim.verifier_uri,
            verifier_hash,
            "verifier_uri is not the verifier artifact its publish names (verifier_hash)",
        ),
    )
    for uri, published, wrong in named:
        if uri_kind(uri) == ARTIFACT and uri.removeprefix("sha256:") != published:
            raise RejectedError(f"claim: {wrong}")
