"""A community on free loopback ports for the cluster tests."""

from __future__ import annotations

from pathlib import Path

from registry.localnet import LocalCommunity, write_local_configs

SECRET = "cluster-test-secret-0123456789"


def write_configs(base: Path, n: int = 3, secret: str | None = SECRET, commit_timeout_s: int = 10) -> list[Path]:
    return write_local_configs(base, n, secret, community="wmnode.test/cluster", commit_timeout_s=commit_timeout_s)


def start_community(base: Path, n: int = 3) -> LocalCommunity:
    community = LocalCommunity(write_configs(base, n), base / "run")
    community.start()
    try:
        community.wait_ready(timeout=60)
    except BaseException:
        community.stop()
        raise
    return community
