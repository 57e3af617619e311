"""What the node and the schemes agree on, torch-free and below both.

The error tree, canonical encoding and checked fields, identity and the owner-key binding, infos
with their floors and caps, false-positive bounds, limits, guarded fetch and the ASGI helpers.
Nothing here imports another project package.
"""

from __future__ import annotations

from contracts.errors import (
    ConfigError,
    DataError,
    IdentityError,
    MessageError,
    NodeError,
    NotFoundError,
    PayloadTooLargeError,
    QuotaExceededError,
    RateLimitedError,
    RejectedError,
    SchemeError,
    UnavailableError,
    VerificationError,
    WmnodeError,
    ZooError,
)

__all__ = [
    "ConfigError",
    "DataError",
    "IdentityError",
    "MessageError",
    "NodeError",
    "NotFoundError",
    "PayloadTooLargeError",
    "QuotaExceededError",
    "RateLimitedError",
    "RejectedError",
    "SchemeError",
    "UnavailableError",
    "VerificationError",
    "WmnodeError",
    "ZooError",
]
