"""Receipts (`Receipt`): an entry with a node's signed checkpoint and the inclusion proof that ties them.

A receipt says "this entry is in the log". From one node it proves only that the node signed it,
so with a community config `confirm_receipt` also asks every member: the entry counts as committed
once a majority of the members each sign a checkpoint that includes it (and those checkpoints agree
with each other and with what this client saw before, registry.monitor). Their checkpoints and
inclusion proofs are kept in the receipt as `confirmations`, so it can be checked offline too.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any

from contracts.encoding import is_hex
from contracts.errors import MessageError, UnavailableError, VerificationError, WmnodeError
from registry.client.monitor import Monitor, Peer
from registry.client.node_client import MAX_PROOF_HASHES, NodeClient
from registry.log.answers import SUBMIT_STATUSES, Entry, JsonAnswer, json_object, require_count, require_hex32
from registry.proofs.checkpoint import Checkpoint
from registry.proofs.merkle import verify_inclusion

#: How often `confirm_receipt` asks the members that have not confirmed yet.
POLL_SECONDS = 0.25


@dataclass(frozen=True, eq=False)
class InclusionProof(JsonAnswer):
    """An RFC 6962 audit path of leaf `index` in the tree of `size` leaves. As a node serves it
    (`GET /v1/proof/inclusion`) it also states the leaf hash and the root; a confirmation keeps the
    path alone, since its checkpoint holds the root."""

    index: int
    size: int
    path: tuple[str, ...]
    leaf_hash: str | None = None
    root: str | None = None

    @classmethod
    def from_json(cls, obj: object, where: str = "inclusion proof") -> InclusionProof:
        fields = json_object(obj, where, ("index", "size", "path"), ("leaf_hash", "root"))
        index, size = require_count(fields, "index", where), require_count(fields, "size", where)
        if index >= size:
            raise MessageError(f"{where}: leaf #{index} is not in a tree of {size} leaves")
        path = fields["path"]
        if not isinstance(path, list) or len(path) > MAX_PROOF_HASHES or not all(is_hex(p, 32) for p in path):
            raise MessageError(
                f"{where}.path must be a list of at most {MAX_PROOF_HASHES} hashes, each 64 lowercase hex digits"
            )
        stated = {name: require_hex32(fields, name, where) for name in ("leaf_hash", "root") if name in fields}
        return cls(index, size, tuple(path), **stated)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "size": self.size}
        if self.leaf_hash is not None:
            out["leaf_hash"] = self.leaf_hash
        out["path"] = list(self.path)
        if self.root is not None:
            out["root"] = self.root
        return out

    def hashes(self) -> list[bytes]:
        return [bytes.fromhex(p) for p in self.path]


@dataclass(frozen=True, eq=False)
class Confirmation(JsonAnswer):
    """A member's signed checkpoint that includes the receipt's entry, with the entry's audit path."""

    checkpoint: Checkpoint
    inclusion: InclusionProof

    @classmethod
    def from_json(cls, obj: object, where: str = "confirmation") -> Confirmation:
        fields = json_object(obj, where, ("checkpoint", "inclusion"))
        return cls(Checkpoint.from_json(fields["checkpoint"]), InclusionProof.from_json(fields["inclusion"]))

    def to_json(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint.to_json(), "inclusion": self.inclusion.to_json()}


@dataclass(frozen=True, eq=False)
class Receipt(JsonAnswer):
    """ "This entry is in the log": the entry, a node's signed checkpoint and the inclusion proof that
    ties them; once a community confirmed it, the members' `confirmations`; in a bundle, the submit's
    `status` (appended or duplicate). `verify_receipt` checks it offline."""

    entry: Entry
    checkpoint: Checkpoint
    inclusion: InclusionProof
    confirmations: tuple[Confirmation, ...] | None = None
    status: str | None = None

    @classmethod
    def from_json(cls, obj: object, where: str = "receipt") -> Receipt:
        fields = json_object(obj, where, ("entry", "checkpoint", "inclusion"), ("confirmations", "status"))
        confirmations = fields.get("confirmations")
        if "confirmations" in fields and not isinstance(confirmations, list):
            raise MessageError(f"{where}.confirmations must be a list of objects")
        status = fields.get("status")
        if "status" in fields and status not in SUBMIT_STATUSES:
            raise MessageError(f"{where}.status must be one of {', '.join(SUBMIT_STATUSES)}, got {status!r:.40}")
        return cls(
            Entry.from_json(fields["entry"], f"{where}.entry"),
            Checkpoint.from_json(fields["checkpoint"]),
            InclusionProof.from_json(fields["inclusion"], f"{where}.inclusion"),
            None if confirmations is None else tuple(
                Confirmation.from_json(c, f"{where}.confirmations[{i}]") for i, c in enumerate(confirmations)
            ),
            status,
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "entry": self.entry.to_json(),
            "checkpoint": self.checkpoint.to_json(),
            "inclusion": self.inclusion.to_json(),
        }
        if self.confirmations is not None:
            out["confirmations"] = [c.to_json() for c in self.confirmations]
        if self.status is not None:
            out["status"] = self.status
        return out


def _parsed(receipt: Mapping[str, Any]) -> Receipt:
    if isinstance(receipt, Receipt):
        return receipt
    try:
        return Receipt.from_json(receipt)
    except MessageError as exc:
        raise VerificationError(f"malformed receipt: {exc.diagnostics()}") from None


def entry_leaf(entry: object) -> bytes:
    """The RFC 6962 leaf hash of a log entry (an `Entry`, or its JSON as a node serves it)."""
    if isinstance(entry, Entry):
        return entry.leaf()
    try:
        return Entry.from_json(entry).leaf()
    except MessageError as exc:
        raise VerificationError(f"malformed receipt: {exc.diagnostics()}") from None


def verify_receipt(receipt: Mapping[str, Any], node: str | None = None, members: Collection[str] | None = None) -> None:
    """Offline check of a `Receipt` (or its JSON): leaf bytes → leaf hash → inclusion proof → root of
    a signed checkpoint.

    With `members`, the checkpoint (and every confirmation's) must be signed by one of them: a
    receipt a stranger signed is refused, naming the key.
    """
    parsed = _parsed(receipt)
    leaf, index = parsed.entry.leaf(), parsed.entry.index
    signed = [(parsed.checkpoint, parsed.inclusion)]
    signed += [(c.checkpoint, c.inclusion) for c in parsed.confirmations or ()]
    confirmers: set[str] = set()
    for i, (checkpoint, proof) in enumerate(signed):
        if members is not None and checkpoint.node not in members:
            raise VerificationError(
                f"the receipt's checkpoint is signed by {checkpoint.node}, which is not a member of the community"
            )
        checkpoint.verify(node if i == 0 else None)
        if i > 0:
            if checkpoint.node in confirmers:
                raise VerificationError(f"the receipt has two confirmations by {checkpoint.node}")
            confirmers.add(checkpoint.node)
        verify_inclusion(leaf, index, checkpoint.size, proof.hashes(), bytes.fromhex(checkpoint.root))


def fetch_receipt(client: NodeClient, index: int) -> Receipt:
    """Ask a node for a receipt of entry `index` and check it before returning it."""
    entry = client.entry(index)
    checkpoint = client.signed_checkpoint()
    inclusion = InclusionProof.from_json(client.inclusion(index, checkpoint.size))
    receipt = Receipt(entry, checkpoint, inclusion)
    verify_receipt(receipt)
    return receipt


def confirm_receipt(
    monitor: Monitor, receipt: Receipt, source: str, expect: Mapping[str, object], timeout_s: float
) -> Receipt:
    """The receipt with the confirmations of a majority of the members, or an error.

    The receipt's entry must carry the message we sent (`expect`: fields it must have): a node that
    answers with another entry's index would otherwise borrow that entry's confirmations. The
    receipt's own checkpoint must be a member's (`source` is the URL it came from). Then every
    member is asked for its signed checkpoint until a majority have one that includes the entry,
    each checked against the member's key; the confirming checkpoints are then checked against what
    this client saw before and against each other, and kept (`Monitor.accept`). Raises `ForkError`
    on a fork, `VerificationError` for a checkpoint no member signed, and `UnavailableError` when no
    majority confirms in time.
    """
    community = monitor.community
    msg = receipt.entry.msg.to_json()
    wrong = [k for k, v in expect.items() if msg.get(k) != v]
    if wrong:
        raise VerificationError(
            f"{source} answered with an entry that is not the message we sent (it differs in {', '.join(wrong)})"
        )
    signer = community.signer(receipt.checkpoint, source)
    verify_receipt(receipt, members=community.keys)
    leaf, index = receipt.entry.leaf(), receipt.entry.index
    confirmed = _poll(monitor, leaf, index, timeout_s)
    monitor.accept([(signer, receipt.checkpoint), *((peer, c) for peer, (c, _) in confirmed.items())])
    confirmations = tuple(
        Confirmation(c, InclusionProof(index, c.size, tuple(p.hex() for p in path))) for c, path in confirmed.values()
    )
    return replace(receipt, confirmations=confirmations)


def _poll(monitor: Monitor, leaf: bytes, index: int, timeout_s: float) -> dict[Peer, tuple[Checkpoint, list[bytes]]]:
    """Ask the members round after round until a majority include the leaf or the time is up."""
    community = monitor.community
    confirmed: dict[Peer, tuple[Checkpoint, list[bytes]]] = {}
    why: dict[Peer, str] = {}
    refused: set[Peer] = set()
    deadline = time.monotonic() + timeout_s
    while True:
        for peer in community.members:
            if peer in confirmed or peer in refused:
                continue
            try:
                checkpoint = monitor.fetch(peer)
                if checkpoint.size <= index:
                    why[peer] = f"its checkpoint of size {checkpoint.size} does not reach entry #{index} yet"
                    continue
                path = monitor.client(peer).inclusion_path(index, checkpoint.size)
                verify_inclusion(leaf, index, checkpoint.size, path, bytes.fromhex(checkpoint.root))
                confirmed[peer] = (checkpoint, path)
                if len(confirmed) >= community.majority:
                    return confirmed
            except VerificationError as exc:  # a wrong key or a proof that fails: do not ask it again
                why[peer], refused = exc.diagnostics(), refused | {peer}
            except WmnodeError as exc:  # unreachable, lagging, malformed: ask again next round
                why[peer] = exc.diagnostics()
        if time.monotonic() >= deadline or len(community.members) - len(refused) < community.majority:
            reasons = "; ".join(f"{p.name}: {why[p]}" for p in community.members if p in why and p not in confirmed)
            raise UnavailableError(
                f"entry #{index} is confirmed by {len(confirmed)} of {len(community.members)} members of "
                f"{community.name!r} within {timeout_s:g} s (a majority is {community.majority}): "
                f"{reasons or 'no answer'}"
            )
        time.sleep(POLL_SECONDS)
