"""The replicated log a node runs: pysyncobj Raft underneath, an RFC 6962 Merkle tree of entries on top.

Apply is deterministic, total and fast (STYLE §5): it takes canonical envelope bytes, re-validates
them without clock, randomness or I/O, and *returns* an `Outcome`; it never raises.

Nothing a peer sends is unpickled (DESIGN §6). pysyncobj pickles in three places, and each is
replaced here: its transport (`registry.log.raft_transport`: authenticated members, bounded frames,
a pickle-free codec), its replicated commands (the log has exactly one command, `state.COMMAND` ‖
envelope bytes, appended through `_applyCommand` and applied by `raft_node._RaftNode`'s own
`__doApplyCommand`, which refuses every other command: pysyncobj's membership and version
commands included), and its snapshots (the `serializer`/`deserializer` hooks write and read
`state.SNAPSHOT_MAGIC` ‖ `raft_wire` bytes, and restoring one replays and re-validates every leaf).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time as _time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pysyncobj import FAIL_REASON, SyncObjConf

from contracts.errors import MessageError, RejectedError
from contracts.identity import Identity
from contracts.limits import WireLimits
from registry.log import raft_wire
from registry.log.clock import (
    CLOCK_NOT_STARTED,
    STALE_STAMP,
    ClockSettings,
    StampError,
    now_ms,
    seal,
    settings_digest,
)
from registry.log.messages import Message, Reference, Vote
from registry.log.raft_auth import RaftAuth, stretch_secret
from registry.log.raft_node import DEFAULT_RAFT, RaftSettings, _RaftNode, repair_journal
from registry.log.raft_transport import SecureTransport
from registry.log.reader import LogReader
from registry.log.state import (
    BEACON_MEMO,
    COMMAND,
    MAX_SNAPSHOT_BYTES,
    REJECTED,
    SNAPSHOT_MAGIC,
    LogState,
    Outcome,
)

logger = logging.getLogger(__name__)


class RegistryLog(LogReader):
    """A node's handle on the community log."""

    def __init__(
        self,
        self_addr: str,
        peers: dict[str, str],
        data_dir: Path | None,
        secret: str | None,
        settings: RaftSettings = DEFAULT_RAFT,
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
        conf = self._conf(self_addr, journal, dump, settings, limits)
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

    def _conf(
        self, self_addr: str, journal: Path | None, dump: Path, settings: RaftSettings, limits: WireLimits
    ) -> SyncObjConf:
        """pysyncobj's settings for this log: its files, our snapshot hooks, no membership changes."""
        return SyncObjConf(
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
        self.state.validated.add(data, BEACON_MEMO if msg is None else msg)
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
        self.sync._applyCommand(COMMAND[1:] + data, callback, 0)

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
