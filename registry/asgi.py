"""Two plain-ASGI helpers shared by the node's hot path and the prediction API."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import Receive, Scope, Send

from registry.errors import MessageError, PayloadTooLargeError


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


async def send_json(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
