"""Reads of the log's state a node serves: entries, the tree's head and proofs, claims' statuses
and the standing owner of a model."""

from __future__ import annotations

import logging
from typing import Any

from contracts.encoding import parse_json
from contracts.errors import NotFoundError
from registry.log.messages import OWNER, Message
from registry.log.state import DUPLICATE, LogState, Outcome

logger = logging.getLogger(__name__)


class LogReader:
    """Reads of the log state (any thread); `RegistryLog` adds Raft, tests may wrap a bare state."""

    def __init__(self, state: LogState) -> None:
        self.state = state

    def size(self) -> int:
        return len(self.state.leaves)

    def lookup(self, msg: Message) -> Outcome | None:
        with self.state.lock:
            index = self.state.by_body.get(msg.body_hash())
            return None if index is None else self.state._outcome(DUPLICATE, index)

    def entry(self, index: int) -> dict[str, Any]:
        with self.state.lock:
            if not 0 <= index < len(self.state.leaves):
                raise NotFoundError(f"no entry {index}; the log has {len(self.state.leaves)}")
            leaf, lh = self.state.leaves[index], self.state.tree.leaf(index)
        entry = parse_json(leaf, limit=1 << 30)
        return {"index": index, "time": entry["time"], "msg": entry["msg"], "leaf_hash": lh.hex()}

    def head(self) -> tuple[int, bytes]:
        with self.state.lock:
            return len(self.state.tree), self.state.tree.root()

    def root(self, size: int) -> bytes:
        with self.state.lock:
            return self.state.tree.root(size)

    def inclusion(self, index: int, size: int) -> dict[str, Any]:
        with self.state.lock:
            path = self.state.tree.inclusion_proof(index, size)
            lh, root = self.state.tree.leaf(index), self.state.tree.root(size)
        return {
            "index": index,
            "size": size,
            "leaf_hash": lh.hex(),
            "path": [p.hex() for p in path],
            "root": root.hex(),
        }

    def consistency(self, first: int, second: int) -> dict[str, Any]:
        with self.state.lock:
            path = self.state.tree.consistency_proof(first, second)
        return {"first": first, "second": second, "path": [p.hex() for p in path]}

    def claim_status(self, index: int) -> dict[str, Any]:
        """A claim, the publish it rests on, its votes and decision, and the standing owner of its
        model (DESIGN §4.4: when claimants both pass on one model, the earlier publish wins)."""
        with self.state.lock:
            claim = self.state.claims.get(index)
            if claim is None:
                raise NotFoundError(f"entry #{index} is not a claim (yet)")
            votes = sorted(claim.votes.values(), key=lambda v: v[1])
            decided, decided_at, model_hash, publish = claim.decided, claim.decided_at, claim.model_hash, claim.publish
            members, majority = len(self.state.members), self.state.majority
        standing = self.standing_owner(model_hash)
        result = decided
        if decided == OWNER and standing is not None and standing["owner"] != claim.owner:
            result = "not-owner"
        return {
            "claim": self.entry(index),
            "publish": self.entry(publish),
            "votes": [self.entry(i) for _, i in votes],
            "members": members,
            "majority": majority,
            "decided": decided,
            "decided_at": decided_at if decided is not None else None,
            "result": result,
            "standing": standing,
        }

    def standing_owner(self, model: str) -> dict[str, Any] | None:
        """Among the claims decided `owner` on `model` (an artifact hash or a function identity,
        registry.modelid), the one whose publish came first. Every artifact of one function is one
        model: a copy re-carded in its input size, free fields or label names stands with the
        original (DESIGN §4.4)."""
        with self.state.lock:
            ids = {model} | {self.state.claims[i].model_id for i in self.state.by_model.get(model, [])}
            claims = {i for name in ids for i in self.state.by_function.get(name, [])}
            passed = [
                (self.state.times[c.publish], c.publish, i, c.owner, c.model_id)
                for i in claims
                if (c := self.state.claims[i]).decided == OWNER
            ]
        if not passed:
            return None
        time, publish, claim, owner, model_id = min(passed)
        return {
            "model_id": model_id,
            "owner": owner,
            "claim": claim,
            "publish": publish,
            "publish_time": time,
            "passed_claims": sorted(i for _, _, i, _, _ in passed),
            "why": (
                f"claim #{claim} passed and rests on publish #{publish}, the earliest publish among the "
                f"{len(passed)} claim(s) that passed on this model"
            ),
        }
