"""pysyncobj's Raft node as the log runs it: its settings, a journal repaired before start, and the
one command it applies (the log's envelope), its membership and version commands refused."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pysyncobj import SyncObj
from pysyncobj.journal import createJournal

from registry.log.state import COMMAND, MAX_ENVELOPE_BYTES, MAX_TERM_JUMP, NO_OP, REJECTED, Outcome

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RaftSettings:
    """pysyncobj tuning. Unbatched appends and a 5 ms tick commit in ≈1 ms on loopback."""

    tick_s: float = 0.005
    use_batch: bool = False
    connection_retry_s: float = 1.0
    compaction_min_entries: int = 50_000
    compaction_min_s: int = 600


DEFAULT_RAFT = RaftSettings()


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
        if command[: len(COMMAND)] == COMMAND:
            return self._apply_envelope(command[len(COMMAND) :])
        if command == NO_OP:  # a new leader's no-op
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
            if not (_is_command(command) or command == NO_OP):
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
    return command[: len(COMMAND)] == COMMAND and len(command) <= len(COMMAND) + MAX_ENVELOPE_BYTES
