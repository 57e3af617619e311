"""Training and evaluation loops shared by the schemes; one code path for CUDA and the CPU."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn

Progress = Callable[[int, int, str], None]  # (step, total, message)


def default_device() -> torch.device:
    """CUDA when present, the CPU otherwise."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
            loss = nn.functional.cross_entropy(model(x[index].to(device)), y[index].to(device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
        if progress is not None:
            progress(epoch + 1, epochs, f"loss {loss.item():.3f}")
    model.eval()
    return model
