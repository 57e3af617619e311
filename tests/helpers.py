"""Helpers shared by the tests (not fixtures): clocks, ports, factory types."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from registry.messages import Publish

PublishFactory = Callable[..., Publish]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def free_ports(n: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1 (bound and released together, so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
