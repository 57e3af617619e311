"""Many devices on one machine or many (DESIGN §4.7): the embedding runs data-parallel under
torchrun, on torch.distributed (NCCL between GPUs, gloo between CPU processes).

    torchrun --nproc-per-node 4 -m registry.cli embed ...           # one machine, four processes
    wmnode embed --nproc 4 ...                                       # the same, started for you
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d \\
             --rdzv-endpoint HOST:29400 --rdzv-id RUN -m registry.cli embed ...   # two machines

torchrun starts the processes, sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous; `distributed`
joins the process group they describe (and leaves it), each rank on its own GPU where there are
GPUs. Every rank builds the same model from the same seed (rank 0's weights are broadcast to make
sure), draws the same batch order and takes every world-th batch, and averages gradients before
each step (`schemes.training.sync_gradients`); rank 0 alone writes checkpoints and the bundle.
Nothing travels between ranks but tensors: the nonce goes as 16 bytes in a tensor, never pickled.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["broadcast_bytes", "broadcast_modules", "check_in_step", "distributed", "launched"]


def launched() -> bool:
    """Whether this process was started by torchrun as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextlib.contextmanager
def distributed(timeout_seconds: float = 1800) -> Iterator[None]:
    """Join the process group torchrun describes for the block (nothing to do in one process)."""
    dist = torch.distributed
    if not launched() or not dist.is_available() or dist.is_initialized():
        yield
        return
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=timeout_seconds))
    try:
        yield
        # Leave together: a rank that tore its group down and exited while rank 0 still wrote the
        # bundle was once aborted by gloo ("terminate called without an active exception"), and a
        # rank's exit status should not say done before the bundle is written.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def broadcast_bytes(data: bytes, size: int) -> bytes:
    """Rank 0's `size` bytes on every rank (each passes its own `data`, of that size)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return data
    buffer = torch.tensor(list(data), dtype=torch.uint8, device=_device())
    if buffer.numel() != size:
        raise ValueError(f"broadcast_bytes: {buffer.numel()} bytes, not {size}")
    dist.broadcast(buffer, src=0)
    return bytes(buffer.cpu().tolist())


@torch.no_grad()
def broadcast_modules(*modules: nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank (as DistributedDataParallel does at the start)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return
    for module in modules:
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)


@torch.no_grad()
def check_in_step(*modules: nn.Module) -> None:
    """Refuse to go on when the ranks' models differ (a scheme step that was not synchronised): a
    checksum of every parameter and buffer, compared with rank 0's on every rank."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return
    sums = [t.detach().double().sum() for m in modules for t in m.state_dict().values() if t.is_floating_point()]
    mine = torch.stack(sums).to(_device()) if sums else torch.zeros(1, dtype=torch.float64, device=_device())
    theirs = mine.clone()
    dist.broadcast(theirs, src=0)
    apart = torch.tensor([float(not torch.allclose(mine, theirs, rtol=1e-9, atol=1e-9))], device=_device())
    dist.all_reduce(apart, op=dist.ReduceOp.MAX)
    if apart.item():
        raise RuntimeError("the ranks' models differ after the embedding: a training step was not synchronised")
