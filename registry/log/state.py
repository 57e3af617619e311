"""The replicated log: pysyncobj Raft underneath, an RFC 6962 Merkle tree of entries on top.

Apply is deterministic, total and fast (STYLE §5): it takes canonical envelope bytes, re-validates
them without clock, randomness or I/O, and *returns* an `Outcome`; it never raises.

Nothing a peer sends is unpickled (DESIGN §6). pysyncobj pickles in three places, and each is
replaced here: its transport (`registry.raft_transport`: authenticated members, bounded frames,
a pickle-free codec), its replicated commands (the log has exactly one command, `_COMMAND` ‖
envelope bytes, appended through `_applyCommand` and applied by `_RaftNode`'s own
`__doApplyCommand`, which refuses every other command: pysyncobj's membership and version
commands included), and its snapshots (the `serializer`/`deserializer` hooks write and read
`SNAPSHOT_MAGIC` ‖ `raft_wire` bytes, and restoring one replays and re-validates every leaf).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time as _time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf
from pysyncobj.journal import createJournal

from contracts.encoding import MAX_MESSAGE_BYTES, parse_json
from contracts.errors import MessageError, NotFoundError, RejectedError, WmnodeError
from contracts.identity import Identity, verify_owner_key
from contracts.infos import base_arch
from contracts.references import CHECKPOINT
from registry.log import raft_wire
from registry.log.clock import (
    CLOCK_NOT_STARTED,
    STALE_STAMP,
    ClockSettings,
    StampError,
    check_beacon_stamp,
    check_entry_stamp,
    lower_median,
    now_ms,
    open_envelope,
    seal,
    settings_digest,
)
from registry.log.messages import ERROR, OWNER, Claim, Message, Publish, Reference, Vote, message_from_json
from registry.log.raft_transport import RaftAuth, SecureTransport, WireLimits, stretch_secret
from registry.proofs.merkle import MerkleTree, entry_bytes, leaf_hash

logger = logging.getLogger(__name__)

APPENDED, DUPLICATE, REJECTED, BEACON = "appended", "duplicate", "rejected", "beacon"
#: The one replicated command: pysyncobj's REGULAR type byte, then our tag, then envelope bytes.
_COMMAND = b"\x00wm2"
_NO_OP = b"\x01"
MAX_ENVELOPE_BYTES = MAX_MESSAGE_BYTES + 1024
SNAPSHOT_MAGIC = b"wmnode-snapshot/2\n"
#: A snapshot (all leaves) larger than this is refused, from disk or from a peer.
MAX_SNAPSHOT_BYTES = 8 * 2**30
#: How far ahead of this node's term a member's message may be (honest terms grow by one an
#: election; this is months of elections, and keeps terms far below the wire's bound).
MAX_TERM_JUMP = 2**24
_BEACON = object()


@dataclass(frozen=True)
class Outcome:
    """What apply did with one envelope; identical on every node for the same log entry."""

    status: str
    index: int = -1
    time: int = 0
    leaf_hash: str = ""
    reason: str = ""
    code: str = ""


class ValidatedMemo:
    """Envelopes this node sealed itself, by their exact bytes, with the message they carry.

    Apply re-validates every entry, but on the node that sealed an envelope that would repeat the
    API's parse, field checks and two Ed25519 verifications. The memo is keyed by a digest of the
    exact bytes, so a hit yields the very message those bytes encode, signed by this node: the
    outcome is the one a full re-validation gives, as on every other node.
    """

    def __init__(self, size: int = 4096) -> None:
        self._items: OrderedDict[bytes, object] = OrderedDict()
        self._size, self._lock = size, threading.Lock()

    def add(self, data: bytes, msg: object) -> None:
        with self._lock:
            self._items[hashlib.sha256(data).digest()] = msg
            if len(self._items) > self._size:
                self._items.popitem(last=False)

    def pop(self, data: bytes) -> object | None:
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
    #: Each voter's reading of the suspect's function identity (registry.modelid).
    ids: dict[str, str] = field(default_factory=dict)
    #: The model the decision is about: the identity every deciding vote read, else the artifact hash.
    model_id: str = ""


@dataclass
class LogState:
    """The replicated state: leaves, their Merkle tree and indexes, and the members' clocks.

    `members` (the public keys whose stamps and votes count) and `clock` come from the community
    config, which every member shares (the Raft handshake checks it), so apply decides alike.
    """

    members: frozenset[str] = frozenset()
    clock: ClockSettings = field(default_factory=ClockSettings)

    def __post_init__(self) -> None:
        self.lock = threading.RLock()
        self.validated = ValidatedMemo()
        #: Set by apply when a claim or vote lands, so the verifier wakes without polling hard.
        self.changed = threading.Event()
        self._reset()

    def _reset(self) -> None:
        self.leaves: list[bytes] = []
        self.times: list[int] = []
        self.tree = MerkleTree()
        self.by_body: dict[str, int] = {}
        self.by_key_hash: dict[str, int] = {}
        self.publishes: dict[int, dict[str, Any]] = {}
        self.claims: dict[int, ClaimState] = {}
        self.by_model: dict[str, list[int]] = {}
        #: Decided claims by the function identity of their model (DESIGN §4.4).
        self.by_function: dict[str, list[int]] = {}
        #: Reference models: slot -> model_hash -> the members that recorded it (DESIGN §6.1 rule 3).
        self.references: dict[tuple[str, int, str, str, str], dict[str, set[str]]] = {}
        #: The latest stamp each member signed (entries and beacons), and the envelope that carried
        #: it: a snapshot proves every member's clock with the member's own signature.
        self.latest: dict[str, int] = {}
        self.latest_env: dict[str, bytes] = {}
        #: Each leaf's stamp (member, stamp, signature over the leaf's message, member and stamp).
        self.stamps: list[tuple[str, int, str]] = []
        self.leaf_bytes = 0
        self.last_time = 0
        self.rejected = 0
        self.beacons = 0

    @property
    def majority(self) -> int:
        return len(self.members) // 2 + 1

    def apply_envelope(self, data: bytes) -> Outcome:
        """Apply one envelope. Total: every failure becomes a `rejected` outcome."""
        try:
            return self._apply(data)
        except StampError as exc:
            self.rejected += 1
            return Outcome(REJECTED, reason=exc.diagnostics(), code=exc.code)
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
        memo = self.validated.pop(data)
        env = open_envelope(parse_json(data, limit=MAX_ENVELOPE_BYTES), self.members, verify=memo is None)
        if env.msg is None:
            with self.lock:
                check_beacon_stamp(self.latest, self.members, env.node, env.stamp, self.clock)
                self.latest[env.node], self.latest_env[env.node] = env.stamp, data
                self.beacons += 1
            return Outcome(BEACON, time=env.stamp)
        msg = memo if isinstance(memo, Message) else message_from_json(env.msg)
        existing = self.by_body.get(msg.body_hash())
        if existing is not None:
            return self._outcome(DUPLICATE, existing)
        self.admit(msg, env.stamp, env.node)
        with self.lock:
            index = self._append(msg, max(env.stamp, self.last_time))
            self.stamps.append((env.node, env.stamp, env.sig))
            if env.stamp >= self.latest.get(env.node, 0):
                self.latest[env.node], self.latest_env[env.node] = env.stamp, data
        return self._outcome(APPENDED, index)

    def _append(self, msg: Message, time: int) -> int:
        """Add an admitted message as the next leaf and index it (apply and snapshot replay)."""
        index = len(self.leaves)
        leaf = entry_bytes(index, msg.to_json(), time)
        self.leaves.append(leaf)
        self.leaf_bytes += len(leaf)
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
                "info_hash": msg.info_hash,
                "verifier_hash": msg.verifier_hash,
            }
        elif isinstance(msg, Claim):
            self.claims[index] = ClaimState(msg.publish, msg.owner, msg.model_hash, msg.body_hash(), {})
            self.by_model.setdefault(msg.model_hash, []).append(index)
            self.changed.set()
        elif isinstance(msg, Vote):
            self._count(msg.claim, msg, index)
            self.changed.set()
        elif isinstance(msg, Reference):
            self.references.setdefault(msg.slot, {}).setdefault(msg.model_hash, set()).add(msg.node)
        return index

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

    def checkpoint_archs(self) -> frozenset[str]:
        """The base architectures of the public checkpoints a majority of members admitted."""
        return frozenset(base_arch(r["arch"]) for r in self.admitted_references() if r["recipe"] == CHECKPOINT)

    def _count(self, claim_index: int, vote: Vote, index: int) -> None:
        claim = self.claims[claim_index]
        claim.votes[vote.node] = (vote.verdict, index)
        claim.ids[vote.node] = vote.model_id
        if claim.decided is None:
            deciding = [node for node, (verdict, _) in claim.votes.items() if verdict == vote.verdict]
            if len(deciding) >= self.majority:
                claim.decided, claim.decided_at = vote.verdict, index
                read = {claim.ids[node] for node in deciding}
                claim.model_id = read.pop() if len(read) == 1 and "" not in read else claim.model_hash
                self.by_function.setdefault(claim.model_id, []).append(claim_index)

    def _outcome(self, status: str, index: int) -> Outcome:
        return Outcome(status, index, self.times[index], self.tree.leaf(index).hex())

    def admit(self, msg: Message, stamp: int, node: str) -> None:
        """Rules beyond well-formedness (DESIGN §4.1-4.4); deterministic, so apply may run them.

        The stamp: by a member, within the clock rules (`registry.clock`). publish: no back- or
        forward-dating, one publish per key. claim: rests on a publish of the claimant's own whose
        key_hash the revealed key matches, with a key_proof by that owner. vote and reference: by
        a member, stamped by that very member (so a member cannot vote as another), once.
        """
        with self.lock:
            check_entry_stamp(self.latest, self.members, self.last_time, node, stamp, self.clock)
            if isinstance(msg, Publish | Claim):
                _check_time(msg.TYPE, msg.time, stamp, self.clock.skew_ms)
            self._admit_rules(msg)
            if isinstance(msg, Vote | Reference) and msg.node != node:
                raise RejectedError(
                    f"a {msg.TYPE} by {msg.node[:16]}… stamped by {node[:16]}…: members record their own only"
                )

    def _admit_rules(self, msg: Message) -> None:
        """The rules that depend on the log's content alone (checked again on snapshot replay)."""
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
        # DESIGN §6.1 rule 4: repeated claims on one model pay for each other. A (publish, model)
        # pair is tried again only after every earlier claim on it was decided `error` (nothing was
        # decided), and then its judges count the earlier tries in the bound (`tries`).
        for earlier in self.by_model.get(claim.model_hash, []):
            state = self.claims[earlier]
            if state.publish == claim.publish and state.decided != ERROR:
                raise RejectedError(
                    f"publish #{claim.publish} was already claimed on this model (claim #{earlier}, "
                    f"{state.decided or 'not yet decided'}); a pair is tried again only after an `error` decision"
                )

    def tries(self, index: int, model_id: str = "") -> int:
        """How many claims of claim #`index`'s publish on its model, up to and including it: on the
        same artifact, or decided on a model of the same function identity (a re-carded copy)."""
        with self.lock:
            claim = self.claims[index]
            same = set(self.by_model.get(claim.model_hash, [])) | set(self.by_function.get(model_id, []))
            return sum(1 for i in same if i <= index and self.claims[i].publish == claim.publish)

    # -- snapshots --------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "leaves": list(self.leaves),
                "stamps": [list(stamp) for stamp in self.stamps],
                "latest": dict(self.latest_env),
                "rejected": self.rejected,
                "beacons": self.beacons,
            }

    def prepare(self, snap: Any) -> LogState:
        """The state a snapshot describes, replayed and re-validated, or `MessageError`.

        A snapshot may only extend the log this node has applied (its leaves start with ours), so
        no member can rewrite, shorten or rewind it. Every further leaf is checked as apply checks
        it, on the evidence the snapshot carries: the stamping member's signature, the publish's
        skew, a vote or reference stamped by its own member, time = max(stamp, last time) within
        the bound of the members' latest stamps (each proven by its member's signed envelope),
        the message's own signature and the log's rules.
        """
        if not isinstance(snap, dict) or set(snap) != {"leaves", "stamps", "latest", "rejected", "beacons"}:
            raise MessageError("malformed snapshot")
        leaves, stamps, latest = snap["leaves"], snap["stamps"], snap["latest"]
        if not (isinstance(leaves, tuple) and isinstance(stamps, tuple) and len(leaves) == len(stamps)):
            raise MessageError("malformed snapshot leaves")
        if not isinstance(latest, dict):
            raise MessageError("malformed snapshot clocks")
        with self.lock:
            ours, our_stamps = list(self.leaves), list(self.stamps)
            evidence, envelopes = dict(self.latest), dict(self.latest_env)
        if list(leaves[: len(ours)]) != ours:
            raise MessageError(f"the snapshot does not extend the {len(ours)} entries this node applied")
        for node, data in latest.items():
            env = open_envelope(parse_json(data, limit=MAX_ENVELOPE_BYTES) if isinstance(data, bytes) else None,
                                self.members)  # fmt: skip
            if env.node != node:
                raise MessageError("snapshot clock proven by another member's envelope")
            if env.stamp > evidence.get(node, 0):
                evidence[node], envelopes[node] = env.stamp, data
        ceiling = lower_median([evidence.get(m, 0) for m in self.members]) + self.clock.bound_ms
        fresh = LogState(self.members, self.clock)
        for i, leaf in enumerate(leaves):
            if not isinstance(leaf, bytes):
                raise MessageError("malformed snapshot leaf")
            entry = parse_json(leaf, limit=MAX_ENVELOPE_BYTES + 256)
            if not isinstance(entry, dict) or set(entry) != {"index", "msg", "time"} or entry["index"] != i:
                raise MessageError(f"snapshot leaf {i} is malformed")
            msg = message_from_json(entry["msg"])
            if i < len(ours):
                node, stamp, sig = our_stamps[i]
            else:
                node, stamp, sig = _stamp_record(stamps[i], i)
                self._check_replayed(fresh, msg, entry, node, stamp, sig, ceiling)
            if msg.body_hash() in fresh.by_body:
                raise MessageError(f"snapshot leaf {i} repeats an earlier message")
            fresh._admit_rules(msg)
            fresh._append(msg, entry["time"])
            fresh.stamps.append((node, stamp, sig))
            if fresh.leaves[-1] != leaf:
                raise MessageError(f"snapshot leaf {i} is not in canonical form")
        fresh.latest, fresh.latest_env = evidence, envelopes
        counters = [snap[k] if isinstance(snap[k], int) and not isinstance(snap[k], bool) else 0
                    for k in ("rejected", "beacons")]  # fmt: skip
        fresh.rejected, fresh.beacons = max(counters[0], self.rejected), max(counters[1], self.beacons)
        return fresh

    def _check_replayed(self, fresh: LogState, msg: Message, entry: dict[str, Any], node: str, stamp: int, sig: str,
                        ceiling: int) -> None:  # fmt: skip
        open_envelope({"msg": entry["msg"], "node": node, "stamp": stamp, "sig": sig}, self.members)
        time = entry["time"]
        if stamp < fresh.last_time - self.clock.bound_ms or stamp > ceiling:
            raise MessageError(f"snapshot entry #{entry['index']}: stamp {stamp} outside the clock rules")
        if time != max(stamp, fresh.last_time):
            raise MessageError(f"snapshot entry #{entry['index']}: time {time} is not its stamp's")
        if isinstance(msg, Publish | Claim):
            _check_time(msg.TYPE, msg.time, stamp, self.clock.skew_ms)
        if isinstance(msg, Vote | Reference) and msg.node != node:
            raise MessageError(f"snapshot entry #{entry['index']}: a {msg.TYPE} stamped by another member")

    def adopt(self, fresh: LogState) -> None:
        with self.lock:
            for name in ("leaves", "times", "tree", "by_body", "by_key_hash", "publishes", "claims", "by_model",
                         "by_function", "references", "last_time", "latest", "latest_env", "stamps", "leaf_bytes",
                         "rejected", "beacons"):  # fmt: skip
                setattr(self, name, getattr(fresh, name))
        self.changed.set()


def _stamp_record(value: Any, index: int) -> tuple[str, int, str]:
    if not (isinstance(value, tuple) and len(value) == 3 and isinstance(value[0], str) and isinstance(value[2], str)
            and isinstance(value[1], int) and not isinstance(value[1], bool)):  # fmt: skip
        raise MessageError(f"snapshot stamp {index} is malformed")
    return value[0], value[1], value[2]


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
    """pysyncobj 0.3.17's SyncObj with our transport, one command, no pickle, and one Raft fix.

    The fix: a leader pipelines appends (it advances a follower's nextIndex as it sends), but on
    every successful acknowledgement pysyncobj sets nextIndex = ack + 1, rewinding it. Its next
    append then starts before the follower's end, and pysyncobj's follower truncates everything
    after prevLogIdx unconditionally (Raft §5.3 truncates only on a conflicting term) and re-adds
    at most one 64 KiB batch - so under load a follower could drop entries it had acknowledged,
    which the leader counted towards a commit ("truncating already-applied log entries" in the
    log). Here an acknowledgement never moves nextIndex backwards; a follower that really lacks
    entries answers with `reset`, which still rewinds it.
    """

    def __init__(
        self, apply: Callable[[bytes], Outcome], leaf_bytes: Callable[[], int], *args: Any, **kwargs: Any
    ) -> None:
        self._apply_envelope, self._leaf_bytes = apply, leaf_bytes
        self._snapshot_bytes = 0
        super().__init__(*args, **kwargs)
        self._SyncObj__transport.setOnMessageReceivedCallback(self._on_message)
        _close_finished_transmissions(self._SyncObj__serializer)

    def _SyncObj__doApplyCommand(self, command: bytes) -> Outcome | None:  # noqa: N802 - overrides pysyncobj's
        if command[: len(_COMMAND)] == _COMMAND:
            return self._apply_envelope(command[len(_COMMAND) :])
        if command == _NO_OP:  # a new leader's no-op
            return None
        logger.warning("refused a log command that is not a wmnode envelope (%d bytes)", len(command))
        return Outcome(REJECTED, reason="not a wmnode log command")

    def _SyncObj__parseChangeClusterRequest(self, command: bytes) -> None:  # noqa: N802
        return None  # membership is the config's; pysyncobj's pickled membership commands are refused

    def _on_message(self, node: Any, message: dict[str, Any]) -> None:
        """A peer's message, already authenticated and schema-checked by the transport.

        Raft trusts its leader; a hostile member is refused what no honest one would send: a term
        far ahead (which would run past any bound and end elections), a second leader in one term,
        entries that are not wmnode commands or that contradict entries this node already applied,
        an oversized snapshot, and an answer to a command it was never sent.
        """
        try:
            refusal = self._refusal(node, message)
            if refusal:
                logger.warning("refused a %s from a member: %s", message["type"], refusal)
                return
            rewindable = message["type"] == "next_node_idx" and message["success"] and not message["reset"]
            next_index: dict[Any, int] = self._SyncObj__raftNextIndex
            before = next_index.get(node) if rewindable else None
            self._SyncObj__onMessageReceived(node, message)
            if before is not None and next_index.get(node, before) < before:
                next_index[node] = before
        except Exception:  # noqa: BLE001 - a peer's message must never take the tick thread down
            logger.exception("a %s from a member could not be processed; dropping its connection", message["type"])
            conn = self._SyncObj__transport._connections.get(node)
            if conn is not None:
                conn.disconnect()

    def _refusal(self, node: Any, message: dict[str, Any]) -> str:
        kind, term = message["type"], message.get("term")
        current, leader = self._SyncObj__raftCurrentTerm, self._SyncObj__raftLeader
        if term is not None and term > current + MAX_TERM_JUMP:
            return f"term {term} is more than {MAX_TERM_JUMP} ahead of {current}"
        if kind == "apply_command":
            return "" if _is_command(message["command"]) else "a command that is not a wmnode envelope"
        if kind == "apply_command_response" and node != leader:
            return "an answer from a node that is not the leader"
        if kind != "append_entries":
            return ""
        if term == current and leader is not None and node != leader:
            return "a second leader in one term"
        for command, index, entry_term in message.get("entries", ()):
            if not (_is_command(command) or command == _NO_OP):
                return f"entry {index} is not a wmnode command"
            if index <= self._SyncObj__raftLastApplied:
                mine = self._SyncObj__getEntries(index, 1)
                if mine and (mine[0][0], mine[0][2]) != (command, entry_term):
                    return f"entry {index} contradicts an entry this node already applied"
        chunk = message.get("serialized")
        if chunk:  # a snapshot streamed to disk: bounded by what an honest one could weigh
            data, first, _ = chunk
            self._snapshot_bytes = (0 if first else self._snapshot_bytes) + len(data)
            if self._snapshot_bytes > self._snapshot_limit():
                return f"a snapshot past {self._snapshot_limit()} bytes"
        return ""

    def _snapshot_limit(self) -> int:
        return 64 * 2**20 + 4 * self._leaf_bytes()


def _close_finished_transmissions(serializer: Any) -> None:
    """pysyncobj's Serializer opens the snapshot file for each peer it streams to, and forgets the
    handle without closing it when the stream ends, is cancelled, or a newer snapshot replaces
    them all; close it then."""

    def streams() -> dict[Any, dict[str, Any]]:
        return serializer._Serializer__transmissions  # type: ignore[no-any-return]

    def closing(call: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any) -> Any:
            before = {key: s.get("file") for key, s in streams().items()}
            try:
                return call(*args)
            finally:
                after = streams()
                for key, handle in before.items():
                    if handle is not None and after.get(key, {}).get("file") is not handle:
                        handle.close()

        return wrapped

    serializer.getTransmissionData = closing(serializer.getTransmissionData)
    serializer.cancelTransmisstion = closing(serializer.cancelTransmisstion)
    serializer.checkSerializing = closing(serializer.checkSerializing)


def _is_command(command: bytes) -> bool:
    return command[: len(_COMMAND)] == _COMMAND and len(command) <= len(_COMMAND) + MAX_ENVELOPE_BYTES


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


class RegistryLog(LogReader):
    """A node's handle on the community log."""

    def __init__(
        self,
        self_addr: str,
        peers: dict[str, str],
        data_dir: Path | None,
        secret: str | None,
        settings: RaftSettings = RaftSettings(),
        community: str = "",
        *,
        identity: Identity | None = None,
        clock: ClockSettings | None = None,
        limits: WireLimits | None = None,
    ) -> None:
        """`peers` maps every other member's Raft address to its public key."""
        clock, limits = clock or ClockSettings(), limits or WireLimits()
        self.identity = identity or Identity.generate()
        self.key = self.identity.public_hex
        members = frozenset(peers.values()) | {self.key}
        super().__init__(LogState(members, clock))
        self._tmp: str | None = None
        if data_dir is None:  # pysyncobj's in-memory dumps are pickles: keep ours in a private temp dir
            self._tmp = tempfile.mkdtemp(prefix="wmnode-log-")
            journal, dump = None, Path(self._tmp) / "raft.dump"
        else:
            journal, dump = data_dir / "raft.journal", data_dir / "raft.dump"
            repair_journal(journal)
        auth = RaftAuth(
            identity=self.identity,
            peers=dict(peers),
            settings=settings_digest(community, [(k, a) for a, k in peers.items()] + [(self.key, self_addr)], clock),
            psk=stretch_secret(secret, community),
            limits=limits,
        )
        conf = SyncObjConf(
            # Without it pysyncobj binds 0.0.0.0 whatever selfAddress says (DESIGN §4.3: configured addresses only).
            bindAddress=self_addr,
            journalFile=str(journal) if journal else None,
            fullDumpFile=str(dump),
            serializer=self._write_snapshot,
            deserializer=self._read_snapshot,
            appendEntriesUseBatch=settings.use_batch,
            # Batches stay far below the frame limit, so pysyncobj never splits an entry into the
            # pickled "transmission" chunks (which the transport refuses).
            appendEntriesBatchSizeBytes=min(2**20, limits.max_frame_bytes // 4),
            logCompactionBatchSize=min(2**20, limits.max_frame_bytes // 4),
            autoTickPeriod=settings.tick_s,
            connectionRetryTime=settings.connection_retry_s,
            logCompactionMinEntries=settings.compaction_min_entries,
            logCompactionMinTime=settings.compaction_min_s,
            commandsWaitLeader=True,
            dynamicMembershipChange=False,
        )
        self._dump = dump
        self._prepared: tuple[LogState, tuple[Any, ...]] | None = None
        self.sync = _RaftNode(
            self.state.apply_envelope,
            lambda: self.state.leaf_bytes,
            self_addr,
            list(peers),
            conf=conf,
            transportClass=SecureTransport.factory(auth),
        )
        self._guard_snapshot_install()
        self._stop = threading.Event()
        self._beacon_sent = 0.0  # monotonic time of the beacon in flight; 0 when none
        self._beacons = threading.Thread(target=self._beacon_loop, name="wmnode-beacons", daemon=True)
        self._beacons.start()

    # -- snapshots (pysyncobj's serializer hooks; run on its tick thread) -------------------

    def _write_snapshot(self, path: str, raft: tuple[Any, ...]) -> None:
        last, before = raft[0], raft[1]
        blob = raft_wire.encode({"entries": [list(before), list(last)], "state": self.state.snapshot()})
        with open(path, "wb") as f:
            f.write(SNAPSHOT_MAGIC + blob)

    def _parse_snapshot(self, path: str) -> tuple[LogState, tuple[Any, ...]]:
        """The state and Raft entries a snapshot file describes (validated, not yet adopted)."""
        with open(path, "rb") as f:
            data = f.read(MAX_SNAPSHOT_BYTES + 1)
        if len(data) > MAX_SNAPSHOT_BYTES or not data.startswith(SNAPSHOT_MAGIC):
            raise MessageError("not a wmnode snapshot (or over the size limit)")
        body = data[len(SNAPSHOT_MAGIC) :]
        snap = raft_wire.decode(body, max_items=len(body))
        if not isinstance(snap, dict) or set(snap) != {"entries", "state"}:
            raise MessageError("malformed snapshot")
        entries = snap["entries"]
        if not (isinstance(entries, tuple) and len(entries) == 2 and raft_wire._entries(entries)):
            raise MessageError("malformed snapshot entries")
        return self.state.prepare(snap["state"]), (entries[1], entries[0], None)

    def _read_snapshot(self, path: str) -> tuple[Any, ...]:
        """pysyncobj's deserializer hook: at start (our own dump; its copy from before the last
        install if that one cannot be read) and after an install the guard below validated."""
        if self._prepared is not None:
            fresh, raft = self._prepared
            self._prepared = None
        else:
            try:
                fresh, raft = self._parse_snapshot(path)
            except Exception:
                previous = Path(path + ".prev")
                if not previous.exists():
                    raise
                logger.exception("the snapshot does not load; using the one from before the last install")
                fresh, raft = self._parse_snapshot(str(previous))
                os.replace(previous, path)
        self.state.adopt(fresh)
        return raft

    def _guard_snapshot_install(self) -> None:
        """Validate a snapshot a member streamed before it replaces this node's own: pysyncobj
        writes it over the dump and then loads it, and a dump that does not load would leave the
        node unable to apply anything after its next restart."""
        serializer = self.sync._SyncObj__serializer
        original = serializer.setTransmissionData
        dump = str(self._dump)
        previous = dump + ".prev"

        def install(data: Any) -> bool:
            if not data or not data[2]:  # not the last chunk yet
                return bool(original(data))
            kept = os.path.exists(dump)
            if kept:
                shutil.copyfile(dump, previous)
            if not original(data):
                return False
            try:
                self._prepared = self._parse_snapshot(dump)
            except Exception as exc:  # noqa: BLE001 - whatever is wrong with it, it is not installed
                logger.warning("refused a snapshot from a member: %s", exc)
                if kept:
                    os.replace(previous, dump)
                return False
            if kept:
                os.unlink(previous)
            return True

        serializer.setTransmissionData = install

    # -- writes -----------------------------------------------------------------------------

    def seal(self, msg: Message | None, stamp: int | None = None) -> bytes:
        """Envelope bytes for `msg` (None: a beacon), stamped with this node's clock and signed."""
        if stamp is None:
            stamp = self._clock()
        data = seal(self.identity, None if msg is None else msg.to_json(), stamp)
        self.state.validated.add(data, _BEACON if msg is None else msg)
        return data

    def _clock(self) -> int:
        """This member's stamp now: its wall clock (never clamped to the log's time, which would
        ratchet the members' median up), never before its own latest stamp."""
        return max(now_ms(), self.state.latest.get(self.key, 0))

    def precheck(self, msg: Message) -> None:
        """The apply rules as of now, so that a message that cannot commit is refused at once."""
        if isinstance(msg, Vote | Reference) and msg.node != self.key:
            raise RejectedError(
                f"a {msg.TYPE} by {msg.node[:16]}… reaches the log only through that member's own node, "
                f"which stamps it (this node is {self.key[:16]}…)"
            )
        try:
            self.state.admit(msg, self._clock(), self.key)
        except StampError as exc:
            if exc.code != CLOCK_NOT_STARTED:  # the clock starts within a beacon period: commit waits
                raise

    def submit(self, data: bytes, callback: Callable[[Outcome | None, int], None]) -> None:
        """Hand sealed envelope bytes to Raft; `callback(outcome, fail_reason)` runs on the tick thread."""
        self.sync._applyCommand(_COMMAND[1:] + data, callback, 0)

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

    def commit_sync(self, msg: Message, timeout: float = 10.0) -> Outcome:
        """Seal and commit `msg`, re-stamping while the clock has not started or moved past the
        stamp (tests and tools; the API has its own asynchronous loop)."""
        deadline = _time.monotonic() + timeout
        while True:
            out = self.submit_sync(self.seal(msg), timeout=max(deadline - _time.monotonic(), 0.1))
            if out.code not in (STALE_STAMP, CLOCK_NOT_STARTED) or _time.monotonic() > deadline:
                return out
            _time.sleep(0.05)

    def _beacon_loop(self) -> None:
        """Stamp a beacon whenever this member has signed nothing for a beacon period."""
        period = self.state.clock.beacon_ms
        while not self._stop.wait(min(period / 4000, 0.5)):
            try:
                in_flight = _time.monotonic() - self._beacon_sent < period / 1000
                if in_flight or self.sync._getLeader() is None:
                    continue
                if now_ms() - self.state.latest.get(self.key, 0) < period:
                    continue
                self._beacon_sent = _time.monotonic()
                self.submit(self.seal(None), self._beacon_done)
            except Exception:  # noqa: BLE001 - a beacon is retried next period
                logger.exception("could not stamp a beacon")

    def _beacon_done(self, res: Outcome | None, err: int) -> None:
        self._beacon_sent = 0.0
        if res is not None and res.status == REJECTED:
            logger.warning("beacon refused: %s", res.reason)

    def raft_status(self) -> dict[str, Any]:
        return dict(self.sync.getStatus())

    def close(self) -> None:
        self._stop.set()
        self.sync.destroy_synchronous()
        self._beacons.join(timeout=2)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
