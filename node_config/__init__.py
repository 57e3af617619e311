"""Community configs: the TOML schema of a node, its loader, and the example local community."""

from __future__ import annotations

from node_config.loader import EXAMPLE_SECRET, Address, Member, NodeConfig, example_config, load_config

__all__ = ["Address", "EXAMPLE_SECRET", "Member", "NodeConfig", "example_config", "load_config"]
