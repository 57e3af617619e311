"""Memory does not grow with the data set: an embedding over an image folder of 20,000 images should
peak at the PSS (process and DataLoader workers) of one over 5,000, within 10 % (benchmarks/
folder_memory.py prints the same figures).

Not yet on every machine, so it is a `bench` check, run by hand (`pytest -m bench`), not in CI: it
measured 1.018 on the development machine but 1.137 in a fresh CI clone (685 → 779 MiB), and peaks
vary from run to run by more than the bar; nothing that holds the data grows, and the cause is not
found yet: see issue 13's note."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = [pytest.mark.bench, pytest.mark.timeout(1200)]


def _benchmark() -> object:
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "folder_memory.py"
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
