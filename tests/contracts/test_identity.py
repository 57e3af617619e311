from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from contracts.errors import IdentityError, VerificationError
from contracts.identity import Identity, derive_owner_key, read_identity, verify_owner_key, write_identity


def test_key_file_is_written_0600_and_reads_back(tmp_path: Path) -> None:
    ident = Identity.generate()
    path = tmp_path / "owner.key"
    write_identity(ident, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_identity(path).public_hex == ident.public_hex


def test_key_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "owner.key"
    write_identity(Identity.generate(), path)
    with pytest.raises(IdentityError, match="already exists"):
        write_identity(Identity.generate(), path)


def test_passphrase_protected_key(tmp_path: Path) -> None:
    ident = Identity.generate()
    path = tmp_path / "owner.key"
    write_identity(ident, path, b"correct horse")
    assert b"ENCRYPTED PRIVATE KEY" in path.read_bytes()
    assert read_identity(path, b"correct horse").public_hex == ident.public_hex
    with pytest.raises(IdentityError, match="passphrase-protected"):
        read_identity(path)
    with pytest.raises(IdentityError, match="wrong passphrase"):
        read_identity(path, b"wrong")


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "owner.key"
    write_identity(Identity.generate(), path)
    os.chmod(path, 0o644)
    with pytest.raises(IdentityError, match="readable by others.*chmod 600"):
        read_identity(path)


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="cannot read key file"):
        read_identity(tmp_path / "nope.key")


def test_repr_hides_the_private_key() -> None:
    ident = Identity.generate()
    assert repr(ident) == f"Identity(public={ident.public_hex})"


def test_owner_key_is_deterministic_and_checkable() -> None:
    owner, nonce = Identity.generate(), os.urandom(16)
    key = derive_owner_key(owner, nonce)
    assert key == derive_owner_key(owner, nonce)  # Ed25519 is deterministic: the owner can re-derive
    assert len(key.key) == 32
    verify_owner_key(owner.public_hex, nonce, key.key, key.key_proof)


def test_owner_key_is_useless_to_anyone_else() -> None:
    owner, thief, nonce = Identity.generate(), Identity.generate(), os.urandom(16)
    key = derive_owner_key(owner, nonce)
    with pytest.raises(VerificationError, match="key_proof is not the owner's signature"):
        verify_owner_key(thief.public_hex, nonce, key.key, key.key_proof)
    forged = derive_owner_key(thief, nonce)
    with pytest.raises(VerificationError, match="key_proof is not the owner's signature"):
        verify_owner_key(owner.public_hex, nonce, forged.key, forged.key_proof)
    with pytest.raises(VerificationError, match="does not derive from key_proof"):
        verify_owner_key(owner.public_hex, nonce, bytes(32), key.key_proof)
    with pytest.raises(VerificationError, match="key_proof is not the owner's signature"):
        verify_owner_key(owner.public_hex, os.urandom(16), key.key, key.key_proof)


def test_signatures_from_cryptography_verify_and_bad_ones_do_not() -> None:
    from contracts.identity import verify_signature

    ident = Identity.generate()
    sig = ident.sign(b"data")
    verify_signature(ident.public_hex, sig, b"data")
    for bad_sig, data in ((sig, b"other"), (bytes(64), b"data"), (sig[:63], b"data")):
        with pytest.raises(VerificationError, match="bad signature"):
            verify_signature(ident.public_hex, bad_sig, data)
    with pytest.raises(VerificationError, match="not an Ed25519 public key"):
        verify_signature("ab" * 31, sig, b"data")
