"""The replicated log: pysyncobj Raft underneath, an RFC 6962 Merkle tree of entries on top.

Apply is deterministic, total and fast (STYLE §5): it takes canonical envelope bytes, re-validates
them without clock, randomness or I/O, and *returns* an `Outcome`; it never raises, because a
pysyncobj `@replicated` method that raises is retried forever and stalls the community.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, SyncObjConsumer, replicated
from pysyncobj.journal import createJournal

from registry._raft_cipher import RaftCipher
from registry.encoding import MAX_MESSAGE_BYTES, canonical, parse_json
from registry.errors import MessageError, NotFoundError, RejectedError, WmnodeError
from registry.identity import verify_owner_key
from registry.merkle import MerkleTree, leaf_hash
from registry.messages import OWNER, Claim, Message, Publish, Reference, Vote, message_from_json

logger = logging.getLogger(__name__)

APPENDED, DUPLICATE, REJECTED = "appended", "duplicate", "rejected"
_ENVELOPE_KEYS = {"msg", "skew_ms", "stamp"}


@dataclass(frozen=True)
class Outcome:
    """What apply did with one envelope; identical on every node for the same log entry."""

    status: str
    index: int = -1
    time: int = 0
    leaf_hash: str = ""
    reason: str = ""


def envelope(msg: Message, stamp: int, skew_ms: int) -> bytes:
    """The bytes a node replicates: the message, its receive stamp (ms) and the skew it allows."""
    return canonical({"msg": msg.to_json(), "skew_ms": skew_ms, "stamp": stamp})


class ValidatedMemo:
    """Messages this node's API has already validated, by the envelope bytes it submitted.

    Apply re-validates every entry, but on the node that received a message that would repeat
    the API's parse, field checks and Ed25519 verification. The memo is keyed by a digest of the
    exact envelope bytes, so a hit yields the very message those bytes encode: the outcome is the
    one a full re-validation gives, as on every other node (which has no entry and validates).
    """

    def __init__(self, size: int = 4096) -> None:
        self._items: OrderedDict[bytes, Message] = OrderedDict()
        self._size, self._lock = size, threading.Lock()

    def add(self, data: bytes, msg: Message) -> None:
        with self._lock:
            self._items[hashlib.sha256(data).digest()] = msg
            if len(self._items) > self._size:
                self._items.popitem(last=False)

    def pop(self, data: bytes) -> Message | None:
        with self._lock:
            return self._items.pop(hashlib.sha256(data).digest(), None)


@dataclass
class ClaimState:
    """A claim's votes as applied: verdict and vote index by node, and the decision once reached."""

    publish: int
    owner: str
    model_hash: str
    body_hash: str
    votes: dict[str, tuple[str, int]]
    decided: str | None = None
    decided_at: int = -1


class LogState(SyncObjConsumer):  # type: ignore[misc]
    """The replicated state: leaves, their Merkle tree and indexes. Pickled into pysyncobj dumps.

    `members` (the public keys whose votes count) comes from the community config, which every
    node shares, so apply decides alike everywhere.
    """

    def __init__(self, members: frozenset[str] = frozenset()) -> None:
        # Set before SyncObjConsumer.__init__ so pysyncobj leaves them out of its dumps.
        self.lock = threading.RLock()
        self.validated = ValidatedMemo()
        self.members = members
        #: Set by apply when a claim or vote lands, so the verifier wakes without polling hard.
        self.changed = threading.Event()
        super().__init__()
        self.leaves: list[bytes] = []
        self.times: list[int] = []
        self.tree = MerkleTree()
        self.by_body: dict[str, int] = {}
        self.by_key_hash: dict[str, int] = {}
        self.publishes: dict[int, dict[str, Any]] = {}
        self.claims: dict[int, ClaimState] = {}
        self.by_model: dict[str, list[int]] = {}
        #: Reference models: slot -> model_hash -> the members that recorded it (DESIGN §6.1 rule 3).
        self.references: dict[tuple[str, int, str, str, str], dict[str, set[str]]] = {}
        self.last_time = 0
        self.rejected = 0

    @property
    def majority(self) -> int:
        return len(self.members) // 2 + 1

    def _deserialize(self, data: dict[str, Any]) -> None:
        with self.lock:
            super()._deserialize(data)

    @replicated  # type: ignore[untyped-decorator]
    def apply_envelope(self, data: bytes) -> Outcome:
        """Apply one envelope. Total: every failure becomes a `rejected` outcome."""
        try:
            return self._apply(data)
        except WmnodeError as exc:
            self.rejected += 1
            return Outcome(REJECTED, reason=exc.diagnostics())
        except Exception as exc:  # noqa: BLE001 - a poison entry must never stall the log
            logger.exception("apply refused an entry it could not process")
            self.rejected += 1
            return Outcome(REJECTED, reason=f"internal error: {type(exc).__name__}")

    def _apply(self, data: bytes) -> Outcome:
        if not isinstance(data, bytes):
            raise MessageError("log entries must be bytes")
        env = parse_json(data, limit=MAX_MESSAGE_BYTES + 1024)
        if not isinstance(env, dict) or set(env) != _ENVELOPE_KEYS:
            raise MessageError("malformed envelope")
        stamp, skew = env["stamp"], env["skew_ms"]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (stamp, skew)):
            raise MessageError("malformed envelope stamp")
        msg = self.validated.pop(data) or message_from_json(env["msg"])
        existing = self.by_body.get(msg.body_hash())
        if existing is not None:
            return self._outcome(DUPLICATE, existing)
        self.admit(msg, stamp, skew)
        time = max(stamp, self.last_time)
        index = len(self.leaves)
        leaf = canonical({"index": index, "msg": msg.to_json(), "time": time})
        with self.lock:
            self.leaves.append(leaf)
            self.times.append(time)
            self.tree.append(leaf_hash(leaf))
            self.by_body[msg.body_hash()] = index
            self.last_time = time
            if isinstance(msg, Publish):
                self.by_key_hash[msg.key_hash] = index
                self.publishes[index] = {
                    "owner": msg.owner,
                    "key_hash": msg.key_hash,
                    "nonce": msg.nonce,
                    "time": time,
                    "scheme": msg.scheme,
                }
            elif isinstance(msg, Claim):
                self.claims[index] = ClaimState(msg.publish, msg.owner, msg.model_hash, msg.body_hash(), {})
                self.by_model.setdefault(msg.model_hash, []).append(index)
                self.changed.set()
            elif isinstance(msg, Vote):
                self._count(self.claims[msg.claim], msg, index)
                self.changed.set()
            elif isinstance(msg, Reference):
                self.references.setdefault(msg.slot, {}).setdefault(msg.model_hash, set()).add(msg.node)
        return self._outcome(APPENDED, index)

    def admitted_references(self) -> list[dict[str, Any]]:
        """The reference models a majority of members recorded, one per slot."""
        with self.lock:
            out = []
            for slot, hashes in sorted(self.references.items()):
                for model_hash, nodes in sorted(hashes.items()):
                    if len(nodes & self.members) >= self.majority:
                        arch, classes, shape, dataset, recipe = slot
                        out.append({"arch": arch, "num_classes": classes, "input_shape": shape, "dataset": dataset,
                                    "recipe": recipe, "model_hash": model_hash, "members": len(nodes)})  # fmt: skip
            return out

    def _count(self, claim: ClaimState, vote: Vote, index: int) -> None:
        claim.votes[vote.node] = (vote.verdict, index)
        if claim.decided is None:
            tally = sum(1 for verdict, _ in claim.votes.values() if verdict == vote.verdict)
            if tally >= self.majority:
                claim.decided, claim.decided_at = vote.verdict, index

    def _outcome(self, status: str, index: int) -> Outcome:
        return Outcome(status, index, self.times[index], self.tree.leaf(index).hex())

    def admit(self, msg: Message, stamp: int, skew_ms: int) -> None:
        """Rules beyond well-formedness (DESIGN §4.1-4.4); deterministic, so apply may run them.

        publish: no back- or forward-dating, one publish per key. claim: rests on a publish of the
        claimant's own whose key_hash the revealed key matches, with a key_proof by that owner.
        vote: by a member, on a claim, once.
        """
        with self.lock:
            if isinstance(msg, Publish | Claim):
                _check_time(msg.TYPE, msg.time, stamp, skew_ms)
            if isinstance(msg, Publish) and msg.key_hash in self.by_key_hash:
                raise RejectedError(
                    f"this key is already published (entry #{self.by_key_hash[msg.key_hash]}); "
                    "a key is published once: embed with a fresh key for another model"
                )
            if isinstance(msg, Claim):
                self._admit_claim(msg)
            if isinstance(msg, Reference):
                if msg.node not in self.members:
                    raise RejectedError(f"references are recorded by members only; {msg.node[:16]}… is not one")
                if any(msg.node in nodes for nodes in self.references.get(msg.slot, {}).values()):
                    raise RejectedError(f"node {msg.node[:16]}… has already recorded a reference for {msg.slot}")
            if isinstance(msg, Vote):
                if msg.claim not in self.claims:
                    raise RejectedError(f"vote on entry #{msg.claim}, which is not a claim")
                if msg.claim_hash != self.claims[msg.claim].body_hash:
                    raise RejectedError(f"vote names another claim than the one at entry #{msg.claim}")
                if msg.node not in self.members:
                    raise RejectedError(f"votes are taken from members only; {msg.node[:16]}… is not one")
                if msg.node in self.claims[msg.claim].votes:
                    raise RejectedError(f"node {msg.node[:16]}… has already voted on claim #{msg.claim}")

    def _admit_claim(self, claim: Claim) -> None:
        publish = self.publishes.get(claim.publish)
        if publish is None:
            raise RejectedError(f"the claim rests on entry #{claim.publish}, which is not a publish")
        if publish["owner"] != claim.owner:
            raise RejectedError(
                f"publish #{claim.publish} belongs to another owner ({publish['owner'][:16]}…); "
                "a claim rests on the claimant's own publish"
            )
        key, proof = bytes.fromhex(claim.key), bytes.fromhex(claim.key_proof)
        if hashlib.sha256(key).hexdigest() != publish["key_hash"]:
            raise RejectedError(f"the revealed key does not hash to publish #{claim.publish}'s key_hash")
        verify_owner_key(claim.owner, bytes.fromhex(publish["nonce"]), key, proof)


def _check_time(kind: str, time: int, stamp: int, skew_ms: int) -> None:
    drift = time - stamp
    if abs(drift) > skew_ms:
        when = "backdated" if drift < 0 else "dated in the future"
        raise RejectedError(f"{kind} is {when} by {abs(drift) // 1000} s (allowed skew {skew_ms // 1000} s)")


@dataclass(frozen=True)
class RaftSettings:
    """pysyncobj tuning. Unbatched appends and a 5 ms tick commit in ≈1 ms on loopback."""

    tick_s: float = 0.005
    use_batch: bool = False
    connection_retry_s: float = 1.0
    compaction_min_entries: int = 50_000
    compaction_min_s: int = 600


def repair_journal(journal_file: Path) -> None:
    """Clamp a stored commit index that points past the journal's end (pysyncobj issue #197).

    The journal is an mmap written without fsync, so after a power cut its tail can be lost while
    the separately stored commit index survives; pysyncobj then waits forever at start.
    """
    if not journal_file.exists():
        return
    journal = createJournal(str(journal_file))
    try:
        last = journal[-1][1] if len(journal) else 0
        if journal.getRaftCommitIndex() > last:
            logger.warning("journal commit index %d is past its end %d; clamping", journal.getRaftCommitIndex(), last)
            journal.setRaftCommitIndex(last)
            journal.onOneSecondTimer()
    finally:
        journal._destroy()


class _RaftNode(SyncObj):  # type: ignore[misc]
    """pysyncobj 0.3.17's SyncObj with our transport cipher and one Raft fix.

    The fix: a leader pipelines appends (it advances a follower's nextIndex as it sends), but on
    every successful acknowledgement pysyncobj sets nextIndex = ack + 1, rewinding it. Its next
    append then starts before the follower's end, and pysyncobj's follower truncates everything
    after prevLogIdx unconditionally (Raft §5.3 truncates only on a conflicting term) and re-adds
    at most one 64 KiB batch - so under load a follower could drop entries it had acknowledged,
    which the leader counted towards a commit ("truncating already-applied log entries" in the
    log). Here an acknowledgement never moves nextIndex backwards; a follower that really lacks
    entries answers with `reset`, which still rewinds it.
    """

    def __init__(self, cipher: RaftCipher | None, *args: Any, **kwargs: Any) -> None:
        self._cipher = cipher
        super().__init__(*args, **kwargs)
        self._SyncObj__transport.setOnMessageReceivedCallback(self._on_message)

    @property
    def encryptor(self) -> RaftCipher | None:
        return self._cipher

    def _on_message(self, node: Any, message: Any) -> None:
        rewindable = (
            isinstance(message, dict)
            and message.get("type") == "next_node_idx"
            and message.get("success")
            and not message.get("reset")
        )
        next_index: dict[Any, int] = self._SyncObj__raftNextIndex
        before = next_index.get(node) if rewindable else None
        self._SyncObj__onMessageReceived(node, message)
        if before is not None and next_index.get(node, before) < before:
            next_index[node] = before


class RegistryLog:
    """A node's handle on the community log."""

    def __init__(
        self,
        self_addr: str,
        peer_addrs: list[str],
        data_dir: Path | None,
        secret: str | None,
        settings: RaftSettings = RaftSettings(),
        community: str = "",
        members: frozenset[str] = frozenset(),
    ) -> None:
        self.state = LogState(members)
        journal = dump = None
        if data_dir is not None:
            journal, dump = data_dir / "raft.journal", data_dir / "raft.dump"
            repair_journal(journal)
        conf = SyncObjConf(
            # Without it pysyncobj binds 0.0.0.0 whatever selfAddress says (DESIGN §4.3: configured addresses only).
            bindAddress=self_addr,
            password=secret,
            journalFile=str(journal) if journal else None,
            fullDumpFile=str(dump) if dump else None,
            appendEntriesUseBatch=settings.use_batch,
            autoTickPeriod=settings.tick_s,
            connectionRetryTime=settings.connection_retry_s,
            logCompactionMinEntries=settings.compaction_min_entries,
            logCompactionMinTime=settings.compaction_min_s,
            commandsWaitLeader=True,
            dynamicMembershipChange=False,
        )
        # `password` switches on pysyncobj's handshake; the cipher itself is ours.
        cipher = RaftCipher(secret, community) if secret is not None else None
        self.sync = _RaftNode(cipher, self_addr, peer_addrs, conf=conf, consumers=[self.state])

    def submit(
        self, data: bytes, callback: Callable[[Outcome | None, int], None], validated: Message | None = None
    ) -> None:
        """Hand an envelope to Raft; `callback(outcome, fail_reason)` runs on the tick thread.

        `validated` is the message `data` was built from, already validated by the caller.
        """
        if validated is not None:
            self.state.validated.add(data, validated)
        self.state.apply_envelope(data, callback=callback)

    def submit_sync(self, data: bytes, timeout: float = 10.0) -> Outcome:
        """Blocking submit, for tests and tools (the API uses `submit`)."""
        done = threading.Event()
        box: list[tuple[Outcome | None, int]] = []

        def _cb(res: Outcome | None, err: int) -> None:
            box.append((res, err))
            done.set()

        self.submit(data, _cb)
        if not done.wait(timeout):
            raise TimeoutError("commit timed out")
        res, err = box[0]
        if err != FAIL_REASON.SUCCESS or res is None:
            raise RuntimeError(f"commit failed: pysyncobj reason {err}")
        return res

    # -- reads (any thread) -------------------------------------------------------------------

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

    def standing_owner(self, model_hash: str) -> dict[str, Any] | None:
        """Among the claims on `model_hash` decided `owner`, the one whose publish came first."""
        with self.state.lock:
            passed = [
                (self.state.times[c.publish], c.publish, i, c.owner)
                for i in self.state.by_model.get(model_hash, [])
                if (c := self.state.claims[i]).decided == OWNER
            ]
        if not passed:
            return None
        time, publish, claim, owner = min(passed)
        return {
            "model_hash": model_hash,
            "owner": owner,
            "claim": claim,
            "publish": publish,
            "publish_time": time,
            "passed_claims": sorted(i for _, _, i, _ in passed),
            "why": (
                f"claim #{claim} passed and rests on publish #{publish}, the earliest publish among the "
                f"{len(passed)} claim(s) that passed on this model"
            ),
        }

    def raft_status(self) -> dict[str, Any]:
        return dict(self.sync.getStatus())

    def close(self) -> None:
        self.sync.destroy_synchronous()
