"""Memory does not grow with the data set: an embedding over an image folder of 20,000 images peaks
at the PSS (process and DataLoader workers) of one over 5,000, within 10 % (benchmarks/
folder_memory.py prints the same figures).

It once grew (1.137 in a fresh CI clone): glibc raised each worker's mmap threshold after the first
batch, so batch-sized buffers came from a heap that grew with every batch a worker made (+200 MiB
per worker over 80 batches); workers now fix the threshold (`schemes.training._return_large_frees`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def _benchmark() -> object:
    path = Path(__file__).resolve().parents[3] / "benchmarks" / "folder_memory.py"
    spec = importlib.util.spec_from_file_location("folder_memory", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_peak_memory_does_not_grow_with_the_folder(tmp_path: Path) -> None:
    bench = _benchmark()
    small, small_s = bench.measure(tmp_path, 5000)  # type: ignore[attr-defined]
    large, large_s = bench.measure(tmp_path, 20000)  # type: ignore[attr-defined]
    print(f"peak PSS: 5,000 images {small / 2**20:.1f} MiB ({small_s:.0f} s), "
          f"20,000 images {large / 2**20:.1f} MiB ({large_s:.0f} s), ratio {large / small:.3f}")  # fmt: skip
    assert abs(large / small - 1) <= 0.10
