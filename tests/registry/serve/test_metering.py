"""Metered writes (DESIGN §6): attackers first, then the honest paths they must not break.

The attacks that used to work: 200 × 1 MiB unnamed uploads kept for ever; thousands of publishes
from one client; 20 claims on one publish in a fraction of a second; 100 slow-header connections
held for 30 s. Nodes here are one-member communities served by uvicorn in this process.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from contracts.asgi import client_key
from contracts.errors import ConfigError, QuotaExceededError, RateLimitedError
from contracts.fetch import ArtifactStore, Fetcher, FetchPolicy
from contracts.identity import Identity, derive_owner_key
from contracts.limits import ClientLimits, Rate, parse_limits
from registry.client.localnet import write_local_configs
from registry.community.config import load_config
from registry.log.messages import Claim
from registry.log.replicated import RegistryLog
from registry.serve.api import create_app
from registry.serve.info import NodeInfo
from registry.serve.logjson import REDACTED, JsonFormatter
from registry.serve.metering import Metering, RateLimiter, StoreMeter, charge
from registry.serve.metrics import NodeMetrics
from registry.serve.read_meter import READ_BASE_COST, read_cost
from tests.contracts.artifacts import artifact_with_card
from tests.helpers import PublishFactory, free_ports, now_ms
from tests.registry.serve.test_api import MTLSIGN_INFO, SUSPECT_CARD, json_bytes

ROOT = Path(__file__).resolve().parents[3]
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
KIB, MIB = 1024, 2**20


# -- a node in this process ------------------------------------------------------------------------


@dataclass
class Node:
    url: str
    log: RegistryLog
    store: ArtifactStore
    metering: Metering
    api_port: int


@contextmanager
def serve(tmp_path: Path, limits: ClientLimits, max_artifact_bytes: int = MIB) -> Iterator[Node]:
    """A one-member community with `limits`, served on a free loopback port until the block ends."""
    port, api_port = free_ports(2)
    identity = Identity.generate()
    (tmp_path / "log").mkdir()
    log = RegistryLog(f"127.0.0.1:{port}", {}, tmp_path / "log", "a-test-secret-0123456789", identity=identity)
    store = ArtifactStore(tmp_path / "artifacts", max_artifact_bytes)
    metering = Metering(limits, store, log)
    info = NodeInfo(
        name="solo",
        community="wmnode.test/metering",
        members=({"name": "solo", "raft": f"127.0.0.1:{port}", "api": "x"},),
        raft_to_name={f"127.0.0.1:{port}": "solo"},
        max_skew_ms=300_000,
        commit_timeout_s=10.0,
    )
    app = create_app(log, identity, info, store, metering=metering)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=api_port, log_level="error", lifespan="off", **metering.uvicorn_options()
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    metering.store.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        yield Node(f"http://127.0.0.1:{api_port}", log, store, metering, api_port)
    finally:
        server.should_exit = True
        thread.join(10)
        metering.store.stop()
        log.close()


def post(client: httpx.Client, body: bytes) -> httpx.Response:
    return client.post("/v1/entries", content=body, headers={"content-type": "application/json"})


def put(client: httpx.Client, data: bytes) -> httpx.Response:
    return client.put(f"/v1/artifacts/{hashlib.sha256(data).hexdigest()}", content=data)


def assert_429(response: httpx.Response, scope: str) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"] == "RateLimitedError"
    assert f"from this {scope}" in response.json()["detail"]
    retry = response.headers["retry-after"]
    assert retry.isdigit() and int(retry) >= 1


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


# -- attackers -------------------------------------------------------------------------------------


def test_a_thousand_unnamed_uploads_stay_within_quota_and_are_collected_while_named_ones_stay(
    tmp_path: Path, make_publish: PublishFactory, owner: Identity
) -> None:
    """The store attack: uploads no entry names fill only the pending room, and leave after the grace
    period; what committed entries name (a publish's info, a claim's suspect) is never collected."""
    limits = ClientLimits(exempt=LOOPBACK, pending_quota_bytes=400 * KIB, store_quota_bytes=2 * MIB,
                    pending_grace_s=1.5)  # fmt: skip
    with serve(tmp_path, limits) as node, httpx.Client(base_url=node.url, timeout=15) as client:
        # An honest claimant: publish, upload the info and the suspect, claim (it names the suspect).
        info, suspect = json_bytes(MTLSIGN_INFO), artifact_with_card(SUSPECT_CARD)
        info_hash, suspect_hash = hashlib.sha256(info).hexdigest(), hashlib.sha256(suspect).hexdigest()
        pub = make_publish(info_hash=info_hash, verifier_hash="ab" * 32)
        answer = post(client, pub.canonical_bytes())
        assert answer.status_code == 201, answer.text
        assert put(client, info).status_code == 201 and put(client, suspect).status_code == 201
        key = derive_owner_key(owner, bytes.fromhex(pub.nonce))
        claim = Claim.create(
            owner, publish=answer.json()["index"], model_uri=f"sha256:{suspect_hash}", model_hash=suspect_hash,
            verifier_uri="sha256:" + "ab" * 32, info_uri=f"sha256:{info_hash}", key=key.key, key_proof=key.key_proof,
            time=now_ms(),
        )  # fmt: skip
        assert post(client, claim.canonical_bytes()).status_code == 201
        orphan = os.urandom(2000)  # uploaded, but no claim ever names it
        assert put(client, orphan).status_code == 201

        meter, codes, refusals = node.metering.store, {201: 0, 507: 0}, set()
        started = time.monotonic()
        for _ in range(1000):  # 4 KiB each (whole blocks) against 400 KiB of pending room
            response = put(client, os.urandom(KIB))
            codes[response.status_code] += 1  # anything but 201 or 507 is a KeyError
            if response.status_code == 507:
                refusals.add((response.json()["error"], "no entry names yet" in response.json()["detail"]))
            assert meter.pending <= limits.pending_quota_bytes and meter.used <= limits.store_quota_bytes
            assert node.store.bytes <= limits.store_quota_bytes
        assert time.monotonic() - started < 120
        # The first hundred or so fill the room; once the grace passes, collection frees it again.
        assert codes[507] > 0 and refusals == {("QuotaExceededError", True)}, (codes, refusals)

        print(f"\n1000 unnamed uploads: {codes[201]} stored, {codes[507]} refused (507), pending peak <= "
              f"{limits.pending_quota_bytes} bytes, in {time.monotonic() - started:.1f} s")  # fmt: skip
        wait_until(lambda: meter.pending == 0, 20, "the unnamed uploads were not collected")
        left = {digest for digest, _, _ in node.store.listing()}
        assert left == {info_hash, suspect_hash}, "acknowledged artifacts lost, or junk kept"
        assert client.get(f"/v1/artifacts/{suspect_hash}").content == suspect
        families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
        assert families["wmnode_artifacts_collected"].samples[0].value == codes[201] + 1  # and the orphan
        assert put(client, os.urandom(KIB)).status_code == 201  # the room is free again


def test_publishes_are_limited_per_identity_and_nobody_can_spend_another_identitys_tokens(
    tmp_path: Path, make_publish: PublishFactory, owner: Identity
) -> None:
    limits = ClientLimits(publish_per_identity=Rate(0.01, 3), publish_per_address=Rate(100.0, 1000))
    with serve(tmp_path, limits) as node, httpx.Client(base_url=node.url, timeout=15) as client:
        for _ in range(10):  # forged in the victim's name: refused, and the victim's bucket untouched
            forged = dict(make_publish().to_json(), time=now_ms() + 1)
            response = post(client, json.dumps(forged).encode())
            assert (response.status_code, response.json()["error"]) == (400, "VerificationError")
        for _ in range(3):
            assert post(client, make_publish().canonical_bytes()).status_code == 201
        assert_429(post(client, make_publish().canonical_bytes()), "identity")
        assert post(client, make_publish(Identity.generate()).canonical_bytes()).status_code == 201
        for junk in (b"[" * 60_000, b"\xff", b"[1]", b'{"type": "publish", "owner": 7}'):  # peeked, then refused
            assert post(client, junk).status_code == 400


def test_a_flood_of_publishes_from_fresh_keys_is_limited_per_address(
    tmp_path: Path, make_publish: PublishFactory
) -> None:
    """The 4,000-fresh-keys attack: every key is new, so only the address bucket can stop it."""
    with serve(tmp_path, ClientLimits(publish_per_address=Rate(0.01, 5))) as node:
        with httpx.Client(base_url=node.url, timeout=15) as client:
            codes = [post(client, make_publish(Identity.generate()).canonical_bytes()).status_code for _ in range(5)]
            assert codes == [201] * 5
            assert_429(post(client, make_publish(Identity.generate()).canonical_bytes()), "address")
            assert node.log.size() == 5


def test_claims_and_uploads_are_limited_and_metrics_show_it(
    tmp_path: Path, make_publish: PublishFactory, owner: Identity
) -> None:
    """The 20-claims-on-one-publish attack, the upload flood, and what `/metrics` then says."""
    limits = ClientLimits(claim_per_identity=Rate(0.01, 2), upload_per_address=Rate(0.01, 3))
    with serve(tmp_path, limits) as node, httpx.Client(base_url=node.url, timeout=15) as client:
        pub = make_publish()
        index = post(client, pub.canonical_bytes()).json()["index"]
        key = derive_owner_key(owner, bytes.fromhex(pub.nonce))
        codes = []
        for _ in range(4):  # the info is nowhere: refused on arrival, but each signed claim costs a token
            digest = os.urandom(32).hex()
            claim = Claim.create(
                owner, publish=index, model_uri=f"sha256:{digest}", model_hash=digest, info_uri="sha256:" + "cd" * 32,
                verifier_uri="sha256:" + "ab" * 32, key=key.key, key_proof=key.key_proof, time=now_ms(),
            )  # fmt: skip
            response = post(client, claim.canonical_bytes())
            codes.append(response.status_code)
        assert codes[:2] == [409, 409] and codes[2:] == [429, 429]
        assert_429(response, "identity")
        assert [put(client, os.urandom(100)).status_code for _ in range(3)] == [201] * 3
        assert_429(put(client, os.urandom(100)), "address")

        text = client.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    expected = {
        "wmnode_commits": "counter", "wmnode_rejections": "counter", "wmnode_rate_limited": "counter",
        "wmnode_claim_queue": "gauge", "wmnode_verify_seconds": "histogram", "wmnode_store_bytes": "gauge",
        "wmnode_store_pending_bytes": "gauge", "wmnode_log_entries": "gauge", "wmnode_connections": "gauge",
        "wmnode_connections_dropped": "counter", "wmnode_artifacts_collected": "counter",
    }  # fmt: skip
    assert {name: families[name].type for name in expected} == expected

    def value(family: str, sample: str, **labels: str) -> float:
        found = [s.value for s in families[family].samples if s.name == sample and s.labels == labels]
        assert found, (family, labels)
        return found[0]

    assert value("wmnode_commits", "wmnode_commits_total", type="publish") == 1
    assert value("wmnode_rejections", "wmnode_rejections_total", reason="RateLimitedError") == 3
    assert value("wmnode_rejections", "wmnode_rejections_total", reason="RejectedError") == 2
    assert value("wmnode_rate_limited", "wmnode_rate_limited_total", kind="claim", scope="identity") == 2
    assert value("wmnode_rate_limited", "wmnode_rate_limited_total", kind="upload", scope="address") == 1
    assert value("wmnode_log_entries", "wmnode_log_entries") == 1
    assert value("wmnode_store_bytes", "wmnode_store_bytes") == 300
    assert value("wmnode_store_pending_bytes", "wmnode_store_pending_bytes") == 3 * 4096
    assert value("wmnode_verify_seconds", "wmnode_verify_seconds_count") == 0
    assert all(s.labels.get("reason", "") in {"", "RateLimitedError", "RejectedError"} for s in families[
        "wmnode_rejections"].samples)  # fmt: skip


def _open(port: int, first: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if first:
        sock.sendall(first)
    return sock


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    """True when the server closes the connection within `within` s (reads whatever it answered)."""
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def test_slow_header_connections_are_dropped_by_the_deadline_and_an_honest_request_is_served(
    tmp_path: Path,
) -> None:
    limits = ClientLimits(header_timeout_s=1.5, max_connections=300, max_connections_per_address=300)
    with serve(tmp_path, limits) as node, ExitStack() as stack:
        started = time.monotonic()
        slow = [
            stack.enter_context(_open(node.api_port, b"GET /v1/status HTTP/1.1\r\nhost: x\r\n" if i % 2 else b""))
            for i in range(100)
        ]  # half send part of a header, half send nothing at all
        honest = httpx.get(f"{node.url}/v1/status", timeout=5)
        assert honest.status_code == 200
        assert node.metering.connections.open >= 100  # served while every slow connection was still open
        for sock in slow:
            assert _closed_by_server(sock, max(0.1, started + 6.0 - time.monotonic()))
        elapsed = time.monotonic() - started
        assert 1.4 < elapsed < 6.0, elapsed  # dropped by the 1.5 s deadline, not by the client
        dropped = node.metering.metrics.dropped.labels("header_timeout")._value.get()
        assert dropped == 100
        wait_until(lambda: node.metering.connections.open == 0, 5, "connections not counted out")


def test_connection_caps_and_the_body_deadline(tmp_path: Path) -> None:
    limits = ClientLimits(max_connections_per_address=5, header_timeout_s=5.0, body_timeout_s=1.0)
    with serve(tmp_path, limits) as node:
        with ExitStack() as stack:
            held = [stack.enter_context(_open(node.api_port)) for _ in range(5)]
            wait_until(lambda: node.metering.connections.open == 5, 5, "five connections")
            extra = stack.enter_context(_open(node.api_port))
            assert _closed_by_server(extra, 2.0)  # the sixth from one address: closed at once
            assert not _closed_by_server(held[0], 0.2)  # the five stay
        wait_until(lambda: node.metering.connections.open == 0, 5, "connections not counted out")
        digest = "ef" * 32
        head = f"PUT /v1/artifacts/{digest} HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n".encode()
        with _open(node.api_port, head + b"x" * 10) as trickle:
            started = time.monotonic()
            assert _closed_by_server(trickle, 4.0)
            assert 0.9 < time.monotonic() - started < 4.0
        assert node.metering.metrics.dropped.labels("body_timeout")._value.get() == 1
        assert not node.store.has(digest)
        # An honest upload of the same size goes through (the deadline is per 64 KiB of progress).
        data = os.urandom(100_000)
        assert httpx.put(f"{node.url}/v1/artifacts/{hashlib.sha256(data).hexdigest()}", content=data).status_code == 201


def _trickle_until_closed(socks: list[socket.socket], chunk: bytes, within: float) -> None:
    """Send `chunk` on each socket in turn (a pause of ~0.1 s after each) until the server has closed
    them all; fails after `within` seconds."""
    deadline, left = time.monotonic() + within, list(socks)
    while left:
        assert time.monotonic() < deadline, f"{len(left)} trickling uploads still open"
        for sock in list(left):
            try:
                sock.sendall(chunk)
            except OSError:  # reset by the server
                left.remove(sock)
                continue
            if _closed_by_server(sock, 0.1):
                left.remove(sock)


def test_a_trickled_upload_holds_only_what_arrived_two_at_most_per_address_and_is_cut_off_below_the_rate_floor(
    tmp_path: Path, make_publish: PublishFactory
) -> None:
    """The reserve-squat attack (review t9): uploads of a digest some entry names, each declaring
    256 MiB and sending ~1 KB/s, used to hold their declared size of the store (80 of them the whole
    20 GiB) for as long as they trickled. Now an upload holds what has arrived, one address has two
    arriving at most (named digests too), and a body under 16 KiB/s after the grace is cut off."""
    limits = ClientLimits(body_rate_grace_s=1.0)
    with serve(tmp_path, limits, max_artifact_bytes=256 * MIB) as node, ExitStack() as stack:
        named = os.urandom(32).hex()
        assert httpx.post(f"{node.url}/v1/entries", content=make_publish(verifier_hash=named).canonical_bytes(),
                          headers={"content-type": "application/json"}).status_code == 201  # fmt: skip
        head = f"PUT /v1/artifacts/{named} HTTP/1.1\r\nhost: x\r\ncontent-length: {256 * MIB}\r\n\r\n".encode()
        squats = [stack.enter_context(_open(node.api_port, head + b"x" * 1000)) for _ in range(2)]
        meter = node.metering.store
        wait_until(lambda: meter.arriving("127.0.0.1") == (2, 2000), 5, "two uploads holding what they sent")
        assert meter.used == 0 and node.store.bytes == 0  # not the 512 MiB they declared

        third = httpx.put(f"{node.url}/v1/artifacts/{named}", content=b"y" * 1000, timeout=10)
        assert third.status_code == 429 and "already has 2 uploads arriving" in third.json()["detail"]
        assert third.headers["retry-after"] == "5"

        started = time.monotonic()
        _trickle_until_closed(squats, b"x" * 500, within=6.0)  # ~5 KB/s each, under the 16 KiB/s floor
        assert 0.5 < time.monotonic() - started < 6.0
        assert node.metering.metrics.dropped.labels("body_too_slow")._value.get() == 2
        wait_until(lambda: meter.arriving("127.0.0.1") == (0, 0), 5, "the cut-off uploads still hold room")
        assert not node.store.has(named)

        data = os.urandom(300 * KIB)  # an honest upload at full speed goes through
        assert httpx.put(f"{node.url}/v1/artifacts/{sha(data)}", content=data, timeout=10).status_code == 201


def test_reads_pay_for_what_they_return_and_downloads_for_their_bytes_and_exempt_networks_do_not(
    tmp_path: Path, make_publish: PublishFactory
) -> None:
    """The read attack (review t8): one `GET /v1/entries?limit=1000` costs ~50 ms of the CPU that
    also runs the Raft tick, and GETs were not metered at all. Now every GET pays its price (10 +
    the entries it returns, here) from its address's bucket and is refused with 429 before any work."""
    for name in ("reads", "downloads", "exempt"):
        (tmp_path / name).mkdir()
    with serve(tmp_path / "reads", ClientLimits(read_per_address=Rate(0.5, 200))) as node:
        with httpx.Client(base_url=node.url, timeout=15) as client:
            for _ in range(30):
                assert post(client, make_publish(Identity.generate()).canonical_bytes()).status_code == 201
            codes = [client.get("/v1/entries", params={"limit": 1000}).status_code for _ in range(6)]
            assert codes == [200] * 5 + [429]  # 5 x (10 + 30) = the burst of 200
            assert_429(client.get("/v1/entries", params={"limit": 1000}), "address")
            refused = client.get("/v1/status")  # the same bucket, whatever the route
            assert_429(refused, "address")
            assert "too many reads" in refused.json()["detail"] and "entries' worth" in refused.json()["detail"]
            assert_429(client.delete("/v1/entries/0"), "address")  # a 405 costs routing too
            assert post(client, make_publish(Identity.generate()).canonical_bytes()).status_code == 201  # writes
        assert node.metering.metrics.rate_limited.labels("read", "address")._value.get() == 4

    with serve(tmp_path / "downloads", ClientLimits(download_per_address=Rate(1000.0, 5000))) as node:
        with httpx.Client(base_url=node.url, timeout=15) as client:
            big, small = os.urandom(8000), os.urandom(10)
            assert put(client, big).status_code == 201 and put(client, small).status_code == 201
            assert client.get(f"/v1/artifacts/{sha(big)}").content == big  # a full bucket lets it through
            refused = client.get(f"/v1/artifacts/{sha(small)}")  # in debt for 3000 bytes, refilling 1000/s
            assert_429(refused, "address")
            assert "too many downloads" in refused.json()["detail"] and int(refused.headers["retry-after"]) >= 3

    limits = ClientLimits(exempt=LOOPBACK, read_per_address=Rate(0.01, 1), download_per_address=Rate(0.01, 1))
    with serve(tmp_path / "exempt", limits) as node, httpx.Client(base_url=node.url, timeout=15) as client:
        data = os.urandom(5000)
        assert put(client, data).status_code == 201
        assert {client.get(path).status_code for path in ("/v1/status", f"/v1/artifacts/{sha(data)}") * 20} == {200}


def test_the_verifiers_peer_fetches_and_the_demos_polling_stay_far_under_the_default_limits(tmp_path: Path) -> None:
    """The example configs (and `wmnode demo`) keep the defaults, loopback not exempt: every node's
    verifier fetches the suspect from a peer, and the demo polls a claim's status 20 times a second
    while every node's status is polled too."""
    with serve(tmp_path, ClientLimits(), max_artifact_bytes=4 * MIB) as node:
        suspect = os.urandom(4 * MIB)
        assert httpx.put(f"{node.url}/v1/artifacts/{sha(suspect)}", content=suspect, timeout=15).status_code == 201
        for name in ("node2", "node3"):  # both other members fetch it from this one, from one address
            fetcher = Fetcher(ArtifactStore(tmp_path / name, 4 * MIB), [node.url], FetchPolicy())
            assert fetcher.artifact(sha(suspect), 4 * MIB) == suspect

    # Ten minutes of three demos polling one node at once (a claim and the node's status 20 times a
    # second each, a checkpoint and a proof each second in a log of 100,000 entries), with a 256 MiB
    # suspect fetched by two peers every 30 s: never refused (one demo uses a quarter of the rate).
    log, clock = FakeLog(), Clock()
    log.msgs = [{}] * 100_000
    store = ArtifactStore(tmp_path / "big", 256 * MIB)
    digest = "ab" * 32
    store.path(digest).parent.mkdir()
    with store.path(digest).open("wb") as sparse:
        sparse.truncate(256 * MIB)
    limiter, price = RateLimiter(ClientLimits(), NodeMetrics(), clock), read_cost(log, store, members=3)
    for tick in range(20 * 600):
        clock.now += 0.05
        for path in ["/v1/claims/7", "/v1/status"] * 3:
            for kind, tokens in price(path, ""):
                limiter.take(kind, "address", "127.0.0.1", tokens)
        seldom = ["/v1/checkpoint", "/v1/proof/inclusion"] * 3 if tick % 20 == 0 else []
        seldom += [f"/v1/artifacts/{digest}"] * 2 if tick % (20 * 30) == 0 else []
        for path in seldom:
            for kind, tokens in price(path, "index=5"):
                limiter.take(kind, "address", "127.0.0.1", tokens)
    assert price("/v1/claims/7", "") == [("read", READ_BASE_COST + 5)]


# -- the pieces ------------------------------------------------------------------------------------


class FakeLog:
    """Entries and Raft progress, as StoreMeter reads them."""

    def __init__(self) -> None:
        self.msgs: list[dict[str, Any]] = []
        self.status: dict[str, Any] = {"leader": "me", "commit_idx": 0, "last_applied": 0}

    def size(self) -> int:
        return len(self.msgs)

    def entry(self, index: int) -> dict[str, Any]:
        return {"index": index, "msg": self.msgs[index]}

    def raft_status(self) -> dict[str, Any]:
        return dict(self.status)

    def publish_naming(self, verifier: str, info: str) -> None:
        self.msgs.append({"type": "publish", "verifier_hash": verifier, "info_hash": info})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_the_store_meter_counts_named_pending_and_per_address_bytes(tmp_path: Path) -> None:
    log, clock = FakeLog(), Clock()
    limits = ClientLimits(store_quota_bytes=64 * KIB, pending_quota_bytes=32 * KIB, pending_per_address_bytes=16 * KIB,
                    pending_grace_s=60.0)  # fmt: skip
    store = ArtifactStore(tmp_path / "a", MIB)
    meter = StoreMeter(store, log, limits, NodeMetrics(), clock)
    one, two, three = os.urandom(5000), os.urandom(5000), os.urandom(5000)
    assert store.put(sha(one), [one], "10.0.0.1") and store.put(sha(two), [two], "10.0.0.1")
    assert (meter.used, meter.pending) == (2 * charge(5000), 2 * charge(5000)) == (16 * KIB, 16 * KIB)
    with pytest.raises(QuotaExceededError, match="this address holds 16384 bytes"):
        store.put(sha(three), [three], "10.0.0.1")
    assert not store.has(sha(three))
    assert store.put(sha(three), [three], "10.0.0.2")  # another address has its own share
    log.publish_naming(sha(one), sha(b"info"))  # an entry names `one`: no longer pending
    assert store.put(sha(b"info"), [b"info"], "10.0.0.1")  # named: outside the pending share
    assert (meter.used, meter.pending) == (3 * 8 * KIB + charge(4), 16 * KIB)  # two, three pending
    named = [os.urandom(4096) for _ in range(12)]
    for blob in named:
        log.publish_naming(sha(blob), sha(blob))
    stored = [store.put(sha(b), [b]) for b in named[:9]]
    assert stored == [True] * 9
    with pytest.raises(QuotaExceededError, match="artifact store is full"):
        store.put(sha(named[9]), [named[9]])
    assert meter.used <= limits.store_quota_bytes


def test_collection_waits_for_the_grace_period_and_a_caught_up_log_and_spares_named_artifacts(
    tmp_path: Path,
) -> None:
    log, clock = FakeLog(), Clock()
    store = ArtifactStore(tmp_path / "a", MIB)
    meter = StoreMeter(store, log, ClientLimits(pending_grace_s=60.0), NodeMetrics(), clock)
    junk, suspect, verifier = os.urandom(100), os.urandom(100), os.urandom(100)
    for blob in (junk, suspect, verifier):
        store.put(sha(blob), [blob], "10.0.0.9")
    log.publish_naming(sha(verifier), sha(b"info"))
    clock.now += 59
    assert meter.collect() == 0
    clock.now += 2
    log.status = {"leader": None, "commit_idx": 0, "last_applied": 0}  # partitioned: maybe an entry is missing
    assert meter.collect() == 0
    log.status = {"leader": "me", "commit_idx": 5, "last_applied": 4}  # catching up
    assert meter.collect() == 0
    log.status = {"leader": "me", "commit_idx": 5, "last_applied": 5}
    log.msgs.append({"type": "claim", "model_uri": f"sha256:{sha(suspect)}", "verifier_uri": "https://x/v",
                     "info_uri": f"sha256:{sha(b'info')}"})  # fmt: skip
    assert meter.collect() == 1
    assert {d for d, _, _ in store.listing()} == {sha(suspect), sha(verifier)}
    assert meter.pending == 0 and store.bytes == 200
    clock.now += 10 * 3600
    assert meter.collect() == 0  # acknowledged: never collected


def test_a_restarted_meter_counts_what_is_stored_and_gives_pending_artifacts_a_new_grace(tmp_path: Path) -> None:
    log, clock = FakeLog(), Clock()
    store = ArtifactStore(tmp_path / "a", MIB)
    StoreMeter(store, log, ClientLimits(pending_grace_s=60.0), NodeMetrics(), clock)
    kept, loose = os.urandom(10), os.urandom(10)
    store.put(sha(kept), [kept])
    store.put(sha(loose), [loose])
    (tmp_path / "a" / "ab").mkdir(exist_ok=True)
    (tmp_path / "a" / "ab" / ".upload-crashed").write_bytes(b"partial")
    log.publish_naming(sha(kept), sha(b"x"))
    clock.now += 3600
    store = ArtifactStore(tmp_path / "a", MIB)
    assert not (tmp_path / "a" / "ab" / ".upload-crashed").exists() and store.bytes == 20
    meter = StoreMeter(store, log, ClientLimits(pending_grace_s=60.0), NodeMetrics(), clock)
    assert (meter.used, meter.pending) == (2 * 4096, 4096)
    assert meter.collect() == 0
    clock.now += 61
    assert meter.collect() == 1 and store.has(sha(kept)) and not store.has(sha(loose))


def test_peer_copies_pass_the_same_quota(tmp_path: Path) -> None:
    log, served = FakeLog(), os.urandom(9000)
    store = ArtifactStore(tmp_path / "a", MIB)
    StoreMeter(store, log, ClientLimits(store_quota_bytes=8 * KIB, pending_quota_bytes=8 * KIB), NodeMetrics())
    log.publish_naming(sha(served), sha(b"i"))

    def peer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=served)

    fetcher = Fetcher(store, ["http://peer.invalid"], FetchPolicy())
    transport = httpx.MockTransport(peer)
    original = httpx.Client.__init__

    def patched(self: httpx.Client, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **{**kwargs, "transport": transport})

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(httpx.Client, "__init__", patched)
        with pytest.raises(QuotaExceededError, match="artifact store is full"):
            fetcher.artifact(sha(served), MIB)
    assert not store.has(sha(served))


def test_uploads_in_flight_hold_room(tmp_path: Path) -> None:
    limits = ClientLimits(pending_quota_bytes=40 * KIB, pending_per_address_bytes=MIB)
    meter = StoreMeter(ArtifactStore(tmp_path / "a", MIB), FakeLog(), limits, NodeMetrics())
    with meter.reserve("aa" * 32, "10.0.0.1") as need:
        need(30 * KIB)
        with meter.reserve("bb" * 32, "10.0.0.2") as other:
            with pytest.raises(QuotaExceededError, match="no entry names yet"):
                other(20 * KIB)
            other(10 * KIB)
    with meter.reserve("cc" * 32, "10.0.0.3") as again:
        again(40 * KIB)  # released: the room is back


def test_one_address_cannot_reserve_the_store_and_the_last_part_is_kept_for_peer_copies(tmp_path: Path) -> None:
    """Review t9 at the meter: 80 reservations of a declared 256 MiB for a digest some entry names,
    from one address, held the whole 20 GiB quota; the next upload and `store.put` (peer copies, the
    node's own writes) were refused "store is full"."""
    log, named = FakeLog(), "ab" * 32
    log.publish_naming(named, "cd" * 32)
    store = ArtifactStore(tmp_path / "a", 256 * MIB)
    meter, attacker = StoreMeter(store, log, ClientLimits(), NodeMetrics()), "198.51.100.7"
    with ExitStack() as held:
        needs = [held.enter_context(meter.reserve(named, attacker, 256 * MIB)) for _ in range(2)]
        with pytest.raises(RateLimitedError, match="already has 2 uploads arriving"):
            held.enter_context(meter.reserve(named, attacker, 256 * MIB))
        with pytest.raises(RateLimitedError, match="already has 2 uploads arriving"):
            held.enter_context(meter.reserve("ee" * 32, attacker))  # an unnamed digest counts too
        assert meter.arriving(attacker) == (2, 0)  # declared is not held: nothing has arrived
        needs[0](256 * MIB)
        needs[1](256 * MIB)
        with pytest.raises(QuotaExceededError, match="bytes of uploads still arriving, and may have 536870912"):
            needs[1](256 * MIB + 1)
        with meter.reserve("ee" * 32, "203.0.113.9", 10 * MIB) as honest:  # another address's upload
            honest(10 * MIB)
        blob = os.urandom(4096)
        assert store.put(sha(blob), [blob])  # a peer copy
    assert meter.arriving(attacker) == (0, 0)

    # Strangers fill what uploads may use; peer copies still have the reserved end of the quota.
    limits = ClientLimits(store_quota_bytes=40 * 4096, pending_quota_bytes=4096, store_reserved_percent=10)
    log, store = FakeLog(), ArtifactStore(tmp_path / "b", MIB)
    meter = StoreMeter(store, log, limits, NodeMetrics())
    blobs = [os.urandom(4096) for _ in range(41)]
    for blob in blobs:
        log.publish_naming(sha(blob), sha(blob))
    assert all(store.put(sha(blob), [blob], f"10.0.{i}.1") for i, blob in enumerate(blobs[:36]))
    with pytest.raises(QuotaExceededError, match=r"store is full .* 10 % is kept for copies from its peers"):
        store.put(sha(blobs[36]), [blobs[36]], "10.9.9.9")
    with pytest.raises(QuotaExceededError, match="store is full"):
        with meter.reserve(sha(blobs[36]), "10.9.9.9") as need:
            need(1)
    assert all(store.put(sha(blob), [blob]) for blob in blobs[36:40])  # peer copies and own writes
    with pytest.raises(QuotaExceededError, match="store is full"):
        store.put(sha(blobs[40]), [blobs[40]])
    assert meter.used == limits.store_quota_bytes


def test_the_rate_limiter_refills_says_when_and_forgets_least_recently_used_buckets() -> None:
    clock = Clock()
    limits = ClientLimits(publish_per_identity=Rate(2.0, 3), tracked_clients=2)
    metrics = NodeMetrics()
    limiter = RateLimiter(limits, metrics, clock)
    for _ in range(3):
        limiter.take("publish", "identity", "a")
    with pytest.raises(RateLimitedError, match="at most 2 a second") as refused:
        limiter.take("publish", "identity", "a")
    assert refused.value.retry_after_s == 1 and refused.value.http_status == 429
    clock.now += 0.5
    limiter.take("publish", "identity", "a")
    limiter.take("publish", "identity", "b")
    limiter.take("publish", "identity", "c")  # evicts "a", which starts full when seen again
    assert len(limiter) == 2
    for _ in range(3):
        limiter.take("publish", "identity", "a")
    slow = RateLimiter(ClientLimits(claim_per_identity=Rate(0.1, 1)), metrics, clock)
    slow.take("claim", "identity", "z")
    with pytest.raises(RateLimitedError) as refused:
        slow.take("claim", "identity", "z")
    assert refused.value.retry_after_s == 10
    assert metrics.rate_limited.labels("publish", "identity")._value.get() == 1


def test_client_keys_group_an_ipv6_slash_64_and_unmap_ipv4() -> None:
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7" == client_key("192.0.2.7")
    assert client_key(None) == "-"
    assert ClientLimits(exempt=LOOPBACK).is_exempt("127.0.0.1") and not ClientLimits().is_exempt("127.0.0.1")


def _config(path: Path, limits: str = "") -> Path:
    node = 'name = "n1"\nraft = "127.0.0.1:7901"\napi = "127.0.0.1:8901"\n'
    path.write_text(f'community = "c"\n{node}{limits}\n[[members]]\n{node}')
    return path


def test_the_limits_table_is_parsed_and_checked(tmp_path: Path) -> None:
    config = _config(tmp_path / "node.toml", (
        "[limits]\npublish_per_address = { rate = 0.5, burst = 4 }\nexempt_networks = [\"127.0.0.0/8\", \"::1\"]\n"
        "store_quota_bytes = 1000000\npending_quota_bytes = 1000\npending_grace_seconds = 90\n"
        "header_timeout_seconds = 2.5\nmax_connections = 10\nread_per_address = { rate = 100, burst = 300 }\n"
        "download_per_address = { rate = 1048576, burst = 8388608 }\nmax_uploads_per_address = 1\n"
        "in_flight_per_address_bytes = 5000\nmin_body_rate_bytes = 1024\nbody_rate_grace_seconds = 30\n"
        "store_reserved_percent = 0\n"
    ))  # fmt: skip
    limits = load_config(config).limits
    assert limits == replace(
        ClientLimits(), publish_per_address=Rate(0.5, 4), exempt=(LOOPBACK[0], ipaddress.ip_network("::1")),
        store_quota_bytes=1_000_000, pending_quota_bytes=1000, pending_grace_s=90.0, header_timeout_s=2.5,
        max_connections=10, read_per_address=Rate(100.0, 300), download_per_address=Rate(1048576.0, 8388608),
        max_uploads_per_address=1, in_flight_per_address_bytes=5000, min_body_rate_bytes=1024,
        body_rate_grace_s=30.0, store_reserved_percent=0,
    )  # fmt: skip
    assert limits.upload_quota_bytes == 1_000_000 and ClientLimits().upload_quota_bytes == 19 * 2**30
    assert load_config(_config(tmp_path / "plain.toml")).limits == ClientLimits()
    with pytest.raises(ConfigError, match=r"node.toml: limits: unknown field 'colour'"):
        load_config(_config(tmp_path / "node.toml", "[limits]\ncolour = 1\n"))
    bad = [
        ({"colour": 1}, r"limits: unknown field 'colour'"),
        ({"claim_per_identity": {"rate": 0, "burst": 1}}, r"limits.claim_per_identity.rate must be a positive"),
        ({"claim_per_identity": {"rate": 1}}, r"limits.claim_per_identity must be an inline table"),
        ({"upload_per_address": {"rate": 1, "burst": 0}}, r"burst must be a positive integer"),
        ({"max_connections": 0}, r"limits.max_connections must be a positive integer"),
        ({"body_timeout_seconds": -1}, r"limits.body_timeout_seconds must be a positive number"),
        ({"exempt_networks": ["localhost"]}, r"limits.exempt_networks: .*does not appear to be"),
        ({"pending_quota_bytes": 10, "store_quota_bytes": 5}, r"pending_quota_bytes is over store_quota_bytes"),
        ({"store_reserved_percent": 60}, r"limits.store_reserved_percent must be a whole percentage from 0 to 50"),
        ({"min_body_rate_bytes": 0}, r"limits.min_body_rate_bytes must be a positive integer"),
        ({"read_per_address": {"rate": 1, "burst": 1.5}}, r"limits.read_per_address.burst must be a positive"),
    ]
    for table, fragment in bad:
        with pytest.raises(ConfigError, match=fragment):
            parse_limits(table, "node.toml: limits")


def test_json_log_lines_carry_fields_and_never_secrets() -> None:
    formatter = JsonFormatter(secrets=("community-secret-0123456789", None))
    record = logging.LogRecord("registry.serve.node", logging.WARNING, __file__, 1, "joined with %s",
                               ("community-secret-0123456789",), None)  # fmt: skip
    record.__dict__.update({"peer": "node2", "entries": 3, "secret": "x", "identity_seed": "y", "nested": {"token": 1}})
    line = formatter.format(record)
    assert "\n" not in line and "community-secret-0123456789" not in line
    out = json.loads(line)
    assert {k: out[k] for k in ("level", "logger", "message", "peer", "entries")} == {
        "level": "WARNING", "logger": "registry.serve.node", "message": f"joined with {REDACTED}", "peer": "node2",
        "entries": 3,
    }  # fmt: skip
    assert (out["secret"], out["identity_seed"], out["nested"]) == (REDACTED, REDACTED, {"token": REDACTED})
    assert out["time"].endswith("+00:00") and "T" in out["time"]
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert "ValueError: boom" in json.loads(formatter.format(failed))["exc"]


def test_wmnode_start_log_json_writes_one_json_object_per_line(tmp_path: Path) -> None:
    (config,) = write_local_configs(tmp_path, 1)
    raft = load_config(config).raft
    with socket.socket() as busy:  # the node logs its dev-mode warning, then finds its Raft port taken
        busy.bind((raft.host, raft.port))
        busy.listen()
        out = subprocess.run(
            [sys.executable, "-m", "registry.cli", "start", "--config", str(config), "--dev", "--log-json",
             "--data-dir", str(tmp_path / "data")],
            capture_output=True, text=True, timeout=120, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
    assert out.returncode == 1, out.stderr
    records = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    warning = next(r for r in records if r["logger"] == "registry.serve.node")
    assert warning["level"] == "WARNING" and "dev mode" in warning["message"]
    assert load_config(config).identity_seed not in out.stderr
