"""What the serving side (API and verifier) knows about the node it runs in, built from its config."""

from __future__ import annotations

from dataclasses import dataclass

from contracts.fetch import FetchPolicy
from contracts.policy import DEFAULT_POLICY, VerificationPolicy
from registry.community.config import NodeConfig

__all__ = ["NodeInfo", "node_info"]


@dataclass(frozen=True)
class NodeInfo:
    """What the API needs to know about the node it runs in."""

    name: str
    community: str
    members: tuple[dict[str, str], ...]
    raft_to_name: dict[str, str]
    max_skew_ms: int
    commit_timeout_s: float
    fetch: FetchPolicy = FetchPolicy()
    verification: VerificationPolicy = DEFAULT_POLICY


def node_info(config: NodeConfig) -> NodeInfo:
    return NodeInfo(
        name=config.name,
        community=config.community,
        members=tuple(
            {"name": m.name, "raft": str(m.raft), "api": m.api_url, "key": m.key or ""} for m in config.members
        ),
        raft_to_name={str(m.raft): m.name for m in config.members},
        max_skew_ms=config.max_skew_ms,
        commit_timeout_s=float(config.commit_timeout_s),
        fetch=config.fetch,
        verification=config.verification,
    )
