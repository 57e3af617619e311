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
from registry.merkle import MerkleTree, leaf_hash
from registry.messages import Message, Publish, message_from_json

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


class LogState(SyncObjConsumer):  # type: ignore[misc]
    """The replicated state: leaves, their Merkle tree and indexes. Pickled into pysyncobj dumps."""

    def __init__(self) -> None:
        # Set before SyncObjConsumer.__init__ so pysyncobj leaves them out of its dumps.
        self.lock = threading.RLock()
        self.validated = ValidatedMemo()
        super().__init__()
        self.leaves: list[bytes] = []
        self.times: list[int] = []
        self.tree = MerkleTree()
        self.by_body: dict[str, int] = {}
        self.by_key_hash: dict[str, int] = {}
        self.last_time = 0
        self.rejected = 0

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
        check_admission(msg, stamp, skew, self.by_key_hash)
        time = max(stamp, self.last_time)
        index = len(self.leaves)
        leaf = canonical({"index": index, "msg": msg.to_json(), "time": time})
        with self.lock:
            self.leaves.append(leaf)
            self.times.append(time)
            self.tree.append(leaf_hash(leaf))
            self.by_body[msg.body_hash()] = index
            if isinstance(msg, Publish):
                self.by_key_hash[msg.key_hash] = index
            self.last_time = time
        return self._outcome(APPENDED, index)

    def _outcome(self, status: str, index: int) -> Outcome:
        return Outcome(status, index, self.times[index], self.tree.leaf(index).hex())


def check_admission(msg: Message, stamp: int, skew_ms: int, by_key_hash: dict[str, int]) -> None:
    """Rules beyond well-formedness: no back- or forward-dating, one publish per key."""
    if isinstance(msg, Publish):
        drift = msg.time - stamp
        if abs(drift) > skew_ms:
            when = "backdated" if drift < 0 else "dated in the future"
            raise RejectedError(f"publish is {when} by {abs(drift) // 1000} s (allowed skew {skew_ms // 1000} s)")
        if msg.key_hash in by_key_hash:
            raise RejectedError(f"key_hash already published at index {by_key_hash[msg.key_hash]}")


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
    ) -> None:
        self.state = LogState()
        journal = dump = None
        if data_dir is not None:
            journal, dump = data_dir / "raft.journal", data_dir / "raft.dump"
            repair_journal(journal)
        conf = SyncObjConf(
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

    def raft_status(self) -> dict[str, Any]:
        return dict(self.sync.getStatus())

    def close(self) -> None:
        self.sync.destroy_synchronous()
