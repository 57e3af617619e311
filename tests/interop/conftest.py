from __future__ import annotations

import os
from pathlib import Path

import pytest

from .gotlog import build_tlogcheck, toolchain_problem

#: Set to 1 (CI does) to turn a missing Go toolchain into a failure instead of a skip.
REQUIRE_ENV = "WMNODE_REQUIRE_INTEROP"


@pytest.fixture(scope="session")
def tlogcheck(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The compiled Go verifier (built once per session); skipped where Go is absent."""
    problem = toolchain_problem()
    if problem is not None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but the Go interop verifier cannot be built: {problem}", pytrace=False)
        pytest.skip(f"Go interop verifier unavailable: {problem}")
    return build_tlogcheck(tmp_path_factory.mktemp("tlogcheck"))
