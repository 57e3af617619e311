"""Metered reads (DESIGN §6): the price of each GET, and the gate in front of the API that charges it.

One unmetered `GET /v1/entries?limit=1000` costs ~50 ms of CPU in the process that also runs the
Raft tick, so reads pay from a per-address token bucket (`read_per_address`, in entries' worth) and
downloads from one in bytes (`download_per_address`). A read is priced from its path and query
alone, before any of its work is done, and refused for the price of a dictionary look-up.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.datastructures import QueryParams
from starlette.types import ASGIApp, Receive, Scope, Send

from contracts.asgi import client_key, send_json
from contracts.errors import NotFoundError, RateLimitedError
from contracts.fetch import ArtifactStore
from registry.serve.metering import ADDRESS, DOWNLOAD, READ, LogView, RateLimiter

#: What a GET costs in the `read` bucket, in entries' worth (loading and encoding one entry takes
#: ~50 µs of CPU): every request pays this much for its parsing, routing and answer, and a listing,
#: a proof or a claim's status pays for each item it returns on top.
READ_BASE_COST = 10
_ARTIFACTS = "/v1/artifacts/"

#: Prices a GET by its path and query: (bucket kind, tokens) pairs.
ReadCost = Callable[[str, str], list[tuple[str, int]]]


def read_cost(log: LogView, store: ArtifactStore, members: int) -> ReadCost:
    """The price list of the node's GETs (registry.api's routes); a download pays its bytes besides."""

    def cost(path: str, query: str) -> list[tuple[str, int]]:
        if path.startswith(_ARTIFACTS):
            return [(DOWNLOAD, max(1, _stored_size(store, path[len(_ARTIFACTS) :]))), (READ, READ_BASE_COST)]
        items = 0
        if path == "/v1/entries":
            items = _entries_asked(QueryParams(query), log.size())
        elif path.startswith("/v1/proof/"):
            items = 2 * log.size().bit_length()  # RFC 6962 proofs: at most ~2 log2(n) hashes
        elif path.startswith("/v1/claims/"):
            items = 2 + members  # the claim, its publish and a vote from every member
        elif path.startswith("/v1/entries/"):
            items = 1
        return [(READ, READ_BASE_COST + items)]

    return cost


def _stored_size(store: ArtifactStore, digest: str) -> int:
    try:
        return store.path(digest).stat().st_size
    except (NotFoundError, OSError):  # not a digest, or not stored: answered 404 for the base price
        return 0


def _entries_asked(params: QueryParams, size: int) -> int:
    """How many entries `GET /v1/entries` answers with, reading the query as the route does (0 for
    a query it refuses)."""
    try:
        limit, start = int(params.get("limit", 20)), params.get("start")
        first = max(size - limit, 0) if start is None else int(start)
    except ValueError:
        return 0
    if not 1 <= limit <= 1000 or first < 0:
        return 0
    return max(0, min(first + limit, size) - first)


class ReadGate:
    """Meter requests before any routing: a GET pays its `cost` from its client address's buckets,
    any other request but an upload (which has a bucket of its own) pays a GET's base price (a 405
    costs routing too), or is answered 429 with Retry-After at once. Clients in the exempt networks
    are not metered. Put it behind the publish fast path, which meters `POST /v1/entries` itself."""

    def __init__(self, app: ASGIApp, rates: RateLimiter, cost: ReadCost) -> None:
        self.app, self.rates, self.cost = app, rates, cost

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not (scope["method"] == "PUT" and scope["path"].startswith(_ARTIFACTS)):
            client = scope.get("client")
            host = client[0] if client else None
            if not self.rates.limits.is_exempt(host):
                query = scope["query_string"].decode("latin-1")
                prices = self.cost(scope["path"], query) if scope["method"] == "GET" else [(READ, READ_BASE_COST)]
                try:
                    self._pay(client_key(host), prices)
                except RateLimitedError as exc:  # answered as registry.api answers every WmnodeError
                    payload = {"error": type(exc).__name__, "detail": exc.diagnostics()}
                    await send_json(send, exc.http_status, payload, {"retry-after": str(exc.retry_after_s)})
                    return
        await self.app(scope, receive, send)

    def _pay(self, key: str, prices: list[tuple[str, int]]) -> None:
        paid: list[tuple[str, int]] = []
        try:
            for kind, tokens in prices:
                self.rates.take(kind, ADDRESS, key, tokens)
                paid.append((kind, tokens))
        except RateLimitedError:
            for kind, tokens in paid:
                self.rates.refund(kind, ADDRESS, key, tokens)
            raise
