"""Build D_WM for N = 600 as model-ready tensors, beside the `qrcode` package building the same 600
codes one by one (fixed mask, and its automatic mask choice), in one run.

Run: python benchmarks/dwm_build.py [--n 600] [--repeat 7]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import time
from collections.abc import Callable

import numpy as np
import qrcode

from mtlsign.dwm import build_dwm
from mtlsign.pikey import key_sequence
from mtlsign.qr import digits_for, qr_modules

KEY = hashlib.sha256(b"benchmark key").digest()


def timed(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def qrcode_one_by_one(integers: list[int], ndigits: int, mask: int | None) -> list[np.ndarray]:
    out = []
    for value in integers:
        code = qrcode.QRCode(version=1, error_correction=qrcode.constants.ERROR_CORRECT_M, mask_pattern=mask, border=0)
        code.add_data(qrcode.util.QRData(str(value).zfill(ndigits), mode=qrcode.util.MODE_NUMBER))
        code.make(fit=False)
        out.append(np.array(code.get_matrix(), dtype=bool))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    seq = key_sequence(KEY, args.n)
    ints, nd = seq.integers.tolist(), digits_for(seq.m)
    ours = qr_modules(seq.integers, seq.m)
    theirs = qrcode_one_by_one(ints, nd, 0)
    assert all((a == b).all() for a, b in zip(ours, theirs, strict=True)), "matrices differ from qrcode's"

    full = timed(lambda: build_dwm(KEY, args.n, (1, 28, 28), [0.5], [0.5]), args.repeat)
    modules = timed(lambda: qr_modules(seq.integers, seq.m), args.repeat)
    fixed = timed(lambda: qrcode_one_by_one(ints, nd, 0), max(1, args.repeat // 2))
    auto = timed(lambda: qrcode_one_by_one(ints, nd, None), 1)
    print(f"N = {args.n}, m = {seq.m}, {nd} digits, version 1-M, mask 0; median of {args.repeat} runs")
    print(f"{'':<58} {'ms':>9} {'ratio':>8}")
    print(f"{'wmnode: key → π_key → QR → (N,1,28,28) normalised tensor':<58} {1000 * full:>9.2f} {1.0:>8.2f}")
    print(f"{'wmnode: QR module matrices only':<58} {1000 * modules:>9.2f} {modules / full:>8.2f}")
    print(f"{'qrcode package, one by one, fixed mask (matrices only)':<58} {1000 * fixed:>9.2f} {fixed / full:>8.2f}")
    print(f"{'qrcode package, one by one, automatic mask':<58} {1000 * auto:>9.2f} {auto / full:>8.2f}")


if __name__ == "__main__":
    main()
