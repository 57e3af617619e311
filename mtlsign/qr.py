"""The injective map integer → input of MTLSign §3.2: a QR code, built for all N integers at once.

Choices (the paper leaves them open; DESIGN §4.6 pins a scannable code):
* version 1 (21×21 modules), error correction level M, mask pattern 0, numeric mode;
* each integer written as exactly D = ⌈m·log10 2⌉ decimal digits (zero-padded), so every code has
  the same layout and the map stays injective;
* modules drawn at a whole number of pixels (scale s = ⌊min(H, W) / 27⌋, so at least a 3-module
  quiet zone remains) and centred in a light quiet zone; never resampled. A 28×28 input gets the
  21 modules at one pixel each with a 3/4-pixel quiet zone.

The encoder follows ISO/IEC 18004: numeric segment, terminator and pad codewords, Reed–Solomon
error correction over GF(256) (polynomial 0x11D), the zig-zag data placement, the mask and the
BCH-protected format information. It is vectorised over the N integers: the Reed–Solomon
division runs as N-wide array operations and the 208 data bits land through one fixed placement
map, so no per-code Python loop or image library is involved. Tests hold the matrices equal to
the `qrcode` package's for the same version, level and mask.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np

SIZE = 21  # version 1
DATA_CODEWORDS, EC_CODEWORDS = 16, 10  # version 1-M: one block of 26 codewords
EC_LEVEL_BITS = 0b00  # M (L = 01, M = 00, Q = 11, H = 10)
MASK = 0
QUIET_MODULES = 3
MAX_DIGITS = 34  # numeric capacity of version 1-M


def digits_for(m: int) -> int:
    """Decimal digits needed for any integer below 2^m."""
    return max(1, math.ceil(m * math.log10(2)))


# -- GF(256) and Reed–Solomon -------------------------------------------------------------------


@cache
def _gf_tables() -> tuple[np.ndarray, np.ndarray]:
    exp = np.zeros(512, dtype=np.int64)
    log = np.zeros(256, dtype=np.int64)
    value = 1
    for i in range(255):
        exp[i], log[value] = value, i
        value <<= 1
        if value & 0x100:
            value ^= 0x11D
    exp[255:510] = exp[:255]
    return exp, log


@cache
def _generator() -> np.ndarray:
    """Coefficients (after the leading 1) of ∏_{i<10} (x − α^i)."""
    exp, log = _gf_tables()
    poly = [1]
    for i in range(EC_CODEWORDS):
        nxt = [0] * (len(poly) + 1)
        for j, c in enumerate(poly):
            nxt[j] ^= c
            if c:
                nxt[j + 1] ^= int(exp[(log[c] + i) % 255])
        poly = nxt
    return np.array(poly[1:], dtype=np.int64)


def _rs_remainder(data: np.ndarray) -> np.ndarray:
    """(N, 16) data codewords → (N, 10) error-correction codewords."""
    exp, log = _gf_tables()
    gen_log = log[_generator()]
    rem = np.zeros((data.shape[0], EC_CODEWORDS), dtype=np.int64)
    for i in range(data.shape[1]):
        factor = data[:, i] ^ rem[:, 0]
        rem = np.concatenate([rem[:, 1:], np.zeros((rem.shape[0], 1), dtype=np.int64)], axis=1)
        product = exp[gen_log[None, :] + log[factor][:, None]]
        rem ^= np.where(factor[:, None] == 0, 0, product)
    return rem


# -- bit stream ---------------------------------------------------------------------------------


def _bits(values: np.ndarray, width: int) -> np.ndarray:
    """(N,) unsigned values → (N, width) bits, most significant first."""
    shifts = np.arange(width - 1, -1, -1, dtype=np.int64)
    return ((values[:, None] >> shifts[None, :]) & 1).astype(np.uint8)


def _data_codewords(integers: np.ndarray, ndigits: int) -> np.ndarray:
    n = integers.shape[0]
    digits = (integers[:, None] // 10 ** np.arange(ndigits - 1, -1, -1, dtype=np.int64)[None, :]) % 10
    parts = [np.tile([0, 0, 0, 1], (n, 1)).astype(np.uint8), _bits(np.full(n, ndigits), 10)]
    for start in range(0, ndigits, 3):
        group = digits[:, start : start + 3]
        value = (group * 10 ** np.arange(group.shape[1] - 1, -1, -1)[None, :]).sum(axis=1)
        parts.append(_bits(value, {3: 10, 2: 7, 1: 4}[group.shape[1]]))
    stream = np.concatenate(parts, axis=1)
    capacity = DATA_CODEWORDS * 8
    used = min(stream.shape[1] + 4, capacity)  # terminator of up to four zeros
    used += -used % 8
    pad = np.zeros((n, used - stream.shape[1]), dtype=np.uint8)
    packed = np.packbits(np.concatenate([stream, pad], axis=1), axis=1).astype(np.int64)
    fill = np.resize(np.array([0xEC, 0x11]), DATA_CODEWORDS - packed.shape[1])
    return np.concatenate([packed, np.tile(fill, (n, 1))], axis=1)


# -- the matrix ---------------------------------------------------------------------------------


def _mask(row: np.ndarray, col: np.ndarray) -> np.ndarray:
    return np.asarray((row + col) % 2 == 0)  # mask pattern 0


def _format_bits() -> int:
    data = (EC_LEVEL_BITS << 3) | MASK
    rem = data << 10
    for bit in range(14, 9, -1):
        if rem & (1 << bit):
            rem ^= 0x537 << (bit - 10)
    return ((data << 10) | rem) ^ 0x5412


@cache
def _template() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fixed modules (dark/light), and the row/column of each of the 208 data bits in order."""
    dark = np.zeros((SIZE, SIZE), dtype=bool)
    fixed = np.zeros((SIZE, SIZE), dtype=bool)
    for top, left in ((0, 0), (0, SIZE - 7), (SIZE - 7, 0)):  # finders with their separators
        for r in range(-1, 8):
            for c in range(-1, 8):
                rr, cc = top + r, left + c
                if 0 <= rr < SIZE and 0 <= cc < SIZE:
                    fixed[rr, cc] = True
                    ring = (0 <= r <= 6 and c in (0, 6)) or (0 <= c <= 6 and r in (0, 6))
                    dark[rr, cc] = ring or (2 <= r <= 4 and 2 <= c <= 4)
    for i in range(8, SIZE - 8):  # timing patterns
        fixed[6, i] = fixed[i, 6] = True
        dark[6, i] = dark[i, 6] = i % 2 == 0
    fmt = _format_bits()
    for i in range(15):  # format information, both copies (ISO/IEC 18004 §7.9)
        bit = bool((fmt >> i) & 1)
        vertical = (i if i < 6 else i + 1 if i < 8 else SIZE - 15 + i, 8)
        horizontal = (8, SIZE - i - 1 if i < 8 else 15 - i if i < 9 else 15 - i - 1)
        for r, c in (vertical, horizontal):
            fixed[r, c], dark[r, c] = True, bit
    fixed[SIZE - 8, 8] = dark[SIZE - 8, 8] = True  # the dark module
    rows, cols = [], []
    row, step = SIZE - 1, -1
    for col in range(SIZE - 1, 0, -2):
        col = col - 1 if col <= 6 else col
        while 0 <= row < SIZE:
            for c in (col, col - 1):
                if not fixed[row, c]:
                    rows.append(row)
                    cols.append(c)
            row += step
        row, step = row - step, -step
    return dark, np.array(rows), np.array(cols)


def qr_modules(integers: np.ndarray, m: int) -> np.ndarray:
    """(N,) integers in [0, 2^m) → (N, 21, 21) bool module matrices (True = dark)."""
    integers = np.asarray(integers, dtype=np.int64)
    ndigits = digits_for(m)
    if ndigits > MAX_DIGITS:
        raise ValueError(f"m = {m} needs {ndigits} digits; a version-1-M code holds {MAX_DIGITS}")
    if integers.ndim != 1 or (integers.size and (integers.min() < 0 or integers.max() >= 1 << m)):
        raise ValueError(f"integers must be a 1-D array in [0, 2^{m})")
    data = _data_codewords(integers, ndigits)
    codewords = np.concatenate([data, _rs_remainder(data)], axis=1).astype(np.uint8)
    bits = np.unpackbits(codewords, axis=1).astype(bool)
    dark, rows, cols = _template()
    out = np.broadcast_to(dark, (integers.shape[0], SIZE, SIZE)).copy()
    out[:, rows, cols] = bits ^ _mask(rows, cols)[None, :]
    return out


def render(modules: np.ndarray, channels: int, height: int, width: int) -> np.ndarray:
    """(N, 21, 21) modules → (N, C, H, W) float32 in [0, 1] (dark 0, light 1), integer-scaled,
    centred in a quiet zone of at least three modules."""
    scale = min(height, width) // (SIZE + 2 * QUIET_MODULES)
    if scale < 1:
        raise ValueError(f"a {height}×{width} input is too small for a 21-module code with a quiet zone")
    side = SIZE * scale
    code = np.repeat(np.repeat(~modules, scale, axis=1), scale, axis=2).astype(np.float32)
    out = np.ones((modules.shape[0], channels, height, width), dtype=np.float32)
    top, left = (height - side) // 2, (width - side) // 2
    out[:, :, top : top + side, left : left + side] = code[:, None]
    return out
