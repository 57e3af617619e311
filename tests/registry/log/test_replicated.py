"""The replicated log in one process (a single-node Raft community): apply rules and restarts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pysyncobj.journal import createJournal

import registry.log.state as log_module
from contracts.encoding import canonical
from contracts.identity import Identity
from registry.log.clock import STALE_STAMP
from registry.log.raft_node import repair_journal
from registry.log.replicated import RegistryLog
from registry.log.state import APPENDED, DUPLICATE, REJECTED
from registry.proofs.merkle import leaf_hash
from tests.helpers import PublishFactory, free_ports, now_ms

SKEW = 300_000
#: One node identity across restarts: a restarted node replays entries it stamped itself.
NODE = Identity.from_seed("test-log-node")


def wait_size(log: RegistryLog, size: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while log.size() < size:
        assert time.monotonic() < deadline, f"log stuck at {log.size()} < {size}"
        time.sleep(0.01)


@pytest.fixture
def single(tmp_path: Path) -> Iterator[RegistryLog]:
    (port,) = free_ports(1)
    log = RegistryLog(f"127.0.0.1:{port}", {}, tmp_path, "a-test-secret-0123456789", identity=NODE)
    yield log
    log.close()


def test_append_returns_index_time_and_leaf_hash(single: RegistryLog, make_publish: PublishFactory) -> None:
    msg = make_publish()
    stamp = now_ms()
    out = single.submit_sync(single.seal(msg, stamp))
    assert (out.status, out.index, out.time) == (APPENDED, 0, stamp)
    leaf = canonical({"index": 0, "msg": msg.to_json(), "time": stamp})
    assert out.leaf_hash == leaf_hash(leaf).hex()
    assert single.entry(0) == {"index": 0, "time": stamp, "msg": msg.to_json(), "leaf_hash": out.leaf_hash}


def test_a_poison_entry_cannot_stall_the_log(single: RegistryLog, make_publish: PublishFactory) -> None:
    for poison in (b"not json", b"[]", canonical({"msg": 1, "skew_ms": 1, "stamp": 1}), b"a str"):
        assert single.submit_sync(poison).status == REJECTED
    assert single.submit_sync(single.seal(make_publish(), now_ms())).status == APPENDED
    assert single.size() == 1


def test_an_exception_inside_apply_becomes_a_rejection(
    single: RegistryLog, make_publish: PublishFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(obj: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(log_module, "check_entry_stamp", lambda *args: boom(args))
    out = single.submit_sync(single.seal(make_publish(), now_ms()))
    assert (out.status, out.reason) == (REJECTED, "internal error: RuntimeError")
    monkeypatch.undo()
    assert single.submit_sync(single.seal(make_publish(), now_ms())).status == APPENDED


def test_time_never_decreases_along_the_log(single: RegistryLog, make_publish: PublishFactory) -> None:
    stamp = now_ms()
    first = single.submit_sync(single.seal(make_publish(time=stamp), stamp))
    second = single.submit_sync(single.seal(make_publish(time=stamp), stamp - 1000))  # a node with a slow clock
    assert (second.status, second.time) == (APPENDED, first.time) and first.time == stamp
    far = single.submit_sync(single.seal(make_publish(time=stamp - 60_000), stamp - 60_000))
    assert (far.status, far.code) == (REJECTED, STALE_STAMP)


def test_identical_messages_are_stored_once(single: RegistryLog, make_publish: PublishFactory) -> None:
    msg = make_publish()
    a = single.submit_sync(single.seal(msg, now_ms()))
    b = single.submit_sync(single.seal(msg, now_ms() + 5))
    assert (b.status, b.index, b.time, b.leaf_hash) == (DUPLICATE, a.index, a.time, a.leaf_hash)
    assert single.size() == 1


def test_backdated_and_future_publishes_are_refused(single: RegistryLog, make_publish: PublishFactory) -> None:
    stamp = now_ms()
    old = single.submit_sync(single.seal(make_publish(time=stamp - SKEW - 1000), stamp))
    new = single.submit_sync(single.seal(make_publish(time=stamp + SKEW + 1000), stamp))
    assert (old.status, new.status) == (REJECTED, REJECTED)
    assert "backdated by 301 s" in old.reason and "dated in the future" in new.reason
    assert single.size() == 0


def test_a_key_is_published_once(single: RegistryLog, make_publish: PublishFactory) -> None:
    first = make_publish()
    assert single.submit_sync(single.seal(first, now_ms())).status == APPENDED
    again = single.submit_sync(single.seal(make_publish(key_hash=first.key_hash), now_ms()))
    assert again.status == REJECTED and "already published (entry #0)" in again.reason


def test_restart_from_the_data_dir_keeps_every_entry(tmp_path: Path, make_publish: PublishFactory) -> None:
    (port,) = free_ports(1)
    addr = f"127.0.0.1:{port}"
    log = RegistryLog(addr, {}, tmp_path, "a-test-secret-0123456789", identity=NODE)
    for _ in range(5):
        log.submit_sync(log.seal(make_publish(), now_ms()))
    head = log.head()
    log.close()
    again = RegistryLog(addr, {}, tmp_path, "a-test-secret-0123456789", identity=NODE)
    try:
        wait_size(again, 5)
        assert again.head() == head
    finally:
        again.close()


def test_repair_journal_clamps_a_commit_index_past_the_end(tmp_path: Path) -> None:
    path = tmp_path / "raft.journal"
    journal = createJournal(str(path))
    for idx in range(1, 4):
        journal.add(b"\x00", idx, 1)
    journal.setRaftCommitIndex(40)  # as after a power cut that lost the journal's tail
    journal.onOneSecondTimer()
    journal._destroy()
    repair_journal(path)
    journal = createJournal(str(path))
    try:
        assert journal.getRaftCommitIndex() == 3
    finally:
        journal._destroy()


def test_a_node_whose_commit_index_points_past_its_journal_still_starts(
    tmp_path: Path, make_publish: PublishFactory
) -> None:
    (port,) = free_ports(1)
    addr = f"127.0.0.1:{port}"
    log = RegistryLog(addr, {}, tmp_path, "a-test-secret-0123456789", identity=NODE)
    for _ in range(3):
        log.submit_sync(log.seal(make_publish(), now_ms()))
    log.close()
    journal = createJournal(str(tmp_path / "raft.journal"))
    journal.setRaftCommitIndex(journal.getRaftCommitIndex() + 50)
    journal.onOneSecondTimer()
    journal._destroy()
    again = RegistryLog(addr, {}, tmp_path, "a-test-secret-0123456789", identity=NODE)
    try:
        wait_size(again, 3)
        assert again.submit_sync(again.seal(make_publish(), now_ms()), timeout=10).status == APPENDED
    finally:
        again.close()


def test_restart_from_a_full_dump_after_log_compaction(tmp_path: Path, make_publish: PublishFactory) -> None:
    (port,) = free_ports(1)
    addr = f"127.0.0.1:{port}"
    log = RegistryLog(addr, {}, tmp_path, "a-test-secret-0123456789", identity=NODE)
    for _ in range(30):
        log.submit_sync(log.seal(make_publish(), now_ms()))
    log.sync.forceLogCompaction()
    deadline = time.monotonic() + 20
    while not (tmp_path / "raft.dump").exists() or log.raft_status()["log_len"] > 5:
        assert time.monotonic() < deadline, "no full dump was written, or the journal was not compacted"
        time.sleep(0.05)
    log.submit_sync(log.seal(make_publish(), now_ms()))  # one entry after the dump, in the journal
    head, entry = log.head(), log.entry(30)
    log.close()
    again = RegistryLog(addr, {}, tmp_path, "a-test-secret-0123456789", identity=NODE)
    try:
        wait_size(again, 31)
        assert again.head() == head
        assert again.entry(30) == entry
        assert again.submit_sync(again.seal(make_publish(), now_ms())).index == 31
    finally:
        again.close()


def listening_addresses(port: int) -> set[str]:
    """The local addresses a TCP socket listens on at `port`, from /proc/net/tcp{,6} (Linux)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's /proc/net/tcp")
def test_raft_listens_only_on_the_configured_address(single: RegistryLog) -> None:
    """DESIGN §4.3: nodes bind only configured addresses (Raft traffic is pickled)."""
    port = int(single.sync.selfNode.address.rsplit(":", 1)[1])
    deadline = time.monotonic() + 10
    while not listening_addresses(port):
        assert time.monotonic() < deadline, "Raft never listened"
        time.sleep(0.01)
    assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1, little-endian hex
