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

People read a certificate without the tool, so its stated fields must agree with what the tool
recomputes, or it is refused: `decided` is the decision; `result` is the decision, or `not-owner`
when the decision is `owner` and the stated `standing` names another owner whose publish came
first; each entry's `leaf_hash`; the `community` when the caller names the expected one. The
standing is an online fact (later claims can change it), so only what the file proves is checked:
its fields' types, its model, and that where it names this claim or this publish it names them as
they are.
"""

from __future__ import annotations

import hashlib
from typing import Any

from contracts.encoding import is_hex
from contracts.errors import UnavailableError, VerificationError, WmnodeError
from contracts.identity import verify_owner_key
from registry.client.node_client import NodeClient
from registry.log.messages import NOT_OWNER, OWNER, Claim, Publish, Vote, message_from_json
from registry.proofs.checkpoint import Checkpoint
from registry.proofs.merkle import entry_bytes, leaf_hash, verify_inclusion

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
    leaf = leaf_hash(entry_bytes(index, entry["msg"], entry["time"]))
    path = proofs.get(str(index))
    if not isinstance(path, list):
        raise VerificationError(f"no inclusion proof for entry #{index}")
    verify_inclusion(leaf, index, size, [bytes.fromhex(p) for p in path], root)
    stated = entry.get("leaf_hash")
    if stated is not None and stated != leaf.hex():
        raise VerificationError(
            f"certificate states leaf_hash {_short(stated)} for entry #{index} but its entry hashes to "
            f"{_short(leaf.hex())}"
        )


def _short(value: object) -> str:
    return f"{str(value)[:16]}…"


def verify_certificate(cert: dict[str, Any], members: list[str], community: str | None = None) -> dict[str, Any]:
    """Check a certificate against the members' public keys; the decision and result it proves.

    `community`, when given, is the expected community name: a certificate that states another
    is refused. Raises `VerificationError` naming the first thing that does not hold.
    """
    try:
        summary = _verify(cert, set(members))
        _check_community(cert.get("community"), community)
        if cert["decided"] != summary["decided"]:
            raise VerificationError(
                f"certificate states decided {cert['decided']!r:.40} but its votes decide {summary['decided']!r}"
            )
        summary["standing"] = _check_standing(cert.get("standing"), summary)
        summary["result"] = _check_result(cert["result"], summary)
        return summary
    except (KeyError, TypeError, ValueError) as exc:
        raise VerificationError(f"malformed certificate: {type(exc).__name__}: {exc}") from None


def _check_community(stated: object, expected: str | None) -> None:
    if expected is not None and stated not in (None, "") and stated != expected:
        raise VerificationError(
            f"certificate states community {stated!r:.80} but the expected community is {expected!r}"
        )


def _check_standing(standing: object, facts: dict[str, Any]) -> dict[str, Any] | None:
    """The stated standing owner, checked as far as the file proves it (its types, its model, and
    what it says of this claim and this publish)."""
    if standing is None:
        return None
    if not isinstance(standing, dict):
        raise VerificationError(f"certificate's standing must be an object or null, got {type(standing).__name__}")
    for name in ("claim", "publish", "publish_time"):
        value = standing.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise VerificationError(f"certificate's standing.{name} must be a non-negative integer, got {value!r:.40}")
    if not is_hex(standing.get("owner"), 32):
        raise VerificationError(
            f"certificate's standing.owner must be 64 lowercase hex digits, got {standing.get('owner')!r:.40}"
        )
    if "model_hash" in standing and standing["model_hash"] != facts["model_hash"]:
        raise VerificationError(
            f"certificate's standing.model_hash {_short(standing['model_hash'])} disagrees with the claim's "
            f"model_hash {_short(facts['model_hash'])}"
        )
    if standing["claim"] == facts["claim"]:
        _agree(standing, facts, ("owner", "publish", "publish_time"), f"claim #{facts['claim']}'s")
        if facts["decided"] != OWNER:
            raise VerificationError(
                f"certificate's standing names claim #{facts['claim']}, which its votes decide "
                f"{facts['decided']!r}; only a passing claim stands"
            )
    if standing["publish"] == facts["publish"]:
        _agree(standing, facts, ("owner", "publish_time"), f"publish #{facts['publish']}'s")
    # The standing owner is the earliest publish among the passing claims (RegistryLog.standing_owner);
    # when this claim passed, it is one of them.
    if facts["decided"] == OWNER and _rank(standing) > _rank(facts):
        raise VerificationError(
            f"certificate's standing names publish #{standing['publish']} at {standing['publish_time']}, after "
            f"this claim's publish #{facts['publish']} at {facts['publish_time']}; this claim passed, so the "
            "earliest passing publish cannot be later"
        )
    return dict(standing)


def _rank(obj: dict[str, Any]) -> tuple[int, int]:
    """The order of publishes in `standing_owner`: publish time, then log index."""
    return obj["publish_time"], obj["publish"]


def _agree(standing: dict[str, Any], facts: dict[str, Any], names: tuple[str, ...], whose: str) -> None:
    for name in names:
        if standing[name] != facts[name]:
            stated, real = (
                (_short(standing[name]), _short(facts[name])) if name == "owner" else (standing[name], facts[name])
            )
            raise VerificationError(f"certificate's standing.{name} {stated} disagrees with {whose} {name} {real}")


def _check_result(result: object, facts: dict[str, Any]) -> str:
    """`result` is the decision, or `not-owner` when this claim passed but another owner's publish
    came first (RegistryLog.claim_status)."""
    decided: str = facts["decided"]
    standing = facts["standing"]
    outranked = (
        decided == OWNER
        and standing is not None
        and standing["owner"] != facts["owner"]
        and _rank(standing) < _rank(facts)
    )
    if outranked:
        if result != NOT_OWNER:
            raise VerificationError(
                f"certificate states result {result!r:.40} but its standing names another owner "
                f"{_short(standing['owner'])}, whose publish #{standing['publish']} came first: the result is "
                f"{NOT_OWNER!r}"
            )
        return NOT_OWNER
    if result != decided:
        why = ""
        if decided == OWNER and result == NOT_OWNER:
            why = (
                " and it names no standing owner" if standing is None else " and the standing names this claim's owner"
            )
        raise VerificationError(f"certificate states result {result!r:.40} but its votes decide {decided!r}{why}")
    return decided


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
    votes: list[dict[str, Any]] = []
    for entry in sorted(cert["votes"], key=lambda e: e["index"]):
        vote = message_from_json(entry["msg"])
        if not isinstance(vote, Vote) or vote.claim != claim_entry["index"] or vote.claim_hash != claim.body_hash():
            raise VerificationError(f"entry #{entry['index']} is not a vote on this claim")
        if vote.node not in members or vote.node in voters:
            raise VerificationError(f"vote #{entry['index']} is not a first vote by a member")
        voters.add(vote.node)
        votes.append({"index": entry["index"], "node": vote.node, "verdict": vote.verdict, "fp_bound": vote.fp_bound,
                      "references": [r for r in vote.references.split(",") if r]})  # fmt: skip
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
        "votes": votes,
    }
