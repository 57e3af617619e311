"""The cluster tests' shared fixtures: three-node communities of node processes on loopback, whose
nodes start no judges (`wmnode start --no-judges`): the tests that claim start their own community.

* `shared_community` (one for all the cluster tests): for tests that only read, or only append entries without
  depending on the log's size or on a node's state; each reads the sizes it compares at its start.
* `community` (a fresh one per test): for tests that stop, kill, restart or partition nodes, or that
  count on an empty log.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from registry.client.localnet import LocalCommunity
from tests.cluster.community import start_community


@pytest.fixture
def community(tmp_path: Path) -> Iterator[LocalCommunity]:
    c = start_community(tmp_path / "community", judges=False)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="package")  # stopped after the last cluster test, not at the end of the session
def _shared_community(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCommunity]:
    c = start_community(tmp_path_factory.mktemp("shared-community"), judges=False)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def shared_community(_shared_community: LocalCommunity) -> LocalCommunity:
    """The cluster tests' shared community, every node up with one agreed leader when the test starts."""
    _shared_community.wait_ready(timeout=60)
    return _shared_community
