"""The Raft port under attack (DESIGN §6): a stranger, a holder of the community secret, a member
posing as another. Three members run in this process on loopback; the attacker speaks raw TCP.

Every payload that would run code if unpickled touches a marker file; none may ever appear.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from contracts.identity import Identity, derive_owner_key
from contracts.limits import WireLimits
from registry.log import raft_wire
from registry.log.clock import ClockSettings, settings_digest
from registry.log.messages import Publish
from registry.log.raft_auth import HELLO_BYTES, MAGIC, stretch_secret, x25519_public
from registry.log.raft_node import _RaftNode
from registry.log.replicated import RegistryLog
from registry.log.state import APPENDED, REJECTED
from tests.helpers import free_ports, now_ms

SECRET = "transport-test-secret-0123456789"
COMMUNITY = "wmnode.test/transport"
LIMITS = WireLimits(handshake_s=0.5, max_pending_per_ip=4)


class Touch:
    """Unpickling this runs `Path.touch(marker)`: the harmless stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Path.touch, (self.marker,))


class Community:
    def __init__(self, base: Path) -> None:
        ports = free_ports(3)
        self.ids = [Identity.from_seed(f"transport-test-{i}-{os.urandom(4).hex()}") for i in range(3)]
        self.addrs = [f"127.0.0.1:{p}" for p in ports]
        self.logs = []
        for i in range(3):
            (base / str(i)).mkdir()
            peers = {self.addrs[j]: self.ids[j].public_hex for j in range(3) if j != i}
            self.logs.append(RegistryLog(self.addrs[i], peers, base / str(i), SECRET, community=COMMUNITY,
                                         identity=self.ids[i], limits=LIMITS))  # fmt: skip
        members = [(k.public_hex, a) for k, a in zip(self.ids, self.addrs, strict=True)]
        self.settings = settings_digest(COMMUNITY, members, ClockSettings())
        self.psk = stretch_secret(SECRET, COMMUNITY)
        deadline = time.monotonic() + 20
        while self.leader() is None or not all(log.raft_status().get("leader") for log in self.logs):
            assert time.monotonic() < deadline, "no leader"
            time.sleep(0.05)

    def leader(self) -> int | None:
        roles = [log.raft_status()["state"] for log in self.logs]
        return roles.index(2) if 2 in roles else None

    def port(self, i: int) -> int:
        return int(self.addrs[i].rsplit(":", 1)[1])

    def publish(self, via: int = 0) -> str:
        owner, nonce = Identity.generate(), os.urandom(16)
        msg = Publish.create(owner, scheme="mtlsign", time=now_ms(), key_hash=derive_owner_key(owner, nonce).key_hash,
                             verifier_hash="ab" * 32, info_hash="cd" * 32, nonce=nonce.hex())  # fmt: skip
        return self.logs[via].commit_sync(msg).status

    def close(self) -> None:
        for log in self.logs:
            log.close()


@pytest.fixture(scope="module")
def community(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Community]:
    c = Community(tmp_path_factory.mktemp("transport"))
    yield c
    c.close()


_OPEN: list[socket.socket] = []


@pytest.fixture(autouse=True)
def _close_sockets() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def dial(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=3)
    sock.settimeout(3)
    _OPEN.append(sock)
    return sock


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """True once the node closed the connection (reads EOF or a reset) within `seconds`."""
    sock.settimeout(seconds)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return False


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def read_frame(sock: socket.socket) -> bytes:
    head = b""
    while len(head) < 4:
        head += sock.recv(4 - len(head))
    (size,) = struct.unpack(">I", head)
    body = b""
    while len(body) < size:
        body += sock.recv(size - len(body))
    return body


def hello(settings: bytes, public: bytes, eph: X25519PrivateKey) -> bytes:
    return MAGIC + settings + public + x25519_public(eph) + os.urandom(32)


def test_a_frame_announcing_two_gib_is_dropped_before_anything_is_buffered(community: Community) -> None:
    sock = dial(community.port(0))
    sock.sendall(struct.pack(">I", 2**31 - 1) + b"\0" * 65536)
    assert closed_within(sock, 2.0)
    assert community.publish() == APPENDED


def test_a_pickle_is_never_unpickled_raw_or_in_pysyncobjs_own_framing(community: Community, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    payload = pickle.dumps(Touch(marker), protocol=2)
    for data in (frame(payload), struct.pack("i", len(payload)) + payload, payload):
        sock = dial(community.port(0))
        sock.sendall(data)
        assert closed_within(sock, 2.0)
    assert not marker.exists()


def test_the_community_secret_without_a_member_key_admits_nobody(community: Community, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    stranger = Identity.generate()
    sock = dial(community.port(0))
    sock.sendall(frame(hello(community.settings, bytes.fromhex(stranger.public_hex), X25519PrivateKey.generate())))
    assert closed_within(sock, 2.0)
    assert not marker.exists()


def test_a_member_key_without_its_private_half_fails_the_handshake(community: Community, tmp_path: Path) -> None:
    """The attacker holds the secret and claims to be member 2 (the one that dials member 0)."""
    marker = tmp_path / "ran"
    eph = X25519PrivateKey.generate()
    mine = hello(community.settings, bytes.fromhex(community.ids[2].public_hex), eph)
    sock = dial(community.port(0))
    sock.sendall(frame(mine))
    theirs = read_frame(sock)
    assert len(theirs) == HELLO_BYTES and theirs.startswith(MAGIC)
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

    shared = eph.exchange(X25519PublicKey.from_public_bytes(theirs[8 + 64 : 8 + 96]))
    transcript = hashlib.sha256(b"wmnode/raft/handshake/v2" + mine + theirs).digest()
    okm = HKDF(algorithm=hashes.SHA256(), length=64, salt=community.psk, info=transcript).derive(shared)
    send = AESGCM(okm[:32])
    forged = Identity.generate().sign(b"wmnode/raft/auth/v2" + b"I" + transcript)  # not member 2's key
    sock.sendall(frame(send.encrypt((0).to_bytes(12, "big"), forged, None)))
    sealed_pickle = send.encrypt((1).to_bytes(12, "big"), pickle.dumps(Touch(marker), protocol=2), None)
    try:
        sock.sendall(frame(sealed_pickle))
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert closed_within(sock, 2.0)
    assert not marker.exists()
    assert community.publish(via=2) == APPENDED  # the real member 2 is still connected and heard


def test_a_silent_connection_is_dropped_at_the_handshake_deadline(community: Community) -> None:
    sock = dial(community.port(1))
    start = time.monotonic()
    assert closed_within(sock, 3.0)
    assert time.monotonic() - start < LIMITS.handshake_s + 1.0


def test_unauthenticated_connections_from_one_address_are_capped(community: Community) -> None:
    socks = [dial(community.port(1)) for _ in range(LIMITS.max_pending_per_ip + 3)]
    time.sleep(0.2)
    dropped = [closed_within(s, 0.05) for s in socks]
    assert sum(dropped) >= 3 and not all(dropped)
    for s in socks:
        s.close()
    assert community.publish(via=1) == APPENDED


def test_pysyncobjs_utility_commands_and_pickled_chunks_are_refused_by_schema() -> None:
    for bad in (
        ["status"],
        {
            "type": "append_entries",
            "transmission": "start",
            "data": b"x",
            "term": 1,
            "commit_index": 1,
            "prevLogIdx": 1,
            "prevLogTerm": 1,
        },  # fmt: skip
        {"type": "request_vote", "term": "1", "last_log_index": 1, "last_log_term": 1},
        {"type": "request_vote", "term": 1, "last_log_index": 1},
        {"type": "response_vote", "term": -1},
        {"type": "readonly"},
    ):
        with pytest.raises(raft_wire.WireError):
            raft_wire.check_message(raft_wire.decode(raft_wire.encode(bad)))


def test_decoding_any_bytes_either_succeeds_or_raises_wire_error() -> None:
    import random

    rng = random.Random(7)
    sample = raft_wire.encode({"type": "append_entries", "term": 3, "commit_index": 2, "prevLogIdx": 1,
                               "prevLogTerm": 1, "entries": [(b"\x00wm2{}", 2, 3)]})  # fmt: skip
    assert raft_wire.check_message(raft_wire.decode(sample))["entries"] == ((b"\x00wm2{}", 2, 3),)
    for _ in range(3000):
        data = bytearray(sample)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        cut = bytes(data[: rng.randint(0, len(data))])
        for candidate in (bytes(data), cut, os.urandom(rng.randint(0, 64))):
            try:
                raft_wire.decode(candidate)
            except raft_wire.WireError:
                pass
    with pytest.raises(raft_wire.WireError):
        raft_wire.decode(b"l" + struct.pack(">I", 2**31))  # a count no frame could hold


def test_only_the_one_wmnode_command_is_applied_never_a_pickled_one(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    pickled = pickle.dumps(Touch(marker), protocol=2)
    apply = _RaftNode._SyncObj__doApplyCommand  # what a follower runs on every committed entry
    node = object.__new__(_RaftNode)
    node._apply_envelope = lambda data: pytest.fail("not a wmnode command")
    for command in (b"\x00" + pickled, b"\x02" + pickled, b"\x03" + pickled):  # regular, membership, version
        out = apply(node, command)
        assert out is not None and out.status == REJECTED
    assert _RaftNode._SyncObj__parseChangeClusterRequest(node, b"\x02" + pickled) is None
    assert not marker.exists()


def test_a_pickled_snapshot_on_disk_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    (tmp_path / "raft.dump").write_bytes(pickle.dumps(Touch(marker), protocol=2))
    (port,) = free_ports(1)
    log = RegistryLog(f"127.0.0.1:{port}", {}, tmp_path, SECRET, identity=Identity.from_seed("snapshot-test"))
    try:
        deadline = time.monotonic() + 10
        while log.raft_status()["state"] != 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert log.size() == 0
    finally:
        log.close()
    assert not marker.exists()


def test_a_lagging_member_catches_up_from_a_snapshot_sent_over_the_wire(tmp_path: Path) -> None:
    """The leader compacts its log; a member that missed those entries gets the snapshot (our
    format, replayed and re-validated, never a pickle) and converges on the same tree."""
    (tmp_path / "snap").mkdir()
    c = Community(tmp_path / "snap")
    try:
        lag = next(i for i in range(3) if i != c.leader())
        base = tmp_path / "snap" / str(lag)
        peers = {c.addrs[j]: c.ids[j].public_hex for j in range(3) if j != lag}
        c.logs[lag].close()
        alive = next(i for i in range(3) if i != lag)
        for _ in range(20):
            assert c.publish(via=alive) == APPENDED
        leader = c.logs[c.leader() or 0]
        leader.sync.forceLogCompaction()
        deadline = time.monotonic() + 20
        while leader.raft_status()["log_len"] > 5:
            assert time.monotonic() < deadline, "the leader never compacted"
            time.sleep(0.05)
        c.logs[lag] = RegistryLog(c.addrs[lag], peers, base, SECRET, community=COMMUNITY, identity=c.ids[lag],
                                  limits=LIMITS)  # fmt: skip
        deadline = time.monotonic() + 30
        while c.logs[lag].head() != leader.head():
            assert time.monotonic() < deadline, f"lagging member stuck at {c.logs[lag].size()} of {leader.size()}"
            time.sleep(0.05)
        assert c.publish(via=lag) == APPENDED
    finally:
        c.close()


# -- a hostile member: what no honest member sends is refused before pysyncobj sees it ---------


def follower_and_other(c: Community) -> tuple[RegistryLog, object, object]:
    """A follower, the leader's node object in its view, and another member's (not the leader)."""
    leader = c.leader()
    f = next(i for i in range(3) if i != leader)
    nodes = {n.address: n for n in c.logs[f].sync._SyncObj__otherNodes}
    other = next(i for i in range(3) if i not in (leader, f))
    return c.logs[f], nodes[c.addrs[leader or 0]], nodes[c.addrs[other]]


def test_a_member_cannot_push_the_term_past_any_bound(community: Community) -> None:
    log, _, other = follower_and_other(community)
    term = log.sync._SyncObj__raftCurrentTerm
    huge = {"type": "request_vote", "term": 2**62 - 1, "last_log_index": 1, "last_log_term": 1}
    assert "ahead of" in log.sync._refusal(other, huge)
    near = {"type": "request_vote", "term": term + 1, "last_log_index": 1, "last_log_term": 1}
    assert log.sync._refusal(other, near) == ""


def test_a_second_leader_in_one_term_and_its_snapshots_are_refused(community: Community) -> None:
    log, leader, other = follower_and_other(community)
    term = log.sync._SyncObj__raftCurrentTerm
    snapshot = {"type": "append_entries", "term": term, "commit_index": 1, "serialized": (b"x", True, True)}
    assert log.sync._refusal(other, snapshot) == "a second leader in one term"
    assert log.sync._refusal(leader, {**snapshot, "serialized": None}) == ""


def test_entries_that_contradict_applied_ones_or_are_not_ours_are_refused(community: Community) -> None:
    log, leader, _ = follower_and_other(community)
    assert community.publish() == APPENDED
    term = log.sync._SyncObj__raftCurrentTerm
    applied = log.sync._SyncObj__raftLastApplied
    (command, index, entry_term) = log.sync._SyncObj__getEntries(applied, 1)[0]
    base = {"type": "append_entries", "term": term, "commit_index": applied, "prevLogIdx": index - 1,
            "prevLogTerm": 0}  # fmt: skip
    assert log.sync._refusal(leader, {**base, "entries": ((command, index, entry_term),)}) == ""
    rewrite = {**base, "entries": ((command[:-1] + b" ", index, entry_term),)}
    assert "contradicts an entry this node already applied" in log.sync._refusal(leader, rewrite)
    foreign = {**base, "entries": ((b"\x02membership", applied + 1, term),)}
    assert "is not a wmnode command" in log.sync._refusal(leader, foreign)


def test_an_answer_from_a_node_that_is_not_the_leader_is_refused(community: Community) -> None:
    log, leader, other = follower_and_other(community)
    answer = {"type": "apply_command_response", "request_id": 1, "log_idx": 5, "log_term": 1}
    assert log.sync._refusal(other, answer) == "an answer from a node that is not the leader"
    assert log.sync._refusal(leader, answer) == ""
    for bad in ({"type": "apply_command_response", "request_id": 1},
                {"type": "append_entries", "term": 1, "commit_index": 1, "serialized": False}):  # fmt: skip
        with pytest.raises(raft_wire.WireError):
            raft_wire.check_message(bad)


def test_a_frame_of_millions_of_values_is_refused_without_decoding_them() -> None:
    frame_ = b"l" + struct.pack(">I", 4_000_000) + b"N" * 4_000_000
    started = time.perf_counter()
    with pytest.raises(raft_wire.WireError, match="too many values"):
        raft_wire.decode(frame_)
    assert time.perf_counter() - started < 0.5


def test_a_snapshot_must_extend_the_log_and_keep_the_clock_rules(tmp_path: Path) -> None:
    from registry.log.clock import seal as seal_env
    from registry.log.state import LogState

    members = [Identity.from_seed(f"snapshot-member-{i}") for i in range(3)]
    state, t = LogState(frozenset(m.public_hex for m in members)), now_ms()
    for m in members:
        state.apply_envelope(seal_env(m, None, t))

    def publish_json(at: int) -> dict[str, object]:
        owner, nonce = Identity.generate(), os.urandom(16)
        return Publish.create(owner, scheme="mtlsign", time=at, key_hash=derive_owner_key(owner, nonce).key_hash,
                              verifier_hash="ab" * 32, info_hash="cd" * 32, nonce=nonce.hex()).to_json()  # fmt: skip

    for i in range(4):
        assert state.apply_envelope(seal_env(members[i % 3], publish_json(t + i), t + i)).status == APPENDED
    honest = state.snapshot()
    shorter = {**honest, "leaves": tuple(honest["leaves"][:1]), "stamps": tuple(tuple(s) for s in honest["stamps"][:1])}
    with pytest.raises(Exception, match="does not extend"):
        state.prepare(raft_wire.decode(raft_wire.encode(shorter)))
    # The liar appends an entry it stamped itself far in the future, with a valid signature.
    liar, far = members[2], 2**53 - 2
    forged = LogState(state.members)
    forged.adopt(state.prepare(raft_wire.decode(raft_wire.encode(honest))))
    msg = publish_json(far)
    env = seal_env(liar, msg, far)
    forged.clock = type(forged.clock)(bound_ms=2**53, beacon_ms=5_000, skew_ms=300_000)  # its own lax rules
    assert forged.apply_envelope(env).status == APPENDED
    with pytest.raises(Exception, match="outside the clock rules"):
        state.prepare(raft_wire.decode(raft_wire.encode(forged.snapshot())))
    assert state.prepare(raft_wire.decode(raft_wire.encode(honest))).leaves == state.leaves


def test_a_snapshot_that_does_not_load_never_replaces_the_nodes_own(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    log = RegistryLog(f"127.0.0.1:{port}", {}, tmp_path, SECRET, identity=Identity.from_seed("install-guard"))
    try:
        for _ in range(3):
            owner, nonce = Identity.generate(), os.urandom(16)
            msg = Publish.create(owner, scheme="mtlsign", time=now_ms(), nonce=nonce.hex(), verifier_hash="ab" * 32,
                                 key_hash=derive_owner_key(owner, nonce).key_hash, info_hash="cd" * 32)  # fmt: skip
            assert log.commit_sync(msg).status == APPENDED
        log.sync.forceLogCompaction()
        dump = tmp_path / "raft.dump"
        deadline = time.monotonic() + 20
        while not dump.exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        before = dump.read_bytes()
        install = log.sync._SyncObj__serializer.setTransmissionData
        assert install((b"wmnode-snapshot/2\ngarbage", True, False)) is False
        assert install((b"", False, True)) is False
        assert dump.read_bytes() == before and log.size() == 3
    finally:
        log.close()


def test_strangers_holding_every_handshake_slot_do_not_lock_a_member_out(tmp_path: Path) -> None:
    """Strangers (127.0.0.2-9) hold all pending slots and redial when evicted; a member (127.0.0.1,
    a configured member address) restarts and must still reconnect and commit."""
    import threading

    base = tmp_path / "slots"
    base.mkdir()
    c = Community(base)
    stop = threading.Event()

    def hold(ip: str, port: int) -> None:
        socks: list[socket.socket] = []
        while not stop.is_set():
            socks = [s for s in socks if s.fileno() != -1]
            try:
                while len(socks) < 4 and not stop.is_set():
                    s = socket.socket()
                    s.bind((ip, 0))
                    s.settimeout(1)
                    s.connect(("127.0.0.1", port))
                    socks.append(s)
            except OSError:
                pass
            stop.wait(0.05)
        for s in socks:
            s.close()

    try:
        leader = c.leader() or 0
        lag = next(i for i in range(3) if i != leader)
        holders = [threading.Thread(target=hold, args=(f"127.0.0.{k}", c.port(j)), daemon=True)
                   for k in range(2, 10) for j in range(3)]  # fmt: skip
        for h in holders:
            h.start()
        time.sleep(0.5)
        peers = {c.addrs[j]: c.ids[j].public_hex for j in range(3) if j != lag}
        c.logs[lag].close()
        (base / f"{lag}-again").mkdir()
        c.logs[lag] = RegistryLog(c.addrs[lag], peers, base / f"{lag}-again", SECRET, community=COMMUNITY,
                                  identity=c.ids[lag], limits=LIMITS)  # fmt: skip
        assert c.publish(via=lag) == APPENDED
    finally:
        stop.set()
        c.close()
