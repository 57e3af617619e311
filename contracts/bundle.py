"""The owner's bundle directory, as both sides read it: its file names, size limits and key record.

    model.safetensors + model.json   the watermarked model and its card (schemes.models.zoo)
    verifier.safetensors             the scheme's verifier artifact (what a node cannot derive from the key)
    info.json                        the scheme's public parameters; "scheme" names the scheme
    key.json                         nonce, owner public key and key_proof (DESIGN §4.2)
    report.json                      the embedding report
    receipt.json                     the publish's receipt, once published

The embedding side (schemes.workflow.bundle) writes and loads it with torch; publishing and claiming
(registry.cli.ownership) read its bytes without torch; a node bounds what it fetches by the same limits.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from contracts.encoding import is_hex
from contracts.errors import MessageError
from contracts.identity import KEY_DOMAIN, verify_owner_key

__all__ = [
    "INFO_FILE",
    "KEY_FILE",
    "MAX_INFO_BYTES",
    "MAX_VERIFIER_BYTES",
    "RECEIPT_FILE",
    "REPORT_FILE",
    "VERIFIER_FILE",
    "KeyRecord",
]

VERIFIER_FILE, INFO_FILE, KEY_FILE = "verifier.safetensors", "info.json", "key.json"
REPORT_FILE, RECEIPT_FILE = "report.json", "receipt.json"
#: An info is a few hundred bytes of public parameters; a node fetches no more of one.
MAX_INFO_BYTES = 64 * 1024
#: A verifier artifact is a small network at most (MTLSign's cWM is about 1 MB).
MAX_VERIFIER_BYTES = 64 * 2**20


@dataclass(frozen=True)
class KeyRecord:
    """key.json: the nonce, the owner's public key and key_proof, from which the watermark key derives."""

    nonce: str
    owner: str
    key_proof: str

    @classmethod
    def from_json(cls, obj: Any, where: str = KEY_FILE) -> KeyRecord:
        fields = ("nonce", "owner", "key_proof")
        if not isinstance(obj, dict) or set(obj) != set(fields) or not all(isinstance(obj[f], str) for f in fields):
            raise MessageError(f"{where} must hold exactly the strings nonce, owner and key_proof")
        if not all(is_hex(obj[f]) for f in fields):
            raise MessageError(f"{where}: nonce, owner and key_proof must be lowercase hex")
        return cls(obj["nonce"], obj["owner"], obj["key_proof"])

    def to_json(self) -> dict[str, str]:
        return {"nonce": self.nonce, "owner": self.owner, "key_proof": self.key_proof}

    @property
    def key(self) -> bytes:
        """The watermark key: SHA-256(D ‖ key_proof), checked against the owner's public key."""
        proof, nonce = bytes.fromhex(self.key_proof), bytes.fromhex(self.nonce)
        key = hashlib.sha256(KEY_DOMAIN + proof).digest()
        verify_owner_key(self.owner, nonce, key, proof)
        return key
