"""Write a community's configs on free loopback ports and run it with `LocalCommunity`."""

from __future__ import annotations

from pathlib import Path

from registry.localnet import LocalCommunity
from tests.helpers import free_ports

SECRET = "cluster-test-secret-0123456789"


def write_configs(base: Path, n: int = 3, secret: str | None = SECRET, community: str = "wmnode.test/cluster") -> list[Path]:
    ports = free_ports(2 * n)
    members = "".join(
        f'\n[[members]]\nname = "node{i + 1}"\nraft = "127.0.0.1:{ports[i]}"\napi = "127.0.0.1:{ports[n + i]}"\n'
        for i in range(n)
    )
    paths = []
    for i in range(n):
        path = base / f"node{i + 1}.toml"
        secret_line = f'secret = "{secret}"\n' if secret else ""
        path.write_text(
            f'community = "{community}"\nname = "node{i + 1}"\nraft = "127.0.0.1:{ports[i]}"\n'
            f'api = "127.0.0.1:{ports[n + i]}"\n{secret_line}commit_timeout_seconds = 10\n{members}'
        )
        paths.append(path)
    return paths


def start_community(base: Path, n: int = 3) -> LocalCommunity:
    community = LocalCommunity(write_configs(base, n), base / "run")
    community.start()
    try:
        community.wait_ready(timeout=60)
    except BaseException:
        community.stop()
        raise
    return community
