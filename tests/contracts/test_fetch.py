"""Fetching under a policy (no private ranges after DNS, no redirects, size limits) and the store."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from contracts.errors import NotFoundError, PayloadTooLargeError
from contracts.fetch import ArtifactStore, Fetcher, FetchError, FetchPolicy, address_refusal, http_get, pin_url

OPEN = FetchPolicy()
LOOPBACK = FetchPolicy(allow_loopback=True, max_bytes=1000)


@pytest.mark.parametrize(
    ("address", "fragment"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.1", "private"),
        ("172.16.5.5", "private"),
        ("100.64.0.1", "private"),
        ("fd00::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("0.0.0.0", "not a unicast"),
        ("224.0.0.1", "not a unicast"),
    ],
)
def test_non_public_addresses_are_refused_by_default(address: str, fragment: str) -> None:
    refusal = address_refusal(address, OPEN)
    assert refusal is not None and fragment in refusal


def test_public_addresses_pass_and_the_policy_opens_only_what_it_names() -> None:
    assert address_refusal("93.184.216.34", OPEN) is None
    assert address_refusal("2606:4700::1111", OPEN) is None
    assert address_refusal("127.0.0.1", LOOPBACK) is None
    assert address_refusal("10.0.0.1", LOOPBACK) is not None  # loopback is not "private"
    assert address_refusal("169.254.169.254", FetchPolicy(allow_loopback=True, allow_private=True)) is not None


def test_a_host_name_is_judged_by_what_it_resolves_to(monkeypatch: pytest.MonkeyPatch) -> None:
    def resolve(host: str, port: int, **kwargs: object) -> list[tuple[object, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    with pytest.raises(FetchError, match="resolves to 10.0.0.7 is in a private range"):
        pin_url("https://innocent.example.org/model.safetensors", OPEN)


def test_the_pinned_url_connects_to_the_checked_address_and_keeps_the_name(monkeypatch: pytest.MonkeyPatch) -> None:
    def resolve(host: str, port: int, **kwargs: object) -> list[tuple[object, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    target = pin_url("https://models.example.org/a/b.safetensors?v=1#frag", OPEN)
    assert target.url == "https://93.184.216.34:443/a/b.safetensors?v=1"
    assert (target.host, target.server_name) == ("models.example.org", "models.example.org")


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("file:///etc/passwd", "only http and https"),
        ("ftp://example.org/x", "only http and https"),
        ("http://user:pw@example.org/", "user:password@"),
        ("http://10.0.0.1/model", "private range"),
        ("http://[::1]:8080/model", "loopback"),
    ],
)
def test_urls_outside_the_policy_are_refused(url: str, fragment: str) -> None:
    with pytest.raises(FetchError, match=fragment):
        pin_url(url, OPEN)


def test_an_allow_list_admits_only_its_hosts() -> None:
    policy = FetchPolicy(allow_loopback=True, allow_hosts=("models.example.org",))
    with pytest.raises(FetchError, match="not on this node's allow-list"):
        pin_url("http://127.0.0.1/x", policy)


class _Handler(BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, dict[str, str], bytes]] = {}

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        if self.path == "/trickle":  # one byte every 0.2 s: each read is quick, the whole is not
            self.send_response(200)
            self.send_header("content-length", "100")
            self.end_headers()
            for _ in range(100):
                try:
                    self.wfile.write(b"x")
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.2)
            return
        status, headers, body = self.routes.get(self.path, (404, {}, b"no"))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_fetching_is_size_limited_and_never_follows_a_redirect(server: str) -> None:
    _Handler.routes = {
        "/small": (200, {}, b"x" * 100),
        "/big": (200, {}, b"x" * 5000),
        "/moved": (302, {"location": "http://169.254.169.254/latest/meta-data/"}, b""),
    }
    assert http_get(f"{server}/small", LOOPBACK) == b"x" * 100
    with pytest.raises(FetchError, match="over the limit of 1000"):
        http_get(f"{server}/big", LOOPBACK)
    with pytest.raises(FetchError, match="redirects are not followed"):
        http_get(f"{server}/moved", LOOPBACK)
    with pytest.raises(FetchError, match="loopback"):
        http_get(f"{server}/small", OPEN)


def test_a_server_that_trickles_is_cut_off_by_the_whole_transfers_deadline(server: str) -> None:
    started = time.monotonic()
    with pytest.raises(FetchError, match="did not arrive in time"):
        http_get(f"{server}/trickle", FetchPolicy(allow_loopback=True, timeout_s=1.0))
    assert time.monotonic() - started < 3


def test_the_store_keeps_only_bytes_that_hash_to_their_name(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "a", max_bytes=1000)
    data = b"model bytes"
    digest = hashlib.sha256(data).hexdigest()
    with pytest.raises(Exception, match="hash mismatch"):
        store.put(digest, [b"other bytes"])
    assert not store.has(digest) and not list((tmp_path / "a").rglob(".upload-*"))
    assert store.put(digest, [data[:5], data[5:]]) is True
    assert store.put(digest, [data]) is False  # stored once
    with pytest.raises(Exception, match="hash mismatch"):
        store.put(digest, [b"other bytes"])  # told, even though the name is stored already
    assert store.read(digest, 1000) == data
    with pytest.raises(PayloadTooLargeError):
        store.put(hashlib.sha256(b"y" * 2000).hexdigest(), [b"y" * 2000])
    with pytest.raises(NotFoundError, match="64 lowercase hex"):
        store.path("../../etc/passwd")


def test_a_fetched_artifact_must_match_the_hash_the_claim_names(tmp_path: Path, server: str) -> None:
    _Handler.routes = {"/m": (200, {}, b"tampered")}
    fetcher = Fetcher(ArtifactStore(tmp_path / "a", 1000), [], LOOPBACK)
    expected = hashlib.sha256(b"original").hexdigest()
    with pytest.raises(FetchError, match="suspect model: hash mismatch"):
        fetcher.fetch(f"{server}/m", expected, 1000, "suspect model")
    with pytest.raises(FetchError, match="on no reachable member"):
        fetcher.fetch(f"sha256:{expected}", expected, 1000, "suspect model")
