"""Named PRG streams of a watermark key, and the draws every scheme takes from them (DESIGN §4.6).

Each scheme draws its random choices (triggers, passports, permutations, noise) from ChaCha20
streams named `scheme/name` under the key (`mtlsign.prg`), so every member re-derives the same
draws from the revealed key on any machine.
"""

from __future__ import annotations

import numpy as np
import torch

from mtlsign.prg import Stream

__all__ = ["key_generator", "key_integers", "key_normal", "key_permutation", "key_stream"]


def key_stream(key: bytes, scheme: str, name: str) -> Stream:
    """The PRG stream `name` of `scheme` under the watermark key (ChaCha20, see mtlsign.prg)."""
    return Stream(key, f"{scheme}/{name}")


def key_generator(key: bytes, scheme: str, name: str) -> torch.Generator:
    """A CPU torch generator seeded from the stream `name`: draw on the CPU, then move, so the
    draws are the same on every machine and device."""
    seed = int.from_bytes(key_stream(key, scheme, name).read(8), "little") & (2**63 - 1)
    return torch.Generator().manual_seed(seed)


def key_integers(key: bytes, scheme: str, name: str, bound: int, count: int) -> np.ndarray:
    """`count` uniform integers in [0, bound) from the stream `name` (64-bit words, rejection
    sampling: no modulo bias, and no NumPy sampling algorithm that a NumPy release may change)."""
    if bound < 1:
        raise ValueError(f"bound must be positive, got {bound}")
    stream, limit = key_stream(key, scheme, name), (2**64 // bound) * bound
    out: list[int] = []
    while len(out) < count:
        words = stream.uint64(max(16, count - len(out)))
        out.extend(int(w) % bound for w in words if int(w) < limit)
    return np.array(out[:count], dtype=np.int64)


def key_permutation(key: bytes, scheme: str, name: str, n: int) -> np.ndarray:
    """A uniform permutation of range(n): the stable argsort of n 64-bit words from the stream."""
    return np.argsort(key_stream(key, scheme, name).uint64(n), kind="stable")


def key_normal(key: bytes, scheme: str, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """Standard-normal-like float32 noise from the stream: the sum of 12 uniforms minus 6
    (Irwin-Hall: mean 0, variance 1, within ±6). Only IEEE additions, so every machine gets the
    same bits, which transcendental functions (Box-Muller, torch.randn) do not promise."""
    count = int(np.prod(shape))
    words = key_stream(key, scheme, name).uint64(12 * count).reshape(12, count)
    uniforms = (words >> np.uint64(11)).astype(np.float64) * 2.0**-53
    total = np.zeros(count)
    for row in uniforms:
        total += row
    return torch.from_numpy((total - 6.0).astype(np.float32).reshape(shape))
