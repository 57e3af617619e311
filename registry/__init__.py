"""The registry node: signed messages, the replicated log and its proofs, the API and the CLI."""

from __future__ import annotations

from contracts.errors import (
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
from contracts.identity import Identity, OwnerKey, derive_owner_key, verify_owner_key
from registry.log.messages import Message, Publish, message_from_bytes, message_from_json
from registry.proofs.checkpoint import Checkpoint
from registry.proofs.merkle import MerkleTree, verify_consistency, verify_inclusion

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
