"""Shared fixtures: identities, signed publishes, free loopback ports."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Callable

import pytest

from registry.identity import Identity, derive_owner_key
from registry.messages import Publish


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture
def owner() -> Identity:
    return Identity.generate()


PublishFactory = Callable[..., Publish]


@pytest.fixture
def make_publish(owner: Identity) -> PublishFactory:
    """Signed publishes with owner-bound keys; keyword arguments override fields."""

    def make(identity: Identity | None = None, **overrides: object) -> Publish:
        who = identity or owner
        nonce = os.urandom(16)
        fields: dict[str, object] = {
            "scheme": "mtlsign", "time": now_ms(), "key_hash": derive_owner_key(who, nonce).key_hash,
            "verifier_hash": hashlib.sha256(b"verifier").hexdigest(), "info_hash": hashlib.sha256(b"info").hexdigest(),
            "nonce": nonce.hex(),
        }
        fields.update(overrides)
        return Publish.create(who, **fields)  # type: ignore[arg-type]

    return make


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
