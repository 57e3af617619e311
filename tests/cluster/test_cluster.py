"""Three real node processes on loopback: forwarding, crashes, restarts, agreement, the secret."""

from __future__ import annotations

import base64
import json
import pickle
import socket
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from contracts.encoding import canonical
from contracts.errors import MessageError, RejectedError, UnavailableError, VerificationError
from registry.client.localnet import LocalCommunity
from registry.client.node_client import NodeClient
from registry.log.raft_auth import HELLO_BYTES
from registry.proofs.checkpoint import Checkpoint, open_note, verifier_key
from registry.proofs.merkle import verify_consistency, verify_inclusion
from tests.helpers import PublishFactory, now_ms
from tests.interop.gotlog import run_tlogcheck

pytestmark = pytest.mark.cluster


def follower_of(community: LocalCommunity) -> int:
    leader = community.leader_index()
    return next(i for i in range(len(community.nodes)) if i != leader and community.nodes[i].running)


def heads(community: LocalCommunity) -> set[tuple[int, str]]:
    return {(s["size"], s["root"]) for s in community.statuses() if s is not None}


def size_of(community: LocalCommunity) -> int:
    """The log's size every node agrees on now: what a test on the shared community counts from."""
    statuses = community.wait_converged()
    assert statuses[0] is not None
    return int(statuses[0]["size"])


def test_writes_through_a_follower_reach_every_node(
    shared_community: LocalCommunity, make_publish: PublishFactory
) -> None:
    community = shared_community
    start = size_of(community)
    follower = follower_of(community)
    with community.client(follower) as client:
        results = [client.submit(make_publish()) for _ in range(5)]
    assert [r["index"] for r in results] == list(range(start, start + 5))
    assert all(r["status"] == "appended" for r in results)
    community.wait_converged(size=start + 5)
    for i in range(3):
        with community.client(i) as client:
            assert [client.entry(k)["leaf_hash"] for k in range(start, start + 5)] == [r["leaf_hash"] for r in results]


def test_the_same_message_through_two_nodes_is_stored_once(
    shared_community: LocalCommunity, make_publish: PublishFactory
) -> None:
    community = shared_community
    start = size_of(community)
    msg = make_publish()
    with community.client(0) as a, community.client(1) as b:
        first, second = a.submit(msg), b.submit(msg)
    assert first["status"] == "appended" and second["status"] == "duplicate"
    assert (first["index"], first["leaf_hash"]) == (second["index"], second["leaf_hash"])
    community.wait_converged(size=start + 1)


def test_bad_input_through_a_follower_appends_nothing(
    shared_community: LocalCommunity, make_publish: PublishFactory
) -> None:
    community = shared_community
    start = size_of(community)
    follower = follower_of(community)
    forged = make_publish().to_json() | {"scheme": "passport"}
    with community.client(follower) as client:
        with pytest.raises(VerificationError, match="signature does not match owner"):
            client.post_raw(json.dumps(forged).encode())
        with pytest.raises(RejectedError, match="backdated"):
            client.submit(make_publish(time=now_ms() - 10 * 60_000))
        with pytest.raises(MessageError, match="over the limit"):
            client.post_raw(b"[" + b"1," * 40_000 + b"1]")
    community.wait_converged(size=start)


class Writer(threading.Thread):
    """Publishes sequentially through one node and records every acknowledged entry."""

    def __init__(self, url: str, make_publish: PublishFactory) -> None:
        super().__init__(daemon=True)
        self.url, self.make_publish = url, make_publish
        self.acked: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        with NodeClient(self.url, timeout=20) as client:
            while not self.stop_event.is_set():
                try:
                    self.acked.append(client.submit(self.make_publish()))
                except UnavailableError as exc:  # a write during the election may time out: it is retried
                    self.errors.append(str(exc))

    def wait_acked(self, n: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < n:
            assert time.monotonic() < deadline, f"only {len(self.acked)} writes acknowledged; errors {self.errors[-3:]}"
            time.sleep(0.01)


def check_entries(community: LocalCommunity, acked: list[dict[str, Any]]) -> None:
    for i, node in enumerate(community.nodes):
        with community.client(i) as client:
            for ack in acked:
                entry = client.entry(ack["index"])
                assert (entry["leaf_hash"], entry["time"]) == (ack["leaf_hash"], ack["time"]), node.config.name


def test_sigkill_of_the_leader_mid_stream_loses_nothing(
    community: LocalCommunity, make_publish: PublishFactory, tlogcheck: Path
) -> None:
    old_leader = community.leader_index()
    follower = follower_of(community)
    writer = Writer(community.nodes[follower].url, make_publish)
    writer.start()
    writer.wait_acked(30)
    community.nodes[old_leader].kill()
    killed_at = len(writer.acked)
    dead = community.nodes[old_leader].config.name
    # Every live node names one new leader (a node mid-election answers leader None: wait it out).
    community.wait_for(
        lambda ss: len(leaders := {s["leader"] for s in ss if s is not None}) == 1 and not leaders & {None, dead},
        timeout=30,
        what="one new leader named by every live node",
    )
    writer.wait_acked(killed_at + 30)
    writer.stop_event.set()
    writer.join(30)
    community.nodes[old_leader].start()
    community.wait_converged(timeout=60)
    assert len(heads(community)) == 1
    acked = writer.acked
    assert [a["index"] for a in acked if a["status"] == "appended"] == sorted({a["index"] for a in acked})
    check_entries(community, acked)
    check_independently(community, old_leader, tlogcheck)


def check_independently(community: LocalCommunity, i: int, tlogcheck: Path) -> None:
    """Node i's checkpoint, proofs and signed note, checked by us and by Go's tlog and note."""
    with community.client(i) as client:
        status = client.status()
        cp = Checkpoint.from_json(client.checkpoint())
        cp.verify(status["node"])
        note = client.checkpoint_note()
        size = cp.size
        leaves = [client.entry(k) for k in range(size)]
        inclusion = [client.inclusion(k, size) for k in range(0, size, max(1, size // 20))]
        consistency = [client.consistency(a, size) for a in (1, size // 3, size // 2, size - 1) if a > 0]
    root = bytes.fromhex(cp.root)
    for proof in inclusion:
        verify_inclusion(
            bytes.fromhex(proof["leaf_hash"]), proof["index"], size, [bytes.fromhex(p) for p in proof["path"]], root
        )
    parsed = open_note(note, status["name"], status["node"])
    assert (parsed.size, parsed.root) == (size, root)
    raw_leaves = [
        base64.b64encode(canonical({"index": e["index"], "msg": e["msg"], "time": e["time"]})).decode() for e in leaves
    ]
    result = run_tlogcheck(
        tlogcheck,
        {
            "vkey": verifier_key(status["name"], status["node"]),
            "note": note,
            "leaves": raw_leaves,
            "inclusion": inclusion,
            "consistency": consistency,
        },
    )
    assert result["ok"], result
    assert (result["size"], result["root"]) == (size, cp.root)
    assert (result["inclusion_checked"], result["consistency_checked"]) == (len(inclusion), len(consistency))
    for proof in consistency:
        with community.client(i) as client:
            first_root = bytes.fromhex(client._json("GET", "/v1/root", params={"size": proof["first"]})["root"])
        verify_consistency(proof["first"], size, first_root, root, [bytes.fromhex(p) for p in proof["path"]])


def test_a_killed_follower_restarts_from_its_data_dir_and_catches_up(
    community: LocalCommunity, make_publish: PublishFactory
) -> None:
    leader = community.leader_index()
    victim = follower_of(community)
    with community.client(leader) as client:
        for _ in range(5):
            client.submit(make_publish())
        community.wait_converged(size=5)
        community.nodes[victim].kill()
        for _ in range(5):
            client.submit(make_publish())
    community.nodes[victim].start()
    community.wait_converged(size=10, timeout=60)


def test_all_three_killed_and_restarted_keep_every_committed_entry(
    community: LocalCommunity, make_publish: PublishFactory
) -> None:
    with community.client(follower_of(community)) as client:
        acked = [client.submit(make_publish()) for _ in range(20)]
    before = community.wait_converged(size=20)
    for node in community.nodes:
        node.kill()
    community.start()
    community.wait_ready(timeout=60)
    after = community.wait_converged(size=20, timeout=60)
    assert {(s["size"], s["root"]) for s in after if s} == {(s["size"], s["root"]) for s in before if s}
    check_entries(community, acked)
    with community.client(0) as client:  # and the community goes on
        assert client.submit(make_publish())["index"] == 20


def _frame(payload: bytes) -> bytes:
    return struct.pack("i", len(payload)) + payload


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_a_raft_connection_without_the_secret_gets_nothing(shared_community: LocalCommunity, tmp_path: Path) -> None:
    community = shared_community
    marker = tmp_path / "pwned"
    raft = community.nodes[0].config.raft
    evil = zlib.compress(pickle.dumps(_Exploit(marker)))
    status_request = zlib.compress(pickle.dumps(["status"]))
    for payload in (evil, status_request):
        with socket.create_connection((raft.host, raft.port), timeout=5) as sock:
            sock.sendall(_frame(payload) + _frame(payload))
            sock.settimeout(3)
            received = b""
            try:
                while chunk := sock.recv(4096):
                    received += chunk
            except (TimeoutError, ConnectionResetError):
                pass
        assert len(received) <= 4 + HELLO_BYTES  # at most the node's own hello: no answer, no status
    time.sleep(0.2)
    assert not marker.exists()
    assert all(s is not None for s in community.statuses())


def _dropped(sock: socket.socket, within: float) -> bool:
    """Whether the peer closes `sock` within `within` seconds (whatever it sends before)."""
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def test_the_same_bytes_run_nothing_on_a_dev_node_without_a_secret(tmp_path: Path) -> None:
    """pysyncobj unpickled this payload on a node without a secret; the Raft port now decodes no pickle
    at all, so even a dev node answers it by dropping the connection."""
    from tests.cluster.community import write_configs

    marker = tmp_path / "pwned"
    community = LocalCommunity(
        write_configs(tmp_path, n=1, secret=None), tmp_path / "run", extra_args=("--dev",), judges=False
    )
    with community:
        community.wait_ready(timeout=60)
        raft = community.nodes[0].config.raft
        with socket.create_connection((raft.host, raft.port), timeout=5) as sock:
            sock.sendall(_frame(zlib.compress(pickle.dumps(_Exploit(marker)))))
            assert _dropped(sock, within=5), "the dev node kept the connection that sent a pickle"
        assert all(s is not None for s in community.statuses())
    assert not marker.exists()


def test_concurrent_writers_never_make_a_follower_drop_acknowledged_entries(
    shared_community: LocalCommunity, make_publish: PublishFactory
) -> None:
    """16 concurrent writers through a follower: all commit, the nodes agree, and no follower ever
    truncates entries it had applied (pysyncobj's leader used to rewind nextIndex on each ack)."""
    community = shared_community
    start = size_of(community)
    bodies = [make_publish().canonical_bytes() for _ in range(800)]
    url = community.nodes[follower_of(community)].url

    def post_all(share: list[bytes]) -> list[int]:
        with NodeClient(url, timeout=30) as client:
            return [client.post_raw(b)["index"] for b in share]

    with ThreadPoolExecutor(16) as pool:
        indices = [i for part in pool.map(post_all, [bodies[k::16] for k in range(16)]) for i in part]
    assert sorted(indices) == list(range(start, start + 800))
    community.wait_converged(size=start + 800, timeout=60)
    for node in community.nodes:
        assert "truncating already-applied" not in node.log_path.read_text(), node.config.name


def test_without_a_majority_a_write_times_out_clearly_and_a_retry_is_safe(
    tmp_path: Path, make_publish: PublishFactory
) -> None:
    from tests.cluster.community import write_configs

    community = LocalCommunity(write_configs(tmp_path, commit_timeout_s=2), tmp_path / "run", judges=False)
    with community:
        community.wait_ready(timeout=60)
        survivor = follower_of(community)
        for i, node in enumerate(community.nodes):
            if i != survivor:
                node.kill()
        msg = make_publish()
        started = time.monotonic()
        with community.client(survivor) as client:
            with pytest.raises(UnavailableError, match="not committed within 2 s.*submitting it again is safe"):
                client.submit(msg)
        assert time.monotonic() - started < 5
        for node in community.nodes:
            if not node.running:
                node.start()
        community.wait_ready(timeout=60)
        with community.client(survivor) as client:
            again = client.submit(msg)
        assert again["index"] == 0 and again["status"] in {"appended", "duplicate"}
        community.wait_converged(size=1, timeout=60)
