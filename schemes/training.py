"""Training and evaluation loops shared by the schemes; one code path for CUDA and the CPU."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator

import torch
from torch import nn

Progress = Callable[[int, int, str], None]  # (step, total, message)


def default_device() -> torch.device:
    """CUDA when present, the CPU otherwise."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, x.shape[0], batch_size):
        with autocast(device):
            logits = model(x[start : start + batch_size].to(device))
        correct += int((logits.argmax(1).cpu() == y[start : start + batch_size]).sum())
    model.train(was)
    return correct / max(1, x.shape[0])


def train_classifier(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    generator: torch.Generator,
    progress: Progress | None = None,
) -> nn.Module:
    """Plain supervised training with Adam (the owner's clean model, and the fine-tuning attack)."""
    device = next(model.parameters()).device
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for epoch in range(epochs):
        for index in batches(x.shape[0], batch_size, generator):
            with autocast(device):
                loss = nn.functional.cross_entropy(model(x[index].to(device)), y[index].to(device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
        if progress is not None:
            progress(epoch + 1, epochs, f"loss {loss.item():.3f}")
    model.eval()
    return model


def clean_baseline(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
) -> float:
    """Test accuracy of a clean copy of `model` (same initial weights) trained with the same budget:
    the fidelity reference for schemes that watermark while training from scratch."""
    generator = torch.Generator().manual_seed(seed)
    clean = train_classifier(
        copy.deepcopy(model), x, y, epochs=epochs, lr=lr, batch_size=batch_size, generator=generator
    )
    return accuracy(clean, x_test, y_test)
