"""Ed25519 identities: key files (0600, optional passphrase) and the owner-bound key of DESIGN §4.2."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nacl.exceptions
import nacl.signing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from contracts.errors import IdentityError, VerificationError

#: Domain separation for the owner-bound watermark key (DESIGN §4.2).
KEY_DOMAIN = b"wmnode/key/v1"


@dataclass(frozen=True)
class Identity:
    """An Ed25519 key pair. `public_hex` is the raw 32-byte public key in lowercase hex."""

    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> Identity:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: str) -> Identity:
        """A key pair derived from a string: for example and test communities on loopback only
        (the config loader refuses `identity_seed` anywhere else), where the seed is public."""
        digest = hashlib.sha256(b"wmnode/identity-seed/v1\x00" + seed.encode()).digest()
        return cls(Ed25519PrivateKey.from_private_bytes(digest))

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @property
    def public_hex(self) -> str:
        raw = self.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return raw.hex()

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data)

    def __repr__(self) -> str:  # never print the secret half
        return f"Identity(public={self.public_hex})"


@lru_cache(maxsize=4096)
def public_key_from_hex(public_hex: str) -> Ed25519PublicKey:
    try:
        raw = bytes.fromhex(public_hex)
        if len(raw) != 32:
            raise ValueError("an Ed25519 public key is 32 bytes")
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise VerificationError(f"not an Ed25519 public key: {exc}") from exc


@lru_cache(maxsize=4096)
def _verify_key(public_hex: str) -> nacl.signing.VerifyKey:
    public_key_from_hex(public_hex)  # the same checks, and the same error, for a malformed key
    return nacl.signing.VerifyKey(bytes.fromhex(public_hex))


def verify_signature(public_hex: str, signature: bytes, data: bytes) -> None:
    """Raise `VerificationError` unless `signature` is `public_hex`'s Ed25519 signature on `data`.

    Verification runs on libsodium (PyNaCl), about half the CPU of OpenSSL's Ed25519 on the
    project's machines; every node verifies every entry it applies. Every node uses the same
    library, so edge cases (non-canonical encodings, small-order points, which libsodium refuses)
    are decided alike everywhere.
    """
    try:
        _verify_key(public_hex).verify(data, signature)
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError) as exc:
        raise VerificationError("bad signature") from exc


def write_identity(identity: Identity, path: Path, passphrase: bytes | None = None) -> None:
    """Write the private key as PKCS#8 PEM, created 0600 and never overwritten."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    pem = identity.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise IdentityError(f"{path} already exists; refusing to overwrite a key file") from exc
    except OSError as exc:
        raise IdentityError(f"cannot create key file {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)


def read_identity(path: Path, passphrase: bytes | None = None) -> Identity:
    """Read a key file written by `write_identity`; refuse one that others can read."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise IdentityError(f"cannot read key file {path}: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise IdentityError(f"key file {path} is readable by others (mode {stat.S_IMODE(mode):o}); chmod 600 it")
    try:
        key = serialization.load_pem_private_key(data, password=passphrase or None)
    except TypeError as exc:
        hint = "it is passphrase-protected" if passphrase is None else "it has no passphrase"
        raise IdentityError(f"cannot open key file {path}: {hint}") from exc
    except ValueError as exc:
        raise IdentityError(f"cannot open key file {path}: wrong passphrase or not a PEM key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise IdentityError(f"key file {path} does not hold an Ed25519 key")
    return Identity(key)


def load_or_create_identity(path: Path) -> Identity:
    """A node's own identity: created on first start inside its data dir, read afterwards."""
    if not path.exists():
        write_identity(Identity.generate(), path)
    return read_identity(path)


@dataclass(frozen=True)
class OwnerKey:
    """The watermark key bound to its owner (DESIGN §4.2) with the proof that binds it."""

    key: bytes
    key_proof: bytes

    @property
    def key_hash(self) -> str:
        return hashlib.sha256(self.key).hexdigest()


def derive_owner_key(identity: Identity, nonce: bytes) -> OwnerKey:
    """key = SHA-256(D ‖ Ed25519_sign(sk, D ‖ nonce)), D = "wmnode/key/v1".

    Ed25519 signatures are deterministic (RFC 8032), so the owner re-derives the same key from
    the same nonce at any time, and nobody without `sk` can produce it or its proof.
    """
    proof = identity.sign(KEY_DOMAIN + nonce)
    return OwnerKey(key=hashlib.sha256(KEY_DOMAIN + proof).digest(), key_proof=proof)


def verify_owner_key(owner_hex: str, nonce: bytes, key: bytes, key_proof: bytes) -> None:
    """Check a revealed key and its proof against the owner's public key; raise on mismatch."""
    try:
        verify_signature(owner_hex, key_proof, KEY_DOMAIN + nonce)
    except VerificationError as exc:
        raise VerificationError("key_proof is not the owner's signature on the nonce") from exc
    if hashlib.sha256(KEY_DOMAIN + key_proof).digest() != key:
        raise VerificationError("key does not derive from key_proof")
