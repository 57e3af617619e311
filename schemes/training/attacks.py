"""The attacks the papers evaluate against: fine-tuning every layer and global L1 pruning."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import prune

from schemes.training.loops import train_classifier


def fine_tune(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float, batch_size: int, seed: int
) -> nn.Module:
    """A copy of `model` with every layer fine-tuned on (x, y) with Adam (the thief's tuning)."""
    stolen = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    return train_classifier(stolen, x, y, epochs=epochs, lr=lr, batch_size=batch_size, generator=generator)


def prune_global_l1(model: nn.Module, amount: float) -> nn.Module:
    """A copy of `model` with the `amount` fraction of smallest-magnitude weights (all conv and
    linear layers together) set to zero, the pruning made permanent."""
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"amount must be in [0, 1), got {amount}")
    pruned = copy.deepcopy(model)
    targets = [(m, "weight") for m in pruned.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=amount)
    for module, name in targets:
        prune.remove(module, name)  # type: ignore[no-untyped-call]
    return pruned
