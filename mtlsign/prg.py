"""Named pseudo-random streams derived from the 32-byte owner-bound key (MTLSign §3.2: "key is used
as the seed of a pseudo-random generator (e.g., a stream cipher)").

Each stream is ChaCha20 under its own 256-bit key SHA-256("wmnode/mtlsign/prg/v1" ‖ 0 ‖ name ‖ 0 ‖
key) with a zero nonce, so streams with different names are independent, and any node rebuilds
the same bytes from the same key on any machine.
"""

from __future__ import annotations

import hashlib

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

KEY_BYTES = 32
_DOMAIN = b"wmnode/mtlsign/prg/v1"


class Stream:
    """An endless, deterministic byte stream named `name` under `key`."""

    def __init__(self, key: bytes, name: str) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a watermark key is {KEY_BYTES} bytes, got {len(key)}")
        if not name:
            raise ValueError("a stream needs a name")
        stream_key = hashlib.sha256(_DOMAIN + b"\0" + name.encode() + b"\0" + key).digest()
        self._cipher = Cipher(algorithms.ChaCha20(stream_key, bytes(16)), mode=None).encryptor()

    def read(self, n: int) -> bytes:
        return self._cipher.update(bytes(n))

    def uint64(self, n: int) -> np.ndarray:
        return np.frombuffer(self.read(8 * n), dtype="<u8")

    def bits(self, n: int) -> np.ndarray:
        """n uniform bits as uint8 0/1."""
        return np.unpackbits(np.frombuffer(self.read((n + 7) // 8), dtype=np.uint8), bitorder="little")[:n]

    def generator(self) -> np.random.Generator:
        """A NumPy generator seeded from this stream, for library code that needs one (STYLE §8)."""
        return np.random.Generator(np.random.PCG64(int.from_bytes(self.read(32), "little")))
