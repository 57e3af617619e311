"""Peak memory of an embedding over image folders of two sizes, in one run: the proportional set
size (PSS) of the `wmnode embed` process and its DataLoader workers together, sampled every 50 ms,
for a folder of 5,000 images and one of 20,000, with their ratio (streamed data: it should be ~1).

The folders hold random 32×32 RGB PNG files in 10 classes (written once, under a temporary
directory); the embedding is MTLSign on LeNet-5 at 3×32×32 (the images' own size), one clean and
one embedding epoch, with `WMNODE_LOADER_WORKERS` workers.
Run: python benchmarks/folder_memory.py [--small 5000 --large 20000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def write_folder(root: Path, count: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split, n in (("train", count), ("val", max(100, count // 10))):
        for i in range(n):
            folder = root / split / f"class_{i % 10}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i:06d}.png")
    return root


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, []))
    return out


def pss_bytes(pid: int) -> int:
    total = 0
    for member in _tree(pid):
        try:
            for line in Path(f"/proc/{member}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def peak_pss(command: list[str], env: dict[str, str]) -> tuple[int, float]:
    """(peak PSS of the command's process tree, seconds) while it runs; it must succeed."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    while process.poll() is None:
        peak = max(peak, pss_bytes(process.pid))
        time.sleep(0.05)
    _, err = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {err[-2000:]}")
    return peak, time.perf_counter() - started


def measure(base: Path, count: int, workers: int = 2) -> tuple[int, float]:
    folder = base / f"folder-{count}"
    if not folder.exists():
        write_folder(folder, count)
    key = base / "owner.key"
    if not key.exists():
        subprocess.run([sys.executable, "-m", "registry.cli", "keygen", "--out", str(key)], check=True,
                       capture_output=True)  # fmt: skip
    env = {**os.environ, "WMNODE_LOADER_WORKERS": str(workers)}
    command = [sys.executable, "-m", "registry.cli", "embed", "--scheme", "mtlsign", "--dataset", "folder",
               "--data-path", str(folder), "--identity", str(key), "--out", str(base / f"bundle-{count}"),
               "-o", "clean_epochs=1", "-o", "embed_epochs=1", "-o", "da_attacks=1", "-o", "da_epochs=1",
               "-o", "batch_size=256"]  # fmt: skip
    return peak_pss(command, env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", type=int, default=5000)
    parser.add_argument("--large", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        small, small_s = measure(Path(tmp), args.small, args.workers)
        large, large_s = measure(Path(tmp), args.large, args.workers)
    print(f"{'images':>8}  {'peak PSS (MiB)':>15}  {'seconds':>8}")
    print(f"{args.small:>8}  {small / 2**20:>15.1f}  {small_s:>8.1f}")
    print(f"{args.large:>8}  {large / 2**20:>15.1f}  {large_s:>8.1f}")
    print(f"ratio {args.large}/{args.small}: {large / small:.3f} (within 10 %: {abs(large / small - 1) <= 0.10})")


if __name__ == "__main__":
    main()
