"""The registry node: signed messages, the replicated log and its proofs, the API and the CLI."""

from __future__ import annotations

from registry.checkpoint import Checkpoint
from registry.errors import (
    ConfigError,
    IdentityError,
    MessageError,
    NodeError,
    NotFoundError,
    QuotaExceededError,
    RateLimitedError,
    RejectedError,
    UnavailableError,
    VerificationError,
    WmnodeError,
)
from registry.identity import Identity, OwnerKey, derive_owner_key, verify_owner_key
from registry.merkle import MerkleTree, verify_consistency, verify_inclusion
from registry.messages import Message, Publish, message_from_bytes, message_from_json

__all__ = [
    "Checkpoint",
    "ConfigError",
    "Identity",
    "IdentityError",
    "MerkleTree",
    "Message",
    "MessageError",
    "NodeError",
    "NotFoundError",
    "OwnerKey",
    "Publish",
    "QuotaExceededError",
    "RateLimitedError",
    "RejectedError",
    "UnavailableError",
    "VerificationError",
    "WmnodeError",
    "derive_owner_key",
    "message_from_bytes",
    "message_from_json",
    "verify_consistency",
    "verify_inclusion",
    "verify_owner_key",
]
