"""Model artifacts built by hand for the registry's tests: a safetensors header carrying a card, no torch."""

from __future__ import annotations

import json
import struct
from typing import Any

#: The card of a LeNet-5 on the embedded digits (schemes.zoo.ModelCard.to_json's shape).
LENET_CARD: dict[str, Any] = {
    "arch": "lenet5",
    "num_classes": 10,
    "input_shape": [1, 28, 28],
    "mean": [0.5],
    "std": [0.5],
    "extra": {},
}


def safetensors_bytes(header: object, body: bytes = b"") -> bytes:
    """A safetensors file: little-endian u64 header length, JSON header padded to 8 bytes, body."""
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + body


def artifact_with_card(card: object, body: bytes = b"") -> bytes:
    """A model artifact whose header metadata carries `card` (as schemes.zoo writes it)."""
    return safetensors_bytes({"__metadata__": {"format": "pt", "wmnode.card": json.dumps(card)}}, body)
