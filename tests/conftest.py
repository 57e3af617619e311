"""Shared fixtures: identities, signed publishes, and the Go interop verifier."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from contracts.identity import Identity, derive_owner_key
from registry.log.messages import Publish
from tests.helpers import PublishFactory, now_ms
from tests.interop.gotlog import build_tlogcheck, toolchain_problem

#: Set to 1 (CI does) to turn a missing Go toolchain into a failure instead of a skip.
REQUIRE_INTEROP_ENV = "WMNODE_REQUIRE_INTEROP"


@pytest.fixture(autouse=True, scope="session")
def _private_client_state(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Clients keep the checkpoints they saw under WMNODE_STATE_DIR: never the tester's own."""
    os.environ["WMNODE_STATE_DIR"] = str(tmp_path_factory.mktemp("client-state"))


@pytest.fixture
def owner() -> Identity:
    return Identity.generate()


@pytest.fixture
def make_publish(owner: Identity) -> PublishFactory:
    """Signed publishes with owner-bound keys; keyword arguments override fields."""

    def make(identity: Identity | None = None, **overrides: object) -> Publish:
        who = identity or owner
        nonce = os.urandom(16)
        fields: dict[str, object] = {
            "scheme": "mtlsign",
            "time": now_ms(),
            "key_hash": derive_owner_key(who, nonce).key_hash,
            "verifier_hash": hashlib.sha256(b"verifier").hexdigest(),
            "info_hash": hashlib.sha256(b"info").hexdigest(),
            "nonce": nonce.hex(),
        }
        fields.update(overrides)
        return Publish.create(who, **fields)  # type: ignore[arg-type]

    return make


@pytest.fixture(scope="session")
def tlogcheck(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The compiled Go verifier (built once per session); skipped where Go is absent."""
    problem = toolchain_problem()
    if problem is not None:
        if os.environ.get(REQUIRE_INTEROP_ENV) == "1":
            pytest.fail(
                f"{REQUIRE_INTEROP_ENV}=1 but the Go interop verifier cannot be built: {problem}", pytrace=False
            )
        pytest.skip(f"Go interop verifier unavailable: {problem}")
    return build_tlogcheck(tmp_path_factory.mktemp("tlogcheck"))
