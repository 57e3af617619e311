"""Metered writes (DESIGN §6): rate limits, the artifact store's quotas and collector, connection caps.

A stranger may publish, claim and upload "within rate limits and quotas", and must never exhaust a
node's CPU, memory, disk or connections (DESIGN §6). A node's `[limits]` table sets four guards:

* `RateLimiter`: token buckets per client address (an IPv6 client by its /64) and per signing
  identity, for publishes, claims and uploads, kept in a bounded LRU. An identity's bucket pays only
  for messages its key really signed, so nobody can drain someone else's.
* `NamedArtifacts`: the artifact hashes the log's entries name (a publish its verifier and info, a
  claim the store artifacts it points at, a reference its model), kept by scanning the entries
  appended since the last scan.
* `StoreMeter`: the store's quota. An artifact an entry names counts against the total quota and is
  kept for good: it is acknowledged. One that no entry names yet (`wmnode claim` uploads the suspect
  before the claim that names it) is *pending*: it counts against a smaller pending quota and a
  share per client address too, and is collected after a grace period unless an entry names it by
  then. Peer copies and the node's own writes pass the same gate (ArtifactStore.put).
* `registry.asgi.ConnectionGuard` (built here from the same table): deadlines for a request's
  headers and its body's progress, and caps on open connections, in all and per client address.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Protocol

from registry.asgi import ConnectionGuard, ConnectionLimits
from registry.errors import ConfigError, QuotaExceededError, RateLimitedError
from registry.fetch import ArtifactStore
from registry.metrics import NodeMetrics

logger = logging.getLogger(__name__)

PUBLISH, CLAIM, UPLOAD = "publish", "claim", "upload"
ADDRESS, IDENTITY = "address", "identity"
_NOUNS = {PUBLISH: "publishes", CLAIM: "claims", UPLOAD: "uploads"}
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Rate:
    """A token bucket: `per_s` tokens a second, at most `burst` saved up."""

    per_s: float
    burst: int


@dataclass(frozen=True)
class Limits:
    """A node's `[limits]`: how fast one client or identity may write, and how much the store keeps.

    The defaults leave an honest client far below them (`wmnode claim` sends one claim and three
    uploads) and hold a flood from one address to a few dozen writes a second.
    """

    publish_per_address: Rate = Rate(50.0, 200)
    publish_per_identity: Rate = Rate(5.0, 20)
    claim_per_address: Rate = Rate(5.0, 20)
    claim_per_identity: Rate = Rate(1.0, 5)
    upload_per_address: Rate = Rate(10.0, 50)
    #: Clients in these networks are not rate limited (quotas, deadlines and caps still hold).
    exempt: tuple[Network, ...] = ()
    #: Buckets kept, least recently used out first: the limiter's memory bound.
    tracked_clients: int = 100_000
    store_quota_bytes: int = 20 * 2**30
    pending_quota_bytes: int = 2**30
    pending_per_address_bytes: int = 256 * 2**20
    pending_grace_s: float = 3600.0
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    max_connections: int = 256
    max_connections_per_address: int = 64

    def rate(self, kind: str, scope: str) -> Rate | None:
        rate: Rate | None = getattr(self, f"{kind}_per_{scope}", None)
        return rate

    def is_exempt(self, host: str | None) -> bool:
        if not self.exempt or not host:
            return False
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        return any(ip in network for network in self.exempt)


_RATES = (
    "publish_per_address",
    "publish_per_identity",
    "claim_per_address",
    "claim_per_identity",
    "upload_per_address",
)
_COUNTS = ("tracked_clients", "store_quota_bytes", "pending_quota_bytes", "pending_per_address_bytes",
           "max_connections", "max_connections_per_address")  # fmt: skip
_SECONDS = {"pending_grace_seconds": "pending_grace_s", "header_timeout_seconds": "header_timeout_s",
            "body_timeout_seconds": "body_timeout_s"}  # fmt: skip


def parse_limits(table: Mapping[str, Any], where: str) -> Limits:
    """The `[limits]` table of a node config; every error names the field."""
    changes: dict[str, Any] = {}
    for name, value in table.items():
        if name in _RATES:
            changes[name] = _rate(value, f"{where}.{name}")
        elif name in _COUNTS:
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{where}.{name} must be a positive integer, got {value!r}")
            changes[name] = value
        elif name in _SECONDS:
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
                raise ConfigError(f"{where}.{name} must be a positive number of seconds, got {value!r}")
            changes[_SECONDS[name]] = float(value)
        elif name == "exempt_networks":
            changes["exempt"] = _networks(value, f"{where}.{name}")
        else:
            allowed = sorted([*_RATES, *_COUNTS, *_SECONDS, "exempt_networks"])
            raise ConfigError(f"{where}: unknown field {name!r} (allowed: {', '.join(allowed)})")
    limits = replace(Limits(), **changes)
    if limits.pending_quota_bytes > limits.store_quota_bytes:
        raise ConfigError(f"{where}: pending_quota_bytes is over store_quota_bytes, of which it is a part")
    return limits


def _rate(value: object, where: str) -> Rate:
    if not isinstance(value, Mapping) or set(value) != {"rate", "burst"}:
        raise ConfigError(f"{where} must be an inline table {{ rate = PER_SECOND, burst = N }}, got {value!r}")
    rate, burst = value["rate"], value["burst"]
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate < math.inf:
        raise ConfigError(f"{where}.rate must be a positive number per second, got {rate!r}")
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
        raise ConfigError(f"{where}.burst must be a positive integer, got {burst!r}")
    return Rate(float(rate), burst)


def _networks(value: object, where: str) -> tuple[Network, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f'{where} must be a list of networks like "127.0.0.0/8"')
    try:
        return tuple(ipaddress.ip_network(v, strict=False) for v in value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


class RateLimiter:
    """Token buckets by (kind, scope, key) in a bounded LRU; a forgotten bucket starts full again."""

    def __init__(self, limits: Limits, metrics: NodeMetrics, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits, self.metrics, self._clock = limits, metrics, clock
        self._buckets: OrderedDict[tuple[str, str, str], list[float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, kind: str, scope: str, key: str) -> None:
        """Spend one token of the bucket, or raise `RateLimitedError` saying when one is back."""
        rate = self.limits.rate(kind, scope)
        if rate is None:
            return
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.pop((kind, scope, key), (float(rate.burst), now))
            tokens = min(float(rate.burst), tokens + (now - last) * rate.per_s)
            allowed = tokens >= 1.0
            self._buckets[(kind, scope, key)] = [tokens - 1.0 if allowed else tokens, now]
            while len(self._buckets) > self.limits.tracked_clients:
                self._buckets.popitem(last=False)
        if not allowed:
            self.metrics.rate_limited.labels(kind, scope).inc()
            wait = max(1, math.ceil((1.0 - tokens) / rate.per_s))
            raise RateLimitedError(
                f"too many {_NOUNS[kind]} from this {scope}: at most {rate.per_s:g} a second (bursts of "
                f"{rate.burst}); retry in {wait} s",
                wait,
            )

    def refund(self, kind: str, scope: str, key: str) -> None:
        rate = self.limits.rate(kind, scope)
        with self._lock:
            bucket = self._buckets.get((kind, scope, key))
            if bucket is not None and rate is not None:
                bucket[0] = min(float(rate.burst), bucket[0] + 1.0)

    def __len__(self) -> int:
        return len(self._buckets)


class LogView(Protocol):
    """What the meter reads of the log (registry.log.RegistryLog): entries and Raft progress."""

    def size(self) -> int: ...

    def entry(self, index: int) -> dict[str, Any]: ...

    def raft_status(self) -> dict[str, Any]: ...


def named_by(msg: Mapping[str, Any]) -> list[str]:
    """The store artifacts a (committed, hence valid) message names."""
    kind = msg.get("type")
    if kind == "publish":
        return [msg["verifier_hash"], msg["info_hash"]]
    if kind == "claim":
        uris = (msg["model_uri"], msg["verifier_uri"], msg["info_uri"])
        return [uri[7:] for uri in uris if uri.startswith("sha256:")]
    if kind == "reference":
        return [msg["model_hash"]]
    return []


def _prefix(digest: str) -> int:
    return int(digest[:16], 16)


class NamedArtifacts:
    """The hashes the log's entries name, by their first 64 bits (half the memory of hex strings).

    A match on 64 bits only ever keeps a file longer; to have a file of its own kept that way, a
    stranger would need bytes whose SHA-256 starts like a named one's. Not thread-safe: the
    meter serialises `refresh`.
    """

    def __init__(self, log: LogView) -> None:
        self._log, self._scanned = log, 0
        self._names: set[int] = set()

    def refresh(self) -> set[int]:
        """Scan the entries appended since the last scan; the prefixes they newly name."""
        new: set[int] = set()
        size = self._log.size()
        while self._scanned < size:
            for digest in named_by(self._log.entry(self._scanned)["msg"]):
                prefix = _prefix(digest)
                if prefix not in self._names:
                    self._names.add(prefix)
                    new.add(prefix)
            self._scanned += 1
        return new

    def __contains__(self, digest: str) -> bool:
        return _prefix(digest) in self._names

    def __len__(self) -> int:
        return len(self._names)


_BLOCK = 4096


def charge(size: int) -> int:
    """What an artifact costs against a quota: whole 4 KiB blocks, at least one (as on disk), so a
    flood of tiny files cannot hide behind a small byte count."""
    return max(1, -(-size // _BLOCK)) * _BLOCK


@dataclass
class _Held:
    charged: int
    arrived: float
    source: str
    named: bool


class StoreMeter:
    """Quota and collection for an `ArtifactStore` (it becomes the store's `admit`)."""

    def __init__(
        self,
        store: ArtifactStore,
        log: LogView,
        limits: Limits,
        metrics: NodeMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.log, self.limits, self.metrics, self._clock = store, log, limits, metrics, clock
        self.named = NamedArtifacts(log)
        self._lock = threading.Lock()
        self._held: dict[str, _Held] = {}
        self._pending_by_prefix: dict[int, set[str]] = {}
        #: Charged bytes held in all, and of those the pending ones, in all and by source.
        self.used = self.pending = 0
        self._by_source: dict[str, int] = {}
        #: Bytes of uploads still arriving (reservations), in all, pending, and by source.
        self._flight, self._flight_pending = 0, 0
        self._flight_by_source: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        now = clock()
        with self._lock:
            self.named.refresh()
            for digest, size, _ in store.listing():
                # A restart restarts the grace of what no entry names yet: its entry may still be
                # on its way (the log replays after this).
                self._hold(digest, charge(size), now, "")
        store.admit = self._admit

    # -- accounting (self._lock held) -----------------------------------------------------------

    def _refresh(self) -> None:
        for prefix in self.named.refresh():
            for digest in self._pending_by_prefix.pop(prefix, set()):
                held = self._held[digest]
                held.named = True
                self._account(held, -1, pending_only=True)

    def _hold(self, digest: str, charged: int, arrived: float, source: str) -> None:
        held = _Held(charged, arrived, source, digest in self.named)
        self._held[digest] = held
        self._account(held, +1)
        if not held.named:
            self._pending_by_prefix.setdefault(_prefix(digest), set()).add(digest)

    def _drop(self, digest: str) -> None:
        held = self._held.pop(digest)
        self._account(held, -1)
        if not held.named:
            same = self._pending_by_prefix.get(_prefix(digest), set())
            same.discard(digest)
            if not same:
                self._pending_by_prefix.pop(_prefix(digest), None)

    def _account(self, held: _Held, sign: int, pending_only: bool = False) -> None:
        if not pending_only:
            self.used += sign * held.charged
        if not held.named or pending_only:
            self.pending += sign * held.charged
            if held.source:
                left = self._by_source.get(held.source, 0) + sign * held.charged
                if left > 0:
                    self._by_source[held.source] = left
                else:
                    self._by_source.pop(held.source, None)

    def _no_room(self, named: bool, source: str, extra: int) -> str | None:
        """Why `extra` more bytes do not fit (counting uploads still arriving), or None."""
        limits = self.limits
        if self.used + self._flight + extra > limits.store_quota_bytes:
            return f"this node's artifact store is full (its quota is {limits.store_quota_bytes} bytes)"
        if named:
            return None
        grace = f"{limits.pending_grace_s:g} s"
        if self.pending + self._flight_pending + extra > limits.pending_quota_bytes:
            return (
                f"the room for artifacts that no entry names yet ({limits.pending_quota_bytes} bytes) is full; "
                f"retry later (they are collected {grace} after they arrive unless an entry names them)"
            )
        held = self._by_source.get(source, 0) + self._flight_by_source.get(source, 0)
        if source and held + extra > limits.pending_per_address_bytes:
            return (
                f"this address holds {held} bytes of artifacts that no entry names yet, and its share is "
                f"{limits.pending_per_address_bytes}: submit the claim that names them, or let them be "
                f"collected ({grace} after they arrived)"
            )
        return None

    def _admit(self, digest: str, size: int, source: str) -> None:
        """ArtifactStore.admit: called with the store's lock held, just before the file lands."""
        charged = charge(size)
        with self._lock:
            self._refresh()
            if digest in self._held:  # removed behind our back (an operator): count it once
                self._drop(digest)
            problem = self._no_room(digest in self.named, source, charged)
            if problem is not None:
                raise QuotaExceededError(problem)
            self._hold(digest, charged, self._clock(), source)

    # -- uploads in flight -----------------------------------------------------------------------

    @contextmanager
    def reserve(self, digest: str, source: str) -> Iterator[Callable[[int], None]]:
        """Room for an upload while it arrives: yields `need(total)`, which raises
        `QuotaExceededError` as soon as `total` bytes would not fit. The reservation ends with the
        block, before the store's own admission counts the artifact."""
        with self._lock:
            self._refresh()
            named = digest in self.named
            problem = self._no_room(named, source, _BLOCK)
        if problem is not None:
            raise QuotaExceededError(problem)
        reserved = [0]

        def need(total: int) -> None:
            extra = total - reserved[0]
            if extra <= 0:
                return
            with self._lock:
                problem = self._no_room(named, source, extra)
                if problem is None:
                    self._fly(named, source, extra)
                    reserved[0] = total
            if problem is not None:
                raise QuotaExceededError(problem)

        try:
            yield need
        finally:
            with self._lock:
                self._fly(named, source, -reserved[0])

    def _fly(self, named: bool, source: str, delta: int) -> None:
        self._flight += delta
        if not named:
            self._flight_pending += delta
            left = self._flight_by_source.get(source, 0) + delta
            if left > 0:
                self._flight_by_source[source] = left
            else:
                self._flight_by_source.pop(source, None)

    # -- collection ------------------------------------------------------------------------------

    def caught_up(self) -> bool:
        """This node knows a leader and has applied every entry it knows committed: an entry that
        names a pending artifact cannot be committed-but-unapplied here (a partitioned node knows no
        leader and collects nothing)."""
        status = self.log.raft_status()
        return status.get("leader") is not None and status.get("commit_idx", 0) <= status.get("last_applied", -1)

    def collect(self) -> int:
        """Delete the pending artifacts whose grace has passed and that no entry names; how many."""
        with self._lock:
            self._refresh()
        if not self.caught_up():
            return 0
        deadline = self._clock() - self.limits.pending_grace_s
        with self._lock:
            expired = [d for d, held in self._held.items() if not held.named and held.arrived <= deadline]
        count = freed = 0
        for digest in expired:
            with self.store.lock, self._lock:
                self._refresh()  # an entry naming it may have landed since the list was made
                held = self._held.get(digest)
                if held is None or held.named:
                    continue
                freed += self.store.remove(digest)
                self._drop(digest)
                count += 1
        if count:
            self.metrics.collected.inc(count)
            logger.info(
                "collected %d artifacts that no entry named within %g s (%d bytes)",
                count, self.limits.pending_grace_s, freed, extra={"collected": count, "freed_bytes": freed},
            )  # fmt: skip
        return count

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="store-collector", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        tick = min(max(self.limits.pending_grace_s / 4, 0.05), 5.0)
        while not self._stop.wait(tick):
            try:
                self.collect()
            except Exception:  # noqa: BLE001 - the collector must outlive one bad pass
                logger.exception("the artifact collector failed a pass")


class Metering:
    """Everything a node meters, built from its `[limits]`: give `store` to the API, start its
    collector with the node, and serve with `uvicorn_options()`."""

    def __init__(self, limits: Limits, store: ArtifactStore, log: LogView, metrics: NodeMetrics | None = None) -> None:
        self.limits = limits
        self.metrics = metrics or NodeMetrics()
        self.rates = RateLimiter(limits, self.metrics)
        self.store = StoreMeter(store, log, limits, self.metrics)
        self.connections = ConnectionGuard(
            ConnectionLimits(
                limits.header_timeout_s,
                limits.body_timeout_s,
                limits.max_connections,
                limits.max_connections_per_address,
            ),
            lambda reason: self.metrics.dropped.labels(reason).inc(),
        )
        self.metrics.watch(self.metrics.store_pending_bytes, lambda: self.store.pending)
        self.metrics.watch(self.metrics.connections, lambda: self.connections.open)

    def uvicorn_options(self) -> dict[str, Any]:
        # limit_concurrency answers 503 once that many requests are in progress (a request may
        # outlive its connection, waiting for a commit); connections themselves are capped above.
        return {"http": self.connections.protocol(), "limit_concurrency": 2 * self.limits.max_connections}
