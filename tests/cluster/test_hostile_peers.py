"""Node processes against a hostile network (DESIGN §6), written as the attacker would.

* Two raw TCP connections announce 2 GiB frames on the Raft port and trickle zeros (reconnecting
  whenever dropped) while a client publishes every 200 ms through the third node: every publish
  commits quickly and the leader never changes.
* A malicious *member* (member 3 runs in this process on its real key, beside two honest node
  processes) stamps 2^53−2, stamps as another member and relays another member's vote: each is
  refused, and the log's time moves on normally.
"""

from __future__ import annotations

import os
import socket
import statistics
import struct
import threading
import time
from pathlib import Path

import httpx
import pytest

from contracts.encoding import canonical
from contracts.identity import Identity, derive_owner_key
from registry.client.localnet import LocalCommunity
from registry.community.config import load_config
from registry.log.clock import STAMP_DOMAIN
from registry.log.messages import Publish, Vote
from registry.log.replicated import RegistryLog
from registry.log.state import APPENDED, REJECTED
from tests.cluster.community import SECRET, write_configs
from tests.helpers import now_ms

pytestmark = pytest.mark.cluster

FLOOD_SECONDS = 10.0
PUBLISH_EVERY_S = 0.2
TRICKLE_BYTES_PER_S = 3_000_000


def publish_body() -> bytes:
    owner, nonce = Identity.generate(), os.urandom(16)
    return Publish.create(
        owner,
        scheme="mtlsign",
        time=now_ms(),
        key_hash=derive_owner_key(owner, nonce).key_hash,
        verifier_hash="ab" * 32,
        info_hash="cd" * 32,
        nonce=nonce.hex(),
    ).canonical_bytes()


class Flood(threading.Thread):
    """One attacker connection: a 2 GiB frame header, then zeros at ~3 MB/s; reconnect on drop."""

    def __init__(self, host: str, port: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.addr, self.stop, self.drops, self.sent = (host, port), stop, 0, 0

    def run(self) -> None:
        chunk = b"\0" * 30_000
        while not self.stop.is_set():
            try:
                with socket.create_connection(self.addr, timeout=2) as sock:
                    sock.sendall(struct.pack(">I", 2**31 - 1))
                    while not self.stop.is_set():
                        sock.sendall(chunk)
                        self.sent += len(chunk)
                        time.sleep(len(chunk) / TRICKLE_BYTES_PER_S)
            except OSError:
                self.drops += 1
                self.stop.wait(0.05)


def test_a_frame_flood_on_the_raft_port_neither_stalls_publishes_nor_moves_the_leader(
    shared_community: LocalCommunity,
) -> None:
    community = shared_community
    statuses = community.wait_ready(timeout=60)
    leader = community.leader_index()
    term = statuses[leader]["term"]  # type: ignore[index]
    others = [i for i in range(3) if i != leader]
    target, publisher = others
    stop = threading.Event()
    floods = [
        Flood(community.nodes[i].config.raft.host, community.nodes[i].config.raft.port, stop) for i in (leader, target)
    ]
    latencies: list[float] = []
    codes: list[int] = []
    with httpx.Client(base_url=community.nodes[publisher].url, timeout=10) as client:
        assert client.post("/v1/entries", content=publish_body()).status_code == 201  # warm-up: the clock runs
        for flood in floods:
            flood.start()
        try:
            end = time.monotonic() + FLOOD_SECONDS
            while time.monotonic() < end:
                started = time.perf_counter()
                reply = client.post("/v1/entries", content=publish_body())
                latencies.append(time.perf_counter() - started)
                codes.append(reply.status_code)
                time.sleep(max(0.0, PUBLISH_EVERY_S - (time.perf_counter() - started)))
        finally:
            stop.set()
            for flood in floods:
                flood.join(timeout=5)
    p50, p99 = statistics.median(latencies), sorted(latencies)[max(0, int(0.99 * len(latencies)) - 1)]
    print(f"\nflood: {len(latencies)} publishes, p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
          f"max {max(latencies) * 1000:.1f} ms; attacker drops {[f.drops for f in floods]}, "
          f"bytes sent {[f.sent for f in floods]}")  # fmt: skip
    assert codes == [201] * len(codes) and len(codes) >= FLOOD_SECONDS / PUBLISH_EVERY_S * 0.8
    assert p99 < 0.100
    assert all(f.drops >= 1 for f in floods)  # the nodes hung up on the attacker (who reconnected)
    after = community.statuses()
    assert community.leader_index() == leader and after[leader]["term"] == term  # type: ignore[index]
    community.wait_converged()


def test_a_member_cannot_freeze_the_clock_stamp_or_vote_as_another(tmp_path: Path) -> None:
    paths = write_configs(tmp_path)
    community = LocalCommunity(paths[:2], tmp_path / "run", judges=False)  # node1, node2 honest processes
    evil_config = load_config(paths[2])  # node3: the malicious member, on its own real key
    evil_identity = Identity.from_seed(evil_config.identity_seed or "")
    honest = Identity.from_seed(load_config(paths[0]).identity_seed or "")
    (tmp_path / "evil").mkdir()
    community.start()
    evil = RegistryLog(
        str(evil_config.raft),
        {str(p.raft): p.key for p in evil_config.peers if p.key},
        tmp_path / "evil",
        SECRET,
        community=evil_config.community,
        identity=evil_identity,
        clock=evil_config.clock,
    )
    try:
        community.wait_ready(timeout=60)
        with httpx.Client(base_url=community.nodes[0].url, timeout=10) as client:
            assert client.post("/v1/entries", content=publish_body()).status_code == 201
            before = client.get("/v1/entries").json()["entries"][-1]["time"]

            def pub(time_ms: int) -> Publish:
                owner, nonce = Identity.generate(), os.urandom(16)
                return Publish.create(owner, scheme="mtlsign", time=time_ms, nonce=nonce.hex(),
                                      key_hash=derive_owner_key(owner, nonce).key_hash,
                                      verifier_hash="ab" * 32, info_hash="cd" * 32)  # fmt: skip

            frozen = evil.submit_sync(evil.seal(pub(2**53 - 2), stamp=2**53 - 2))
            assert frozen.status == REJECTED and "median time plus the bound" in frozen.reason
            body = {"msg": pub(now_ms()).to_json(), "node": honest.public_hex, "stamp": now_ms()}
            as_other = canonical({**body, "sig": evil_identity.sign(STAMP_DOMAIN + canonical(body)).hex()})
            assert "does not verify" in evil.submit_sync(as_other).reason
            relayed = Vote.create(honest, claim=0, claim_hash="00" * 32, verdict="owner", score=990,
                                  threshold=700, reason="relayed")  # fmt: skip
            assert evil.submit_sync(evil.seal(relayed)).status == REJECTED
            honest_stamp = evil.commit_sync(pub(now_ms()))  # its honest stamps still count
            assert honest_stamp.status == APPENDED

            reply = client.post("/v1/entries", content=publish_body())
            assert reply.status_code == 201
            after = reply.json()["time"]
            assert before <= after <= now_ms() + 1000 and after < 2**53 - 2
            assert abs(after - now_ms()) < 5_000  # the log's time moves on normally
        community.wait_for(lambda s: all(x is not None and x["size"] == evil.size() for x in s[:2]), 30, "agreement")
    finally:
        evil.close()
        community.stop()


def test_a_node_refuses_a_vote_by_another_member_through_its_api(shared_community: LocalCommunity) -> None:
    community = shared_community
    other = Identity.from_seed(community.nodes[1].config.identity_seed or "")
    vote = Vote.create(other, claim=0, claim_hash="00" * 32, verdict="owner", score=990, threshold=700, reason="x")
    with httpx.Client(base_url=community.nodes[0].url, timeout=10) as client:
        reply = client.post("/v1/entries", content=vote.canonical_bytes())
    assert 400 <= reply.status_code < 500
    assert "only through that member's own node" in reply.json()["detail"]


class _Touch:
    """Unpickling this touches a file: the stand-in for code of the sender's choice."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Path.touch, (self.marker,))


def test_the_community_secret_without_a_member_key_is_dropped_and_nothing_is_unpickled(
    shared_community: LocalCommunity, tmp_path: Path
) -> None:
    """The attacker holds the secret and the public config (so the right settings digest), but no
    member key: its hello is refused, and the pickle it sends after it never runs."""
    import pickle

    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from registry.log.clock import settings_digest
    from registry.log.raft_auth import MAGIC, x25519_public

    community = shared_community
    config = community.nodes[0].config
    digest = settings_digest(config.community, [(m.key or "", str(m.raft)) for m in config.members], config.clock)
    stranger = bytes.fromhex(Identity.generate().public_hex)
    hello = MAGIC + digest + stranger + x25519_public(X25519PrivateKey.generate()) + os.urandom(32)
    marker = tmp_path / "ran"
    payload = pickle.dumps(_Touch(marker), protocol=2)
    for target in community.nodes:
        with socket.create_connection((target.config.raft.host, target.config.raft.port), timeout=5) as sock:
            sock.sendall(struct.pack(">I", len(hello)) + hello)
            try:
                sock.sendall(struct.pack(">I", len(payload)) + payload)
            except OSError:
                pass
            sock.settimeout(3)
            closed = False
            try:
                while sock.recv(4096):
                    pass
                closed = True
            except (ConnectionResetError, BrokenPipeError):
                closed = True
            except TimeoutError:
                pass
            assert closed, "the node kept a connection that proved no member key"
    time.sleep(0.3)
    assert not marker.exists()
    with httpx.Client(base_url=community.nodes[2].url, timeout=10) as client:
        assert client.post("/v1/entries", content=publish_body()).status_code == 201
