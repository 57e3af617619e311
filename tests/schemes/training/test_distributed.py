"""Data-parallel embedding on torch.distributed (schemes/distributed.py, schemes/training.py): gloo
processes on the CPU, as torchrun starts them on a machine without GPUs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch
import torch.multiprocessing as mp

from schemes.training.loops import Labelled, step, stream


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank_main(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(rank)  # different initial weights on purpose: the broadcast must even them out
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        from schemes.training.distributed import broadcast_modules, check_in_step

        broadcast_modules(model)
        optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
        x, y = torch.randn(40, 1, 4, 4, generator=torch.Generator().manual_seed(9)), torch.arange(40) % 3
        seen = []
        for images, labels in stream(Labelled(x, y), 8, torch.Generator().manual_seed(1)):
            seen.append(labels.tolist())
            loss = torch.nn.functional.cross_entropy(model(images), labels)
            step(optimiser, loss, model)
        check_in_step(model)
        safetensors.torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{out}/rank{rank}.st")
        Path(f"{out}/rank{rank}.json").write_text(json.dumps(seen))
    finally:
        torch.distributed.destroy_process_group()


def test_ranks_share_the_batches_and_stay_one_model(tmp_path: Path) -> None:
    mp.spawn(_rank_main, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [{"state": safetensors.torch.load_file(tmp_path / f"rank{r}.st"),
              "seen": json.loads((tmp_path / f"rank{r}.json").read_text())} for r in range(2)]  # fmt: skip
    for key, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][key]), key  # averaged gradients: one model
    seen = [sum(r["seen"], []) for r in ranks]
    assert len(seen[0]) == len(seen[1]) == 16 and seen[0] != seen[1]  # every other batch of 5: two each
    # One process over the whole stream: the same batches, two ranks' worth.
    whole = [labels.tolist() for _, labels in stream(Labelled(torch.zeros(40, 1), torch.arange(40) % 3), 8,
                                                     torch.Generator().manual_seed(1))]  # fmt: skip
    assert ranks[0]["seen"] == whole[0:4:2] and ranks[1]["seen"] == whole[1:4:2]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_mtlsign_under_torchrun_with_two_gloo_processes_gives_a_bundle_that_verifies(tmp_path: Path) -> None:
    key = tmp_path / "owner.key"
    subprocess.run([sys.executable, "-m", "registry.cli", "keygen", "--out", str(key)], check=True, capture_output=True)
    walls = {}
    for nproc in (1, 2):
        # Each of N processes takes every N-th batch: N times the epochs give the same optimiser steps.
        options = ["-o", f"clean_epochs={8 * nproc}", "-o", f"embed_epochs={40 * nproc}", "-o", "da_attacks=1",
                   "-o", "da_epochs=3"]  # fmt: skip
        out = tmp_path / f"bundle-{nproc}"
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
        command = [*launcher, "-m", "registry.cli", "embed", "--identity", str(key), "--out", str(out), "--json",
                   *options]  # fmt: skip
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        walls[nproc] = time.perf_counter() - started
        assert result.returncode == 0, result.stderr[-3000:]
        report = json.loads(result.stdout)  # rank 0 alone reports
        verified = subprocess.run([sys.executable, "-m", "registry.cli", "verify", "--bundle", str(out),
                                   "--suspect", str(out)], capture_output=True, text=True, timeout=300)  # fmt: skip
        assert verified.returncode == 0, verified.stdout + verified.stderr
        print(f"torchrun --nproc-per-node {nproc}: {walls[nproc]:.1f} s wall, accuracy {report['accuracy']:.3f}, "
              f"watermark {report['wm_score']:.3f}")  # fmt: skip
        assert not (out / ".checkpoint").exists()
