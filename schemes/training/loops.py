"""Training and evaluation loops shared by the schemes; one code path for CUDA and the CPU, one
process or many.

Data streams (DESIGN §4.7): a loop reads batches from a `Source`, a map from sample index to a
normalised image and its label with a batched `fetch`. The batch order is drawn in the main process
from the loop's generator, exactly as `batches` draws it, so an embedding is repeatable; in-memory
tensors are fetched in the loop's own process, and image folders by `DataLoader` worker processes
(pinned memory on CUDA), so neither RAM nor device memory grows with the data set. Each batch moves
to the device when it is used; no loop moves a whole data set there.

Many processes (`torchrun`, `schemes.distributed`): every rank draws the same batch order, takes
every world-th batch, and averages its gradients with the other ranks' before each optimiser step
(`sync_gradients`), so the ranks' models stay identical.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from schemes.training.resume import epochs as resumable

Progress = Callable[[int, int, str], None]  # (step, total, message)
Batch = tuple[torch.Tensor, torch.Tensor]

#: Data-loader worker processes for sources read from files (`WMNODE_LOADER_WORKERS` overrides).
DEFAULT_WORKERS = 4


def default_device() -> torch.device:
    """CUDA when present (this rank's device under torchrun), the CPU otherwise."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % max(1, torch.cuda.device_count()))
    return torch.device("cpu")


def autocast(device: torch.device) -> contextlib.AbstractContextManager[object]:
    """Mixed precision where it helps: bfloat16 autocast on CUDA (no loss scaling needed); on the
    CPU, where it only slows small models down, full precision."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def batches(n: int, batch_size: int, generator: torch.Generator, *, shuffle: bool = True) -> Iterator[torch.Tensor]:
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


# --------------------------------------------------------------------------------------------
# Sources


class Images(Protocol):
    """Images indexable by a LongTensor of sample indices: a tensor, or `schemes.folder.FolderImages`."""

    @property
    def shape(self) -> Any: ...

    def __getitem__(self, index: Any) -> torch.Tensor: ...


class Source(Protocol):
    """A map from sample index to (normalised image, label), read a batch at a time."""

    def __len__(self) -> int: ...

    def fetch(self, index: torch.Tensor) -> Batch: ...

    @property
    def in_memory(self) -> bool: ...


def in_memory(x: object) -> bool:
    """Whether images are a tensor (fetched in process) rather than files (fetched by workers)."""
    return isinstance(x, torch.Tensor)


@dataclass(frozen=True)
class Labelled:
    """Images with their labels, or the rows `subset` of them."""

    x: Images
    y: torch.Tensor
    subset: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0]) if self.subset is None else int(self.subset.shape[0])

    def fetch(self, index: torch.Tensor) -> Batch:
        rows = index.cpu() if self.subset is None else self.subset.cpu()[index.cpu()]
        return self.x[rows], self.y.cpu()[rows]

    @property
    def in_memory(self) -> bool:
        return in_memory(self.x)


@dataclass(frozen=True)
class Joined:
    """Sources one after another: index i < len(parts[0]) is parts[0]'s, and so on."""

    parts: Sequence[Source]

    def __len__(self) -> int:
        return sum(len(part) for part in self.parts)

    def fetch(self, index: torch.Tensor) -> Batch:
        index = index.cpu()
        ys = torch.empty(len(index), dtype=torch.int64)
        start = 0
        images: torch.Tensor | None = None
        for part in self.parts:
            end = start + len(part)
            where = ((index >= start) & (index < end)).nonzero().flatten()
            if where.numel():
                x, y = part.fetch(index[where] - start)
                if images is None:
                    images = torch.empty((len(index), *x.shape[1:]), dtype=x.dtype)
                images[where] = x
                ys[where] = y
            start = end
        return (images if images is not None else torch.empty(0)), ys

    @property
    def in_memory(self) -> bool:
        return all(part.in_memory for part in self.parts)


class _Fetcher(torch.utils.data.Dataset[Batch]):
    """A `Source` as a DataLoader's dataset: `__getitems__` fetches a whole batch in a worker."""

    def __init__(self, source: Source) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> Batch:
        return self.source.fetch(torch.tensor([i]))

    def __getitems__(self, index: list[int]) -> Batch:
        return self.source.fetch(torch.tensor(index, dtype=torch.int64))


def _whole(batch: Any) -> Any:
    """The collate function: `__getitems__` already made the batch."""
    return batch


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def _return_large_frees(_worker: int = 0) -> None:
    """In a DataLoader worker: allocations over 128 KiB are mapped and unmapped on their own.

    glibc raises its mmap threshold to the size of each mapped block a program frees, so after the
    first batch a worker's batch-sized buffers (a decoded batch, the copy that goes to shared memory)
    come from the heap, which then grows with every batch a worker makes: 200 MiB per worker over
    80 batches of 256 32×32 images, measured, so peak memory grew with the data set. A threshold
    set explicitly stays where it is. Elsewhere than glibc there is no `mallopt`, and nothing to do."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mallopt(_M_MMAP_THRESHOLD, 128 * 1024)


def loader_workers() -> int:
    """Worker processes per rank for sources read from files."""
    raw = os.environ.get("WMNODE_LOADER_WORKERS")
    if raw is not None and raw.strip().isdigit():
        return min(int(raw), 64)
    return min(DEFAULT_WORKERS, max(1, (os.cpu_count() or 2) // max(1, world_size())))


# --------------------------------------------------------------------------------------------
# Streams


@dataclass
class Meter:
    """Samples and seconds of the batches streamed since it was made: throughput for progress."""

    samples: int = 0
    started: float = field(default_factory=time.perf_counter)

    @property
    def per_second(self) -> float:
        return self.samples / max(time.perf_counter() - self.started, 1e-9)


#: Called after every batch a stream yields (batch number, batches, images/s); the CLI's bar.
BatchHook = Callable[[int, int, float], None]
_BATCH_HOOKS: list[BatchHook] = []


@contextlib.contextmanager
def batch_progress(hook: BatchHook) -> Iterator[None]:
    """Report every streamed batch to `hook` while the block runs."""
    _BATCH_HOOKS.append(hook)
    try:
        yield
    finally:
        _BATCH_HOOKS.remove(hook)


def stream(
    source: Source,
    batch_size: int,
    generator: torch.Generator | None = None,
    *,
    shuffle: bool = True,
    device: torch.device | None = None,
    shard: bool = True,
) -> Iterator[Batch]:
    """Batches of `source` in the order `batches` draws from `generator` (in order without
    shuffling), on `device`. Under torchrun each rank gets every world-th batch (`shard`), the same
    number on every rank."""
    if shuffle and generator is None:
        raise ValueError("a shuffled stream needs a generator")
    order = list(batches(len(source), batch_size, generator or torch.Generator(), shuffle=shuffle))
    if shard and world_size() > 1:
        count = len(order) // world_size() or 1
        order = order[rank() :: world_size()][:count] or order[:1]
    pin = device is not None and device.type == "cuda"
    meter = Meter()
    if source.in_memory:
        fetched: Iterator[Batch] = (source.fetch(index) for index in order)
    else:
        fetched = iter(
            torch.utils.data.DataLoader(
                _Fetcher(source),
                batch_sampler=[index.tolist() for index in order],
                collate_fn=_whole,
                num_workers=loader_workers(),
                pin_memory=pin,
                worker_init_fn=_return_large_frees,
            )
        )
    for number, (x, y) in enumerate(fetched, 1):
        meter.samples += int(y.shape[0])
        if device is not None:
            x, y = x.to(device, non_blocking=pin), y.to(device, non_blocking=pin)
        yield x, y
        for hook in _BATCH_HOOKS:
            hook(number, len(order), meter.per_second)


# --------------------------------------------------------------------------------------------
# Many processes


def world_size() -> int:
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def sync_gradients(*modules: nn.Module, average: bool = True) -> None:
    """Average (or, with `average` False, sum) the parameters' gradients over the ranks: what
    DistributedDataParallel's reducer does, here after the whole backward pass, so schemes that read
    a backbone through hooks, run it with other parameters, or sum several losses need no wrapper.
    One process: nothing to do."""
    if world_size() == 1:
        return
    grads = [p.grad for m in modules for p in m.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.detach().reshape(-1).float() for g in grads])
    torch.distributed.all_reduce(flat)
    if average:
        flat /= world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g).to(g.dtype))
        offset += g.numel()


def step(optimiser: torch.optim.Optimizer, loss: torch.Tensor, *modules: nn.Module) -> None:
    """One optimiser step on `loss`: zero, backward, average gradients across ranks, step."""
    optimiser.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[no-untyped-call]
    sync_gradients(*modules)
    optimiser.step()


# --------------------------------------------------------------------------------------------
# Loops


@torch.no_grad()
def agreement(model: nn.Module, source: Source, batch_size: int = 512) -> float:
    """The share of `source`'s samples the model labels as the source does (never sharded: each
    rank measures the whole set)."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for images, labels in stream(source, batch_size, shuffle=False, device=device, shard=False):
        with autocast(device):
            logits = model(images)
        correct += int((logits.argmax(1) == labels).sum())
    model.train(was)
    return correct / max(1, len(source))


def accuracy(model: nn.Module, x: Images, y: torch.Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy over every sample."""
    return agreement(model, Labelled(x, y), batch_size)


def train_classifier(
    model: nn.Module,
    x: Images,
    y: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    generator: torch.Generator,
    progress: Progress | None = None,
    subset: torch.Tensor | None = None,
    name: str | None = None,
) -> nn.Module:
    """Plain supervised training with Adam (the owner's clean model, and the fine-tuning attack), on
    the rows `subset` of (x, y) when given; a loop `name`d is checkpointed (`schemes.resume`)."""
    device = next(model.parameters()).device
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    source = Labelled(x, y, subset)
    model.train()
    loss = torch.zeros(())
    state = {"model": model, "optimiser": optimiser, "generator": generator}
    for epoch in range(epochs) if name is None else resumable(name, epochs, state):
        for images, labels in stream(source, batch_size, generator, device=device):
            with autocast(device):
                loss = nn.functional.cross_entropy(model(images), labels)
            step(optimiser, loss, model)
        if progress is not None:
            progress(epoch + 1, epochs, f"loss {loss.item():.3f}")
    model.eval()
    return model


@torch.no_grad()
def recalibrate_norms(
    model: nn.Module,
    x: Images,
    y: torch.Tensor,
    batch_size: int,
    norms: Sequence[nn.modules.batchnorm._BatchNorm] | None = None,
) -> None:
    """Batch-norm statistics of the final weights (all the model's norms, or `norms`): one pass over
    the training inputs in train mode, a cumulative average (under torchrun every rank passes over
    all of them, so the ranks keep one model)."""
    batch_norm = nn.modules.batchnorm._BatchNorm
    chosen = [m for m in model.modules() if isinstance(m, batch_norm)] if norms is None else list(norms)
    momenta = [m.momentum for m in chosen]
    for norm in chosen:
        norm.reset_running_stats()
        norm.momentum = None
    was = model.training
    model.train()
    device = next(model.parameters()).device
    for images, _ in stream(Labelled(x, y), batch_size, shuffle=False, device=device, shard=False):
        if images.shape[0] > 1:  # batch norm cannot normalise a lone trailing sample
            with autocast(device):
                model(images)
    for norm, momentum in zip(chosen, momenta, strict=True):
        norm.momentum = momentum
    model.train(was)


def clean_baseline(
    model: nn.Module,
    x: Images,
    y: torch.Tensor,
    x_test: Images,
    y_test: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    name: str | None = None,
) -> float:
    """Test accuracy of a clean copy of `model` (same initial weights) trained with the same budget:
    the fidelity reference for schemes that watermark while training from scratch."""
    generator = torch.Generator().manual_seed(seed)
    clean = train_classifier(
        copy.deepcopy(model), x, y, epochs=epochs, lr=lr, batch_size=batch_size, generator=generator, name=name
    )
    return accuracy(clean, x_test, y_test)
