"""Metering (DESIGN §6): rate limits, the artifact store's quotas and collector, connection caps.

A stranger may publish, claim, upload and read "within rate limits and quotas", and must never
exhaust a node's CPU, memory, disk or connections (DESIGN §6). A node's `[limits]` table
(registry.limits) sets four guards:

* `RateLimiter`: token buckets per client address (an IPv6 client by its /64) and per signing
  identity, for publishes, claims and uploads, and per address for reads (weighted by what they
  return) and downloads (by their bytes), kept in a bounded LRU. An identity's bucket pays only for
  messages its key really signed, so nobody can drain someone else's.
* `NamedArtifacts`: the artifact hashes the log's entries name (a publish its verifier and info, a
  claim the store artifacts it points at, a reference its model), kept by scanning the entries
  appended since the last scan.
* `StoreMeter`: the store's quota. An artifact an entry names counts against the total quota and is
  kept for good: it is acknowledged. One that no entry names yet (`wmnode claim` uploads the suspect
  before the claim that names it) is *pending*: it counts against a smaller pending quota and a
  share per client address too, and is collected after a grace period unless an entry names it by
  then. Uploads hold room for the bytes they have sent so far, a few at a time per address, and never
  the last part of the quota, which is kept for peer copies and the node's own writes (those pass
  the same gate, ArtifactStore.put).
* `registry.asgi.ConnectionGuard` (built here from the same table): deadlines for a request's
  headers, its body's progress and its body's average rate, and caps on open connections, in all
  and per client address.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from contracts.asgi import ConnectionGuard
from contracts.errors import QuotaExceededError, RateLimitedError
from contracts.fetch import ArtifactStore
from contracts.limits import ClientLimits, ConnectionLimits
from registry.serve.metrics import NodeMetrics

logger = logging.getLogger(__name__)

PUBLISH, CLAIM, UPLOAD, READ, DOWNLOAD = "publish", "claim", "upload", "read", "download"
ADDRESS, IDENTITY = "address", "identity"
_NOUNS = {PUBLISH: "publishes", CLAIM: "claims", UPLOAD: "uploads", READ: "reads", DOWNLOAD: "downloads"}
_UNITS = {READ: " entries' worth", DOWNLOAD: " bytes"}


class RateLimiter:
    """Token buckets by (kind, scope, key) in a bounded LRU; a forgotten bucket starts full again."""

    def __init__(self, limits: ClientLimits, metrics: NodeMetrics, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits, self.metrics, self._clock = limits, metrics, clock
        self._buckets: OrderedDict[tuple[str, str, str], list[float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, kind: str, scope: str, key: str, cost: int = 1) -> None:
        """Spend `cost` tokens of the bucket, or raise `RateLimitedError` saying when they are back.

        A cost over the burst (a large download) passes when the bucket is full and leaves it in
        debt, which the rate pays off before the next request passes."""
        rate = self.limits.rate(kind, scope)
        if rate is None:
            return
        need = float(min(cost, rate.burst))
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.pop((kind, scope, key), (float(rate.burst), now))
            tokens = min(float(rate.burst), tokens + (now - last) * rate.per_s)
            allowed = tokens >= need
            self._buckets[(kind, scope, key)] = [tokens - cost if allowed else tokens, now]
            while len(self._buckets) > self.limits.tracked_clients:
                self._buckets.popitem(last=False)
        if not allowed:
            self.metrics.rate_limited.labels(kind, scope).inc()
            wait = max(1, math.ceil((need - tokens) / rate.per_s))
            unit = _UNITS.get(kind, "")
            raise RateLimitedError(
                f"too many {_NOUNS[kind]} from this {scope}: at most {rate.per_s:g}{unit} a second (bursts of "
                f"{rate.burst}); retry in {wait} s",
                wait,
            )

    def refund(self, kind: str, scope: str, key: str, cost: int = 1) -> None:
        rate = self.limits.rate(kind, scope)
        with self._lock:
            bucket = self._buckets.get((kind, scope, key))
            if bucket is not None and rate is not None:
                bucket[0] = min(float(rate.burst), bucket[0] + cost)

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
#: Retry-After for an address at its cap of uploads arriving at once (how long one takes is unknown).
_UPLOAD_RETRY_S = 5


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
        limits: ClientLimits,
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
        #: Bytes received of uploads still arriving (reservations), in all and pending, by source
        #: too; and how many uploads each source has arriving.
        self._flight, self._flight_pending = 0, 0
        self._flight_by_source: dict[str, int] = {}
        self._flight_pending_by_source: dict[str, int] = {}
        self._uploads_by_source: dict[str, int] = {}
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
                _add(self._by_source, held.source, sign * held.charged)

    def _no_room(self, named: bool, source: str, extra: int) -> str | None:
        """Why `extra` more bytes do not fit (counting uploads still arriving), or None. A client's
        bytes (`source` set) may not use the reserved end of the quota: peer copies and the node's
        own writes (no source) may, so a full store of strangers' files still takes them."""
        limits = self.limits
        quota = limits.upload_quota_bytes if source else limits.store_quota_bytes
        if self.used + self._flight + extra > quota:
            return (
                f"this node's artifact store is full (its quota is {limits.store_quota_bytes} bytes, of which "
                f"{limits.store_reserved_percent} % is kept for copies from its peers and its own writes)"
            )
        if named:
            return None
        grace = f"{limits.pending_grace_s:g} s"
        if self.pending + self._flight_pending + extra > limits.pending_quota_bytes:
            return (
                f"the room for artifacts that no entry names yet ({limits.pending_quota_bytes} bytes) is full; "
                f"retry later (they are collected {grace} after they arrive unless an entry names them)"
            )
        held = self._by_source.get(source, 0) + self._flight_pending_by_source.get(source, 0)
        if source and held + extra > limits.pending_per_address_bytes:
            return (
                f"this address holds {held} bytes of artifacts that no entry names yet, and its share is "
                f"{limits.pending_per_address_bytes}: submit the claim that names them, or let them be "
                f"collected ({grace} after they arrived)"
            )
        return None

    def _over_flight(self, source: str, extra: int) -> str | None:
        """Why one more upload's `extra` bytes in flight are over this source's cap, or None."""
        flying, cap = self._flight_by_source.get(source, 0), self.limits.in_flight_per_address_bytes
        if flying + extra > cap:
            return (
                f"this address has {flying} bytes of uploads still arriving, and may have {cap} at once: "
                f"retry once they have arrived"
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
    def reserve(self, digest: str, source: str, declared: int = 0) -> Iterator[Callable[[int], None]]:
        """Room for an upload while it arrives: yields `need(total)`, which holds room for the `total`
        bytes received so far and raises `QuotaExceededError` as soon as they would not fit. Only what
        has arrived is held, never what a client declared (`declared`, its Content-Length, is only
        checked against the room there is now), so a client that declares much and sends little holds
        little; and one address may have `max_uploads_per_address` uploads arriving at once
        (`RateLimitedError` beyond), named or not. The reservation ends with the block, before the
        store's own admission counts the artifact."""
        with self._lock:
            self._refresh()
            named = digest in self.named
            uploads = self._uploads_by_source.get(source, 0)
            problem = self._no_room(named, source, charge(declared)) or self._over_flight(source, declared)
            if problem is None and uploads < self.limits.max_uploads_per_address:
                self._uploads_by_source[source] = uploads + 1
        if problem is not None:
            raise QuotaExceededError(problem)
        if uploads >= self.limits.max_uploads_per_address:
            raise RateLimitedError(
                f"this address already has {uploads} uploads arriving, the most it may have at once; "
                "retry when one has finished",
                _UPLOAD_RETRY_S,
            )
        reserved = [0]

        def need(total: int) -> None:
            extra = total - reserved[0]
            if extra <= 0:
                return
            with self._lock:
                problem = self._no_room(named, source, extra) or self._over_flight(source, extra)
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
                _add(self._uploads_by_source, source, -1)

    def arriving(self, source: str) -> tuple[int, int]:
        """How many uploads from `source` are arriving, and the bytes they hold room for."""
        with self._lock:
            return self._uploads_by_source.get(source, 0), self._flight_by_source.get(source, 0)

    def _fly(self, named: bool, source: str, delta: int) -> None:
        self._flight += delta
        _add(self._flight_by_source, source, delta)
        if not named:
            self._flight_pending += delta
            _add(self._flight_pending_by_source, source, delta)

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


def _add(counts: dict[str, int], key: str, delta: int) -> None:
    """Add `delta` to `counts[key]`, forgetting keys that reach zero (the dicts stay small)."""
    left = counts.get(key, 0) + delta
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)


class Metering:
    """Everything a node meters, built from its `[limits]`: give `store` to the API, start its
    collector with the node, and serve with `uvicorn_options()`."""

    def __init__(
        self, limits: ClientLimits, store: ArtifactStore, log: LogView, metrics: NodeMetrics | None = None
    ) -> None:
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
                limits.min_body_rate_bytes,
                limits.body_rate_grace_s,
            ),
            lambda reason: self.metrics.dropped.labels(reason).inc(),
        )
        self.metrics.watch(self.metrics.store_pending_bytes, lambda: self.store.pending)
        self.metrics.watch(self.metrics.connections, lambda: self.connections.open)

    def uvicorn_options(self) -> dict[str, Any]:
        # limit_concurrency answers 503 once that many requests are in progress (a request may
        # outlive its connection, waiting for a commit); connections themselves are capped above.
        return {"http": self.connections.protocol(), "limit_concurrency": 2 * self.limits.max_connections}
