"""The watermark head cWM of MTLSign §3.2 and the branch f_WM that reads the backbone through it.

cWM "takes the output of different layers from the backbone as its input" (§3.2; §4.1: "a
two-layer perceptron that took the outputs of the first three layers"). It is attached with
forward hooks to module paths that the model zoo names (`wm_taps`) and that `info` records, so the
published model keeps its structure and any zoo network works.

Choice: each tap's output is average-pooled to `pool`×`pool` (vectors pass through), flattened
and concatenated; cWM = Linear(D, hidden) → ReLU → Linear(hidden, 2). Pooling keeps D small and
the features less sensitive to the exact spatial weights an adversary's tuning moves.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def pooled(output: torch.Tensor, pool: int) -> torch.Tensor:
    if output.dim() == 4 and pool > 0:
        output = nn.functional.adaptive_avg_pool2d(output, pool)
    return output.flatten(1)


class WatermarkHead(nn.Module):
    """cWM: a two-layer perceptron over pooled tap outputs."""

    def __init__(self, in_features: int, hidden: int = 256, pool: int = 4) -> None:
        super().__init__()
        self.pool = pool
        # LayerNorm first: a trained backbone's tap outputs differ in scale by orders of magnitude.
        self.net = nn.Sequential(
            nn.LayerNorm(in_features), nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, 2)
        )

    def forward(self, taps: Sequence[torch.Tensor]) -> torch.Tensor:
        out: torch.Tensor = self.net(torch.cat([pooled(t, self.pool) for t in taps], dim=1))
        return out


def tap_features(
    model: nn.Module, paths: Sequence[str], x: torch.Tensor, params: dict[str, torch.Tensor] | None = None
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One forward pass: the primary output and the tap outputs, in `paths` order. With `params`,
    the pass runs with those parameters in place of the model's (torch.func.functional_call)."""
    modules = dict(model.named_modules())
    outputs: dict[str, torch.Tensor] = {}
    handles = []
    for path in paths:
        if path not in modules:
            raise ValueError(f"the model has no module {path!r}")
        handles.append(modules[path].register_forward_hook(lambda m, a, o, p=path: outputs.__setitem__(p, o)))
    try:
        logits = model(x) if params is None else torch.func.functional_call(model, params, (x,))
    finally:
        for handle in handles:
            handle.remove()
    return logits, [outputs[p] for p in paths]


def head_input_size(model: nn.Module, paths: Sequence[str], input_shape: tuple[int, int, int], pool: int) -> int:
    """D for a head reading `paths` of `model` on inputs of `input_shape`."""
    with torch.no_grad():
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        _, taps = tap_features(model, paths, torch.zeros(1, *input_shape, device=device))
        model.train(was_training)
    return sum(pooled(t, pool).shape[1] for t in taps)
