"""HTTP plumbing: two plain-ASGI helpers shared by the node's hot path and the prediction API, and
the guard on the node's connections (deadlines and caps that uvicorn does not have)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.types import Receive, Scope, Send

from contracts.errors import MessageError, PayloadTooLargeError
from contracts.limits import ConnectionLimits

if TYPE_CHECKING:  # the base the guard's hooks extend; imported at run time only by `protocol()`
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Protocol
else:
    _Protocol = object


async def read_body(scope: Scope, receive: Receive, limit: int, what: str = "message") -> bytes:
    """The request body, refused past `limit` bytes before it is all read."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise _too_large(what, limit, int(value))
    chunks, total, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise MessageError("client went away before sending the whole body")
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            raise _too_large(what, limit, total)
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


def _too_large(what: str, limit: int, size: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"{what} is over the limit of {limit} bytes (got at least {size})")


async def send_json(send: Send, status: int, payload: dict[str, Any], extra: dict[str, str] | None = None) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(name.encode("latin-1"), value.encode("latin-1")) for name, value in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def client_key(host: str | None) -> str:
    """What a client's limits are kept under: its IPv4 address, or the /64 of its IPv6 address
    (one subscriber's allocation; anyone holding one could take a fresh address per request)."""
    if not host:
        return "-"
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


#: A body must advance by this much (or end) within each `body_timeout_s`.
BODY_PROGRESS_BYTES = 64 * 1024


class ConnectionGuard:
    """Caps and deadlines for uvicorn's connections; `protocol()` is the class for `Config(http=...)`.

    uvicorn has no deadline of its own for a request's headers or body (its keep-alive timer runs
    only between requests), so a client sending a header byte now and then held a connection for
    ever. Here the headers must be complete `header_timeout_s` after the request starts (or the
    connection opens), and a body must advance by 64 KiB (or end) within every `body_timeout_s` and,
    once `body_rate_grace_s` has passed, average `min_body_rate` bytes a second since it began (a
    client trickling just enough to pass the first deadline held an upload open for days);
    connections beyond `max_connections`, or beyond `max_per_address` from one client, are closed
    at once. A deadline waits while the server, not the client, holds reading back (flow control).
    `dropped(reason)` hears of every connection closed by the guard.
    """

    def __init__(self, limits: ConnectionLimits, dropped: Callable[[str], None] = lambda reason: None) -> None:
        self.limits, self.dropped = limits, dropped
        self.open = 0
        self._by_address: dict[str, int] = {}

    def enter(self, key: str) -> str | None:
        """Count a new connection; why it must be closed, or None."""
        self.open += 1
        self._by_address[key] = self._by_address.get(key, 0) + 1
        if self.open > self.limits.max_connections:
            return "max_connections"
        if self._by_address[key] > self.limits.max_per_address:
            return "max_connections_per_address"
        return None

    def leave(self, key: str) -> None:
        self.open -= 1
        left = self._by_address.get(key, 1) - 1
        if left > 0:
            self._by_address[key] = left
        else:
            self._by_address.pop(key, None)

    def protocol(self) -> type[asyncio.Protocol]:
        """uvicorn's httptools protocol (the node's dependency on POSIX) with this guard built in."""
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        return type("GuardedProtocol", (_Guarded, HttpToolsProtocol), {"guard": self})


class _Guarded(_Protocol):
    """The guard's hooks on uvicorn's httptools protocol (`ConnectionGuard.protocol` mixes them in)."""

    guard: ConnectionGuard
    _key: str | None = None
    _timer: asyncio.TimerHandle | None = None
    _progress = 0
    _rate_timer: asyncio.TimerHandle | None = None
    _body_began = _rate_checked = 0.0
    _body_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._key = client_key(self.client[0] if self.client else None)
        reason = self.guard.enter(self._key)
        if reason is not None:
            self.guard.dropped(reason)
            transport.close()
            return
        self._arm(self.guard.limits.header_timeout_s, "header_timeout")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._disarm_rate()
        if self._key is not None:
            self.guard.leave(self._key)
            self._key = None
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._timer is None:  # the next request on a kept-alive connection
            self._arm(self.guard.limits.header_timeout_s, "header_timeout")

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
        self._progress = 0
        self._arm(self.guard.limits.body_timeout_s, "body_timeout")
        self._body_began = self._rate_checked = self.loop.time()
        self._body_bytes = 0
        self._arm_rate(self.guard.limits.body_rate_grace_s)

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._body_bytes += len(body)
        self._progress += len(body)
        if self._progress >= BODY_PROGRESS_BYTES:
            self._progress = 0
            self._arm(self.guard.limits.body_timeout_s, "body_timeout")

    def on_message_complete(self) -> None:
        self._disarm()
        self._disarm_rate()
        super().on_message_complete()

    def _arm(self, seconds: float, reason: str) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._expire, seconds, reason)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm_rate(self, seconds: float) -> None:
        self._disarm_rate()
        self._rate_timer = self.loop.call_later(seconds, self._check_rate)

    def _disarm_rate(self) -> None:
        if self._rate_timer is not None:
            self._rate_timer.cancel()
            self._rate_timer = None

    def _check_rate(self) -> None:
        """Drop a body whose average rate is under the floor; else check again when, with
        nothing more arriving, it would be."""
        self._rate_timer = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        if self.flow is not None and self.flow.read_paused:  # the server's time, not the client's
            self._body_began += now - self._rate_checked
            self._rate_checked = now
            self._arm_rate(1.0)
            return
        self._rate_checked = now
        due = self._body_began + max(
            self.guard.limits.body_rate_grace_s, self._body_bytes / self.guard.limits.min_body_rate
        )
        if now < due:
            self._arm_rate(due - now)
            return
        self.guard.dropped("body_too_slow")
        self.transport.close()

    def _expire(self, seconds: float, reason: str) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self.flow is not None and self.flow.read_paused:  # the app is behind, not the client
            self._arm(seconds, reason)
            return
        self.guard.dropped(reason)
        self.transport.close()
