"""The cluster tests' shared fixture: a fresh three-node community of node processes per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from registry.client.localnet import LocalCommunity
from tests.cluster.community import start_community


@pytest.fixture
def community(tmp_path: Path) -> Iterator[LocalCommunity]:
    c = start_community(tmp_path / "community")
    try:
        yield c
    finally:
        c.stop()
