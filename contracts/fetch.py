"""Getting artifacts onto a node safely: the content-addressed store, peers, and guarded http(s).

DESIGN §4.5. A claim names its suspect and its verifier by URI, and every node fetches them:

* `sha256:<hex>` is an artifact in the nodes' store. A node that lacks it asks the other
  members (addresses from its own config, never from a message) and checks the hash on arrival.
* `http(s)://…` is fetched under a `FetchPolicy`: http and https only, no redirects, no proxies
  from the environment, a timeout and a size limit, an optional host allow-list, and the host
  resolved first. Every address it resolves to must be public unless the policy allows loopback
  or private ranges; link-local (cloud metadata), multicast, reserved and unspecified addresses
  are refused always. The connection then goes to the very address that was checked (the Host
  header and TLS SNI carry the name), so a second DNS answer cannot smuggle in another one.

No node ever opens a file path that a message named: the store names its files by hash.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from contracts.encoding import is_hex
from contracts.errors import NotFoundError, PayloadTooLargeError, WmnodeError

_CHUNK = 1 << 16


class FetchError(WmnodeError):
    """A URL this node will not fetch, a fetch that failed, or bytes whose hash does not match."""

    http_status = 400


@dataclass(frozen=True)
class FetchPolicy:
    """Which URLs a node fetches. The defaults suit a node on the open network."""

    allow_loopback: bool = False
    allow_private: bool = False
    #: When non-empty, only these host names (or literal addresses) are fetched from.
    allow_hosts: tuple[str, ...] = ()
    max_bytes: int = 256 * 2**20
    timeout_s: float = 30.0


def address_refusal(address: str, policy: FetchPolicy) -> str | None:
    """Why `address` may not be connected to under `policy`, or None when it may."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:  # first: Python counts ::1 among the reserved addresses too
        return None if policy.allow_loopback else f"{ip} is a loopback address"
    if ip.is_link_local:
        return f"{ip} is link-local"
    if ip.is_multicast or ip.is_unspecified or ip.is_reserved:
        return f"{ip} is not a unicast address"
    if ip.is_private or not ip.is_global:
        return None if policy.allow_private else f"{ip} is in a private range"
    return None


@dataclass(frozen=True)
class Target:
    """A URL pinned to one checked address: connect to `url`, send `host` and SNI `server_name`."""

    url: str
    host: str
    server_name: str


def pin_url(url: str, policy: FetchPolicy) -> Target:
    """Resolve `url`'s host and check every address it has; the URL rewritten to the first one."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise FetchError(f"only http and https URLs are fetched, not {parts.scheme or 'a bare path'!r}")
    if parts.username is not None or parts.password is not None:
        raise FetchError("URLs with user:password@ are not fetched")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise FetchError(f"URL {url[:80]!r} has no host")
    if policy.allow_hosts and host not in policy.allow_hosts:
        raise FetchError(f"host {host!r} is not on this node's allow-list ({', '.join(policy.allow_hosts)})")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise FetchError(f"URL {url[:80]!r}: {exc}") from None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError(f"cannot resolve {host!r}: {exc}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise FetchError(f"{host!r} resolves to no address")
    for address in addresses:
        refusal = address_refusal(address, policy)
        if refusal is not None:
            raise FetchError(f"refused to fetch {host!r}: it resolves to {refusal} (this node's fetch policy)")
    address = addresses[0]
    netloc = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    default_port = parts.port is None
    host_header = host if default_port else f"{host}:{port}"
    if ":" in host and default_port:
        host_header = f"[{host}]"
    elif ":" in host:
        host_header = f"[{host}]:{port}"
    return Target(urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, "")), host_header, host)


def _client(timeout_s: float) -> httpx.Client:
    # trust_env=False: no proxy or netrc from the environment may reroute a checked connection.
    return httpx.Client(timeout=timeout_s, follow_redirects=False, trust_env=False)


def _read_limited(chunks: Iterable[bytes], limit: int, what: str, deadline: float) -> bytes:
    """At most `limit` bytes, all of them before `deadline` (time.monotonic): httpx's timeout is
    per read, so a server trickling a byte at a time would otherwise hold a verifier for days."""
    out, total = bytearray(), 0
    for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise FetchError(f"{what} is larger than the limit of {limit} bytes")
        if time.monotonic() > deadline:
            raise FetchError(f"{what} did not arrive in time (the whole transfer is limited, not each read)")
        out += chunk
    return bytes(out)


def _send(client: httpx.Client, method: str, target: Target, limit: int, what: str, **kwargs: Any) -> tuple[bytes, str]:
    headers = {"host": target.host, **kwargs.pop("headers", {})}
    try:
        with client.stream(
            method, target.url, headers=headers, extensions={"sni_hostname": target.server_name}, **kwargs
        ) as response:
            if response.is_redirect:
                raise FetchError(f"{what} answered with a redirect; redirects are not followed")
            if response.status_code != 200:
                raise FetchError(f"{what} answered HTTP {response.status_code}")
            length = response.headers.get("content-length", "")
            if length.isdigit() and int(length) > limit:
                raise FetchError(f"{what} is {length} bytes, over the limit of {limit}")
            deadline = time.monotonic() + client.timeout.read if client.timeout.read else float("inf")
            body = _read_limited(response.iter_bytes(), limit, what, deadline)
            return body, response.headers.get("content-type", "")
    except httpx.HTTPError as exc:
        raise FetchError(f"cannot fetch {what}: {type(exc).__name__}: {exc}") from None


def http_get(url: str, policy: FetchPolicy, limit: int | None = None) -> bytes:
    """GET a URL under `policy` (checked and pinned first), at most `limit` bytes."""
    target = pin_url(url, policy)
    with _client(policy.timeout_s) as client:
        body, _ = _send(client, "GET", target, min(limit or policy.max_bytes, policy.max_bytes), url[:120])
    return body


def http_post(url: str, body: bytes, policy: FetchPolicy, limit: int) -> tuple[bytes, str]:
    """POST `body` (JSON) to a URL under `policy`; the answer's bytes and content type."""
    target = pin_url(url, policy)
    with _client(policy.timeout_s) as client:
        return _send(
            client, "POST", target, limit, url[:120], content=body, headers={"content-type": "application/json"}
        )


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_hash(data: bytes, expected: str, what: str) -> None:
    got = sha256_hex(data)
    if got != expected:
        raise FetchError(f"{what}: hash mismatch: the bytes hash to {got[:16]}…, expected {expected[:16]}…")


#: Decides whether a new artifact (digest, size, source) may land; raises a `WmnodeError` to refuse.
Admission = Callable[[str, int, str], None]


def _admit_all(digest: str, size: int, source: str) -> None:
    return None


class ArtifactStore:
    """Files named by their SHA-256 under one directory; written once, atomically, hash-checked.

    Every new artifact passes `admit` (registry.metering.StoreMeter sets it: quotas, collection)
    while `lock` is held, and `remove` deletes under the same lock, so the accounting and the files
    never disagree. Uploads, peer copies and the node's own writes all come through `put`.
    """

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root, self.max_bytes = root, max_bytes
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.admit: Admission = _admit_all
        for stale in self.root.glob("??/.upload-*"):  # left by a crash mid-write: nobody else knows them
            stale.unlink(missing_ok=True)
        #: Bytes of the stored artifacts (the files' sizes).
        self.bytes = sum(size for _, size, _ in self.listing())

    def listing(self) -> Iterator[tuple[str, int, float]]:
        """(digest, size, mtime) of every stored artifact."""
        for path in self.root.glob("??/*"):
            if len(path.name) == 64 and is_hex(path.name, 32) and path.name[:2] == path.parent.name:
                try:
                    stat = path.stat()
                except FileNotFoundError:  # removed meanwhile
                    continue
                yield path.name, stat.st_size, stat.st_mtime

    def remove(self, digest: str) -> int:
        """Delete an artifact; the bytes freed (0 if it was not stored). Call with `lock` held."""
        path = self.path(digest)
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return 0
        self.bytes -= size
        return size

    def path(self, digest: str) -> Path:
        if not is_hex(digest, 32):
            raise NotFoundError("an artifact is named by 64 lowercase hex digits (its SHA-256)")
        return self.root / digest[:2] / digest

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def put(self, digest: str, chunks: Iterable[bytes], source: str = "") -> bool:
        """Store the bytes of `chunks` as `digest`; True if new, False if it was stored already.

        Refuses (and keeps nothing of) a body over the size limit, one that hashes otherwise, or
        one that `admit` refuses. `source` names who sent it (a client's address; "" for the node
        itself and its peers), for per-client quotas.
        """
        final = self.path(digest)
        if final.is_file():  # stored once; still tell a sender whose bytes are not what it named
            hasher, total = hashlib.sha256(), 0
            for chunk in chunks:
                total += len(chunk)
                if total > self.max_bytes:
                    raise PayloadTooLargeError(f"artifact is over this node's limit of {self.max_bytes} bytes")
                hasher.update(chunk)
            if hasher.hexdigest() != digest:
                raise FetchError(f"artifact hash mismatch: the body hashes to {hasher.hexdigest()}, not {digest}")
            return False
        final.parent.mkdir(mode=0o700, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=".upload-")
        tmp = Path(tmp_name)
        try:
            hasher, total = hashlib.sha256(), 0
            with os.fdopen(fd, "wb") as handle:
                for chunk in chunks:
                    total += len(chunk)
                    if total > self.max_bytes:
                        raise PayloadTooLargeError(f"artifact is over this node's limit of {self.max_bytes} bytes")
                    hasher.update(chunk)
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            if hasher.hexdigest() != digest:
                raise FetchError(f"artifact hash mismatch: the body hashes to {hasher.hexdigest()}, not {digest}")
            with self.lock:
                if final.is_file():  # a concurrent upload of the same bytes got there first
                    return False
                self.admit(digest, total, source)
                os.replace(tmp, final)
                self.bytes += total
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def put_bytes(self, data: bytes) -> str:
        digest = sha256_hex(data)
        self.put(digest, [data])
        return digest

    def read(self, digest: str, limit: int) -> bytes:
        path = self.path(digest)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise NotFoundError(f"no artifact sha256:{digest}") from None
        if size > limit:
            raise FetchError(f"artifact sha256:{digest[:16]}… is {size} bytes, over the limit of {limit}")
        data = path.read_bytes()
        check_hash(data, digest, f"stored artifact sha256:{digest[:16]}…")  # a disk fault is not a result
        return data

    def iter_file(self, digest: str) -> Iterator[bytes]:
        path = self.path(digest)
        if not path.is_file():
            raise NotFoundError(f"no artifact sha256:{digest}")
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                yield chunk


class Fetcher:
    """What a node's verifier uses: its own store, then its peers, then guarded http(s)."""

    def __init__(self, store: ArtifactStore, peer_urls: Iterable[str], policy: FetchPolicy) -> None:
        self.store, self.peer_urls, self.policy = store, [u.rstrip("/") for u in peer_urls], policy

    def artifact(self, digest: str, limit: int) -> bytes:
        if self.store.has(digest):
            return self.store.read(digest, limit)
        failures = []
        with _client(self.policy.timeout_s) as client:
            for peer in self.peer_urls:
                # A member's address comes from this node's own config: no policy check, same limits.
                parts = urlsplit(peer)
                target = Target(f"{peer}/v1/artifacts/{digest}", parts.netloc, parts.hostname or "")
                try:
                    data, _ = _send(client, "GET", target, limit, f"artifact from {peer}")
                except FetchError as exc:
                    failures.append(str(exc))
                    continue
                if sha256_hex(data) != digest:
                    failures.append(f"{peer}: sent bytes with another hash")
                    continue
                self.store.put(digest, [data])
                return data
        raise FetchError(f"artifact sha256:{digest[:16]}… is on no reachable member ({'; '.join(failures) or 'none'})")

    def fetch(self, uri: str, expected_hash: str, limit: int, what: str) -> bytes:
        """The bytes behind an `sha256:` or http(s) URI, checked against `expected_hash`."""
        if uri.startswith("sha256:"):
            if uri[7:] != expected_hash:
                raise FetchError(f"{what}: the URI names sha256:{uri[7:19]}…, expected {expected_hash[:16]}…")
            return self.artifact(expected_hash, limit)
        data = http_get(uri, self.policy, limit)
        check_hash(data, expected_hash, what)
        return data  # not kept: every node fetches a URL itself, and a stranger's files fill no disk
