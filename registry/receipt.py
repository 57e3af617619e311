"""Receipts: an entry with a node's signed checkpoint and the inclusion proof that ties them."""

from __future__ import annotations

from typing import Any

from registry.checkpoint import Checkpoint
from registry.client import NodeClient
from registry.encoding import canonical
from registry.merkle import leaf_hash, verify_inclusion


def verify_receipt(receipt: dict[str, Any], node: str | None = None) -> None:
    """Offline check: leaf bytes → leaf hash → inclusion proof → root of a signed checkpoint."""
    checkpoint = Checkpoint.from_json(receipt["checkpoint"])
    checkpoint.verify(node)
    entry, proof = receipt["entry"], receipt["inclusion"]
    leaf = leaf_hash(canonical({"index": entry["index"], "msg": entry["msg"], "time": entry["time"]}))
    verify_inclusion(
        leaf, entry["index"], checkpoint.size, [bytes.fromhex(p) for p in proof["path"]], bytes.fromhex(checkpoint.root)
    )


def fetch_receipt(client: NodeClient, index: int) -> dict[str, Any]:
    """Ask a node for a receipt of entry `index` and check it before returning it."""
    entry = client.entry(index)
    checkpoint = client.checkpoint()
    receipt = {"entry": entry, "checkpoint": checkpoint, "inclusion": client.inclusion(index, checkpoint["size"])}
    verify_receipt(receipt)
    return receipt
