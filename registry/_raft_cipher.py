"""AES-256-GCM for pysyncobj's Raft connections, in place of its Fernet.

pysyncobj encrypts every Raft message with Fernet keyed by PBKDF2(password) under a fixed salt;
on receipt it checks the HMAC twice (`extract_timestamp`, then `decrypt`). A publish costs about
ten Raft messages, so on a small machine the cipher is a large share of a commit. This class keeps
pysyncobj's interface (`encrypt_at_time`, `extract_timestamp`, `decrypt`) and its duties
(confidentiality, authentication, the sender's timestamp bound to the message) with one AEAD call:

* master key = PBKDF2-HMAC-SHA256(secret, salt = SHA-256("wmnode/raft/v1\\n" ‖ community), 200,000);
* each process draws a random 16-byte session salt; its sending key is HKDF-SHA256(master, salt);
* nonce = a 96-bit counter under that key, so a (key, nonce) pair never repeats (random 96-bit
  nonces under one long-lived key would, after ~2^32 messages, risk a repeat);
* token = version ‖ salt ‖ counter ‖ timestamp ‖ AES-GCM(ciphertext ‖ tag), the header as AAD.

Replay across connections stays refused by pysyncobj's per-connection random keys inside the
encrypted payload, exactly as with Fernet.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import struct
import threading
from collections import OrderedDict

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

_VERSION = 1
_HEADER = struct.Struct(">B16sQQ")  # version, session salt, counter, timestamp
_DOMAIN = b"wmnode/raft/v1"
_PBKDF2_ROUNDS = 200_000


class InvalidToken(Exception):
    """A Raft message that does not decrypt under the community secret."""


class RaftCipher:
    def __init__(self, secret: str, community: str) -> None:
        salt = hashlib.sha256(_DOMAIN + b"\n" + community.encode()).digest()
        kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=salt, iterations=_PBKDF2_ROUNDS)
        self._master = kdf.derive(secret.encode())
        self._salt = os.urandom(16)
        self._send = AESGCM(self._subkey(self._salt))
        self._counter = itertools.count()
        self._recv: OrderedDict[bytes, AESGCM] = OrderedDict()
        self._lock = threading.Lock()

    def _subkey(self, salt: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_DOMAIN + b" session").derive(self._master)

    def _receiver(self, salt: bytes) -> AESGCM:
        with self._lock:
            aead = self._recv.get(salt)
            if aead is None:
                aead = self._recv[salt] = AESGCM(self._subkey(salt))
                if len(self._recv) > 64:  # peers restart with new salts; keep the recent ones
                    self._recv.popitem(last=False)
            return aead

    def encrypt_at_time(self, data: bytes, current_time: int) -> bytes:
        counter = next(self._counter)
        header = _HEADER.pack(_VERSION, self._salt, counter, current_time)
        return header + self._send.encrypt(counter.to_bytes(12, "big"), data, header)

    @staticmethod
    def _header(token: bytes) -> tuple[int, bytes, int, int]:
        if len(token) < _HEADER.size + 16:
            raise InvalidToken("token too short")
        version, salt, counter, timestamp = _HEADER.unpack_from(token)
        if version != _VERSION:
            raise InvalidToken(f"unknown token version {version}")
        return version, salt, counter, timestamp

    def extract_timestamp(self, token: bytes) -> int:
        """The sender's timestamp; authenticated by the `decrypt` that pysyncobj calls next."""
        return self._header(token)[3]

    def decrypt(self, token: bytes) -> bytes:
        _, salt, counter, _ = self._header(token)
        header = token[: _HEADER.size]
        try:
            return self._receiver(salt).decrypt(counter.to_bytes(12, "big"), token[_HEADER.size :], header)
        except InvalidTag as exc:
            raise InvalidToken("message does not authenticate under the community secret") from exc
