"""Image helpers for the blind watermark: SSIM (Wang et al., 2004) and the owner's logo as uint8 pixels.

* `ssim`: the structural similarity index of Wang, Bovik, Sheikh, Simoncelli (IEEE TIP 2004) as the
  blind-watermark authors' code computes it: an 11×11 Gaussian window (σ = 1.5) applied per
  channel with zero padding 5, C1 = 0.01², C2 = 0.03² (dynamic range 1: images in [0, 1]), and the
  mean of the SSIM map per image.
* `text_logo`: text drawn with Pillow's default font (FreeType Aileron in Pillow ≥ 10.1) at 4× the
  target size, centred by its bounding box, then reduced 4× with a box filter. FreeType renders are
  not promised bit-identical across builds, which is why the blind scheme ships the logo's pixels
  and records their SHA-256 rather than re-rendering it at verification.
* `file_logo`: any image Pillow reads, as grey ("L"), resized to the target size (box filter when
  shrinking, bilinear when enlarging).
* `Encoder` e(x, l) and `Discriminator` d(χ), the blind watermark's image networks (§4.3), built on
  the meta device so that `keyed_init` draws every weight from a key-derived generator and the
  global torch generator is never touched.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from pathlib import Path
from typing import TypeVar

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError
from torch import nn

__all__ = ["Discriminator", "Encoder", "LogoError", "file_logo", "keyed_init", "logo_sha256", "ssim", "text_logo"]

_WINDOW = 11
_SIGMA = 1.5
_C1 = 0.01**2
_C2 = 0.03**2
_SUPERSAMPLE = 4
_MAX_TEXT = 32
_LEAK = 0.2
_M = TypeVar("_M", bound=nn.Module)


class LogoError(ValueError):
    """A logo text or file that cannot become a logo."""


def gaussian_window(size: int = _WINDOW, sigma: float = _SIGMA) -> torch.Tensor:
    """The normalised 2-D Gaussian window (size × size) of SSIM."""
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    line = torch.exp(-(coords**2) / (2 * sigma**2))
    line = line / line.sum()
    return torch.outer(line, line)


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """SSIM(x_i, y_i) per image for (N, C, H, W) images in [0, 1]: the mean of the SSIM map."""
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"ssim needs two (N, C, H, W) tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    channels = x.shape[1]
    window = gaussian_window().to(x.device, x.dtype).expand(channels, 1, _WINDOW, _WINDOW).contiguous()

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window, padding=_WINDOW // 2, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + _C1) * (2 * cov + _C2)
    denominator = (mu_x**2 + mu_y**2 + _C1) * (var_x + var_y + _C2)
    return (numerator / denominator).flatten(1).mean(1)


def text_logo(text: str, size: tuple[int, int]) -> torch.Tensor:
    """`text` rendered white on black as a uint8 (H, W) logo, centred, shrunk to fit the width."""
    if not text or len(text) > _MAX_TEXT or not text.isprintable():
        raise LogoError(f"a logo text is 1 to {_MAX_TEXT} printable characters, got {text!r}")
    height, width = size
    big = (width * _SUPERSAMPLE, height * _SUPERSAMPLE)
    font_size = max(4.0, 0.4 * big[1])
    font = ImageFont.load_default(size=font_size)
    image = Image.new("L", big, 0)
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    for _ in range(8):  # too wide: shrink the font until the text fills at most 90 % of the width
        if right - left <= 0.9 * big[0] or font_size <= 4:
            break
        font_size = max(4.0, 0.95 * font_size * 0.9 * big[0] / (right - left))
        font = ImageFont.load_default(size=font_size)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    origin = ((big[0] - (right - left)) / 2 - left, (big[1] - (bottom - top)) / 2 - top)
    draw.text(origin, text, fill=255, font=font)
    return _pixels(image.resize((width, height), Image.Resampling.BOX))


def file_logo(path: Path, size: tuple[int, int]) -> torch.Tensor:
    """The image file at `path` as a grey uint8 (H, W) logo."""
    height, width = size
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                image = opened.convert("L")
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise LogoError(f"cannot read the logo image {path}: {exc}") from exc
    shrink = image.width >= width and image.height >= height
    resample = Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR
    return _pixels(image.resize((width, height), resample))


def _pixels(image: Image.Image) -> torch.Tensor:
    data = bytes(image.tobytes())
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).reshape(image.height, image.width).clone()


def logo_sha256(logo: torch.Tensor) -> str:
    """SHA-256 (hex) of the logo's uint8 pixels in row-major order: the logo's identity in info."""
    if logo.dtype != torch.uint8 or logo.dim() != 2:
        raise LogoError(f"a logo is a uint8 (H, W) tensor, got {logo.dtype} {tuple(logo.shape)}")
    return hashlib.sha256(logo.contiguous().cpu().numpy().tobytes()).hexdigest()


class Encoder(nn.Module):
    """e(x, l): a residual, BatchNorm-free 3×3 CNN on pixels in [0, 1] (§4.3 "lightweight auto-encoder")."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.prep_x = nn.Conv2d(channels, 4, 3, padding=1, device="meta")
        self.prep_logo = nn.Conv2d(channels, 4, 3, padding=1, device="meta")
        self.body = nn.ModuleList(
            [nn.Conv2d(8, hidden, 3, padding=1, device="meta"), nn.Conv2d(hidden, hidden, 3, padding=1, device="meta")]
        )
        self.out = nn.Conv2d(hidden, channels, 3, padding=1, device="meta")

    def forward(self, x: torch.Tensor, logo: torch.Tensor) -> torch.Tensor:
        logo = logo.expand(x.shape[0], -1, -1, -1)
        h = torch.cat([F.leaky_relu(self.prep_x(x), _LEAK), F.leaky_relu(self.prep_logo(logo), _LEAK)], 1)
        for layer in self.body:
            h = F.leaky_relu(layer(h), _LEAK)
        residual: torch.Tensor = self.out(h)
        return (x + residual).clamp(0.0, 1.0)


class Discriminator(nn.Module):
    """θ_d of Eq. 9: a logit; σ(θ_d(χ)) = p(Θ = 1 "original" | χ)."""

    def __init__(self, input_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Flatten(),
            nn.Linear(math.prod(input_shape), 64, device="meta"),
            nn.LeakyReLU(_LEAK),
            nn.Linear(64, 32, device="meta"),
            nn.LeakyReLU(_LEAK),
            nn.Linear(32, 1, device="meta"),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.layers(x).squeeze(1)
        return logits


def keyed_init(module: _M, generator: torch.Generator) -> _M:
    """Materialise a module built on the meta device on the CPU, with PyTorch's default init of its
    convolutions and linear layers (Kaiming-uniform, a = √5) drawn from `generator` only."""
    module = module.to_empty(device="cpu")
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, nn.Conv2d | nn.Linear):
                nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
                bound = 1 / math.sqrt(layer.weight[0].numel())
                if layer.bias is not None:
                    nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
    return module
