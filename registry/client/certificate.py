"""Ownership certificates (DESIGN §4.4): one JSON file that anyone can check offline.

A certificate proves the outcome of the vote on one claim: that a majority of the members found
(or did not find) the claimant's watermark in the suspect. It does not prove that the claimant is
the model's standing owner: when two claimants pass on one model the earlier publish wins, which
the registry answers online (`GET /v1/owner`, `wmnode owner`); compare the certificates' publish
times offline.

A certificate (`Certificate`; its JSON is the file) holds the claim, the publish it rests on and the
members' signed votes, each as its log entry with an inclusion proof, plus checkpoints of one tree
size signed by a majority of the members. `Certificate.from_json` checks its form;
`verify_certificate` needs nothing but the file and the members' public keys (from a community
config): it recomputes every leaf hash and proof, every signature, the key checks of the claim,
and the decision from the votes in log order.

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
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from contracts.encoding import is_hex
from contracts.errors import MessageError, UnavailableError, VerificationError, WmnodeError
from contracts.identity import verify_owner_key
from registry.client.node_client import MAX_PROOF_HASHES, NodeClient
from registry.log.answers import (
    ClaimStatus,
    Entry,
    JsonAnswer,
    Standing,
    json_object,
    require_count,
    require_text,
)
from registry.log.messages import NOT_OWNER, OWNER, Claim, Publish, Vote
from registry.proofs.checkpoint import Checkpoint
from registry.proofs.merkle import verify_inclusion

VERSION = 1
KIND = "wmnode ownership certificate"
#: Bounds on what a certificate file may hold (a community has far fewer members, votes and entries).
MAX_ITEMS = 1000
MAX_STATED_CHARS = 1000
_INDEX_RE = re.compile(r"0|[1-9][0-9]{0,15}")


@dataclass(frozen=True, eq=False)
class Certificate(JsonAnswer):
    """A decided claim with its proofs: the publish, the claim and the votes as log entries, each
    entry's inclusion proof (by index) in the tree of `size` leaves, and the members' checkpoints of
    that size. `decided`, `result`, `standing` and `community` are what the file states, for people
    who read it without the tool; `verify_certificate` checks them against what it recomputes."""

    community: str
    size: int
    publish: Entry
    claim: Entry
    votes: tuple[Entry, ...]
    decided: str
    result: str
    standing: Standing | None
    proofs: dict[int, tuple[str, ...]]
    checkpoints: tuple[Checkpoint, ...]

    FIELDS: ClassVar[tuple[str, ...]] = ("certificate", "v", "community", "size", "publish", "claim", "votes",
                                         "decided", "result", "standing", "proofs", "checkpoints")  # fmt: skip

    @classmethod
    def from_json(cls, obj: object) -> Certificate:
        """Parse a certificate, checking its form (not its proofs: `verify_certificate` does)."""
        where = "certificate's"
        fields = json_object(obj, "certificate", cls.FIELDS)
        if fields["certificate"] != KIND:
            raise MessageError(f"not a {KIND} (its 'certificate' field is {fields['certificate']!r:.40})")
        if fields["v"] != VERSION or isinstance(fields["v"], bool):
            raise MessageError(f"unsupported certificate version {fields['v']!r}")
        publish = Entry.from_json(fields["publish"], f"{where} publish")
        claim = Entry.from_json(fields["claim"], f"{where} claim")
        if not isinstance(publish.msg, Publish) or not isinstance(claim.msg, Claim):
            raise MessageError("the certificate's publish and claim are not a publish and a claim")
        standing = fields["standing"]
        if standing is not None and not isinstance(standing, dict):
            raise MessageError(f"{where} standing must be an object or null, got {type(standing).__name__}")
        return cls(
            community=require_text(fields, "community", where, MAX_STATED_CHARS),
            size=require_count(fields, "size", where),
            publish=publish,
            claim=claim,
            votes=tuple(Entry.from_json(v, f"{where} votes[{i}]") for i, v in enumerate(_items(fields, "votes"))),
            decided=require_text(fields, "decided", where, MAX_STATED_CHARS),
            result=require_text(fields, "result", where, MAX_STATED_CHARS),
            standing=None if standing is None else Standing.from_json(standing, f"{where} standing"),
            proofs=_proofs(fields["proofs"]),
            checkpoints=tuple(Checkpoint.from_json(c) for c in _items(fields, "checkpoints")),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "certificate": KIND,
            "v": VERSION,
            "community": self.community,
            "size": self.size,
            "publish": self.publish.to_json(),
            "claim": self.claim.to_json(),
            "votes": [vote.to_json() for vote in self.votes],
            "decided": self.decided,
            "result": self.result,
            "standing": None if self.standing is None else self.standing.to_json(),
            "proofs": {str(index): list(path) for index, path in self.proofs.items()},
            "checkpoints": [checkpoint.to_json() for checkpoint in self.checkpoints],
        }


def _items(fields: Mapping[str, Any], name: str) -> list[Any]:
    value = fields[name]
    if not isinstance(value, list) or len(value) > MAX_ITEMS:
        raise MessageError(f"certificate's {name} must be a list of at most {MAX_ITEMS} items")
    return value


def _proofs(obj: object) -> dict[int, tuple[str, ...]]:
    """Inclusion proofs by entry index (JSON object keys are the indexes in decimal)."""
    if not isinstance(obj, dict) or len(obj) > MAX_ITEMS:
        raise MessageError(f"certificate's proofs must be an object of at most {MAX_ITEMS} inclusion proofs")
    proofs = {}
    for key, path in obj.items():
        if not _INDEX_RE.fullmatch(key):
            raise MessageError(f"certificate's proofs are named by entry index, not {key!r:.40}")
        if not isinstance(path, list) or len(path) > MAX_PROOF_HASHES or not all(is_hex(p, 32) for p in path):
            raise MessageError(
                f"certificate's proof of entry #{key} must be a list of at most {MAX_PROOF_HASHES} hashes, "
                "each 64 lowercase hex digits"
            )
        proofs[int(key)] = tuple(path)
    return proofs


def build_certificate(status: ClaimStatus, node_urls: list[str], community: str = "") -> Certificate:
    """Gather proofs for a decided claim (`status` as `GET /v1/claims/{i}` answers it).

    Every reachable member signs a checkpoint of one tree size that covers the decision; each
    entry's inclusion proof is taken against that size.
    """
    if status.decided is None or status.result is None:
        raise MessageError(f"claim #{status.claim.index} is not decided: there is no decision to certify")
    entries = [status.publish, status.claim, *status.votes]
    size = max(e.index for e in entries) + 1
    checkpoints: list[Checkpoint] = []
    proofs: dict[int, tuple[str, ...]] = {}
    for url in node_urls:
        try:
            with NodeClient(url, timeout=10) as client:
                checkpoints.append(client.signed_checkpoint(size))
                if not proofs:
                    proofs = {e.index: tuple(p.hex() for p in client.inclusion_path(e.index, size)) for e in entries}
        except WmnodeError:
            continue  # a stopped member: the others still sign
    if not checkpoints:
        raise UnavailableError("no member answered for checkpoints; the certificate needs at least a majority")
    return Certificate(
        community=community,
        size=size,
        publish=status.publish,
        claim=status.claim,
        votes=status.votes,
        decided=status.decided,
        result=status.result,
        standing=status.standing,
        proofs=proofs,
        checkpoints=tuple(checkpoints),
    )


def _check_entry(entry: Entry, proofs: dict[int, tuple[str, ...]], size: int, root: bytes) -> None:
    leaf = entry.leaf()
    path = proofs.get(entry.index)
    if path is None:
        raise VerificationError(f"no inclusion proof for entry #{entry.index}")
    verify_inclusion(leaf, entry.index, size, [bytes.fromhex(p) for p in path], root)
    if entry.leaf_hash is not None and entry.leaf_hash != leaf.hex():
        raise VerificationError(
            f"certificate states leaf_hash {_short(entry.leaf_hash)} for entry #{entry.index} but its entry hashes to "
            f"{_short(leaf.hex())}"
        )


def _short(value: object) -> str:
    return f"{str(value)[:16]}…"


def verify_certificate(cert: Mapping[str, Any], members: list[str], community: str | None = None) -> dict[str, Any]:
    """Check a certificate (a `Certificate`, or its JSON) against the members' public keys; the
    decision and result it proves.

    `community`, when given, is the expected community name: a certificate that states another
    is refused. Raises `VerificationError` naming the first thing that does not hold.
    """
    parsed = cert if isinstance(cert, Certificate) else _parse(cert, community)
    summary = _verify(parsed, set(members))
    _check_community(parsed.community, community)
    if parsed.decided != summary["decided"]:
        raise VerificationError(
            f"certificate states decided {parsed.decided!r:.40} but its votes decide {summary['decided']!r}"
        )
    summary["standing"] = _check_standing(parsed.standing, summary)
    summary["result"] = _check_result(parsed.result, summary)
    return summary


def _parse(cert: Mapping[str, Any], community: str | None) -> Certificate:
    _check_community(cert.get("community"), community)  # named as the file states it, whatever its type
    try:
        return Certificate.from_json(cert)
    except MessageError as exc:
        raise VerificationError(f"malformed certificate: {exc.diagnostics()}") from None


def _check_community(stated: object, expected: str | None) -> None:
    if expected is not None and stated not in (None, "") and stated != expected:
        raise VerificationError(
            f"certificate states community {stated!r:.80} but the expected community is {expected!r}"
        )


def _check_standing(standing: Standing | None, facts: dict[str, Any]) -> dict[str, Any] | None:
    """The stated standing owner, checked as far as the file proves it (its model, and what it says
    of this claim and this publish; Certificate.from_json checked its types)."""
    if standing is None:
        return None
    if standing.model_hash is not None and standing.model_hash != facts["model_hash"]:
        raise VerificationError(
            f"certificate's standing.model_hash {_short(standing.model_hash)} disagrees with the claim's "
            f"model_hash {_short(facts['model_hash'])}"
        )
    stated = standing.to_json()
    if standing.claim == facts["claim"]:
        _agree(stated, facts, ("owner", "publish", "publish_time"), f"claim #{facts['claim']}'s")
        if facts["decided"] != OWNER:
            raise VerificationError(
                f"certificate's standing names claim #{facts['claim']}, which its votes decide "
                f"{facts['decided']!r}; only a passing claim stands"
            )
    if standing.publish == facts["publish"]:
        _agree(stated, facts, ("owner", "publish_time"), f"publish #{facts['publish']}'s")
    # The standing owner is the earliest publish among the passing claims (RegistryLog.standing_owner);
    # when this claim passed, it is one of them.
    if facts["decided"] == OWNER and _rank(stated) > _rank(facts):
        raise VerificationError(
            f"certificate's standing names publish #{standing.publish} at {standing.publish_time}, after "
            f"this claim's publish #{facts['publish']} at {facts['publish_time']}; this claim passed, so the "
            "earliest passing publish cannot be later"
        )
    return stated


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


def _check_result(result: str, facts: dict[str, Any]) -> str:
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


def _signed_root(cert: Certificate, members: set[str]) -> tuple[bytes, int]:
    """The root a majority of the members signed for the certificate's size, and how many signed it."""
    majority = len(members) // 2 + 1
    signed: dict[str, str] = {}
    for checkpoint in cert.checkpoints:
        if checkpoint.node not in members or checkpoint.size != cert.size:
            continue
        checkpoint.verify()
        signed[checkpoint.node] = checkpoint.root
    roots = set(signed.values())
    if len(roots) > 1:
        raise VerificationError("members signed different roots for one size: the log has forked")
    if len(signed) < majority:
        raise VerificationError(f"checkpoints from {len(signed)} members; a majority is {majority}")
    return bytes.fromhex(roots.pop()), len(signed)


def _verify(cert: Certificate, members: set[str]) -> dict[str, Any]:
    root, signers = _signed_root(cert, members)
    publish, claim = cert.publish.msg, cert.claim.msg
    assert isinstance(publish, Publish) and isinstance(claim, Claim)  # Certificate.from_json checked them
    for entry in (cert.publish, cert.claim, *cert.votes):
        _check_entry(entry, cert.proofs, cert.size, root)
    if claim.publish != cert.publish.index or claim.owner != publish.owner:
        raise VerificationError("the claim does not rest on this publish by the same owner")
    key, proof = bytes.fromhex(claim.key), bytes.fromhex(claim.key_proof)
    if hashlib.sha256(key).hexdigest() != publish.key_hash:
        raise VerificationError("the revealed key does not hash to the publish's key_hash")
    verify_owner_key(claim.owner, bytes.fromhex(publish.nonce), key, proof)
    decided, tally, votes = _tally(cert, claim, members)
    return {
        "decided": decided,
        "tally": tally,
        "claim": cert.claim.index,
        "publish": cert.publish.index,
        "publish_time": cert.publish.time,
        "owner": claim.owner,
        "model_hash": claim.model_hash,
        "checkpoint_signers": signers,
        "votes": votes,
    }


def _tally(cert: Certificate, claim: Claim, members: set[str]) -> tuple[str, dict[str, int], list[dict[str, Any]]]:
    """The decision the votes make in log order (the first verdict to reach a majority of the
    members), the count of each verdict, and what each vote says."""
    majority = len(members) // 2 + 1
    tally: dict[str, int] = {}
    voters: set[str] = set()
    decided = None
    votes: list[dict[str, Any]] = []
    for entry in sorted(cert.votes, key=lambda e: e.index):
        vote = entry.msg
        if not isinstance(vote, Vote) or vote.claim != cert.claim.index or vote.claim_hash != claim.body_hash():
            raise VerificationError(f"entry #{entry.index} is not a vote on this claim")
        if vote.node not in members or vote.node in voters:
            raise VerificationError(f"vote #{entry.index} is not a first vote by a member")
        voters.add(vote.node)
        votes.append({"index": entry.index, "node": vote.node, "verdict": vote.verdict, "fp_bound": vote.fp_bound,
                      "references": [r for r in vote.references.split(",") if r]})  # fmt: skip
        tally[vote.verdict] = tally.get(vote.verdict, 0) + 1
        if decided is None and tally[vote.verdict] >= majority:
            decided = vote.verdict
    if decided is None:
        raise VerificationError(f"no verdict reaches a majority of {majority}: {tally}")
    return decided, tally, votes
