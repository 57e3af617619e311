"""The example community's configs (`local/node{1,2,3}.toml`): data only; `registry.community.config` loads them."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["example_config"]


def example_config(n: int) -> Path:
    """Path of the shipped example config `node_config/local/node{n}.toml`."""
    path = Path(str(resources.files("node_config") / "local" / f"node{n}.toml"))
    if not path.is_file():
        raise FileNotFoundError(f"no example config for node {n}")
    return path
