"""The suspect as its own function of raw pixels (DESIGN §6.1 rule 4): nothing the claimant picks.

A scheme builds its verification inputs normalised as the claim's info says (the owner's data as
it was trained on). What the suspect computes must not depend on that choice: a claimant who names
a degenerate normalisation (mean 0, std 0.1, say) would push every input to one answer, so the n
answers stop being independent and the bound means nothing. The judge therefore turns every input
back into raw pixels in [0, 1] and lets the suspect normalise them itself:

* a model file, by its own card's mean and std. A thief who refolds the normalisation into the
  first layer and re-cards the copy does not change that function, so the owner's claim still
  reads the same answers;
* a prediction API normalises for itself: it is sent raw pixels (schemes.serving).

The input shape is the one the owner published (the info's); a model file whose architecture
cannot take it is refused (`SchemeError`), whatever its card says.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from contracts.errors import SchemeError
from schemes.watermarks.base import Predict, Suspect

__all__ = ["PixelCodec", "pixel_view", "pixel_predict", "require_shape"]


class PixelCodec:
    """Between inputs normalised by (mean, std) and raw pixels in [0, 1], per channel."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor([float(m) for m in mean], dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor([float(s) for s in std], dtype=torch.float32).view(1, -1, 1, 1)

    def pixels(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.std.to(x.device) + self.mean.to(x.device)).clamp(0.0, 1.0)

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.mean.to(pixels.device)) / self.std.to(pixels.device)

    def same_as(self, other: PixelCodec) -> bool:
        return bool(torch.equal(self.mean, other.mean) and torch.equal(self.std, other.std))


@contextmanager
def pixel_view(model: nn.Module, info_codec: PixelCodec, own: PixelCodec) -> Iterator[nn.Module]:
    """`model` fed through its own normalisation while the block runs: inputs encoded by
    `info_codec` become pixels, then `own`'s normalised inputs. A pre-hook on the root keeps module
    paths (MTLSign's taps, passport layers) as they are, and is removed after (reference models are
    cached); nothing is added when both normalisations are equal, so the inputs stay bit for bit."""
    if info_codec.same_as(own):
        yield model
        return

    def _renormalise(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return (own.normalise(info_codec.pixels(args[0])), *args[1:])

    handle = model.register_forward_pre_hook(_renormalise)
    try:
        yield model
    finally:
        handle.remove()


def pixel_predict(predict: Predict, info_codec: PixelCodec) -> Predict:
    """A prediction API sent raw pixels: it normalises them itself."""

    def _predict(x: torch.Tensor) -> torch.Tensor:
        return predict(info_codec.pixels(x))

    return _predict


def require_shape(suspect: Suspect, input_shape: Sequence[int]) -> None:
    """Refuse a model file whose architecture cannot run an input of the published shape."""
    if not isinstance(suspect, nn.Module):
        return
    try:
        parameter = next(suspect.parameters())
        with torch.no_grad():
            was = suspect.training
            suspect.eval()
            suspect(torch.zeros((1, *input_shape), dtype=parameter.dtype, device=parameter.device))
            suspect.train(was)
    except (RuntimeError, ValueError, StopIteration) as exc:
        raise SchemeError(
            f"the suspect's architecture does not take the published input shape {list(input_shape)}: {str(exc)[:120]}"
        ) from None
