"""π_key and l_key of MTLSign §3.2: N distinct integers in [0, 2^m) and N label bits, from the key."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mtlsign.bound import m_for
from mtlsign.prg import Stream


@dataclass(frozen=True)
class KeySequence:
    """π_key (distinct integers, in stream order) and l_key (0/1 labels), with m."""

    integers: np.ndarray
    labels: np.ndarray
    m: int


def key_sequence(key: bytes, n: int) -> KeySequence:
    """Draw π_key from stream "pi_key" (the low m bits of 64-bit words, repeats skipped) and l_key
    from stream "l_key". m = 3⌈log2 N⌉ (appendix A: m ≥ log2 N³ makes overlaps negligible)."""
    m = m_for(n)
    if m > 63:
        raise ValueError(f"N = {n} needs m = {m} > 63 bits")
    stream, mask = Stream(key, "pi_key"), np.uint64((1 << m) - 1)
    chosen: list[int] = []
    seen: set[int] = set()
    while len(chosen) < n:
        for value in (stream.uint64(n) & mask).tolist():
            if value not in seen and len(chosen) < n:
                seen.add(value)
                chosen.append(value)
    labels = Stream(key, "l_key").bits(n)
    return KeySequence(np.array(chosen, dtype=np.int64), labels.astype(np.int64), m)
