"""Helpers shared by the tests (not fixtures): clocks, ports, factory types."""

from __future__ import annotations

import time
from collections.abc import Callable

from registry.localnet import free_ports
from registry.messages import Publish

PublishFactory = Callable[..., Publish]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


__all__ = ["PublishFactory", "free_ports", "now_ms"]
