"""Who may speak on the Raft port, and how they prove it: the members' keys, the community settings
digest, the PSK stretched from the community secret, the handshake's domains and the wire's bounds
(the handshake itself: registry.log.raft_transport)."""

from __future__ import annotations

import functools
import hashlib
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from contracts.identity import Identity
from contracts.limits import WireLimits

MAGIC = b"wmraft02"
FRAME_LENGTH = struct.Struct(">I")
HELLO_BYTES = len(MAGIC) + 32 * 4
AUTH_DOMAIN = b"wmnode/raft/auth/v2"
TRANSCRIPT_DOMAIN = b"wmnode/raft/handshake/v2"
_PSK_DOMAIN = b"wmnode/raft/psk/v2"
_PBKDF2_ROUNDS = 200_000


def stretch_secret(secret: str | None, community: str) -> bytes:
    """The pre-shared key mixed into every session key (empty in dev mode, where only the member
    keys authenticate and only the ephemeral exchange encrypts)."""
    if secret is None:
        return b""
    salt = hashlib.sha256(_PSK_DOMAIN + b"\n" + community.encode()).digest()
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=salt, iterations=_PBKDF2_ROUNDS)
    return kdf.derive(secret.encode())


@dataclass(frozen=True)
class RaftAuth:
    """Who this node is on the Raft port and whom it admits."""

    identity: Identity
    #: Raft address ("host:port") -> that member's public key (hex), for every other member.
    peers: dict[str, str]
    #: Digest of the community settings every member must share (members, clock rules).
    settings: bytes
    psk: bytes = b""
    limits: WireLimits = WireLimits()

    @functools.cached_property
    def public(self) -> bytes:
        return bytes.fromhex(self.identity.public_hex)

    @functools.cached_property
    def keys(self) -> frozenset[str]:
        return frozenset(self.peers.values())


def x25519_public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
