"""The log's state: what apply builds from the committed envelopes, deterministically (STYLE §5).

Apply takes canonical envelope bytes, re-validates them without clock, randomness or I/O, and
*returns* an `Outcome`; it never raises. Admission rules (who may publish, claim, vote and record
references, and when) live here, as do snapshots of the state and their re-validating replay.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from contracts.encoding import MAX_MESSAGE_BYTES, is_int, parse_json
from contracts.errors import MessageError, RejectedError, WmnodeError
from contracts.identity import verify_owner_key
from contracts.infos import base_arch
from contracts.references import CHECKPOINT
from registry.log.clock import (
    ClockSettings,
    StampError,
    check_beacon_stamp,
    check_entry_stamp,
    lower_median,
    open_envelope,
)
from registry.log.messages import ERROR, Claim, Message, Publish, Reference, Vote, message_from_json
from registry.proofs.merkle import MerkleTree, entry_bytes, leaf_hash

logger = logging.getLogger(__name__)

APPENDED, DUPLICATE, REJECTED, BEACON = "appended", "duplicate", "rejected", "beacon"
#: The one replicated command: pysyncobj's REGULAR type byte, then our tag, then envelope bytes.
COMMAND = b"\x00wm2"


NO_OP = b"\x01"


MAX_ENVELOPE_BYTES = MAX_MESSAGE_BYTES + 1024


SNAPSHOT_MAGIC = b"wmnode-snapshot/2\n"


#: A snapshot (all leaves) larger than this is refused, from disk or from a peer.
MAX_SNAPSHOT_BYTES = 8 * 2**30


#: How far ahead of this node's term a member's message may be (honest terms grow by one an
#: election; this is months of elections, and keeps terms far below the wire's bound).
MAX_TERM_JUMP = 2**24


#: What the validated-envelope memo holds for a beacon (it carries no message).
BEACON_MEMO = object()


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
        counters = [snap[k] if is_int(snap[k]) else 0
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
            and is_int(value[1])):  # fmt: skip
        raise MessageError(f"snapshot stamp {index} is malformed")
    return value[0], value[1], value[2]


def _check_time(kind: str, time: int, stamp: int, skew_ms: int) -> None:
    drift = time - stamp
    if abs(drift) > skew_ms:
        when = "backdated" if drift < 0 else "dated in the future"
        raise RejectedError(f"{kind} is {when} by {abs(drift) // 1000} s (allowed skew {skew_ms // 1000} s)")
