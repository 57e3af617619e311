"""Receipts: an entry with a node's signed checkpoint and the inclusion proof that ties them.

A receipt says "this entry is in the log". From one node it proves only that the node signed it,
so with a community config `confirm_receipt` also asks every member: the entry counts as committed
once a majority of the members each sign a checkpoint that includes it (and those checkpoints agree
with each other and with what this client saw before, registry.monitor). Their checkpoints and
inclusion proofs are kept in the receipt as `confirmations`, so it can be checked offline too.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from typing import Any

from contracts.encoding import is_hex, is_int
from contracts.errors import UnavailableError, VerificationError, WmnodeError
from registry.client.monitor import Monitor, Peer
from registry.client.node_client import NodeClient
from registry.proofs.checkpoint import Checkpoint
from registry.proofs.merkle import entry_bytes, leaf_hash, verify_inclusion

#: How often `confirm_receipt` asks the members that have not confirmed yet.
POLL_SECONDS = 0.25


def entry_leaf(entry: object) -> bytes:
    """The RFC 6962 leaf hash of a log entry as a node serves it (its index, message and time)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("msg"), dict):
        raise VerificationError("malformed receipt: its entry is not an object with a message")
    index, stamped = entry.get("index"), entry.get("time")
    if not is_int(index, low=0) or not is_int(stamped, low=0):
        name = "index" if not is_int(index, low=0) else "time"
        raise VerificationError(f"malformed receipt: the entry's {name} must be a non-negative integer")
    return leaf_hash(entry_bytes(index, entry["msg"], stamped))


def _check_inclusion(leaf: bytes, index: int, checkpoint: Checkpoint, proof: object) -> None:
    path = proof.get("path") if isinstance(proof, dict) else None
    if not isinstance(path, list) or not all(is_hex(p, 32) for p in path):
        raise VerificationError("malformed receipt: an inclusion proof's path must be a list of 32-byte hex hashes")
    verify_inclusion(leaf, index, checkpoint.size, [bytes.fromhex(p) for p in path], bytes.fromhex(checkpoint.root))


def verify_receipt(receipt: dict[str, Any], node: str | None = None, members: Collection[str] | None = None) -> None:
    """Offline check: leaf bytes → leaf hash → inclusion proof → root of a signed checkpoint.

    With `members`, the checkpoint (and every confirmation's) must be signed by one of them: a
    receipt a stranger signed is refused, naming the key.
    """
    leaf = entry_leaf(receipt.get("entry"))
    index = receipt["entry"]["index"]
    signed = [(receipt.get("checkpoint"), receipt.get("inclusion"))]
    confirmations = receipt.get("confirmations", [])
    if not isinstance(confirmations, list) or not all(isinstance(c, dict) for c in confirmations):
        raise VerificationError("malformed receipt: confirmations must be a list of objects")
    signed += [(c.get("checkpoint"), c.get("inclusion")) for c in confirmations]
    confirmers: set[str] = set()
    for i, (obj, proof) in enumerate(signed):
        checkpoint = Checkpoint.from_json(obj)
        if members is not None and checkpoint.node not in members:
            raise VerificationError(
                f"the receipt's checkpoint is signed by {checkpoint.node}, which is not a member of the community"
            )
        checkpoint.verify(node if i == 0 else None)
        if i > 0:
            if checkpoint.node in confirmers:
                raise VerificationError(f"the receipt has two confirmations by {checkpoint.node}")
            confirmers.add(checkpoint.node)
        _check_inclusion(leaf, index, checkpoint, proof)


def fetch_receipt(client: NodeClient, index: int) -> dict[str, Any]:
    """Ask a node for a receipt of entry `index` and check it before returning it."""
    entry = client.entry(index)
    checkpoint = client.checkpoint()
    receipt = {"entry": entry, "checkpoint": checkpoint, "inclusion": client.inclusion(index, checkpoint["size"])}
    verify_receipt(receipt)
    return receipt


def confirm_receipt(
    monitor: Monitor, receipt: dict[str, Any], source: str, expect: Mapping[str, object], timeout_s: float
) -> dict[str, Any]:
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
    msg = receipt.get("entry", {}).get("msg") if isinstance(receipt.get("entry"), dict) else None
    wrong = [k for k, v in expect.items() if not isinstance(msg, dict) or msg.get(k) != v]
    if wrong:
        raise VerificationError(
            f"{source} answered with an entry that is not the message we sent (it differs in {', '.join(wrong)})"
        )
    checkpoint = Checkpoint.from_json(receipt.get("checkpoint"))
    signer = community.signer(checkpoint, source)
    verify_receipt(receipt, members=community.keys)
    leaf, index = entry_leaf(receipt["entry"]), receipt["entry"]["index"]
    confirmed = _poll(monitor, leaf, index, timeout_s)
    monitor.accept([(signer, checkpoint), *((peer, c) for peer, (c, _) in confirmed.items())])
    confirmations = [
        {"checkpoint": c.to_json(), "inclusion": {"index": index, "size": c.size, "path": [p.hex() for p in path]}}
        for c, path in confirmed.values()
    ]
    return {**receipt, "confirmations": confirmations}


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
