"""The node's Prometheus metrics (`GET /metrics`), in a registry of its own per node.

Several nodes may run in one process (the tests do), so nothing goes to prometheus-client's global
registry. Every label takes values from a fixed set (message types, error class names, limit kinds,
drop reasons): no label ever carries a client's text, address or key.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from contracts.errors import WmnodeError

#: What `render()` produces.
CONTENT_TYPE = CONTENT_TYPE_LATEST
#: Judging a claim takes from a fraction of a second (a refused info) to the judge's wall clock.
_VERIFY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


class NodeMetrics:
    """One node's counters, gauges and histograms; gauges read their values when scraped."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.commits = Counter("wmnode_commits", "Messages this node's API committed, by type", ["type"], registry=r)
        self.rejections = Counter(
            "wmnode_rejections", "Writes this node's API refused, by error class", ["reason"], registry=r
        )
        self.rate_limited = Counter(
            "wmnode_rate_limited", "Requests refused by a rate limit, by kind and scope", ["kind", "scope"], registry=r
        )
        self.claim_queue = Gauge("wmnode_claim_queue", "Claims in the log this node has not voted on yet", registry=r)
        self.verify_seconds = Histogram(
            "wmnode_verify_seconds", "Seconds to judge one claim, fetches included", buckets=_VERIFY_BUCKETS, registry=r
        )
        self.log_entries = Gauge("wmnode_log_entries", "Entries in this node's copy of the log", registry=r)
        self.store_bytes = Gauge("wmnode_store_bytes", "Bytes in the artifact store", registry=r)
        self.store_pending_bytes = Gauge(
            "wmnode_store_pending_bytes", "Bytes charged for stored artifacts that no entry names yet", registry=r
        )
        self.collected = Counter(
            "wmnode_artifacts_collected", "Artifacts deleted because no entry named them in time", registry=r
        )
        self.connections = Gauge("wmnode_connections", "Open HTTP connections", registry=r)
        self.dropped = Counter(
            "wmnode_connections_dropped", "Connections closed by a deadline or a cap, by reason", ["reason"], registry=r
        )

    def reject(self, exc: WmnodeError) -> None:
        self.rejections.labels(type(exc).__name__).inc()

    def watch(self, gauge: Gauge, read: Callable[[], float]) -> None:
        """Have `gauge` read `read()` at every scrape."""
        gauge.set_function(read)

    def render(self) -> bytes:
        return generate_latest(self.registry)
