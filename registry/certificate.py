"""Ownership certificates (DESIGN §4.4): one JSON file that anyone can check offline.

A certificate proves the outcome of the vote on one claim: that a majority of the members found
(or did not find) the claimant's watermark in the suspect. It does not prove that the claimant is
the model's standing owner: when two claimants pass on one model the earlier publish wins, which
the registry answers online (`GET /v1/owner`, `wmnode owner`); compare the certificates' publish
times offline.

A certificate holds the claim, the publish it rests on and the members' signed votes, each as its
log entry with an inclusion proof, plus checkpoints of one tree size signed by a majority of the
members. `verify_certificate` needs nothing but the file and the members' public keys (from a
community config): it recomputes every leaf hash and proof, every signature, the key checks of the
claim, and the decision from the votes in log order.
"""

from __future__ import annotations

import hashlib
from typing import Any

from registry.checkpoint import Checkpoint
from registry.client import NodeClient
from registry.encoding import canonical
from registry.errors import UnavailableError, VerificationError, WmnodeError
from registry.identity import verify_owner_key
from registry.merkle import leaf_hash, verify_inclusion
from registry.messages import Claim, Publish, Vote, message_from_json

VERSION = 1


def build_certificate(status: dict[str, Any], node_urls: list[str], community: str = "") -> dict[str, Any]:
    """Gather proofs for a decided claim (`status` as `GET /v1/claims/{i}` answers it).

    Every reachable member signs a checkpoint of one tree size that covers the decision; each
    entry's inclusion proof is taken against that size.
    """
    entries = [status["publish"], status["claim"], *status["votes"]]
    size = max(e["index"] for e in entries) + 1
    checkpoints: list[dict[str, Any]] = []
    proofs: dict[str, list[str]] = {}
    for url in node_urls:
        try:
            with NodeClient(url, timeout=10) as client:
                checkpoints.append(client.checkpoint(size))
                if not proofs:
                    proofs = {str(e["index"]): client.inclusion(e["index"], size)["path"] for e in entries}
        except WmnodeError:
            continue  # a stopped member: the others still sign
    if not checkpoints:
        raise UnavailableError("no member answered for checkpoints; the certificate needs at least a majority")
    return {
        "certificate": "wmnode ownership certificate",
        "v": VERSION,
        "community": community,
        "size": size,
        "publish": status["publish"],
        "claim": status["claim"],
        "votes": status["votes"],
        "decided": status["decided"],
        "result": status["result"],
        "standing": status["standing"],
        "proofs": proofs,
        "checkpoints": checkpoints,
    }


def _check_entry(entry: dict[str, Any], proofs: dict[str, Any], size: int, root: bytes) -> None:
    index = entry["index"]
    leaf = leaf_hash(canonical({"index": index, "msg": entry["msg"], "time": entry["time"]}))
    path = proofs.get(str(index))
    if not isinstance(path, list):
        raise VerificationError(f"no inclusion proof for entry #{index}")
    verify_inclusion(leaf, index, size, [bytes.fromhex(p) for p in path], root)


def verify_certificate(cert: dict[str, Any], members: list[str]) -> dict[str, Any]:
    """Check a certificate against the members' public keys; the decision it proves.

    Raises `VerificationError` naming the first thing that does not hold.
    """
    try:
        return _verify(cert, set(members))
    except (KeyError, TypeError, ValueError) as exc:
        raise VerificationError(f"malformed certificate: {type(exc).__name__}: {exc}") from None


def _verify(cert: dict[str, Any], members: set[str]) -> dict[str, Any]:
    if cert.get("v") != VERSION:
        raise VerificationError(f"unsupported certificate version {cert.get('v')!r}")
    majority = len(members) // 2 + 1
    size = cert["size"]
    signed: dict[str, str] = {}
    for obj in cert["checkpoints"]:
        checkpoint = Checkpoint.from_json(obj)
        if checkpoint.node not in members or checkpoint.size != size:
            continue
        checkpoint.verify()
        signed[checkpoint.node] = checkpoint.root
    roots = set(signed.values())
    if len(roots) > 1:
        raise VerificationError("members signed different roots for one size: the log has forked")
    if len(signed) < majority:
        raise VerificationError(f"checkpoints from {len(signed)} members; a majority is {majority}")
    root = bytes.fromhex(roots.pop())

    publish_entry, claim_entry = cert["publish"], cert["claim"]
    publish, claim = message_from_json(publish_entry["msg"]), message_from_json(claim_entry["msg"])
    if not isinstance(publish, Publish) or not isinstance(claim, Claim):
        raise VerificationError("the certificate's publish and claim are not a publish and a claim")
    for entry in (publish_entry, claim_entry, *cert["votes"]):
        _check_entry(entry, cert["proofs"], size, root)
    if claim.publish != publish_entry["index"] or claim.owner != publish.owner:
        raise VerificationError("the claim does not rest on this publish by the same owner")
    key, proof = bytes.fromhex(claim.key), bytes.fromhex(claim.key_proof)
    if hashlib.sha256(key).hexdigest() != publish.key_hash:
        raise VerificationError("the revealed key does not hash to the publish's key_hash")
    verify_owner_key(claim.owner, bytes.fromhex(publish.nonce), key, proof)

    tally: dict[str, int] = {}
    voters: set[str] = set()
    decided = None
    for entry in sorted(cert["votes"], key=lambda e: e["index"]):
        vote = message_from_json(entry["msg"])
        if not isinstance(vote, Vote) or vote.claim != claim_entry["index"] or vote.claim_hash != claim.body_hash():
            raise VerificationError(f"entry #{entry['index']} is not a vote on this claim")
        if vote.node not in members or vote.node in voters:
            raise VerificationError(f"vote #{entry['index']} is not a first vote by a member")
        voters.add(vote.node)
        tally[vote.verdict] = tally.get(vote.verdict, 0) + 1
        if decided is None and tally[vote.verdict] >= majority:
            decided = vote.verdict
    if decided is None:
        raise VerificationError(f"no verdict reaches a majority of {majority}: {tally}")
    return {
        "decided": decided,
        "tally": tally,
        "claim": claim_entry["index"],
        "publish": publish_entry["index"],
        "publish_time": publish_entry["time"],
        "owner": claim.owner,
        "model_hash": claim.model_hash,
        "checkpoint_signers": len(signed),
    }
