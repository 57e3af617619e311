"""Blind watermark (Li, Hu, Zhang, Guo, ACSAC 2019): key samples from an encoder, hidden from a discriminator.

Generation x_key = G(e, x, l) (Eq. 1/3): an encoder e takes cover images x from the training data
and the owner's logo l; the host model f is trained so that f_k = E(f, x_key) (Eq. 2) answers each
x_key with a pre-defined label t_key while it still answers x with its true label. Ownership:
acc_g = V(g, x_key, t_key) (Eq. 4), the fraction of key samples the suspect labels t_key, passes
iff acc_g > T_acc (§4.2). Objectives (§4.3), all on images in [0, 1] pixel units:

* O_e (Eq. 15) = mean over the key minibatch of α·(x − e(x,l))² (Eq. 5, the mean over pixels)
  + β·(1 − SSIM(x, e(x,l))) (Eq. 8) + γ·(−log σ(d(e(x,l)))) (Eq. 11, the non-saturating GAN loss
  of Eq. 9) + δ·CE(f(e(x,l)), t_key) (Eq. 14, through the host, whose weights this step leaves alone).
* O_d (Eq. 10) = BCE(d(x), 1) + BCE(d(x_key), 0): the covers are the originals, Θ = 1.
* O_h (Eq. 13, with Eq. 12's softmax) = cross-entropy over the merged batch of ordinary samples
  with their labels and key samples with t_key.
* Algorithm 1 with k1 = k2 = 1 per host batch (as the authors' code runs it): for every batch of
  n ordinary samples, the next m covers of a cycle through D' (random start) give x_key; one Adam
  step on O_d (line 6), one on O_e (line 7), then one host step on O_h over the m + n merged
  samples (lines 10-12), with x_key as computed before line 7 (detached).

Choices where the paper is silent, and deviations:

* D' (Alg. 1 line 1): n = 100 covers (the paper's 1 % of the data would be 14 digits images, too
  coarse for a 0.95 bar). Targets are balanced (t_i = π(i) mod K, π a key permutation), and each
  cover's class is t_i + r_i mod K with r_i uniform in 1..K−1, so t_key ≠ the cover's true label
  (§6.2's criterion θ_uw(x_key) ≠ t_key) and a key-independent model scores about 1/(K−1).
  Covers are drawn without replacement from that class in a key permutation of the training set,
  and they stay in D with their true labels.
* Paired covers (`pair_covers`): each host batch also carries its m covers with their true labels,
  the paper's "under the premise of correctly identifying x" made explicit; without it the host
  learns the covers' label flips and loses 2-3 points of test accuracy on digits.
* Encoder: the paper gives no layers ("a lightweight auto-encoder"). Ours is residual:
  x_key = clamp(x + r(x, l), 0, 1) with r a 3-layer 3×3 CNN over two 4-channel prep branches
  (x and the logo); no BatchNorm, so training and evaluation compute the same function.
  Discriminator: the authors' MNIST MLP (C·H·W → 64 → 32 → 1, LeakyReLU 0.2) on logits.
* Weights: the paper's α = 3, β = 5, γ = 0.1 (§5.1), but δ = 1.0 instead of 0.01 (the authors'
  code: 0.1): with δ = 0.01 on 28×28 digits the residual encoder collapses to the identity and the
  "watermark" degenerates to label-flipping the covers.
* Freeze phase: the encoder and discriminator stop after (1 − `freeze_fraction`) of the epochs; the
  key samples of the final encoder are computed once, each pulled towards its cover until its SSIM
  to the cover is at least `min_ssim` (+ 0.01), and the host trains on exactly those for the
  rest (stops the key accuracy from oscillating while e still moves). The host's learning rate is
  multiplied by `lr_decay` at the same epoch (the paper's step decay, scaled to our schedule).
* Host optimiser: SGD with momentum 0.9 and weight decay 5e-4 as the paper (§5.1) and its code,
  but lr 0.05 instead of 0.1 (0.1 makes LeNet-5 on 1,438 digits swing by 10 points between epochs
  and left one key at 0.75). Adam 1e-3 (`host_optimizer="adam"`, the spec's first proposal) fits
  the clean data better (97.2 % vs 96.1 %) but its watermarked hosts lost 2.5 and 3.3 points on
  the two keys tried (0.3-3.3 on four keys with m = 10), SGD 0.05 between −0.6 and 1.1 on six
  keys. Plausibly, once the ordinary data are fitted, Adam's normalised steps amplify the key
  samples' remaining gradients into full-size updates. e and d: Adam(lr, β1 0.5), as §5.1. The
  clean reference uses the host's optimiser and schedule.
* T_acc = 0.8 (the paper: "close to 1", no value): every fine-tuned model of its Table 2
  (≥ 84.75 %) stays above it; passed iff score > T_acc (the paper's strict ">").
* Verifier artifact: the frozen key samples themselves (float32, the model's normalised input
  space) and the logo (uint8), not the encoder: a logo render and a float forward pass are not
  bit-exact across machines, and §3.2 keeps the encoder confidential. The targets are rebuilt from
  the key; the logo's SHA-256 is in info.
* Binding the shipped samples to the key (DESIGN §6.1 rule 1): the covers come from the key over
  the community's copy of the data (`schemes.community`; `embed` refuses other data before any
  training), and a judge counts a key sample only if it lies within `min_ssim` (SSIM, Eq. 8) of
  its key-chosen cover, whose true label is never the target. So a claimant cannot ship generic
  images of a natural class: every counted sample is its cover, barely changed, asked for a label
  the cover does not have.
* Secrets from named key streams (scheme prefix "blind"): "targets", "offsets", "covers", "logo"
  (its text when no logo is configured), "encoder-init", "discriminator-init", "batches" (host
  batch order and the cover cycle's start). `Config.seed` only orders the clean reference's batches.
* Fine-tuning the owner's own model (`clean=given`): the host starts from the given weights, not a
  fresh initialisation, and the given model is the clean reference (none is trained alongside); the
  encoder and discriminator start from the key as above, and Algorithm 1 runs unchanged.

This module embeds (Algorithm 1); what a node runs to verify, from the key's targets and covers to
the verdict and its control, is `schemes.watermarks._blind_verification`, and the info's schema is
`contracts.infos.BlindInfo`.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from contracts.errors import SchemeError
from contracts.infos import BlindInfo
from mtlsign.streams import key_generator, key_stream
from schemes.data._imaging import Discriminator, Encoder, LogoError, file_logo, keyed_init, logo_sha256, ssim, text_logo
from schemes.data.community import require_community_data
from schemes.data.dataset import Dataset
from schemes.training.loops import Labelled, Progress, accuracy, autocast, step, stream, sync_gradients
from schemes.training.resume import epochs as resumable
from schemes.watermarks._blind_verification import NAME, control, cover_ssim, key_covers, key_targets, verify
from schemes.watermarks.base import Scheme, Watermarked, register_scheme

__all__ = [
    "Config",
    "NAME",
    "SCHEME",
    "control",
    "cover_ssim",
    "embed",
    "key_covers",
    "key_targets",
    "make_logo",
    "verify",
]

_M = TypeVar("_M", bound=nn.Module)


@dataclass(frozen=True)
class Config:
    n: int = 100
    threshold: float = 0.8
    min_ssim: float = 0.9
    epochs: int = 50
    freeze_fraction: float = 0.2
    batch_size: int = 100
    wm_batch_size: int = 20
    alpha: float = 3.0
    beta: float = 5.0
    gamma: float = 0.1
    delta: float = 1.0
    lr: float = 1e-3
    host_lr: float = 0.05
    host_optimizer: str = "sgd"
    host_momentum: float = 0.9
    host_weight_decay: float = 5e-4
    lr_decay: float = 0.1
    channels: int = 32
    pair_covers: bool = True
    logo_text: str | None = None
    logo_path: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.n <= BlindInfo.MAX_N or not 0 < self.threshold < 1 or self.epochs < 1:
            raise ValueError(f"need 1 ≤ n ≤ {BlindInfo.MAX_N}, 0 < threshold < 1 and epochs ≥ 1")
        if not 0 <= self.min_ssim <= 1:
            raise ValueError("need 0 ≤ min_ssim ≤ 1")
        if not 0 <= self.freeze_fraction < 1 or self.batch_size < 1 or self.wm_batch_size < 1:
            raise ValueError("need 0 ≤ freeze_fraction < 1, batch_size ≥ 1 and wm_batch_size ≥ 1")
        if min(self.alpha, self.beta, self.gamma, self.delta) < 0:
            raise ValueError("the weights alpha, beta, gamma and delta must be ≥ 0")
        if self.lr <= 0 or self.host_lr <= 0 or not 0 < self.lr_decay <= 1 or not 1 <= self.channels <= 1024:
            raise ValueError("need lr > 0, host_lr > 0, 0 < lr_decay ≤ 1 and 1 ≤ channels ≤ 1024")
        if self.host_optimizer not in ("adam", "sgd") or not 0 <= self.host_momentum < 1 or self.host_weight_decay < 0:
            raise ValueError("need host_optimizer 'adam' or 'sgd', 0 ≤ host_momentum < 1 and host_weight_decay ≥ 0")
        if self.logo_text is not None and self.logo_path is not None:
            raise ValueError("give logo_text or logo_path, not both")
        if self.logo_text is not None:
            text_logo(self.logo_text, (8, 8))  # validates the text (LogoError is a ValueError)


def _keyed(module: _M, key: bytes, stream: str, device: torch.device) -> _M:
    """Materialise a meta-device network with PyTorch's default init drawn from the key stream `stream`."""
    return keyed_init(module, key_generator(key, NAME, stream)).to(device)


def make_logo(key: bytes, config: Config, size: tuple[int, int]) -> tuple[torch.Tensor, str]:
    """The logo l (uint8 (H, W)) and where it came from: a file, a text, or text drawn from the key."""
    try:
        if config.logo_path is not None:
            return file_logo(Path(config.logo_path), size), "file"
        if config.logo_text is not None:
            return text_logo(config.logo_text, size), "text"
        return text_logo(key_stream(key, NAME, "logo").read(2).hex().upper(), size), "key"
    except LogoError as exc:
        raise SchemeError(f"blind: {exc}") from exc


@dataclass
class _Run:
    """Everything one embedding trains or reads, on the model's device."""

    host: nn.Module
    encoder: Encoder
    discriminator: Discriminator
    host_opt: torch.optim.Optimizer
    encoder_opt: torch.optim.Optimizer
    discriminator_opt: torch.optim.Optimizer
    logo: torch.Tensor  # (1, C, H, W) in [0, 1]
    mean: torch.Tensor  # (1, C, 1, 1)
    std: torch.Tensor
    covers: torch.Tensor  # normalised (N, C, H, W)
    cover_labels: torch.Tensor
    targets: torch.Tensor
    config: Config

    def pixels(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.std + self.mean).clamp(0.0, 1.0)

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.mean) / self.std


def _discriminator_step(run: _Run, originals: torch.Tensor, keyed: torch.Tensor) -> float:
    """Alg. 1 line 6: one Adam step on O_d (Eq. 10)."""
    real, fake = run.discriminator(originals), run.discriminator(keyed)
    loss = F.binary_cross_entropy_with_logits(real, torch.ones_like(real)) + F.binary_cross_entropy_with_logits(
        fake, torch.zeros_like(fake)
    )
    step(run.discriminator_opt, loss, run.discriminator)
    return float(loss.detach())


def _encoder_step(run: _Run, originals: torch.Tensor, keyed: torch.Tensor, targets: torch.Tensor) -> float:
    """Alg. 1 line 7: one Adam step on O_e (Eq. 15); the host and d are read, not updated."""
    c = run.config
    judged = run.discriminator(keyed)
    with autocast(originals.device):
        label_loss = F.cross_entropy(run.host(run.normalise(keyed)), targets)
    loss = (
        c.alpha * (originals - keyed).pow(2).mean()
        + c.beta * (1 - ssim(originals, keyed)).mean()
        + c.gamma * F.binary_cross_entropy_with_logits(judged, torch.ones_like(judged))
        + c.delta * label_loss.float()
    )
    params = list(run.encoder.parameters())
    for param, grad in zip(params, torch.autograd.grad(loss, params), strict=True):
        param.grad = grad
    sync_gradients(run.encoder)
    run.encoder_opt.step()
    return float(loss.detach())


def _host_step(run: _Run, x: torch.Tensor, y: torch.Tensor, keyed: torch.Tensor, keys: torch.Tensor) -> float:
    """Alg. 1 lines 10-12: one step on O_h (Eq. 13) over ordinary, key and (paired) cover samples."""
    parts_x, parts_y = [x, keyed], [y, run.targets[keys]]
    if run.config.pair_covers:
        parts_x.append(run.covers[keys])
        parts_y.append(run.cover_labels[keys])
    with autocast(x.device):
        loss = F.cross_entropy(run.host(torch.cat(parts_x)), torch.cat(parts_y))
    step(run.host_opt, loss, run.host)
    return float(loss.detach())


def _batch(run: _Run, x: torch.Tensor, y: torch.Tensor, keys: torch.Tensor, frozen: torch.Tensor | None) -> list[float]:
    """One host batch: lines 4-8 (unless the encoder is frozen) and lines 9-13 of Algorithm 1."""
    if frozen is not None:
        return [0.0, 0.0, _host_step(run, x, y, frozen[keys], keys)]
    originals = run.pixels(run.covers[keys])
    keyed = run.encoder(originals, run.logo)
    d_loss = _discriminator_step(run, originals, keyed.detach())
    e_loss = _encoder_step(run, originals, keyed, run.targets[keys])
    return [d_loss, e_loss, _host_step(run, x, y, run.normalise(keyed.detach()), keys)]


@torch.no_grad()
def _key_samples(run: _Run) -> torch.Tensor:
    """x_key = e(x, l) for every cover, normalised as the host's inputs."""
    return run.normalise(run.encoder(run.pixels(run.covers), run.logo))


#: Margin over `min_ssim` when binding samples, so float differences between machines never push
#: an honest sample below the bar a judge checks.
_SSIM_MARGIN = 0.01
_ALPHAS = torch.linspace(1.0, 0.0, 41)


@torch.no_grad()
def _bound_to_covers(run: _Run, samples: torch.Tensor) -> torch.Tensor:
    """Each key sample pulled towards its cover, x' = x + α·(x_key − x) with the largest α on a grid,
    until SSIM(x, x') ≥ min_ssim + margin: the binding a judge checks holds by construction."""
    covers = run.pixels(run.covers)
    keyed = run.pixels(samples)
    best = covers.clone()
    done = torch.zeros(covers.shape[0], dtype=torch.bool, device=covers.device)
    for alpha in _ALPHAS.tolist():
        candidate = covers + alpha * (keyed - covers)
        ok = (ssim(covers, candidate) >= run.config.min_ssim + _SSIM_MARGIN) & ~done
        best[ok] = candidate[ok]
        done |= ok
    return run.normalise(best)


def _host_optimiser(model: nn.Module, config: Config) -> torch.optim.Optimizer:
    """The host's optimiser (the same for the clean reference): Adam, or SGD with momentum as §5.1."""
    if config.host_optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=config.host_lr, momentum=config.host_momentum, weight_decay=config.host_weight_decay
        )
    return torch.optim.Adam(model.parameters(), lr=config.host_lr, weight_decay=config.host_weight_decay)


def _scale_lr(optimiser: torch.optim.Optimizer, factor: float) -> None:
    for group in optimiser.param_groups:
        group["lr"] *= factor


def _freeze_epoch(config: Config) -> int:
    return config.epochs - round(config.freeze_fraction * config.epochs)


def _train(run: _Run, data: Dataset, key: bytes, progress: Progress | None) -> torch.Tensor:
    """Algorithm 1, then the freeze phase; returns the frozen key samples the host learnt."""
    c, device, n_covers = run.config, run.covers.device, run.covers.shape[0]
    generator = key_generator(key, NAME, "batches")
    held: dict[str, Any] = {"cursor": int(torch.randint(n_covers, (1,), generator=generator))}  # and "frozen"
    state = {"host": run.host, "encoder": run.encoder, "discriminator": run.discriminator, "host_opt": run.host_opt,
             "encoder_opt": run.encoder_opt, "discriminator_opt": run.discriminator_opt, "generator": generator,
             "held": held}  # fmt: skip
    run.host.train()
    for epoch in resumable("blind/train", c.epochs, state, device):
        if epoch == _freeze_epoch(c):
            held["frozen"] = _bound_to_covers(run, _key_samples(run))
            _scale_lr(run.host_opt, c.lr_decay)
        totals = np.zeros(3)
        for x, y in stream(Labelled(data.x_train, data.y_train), c.batch_size, generator, device=device):
            keys = ((held["cursor"] + torch.arange(c.wm_batch_size)) % n_covers).to(device)
            held["cursor"] = (held["cursor"] + c.wm_batch_size) % n_covers
            totals += _batch(run, x, y, keys, held.get("frozen"))
        if progress is not None:
            progress(epoch + 1, c.epochs, "O_d {:.2f} O_e {:.2f} O_h {:.2f}".format(*totals))
    run.host.eval()
    frozen = held.get("frozen")
    return frozen if frozen is not None else _bound_to_covers(run, _key_samples(run))


def _clean_reference(model: nn.Module, data: Dataset, config: Config) -> nn.Module:
    """A copy of the initial host trained on D alone with the same optimiser, budget and decay."""
    clean = copy.deepcopy(model)
    device = next(clean.parameters()).device
    optimiser = _host_optimiser(clean, config)
    generator = torch.Generator().manual_seed(config.seed)
    clean.train()
    for epoch in resumable(
        "blind/clean", config.epochs, {"clean": clean, "optimiser": optimiser, "generator": generator}
    ):
        if epoch == _freeze_epoch(config):
            _scale_lr(optimiser, config.lr_decay)
        for x, y in stream(Labelled(data.x_train, data.y_train), config.batch_size, generator, device=device):
            with autocast(device):
                loss = F.cross_entropy(clean(x), y)
            step(optimiser, loss, clean)
    return clean.eval()


def _setup(model: nn.Module, data: Dataset, key: bytes, config: Config, logo: torch.Tensor) -> _Run:
    device = next(model.parameters()).device
    channels = data.input_shape[0]
    if config.n > data.x_train.shape[0]:
        raise SchemeError(f"blind: n = {config.n} key samples need as many training images")
    targets = key_targets(key, config.n, data.num_classes)
    covers = key_covers(key, targets, data.y_train, data.num_classes)
    encoder = _keyed(Encoder(channels, config.channels), key, "encoder-init", device)
    discriminator = _keyed(Discriminator(data.input_shape), key, "discriminator-init", device)
    betas = (0.5, 0.999)
    return _Run(
        host=model,
        encoder=encoder,
        discriminator=discriminator,
        host_opt=_host_optimiser(model, config),
        encoder_opt=torch.optim.Adam(encoder.parameters(), lr=config.lr, betas=betas),
        discriminator_opt=torch.optim.Adam(discriminator.parameters(), lr=config.lr, betas=betas),
        logo=(logo.float() / 255).expand(channels, -1, -1).unsqueeze(0).to(device),
        mean=torch.tensor(data.mean, dtype=torch.float32).view(1, -1, 1, 1).to(device),
        std=torch.tensor(data.std, dtype=torch.float32).view(1, -1, 1, 1).to(device),
        covers=data.x_train[covers].to(device),
        cover_labels=data.y_train[covers].to(device),
        targets=targets.to(device),
        config=config,
    )


def _info(data: Dataset, config: Config, logo: torch.Tensor, source: str) -> dict[str, Any]:
    return {
        "scheme": NAME,
        "dataset": data.name,
        "min_ssim": config.min_ssim,
        "n": config.n,
        "threshold": config.threshold,
        "num_classes": data.num_classes,
        "input_shape": list(data.input_shape),
        "mean": list(data.mean),
        "std": list(data.std),
        "alpha": config.alpha,
        "beta": config.beta,
        "gamma": config.gamma,
        "delta": config.delta,
        "epochs": config.epochs,
        "logo_sha256": logo_sha256(logo),
        "logo_source": source,
        "encoder": f"residual-cnn-{config.channels}",
        "discriminator": BlindInfo.DISCRIMINATOR,
    }


def embed(
    model: nn.Module,
    data: Dataset,
    key: bytes,
    config: Config = Config(),
    progress: Progress | None = None,
    *,
    clean: nn.Module | None = None,
) -> Watermarked:
    """Algorithm 1 on the host `model` (from its initial weights); the clean reference trains alongside."""
    started = time.perf_counter()
    require_community_data(data, NAME)  # before any training: the covers must be rebuildable
    if clean is None:
        clean = _clean_reference(model, data, config)
    logo, source = make_logo(key, config, data.input_shape[1:])
    run = _setup(model, data, key, config, logo)
    keyed = _train(run, data, key, progress)
    verifier = {"key_samples": keyed.float().cpu().contiguous(), "logo": logo.contiguous()}
    info = _info(data, config, logo, source)
    verdict = verify(model, key, verifier, info)
    originals, keyed_pixels = run.pixels(run.covers), run.pixels(keyed)
    report = {
        "clean_accuracy": accuracy(clean, data.x_test, data.y_test),
        "accuracy": accuracy(model, data.x_test, data.y_test),
        "wm_score": verdict.score,
        "threshold": config.threshold,
        "null_tail": verdict.details["null_tail"],
        "clean_reference_wm_score": verify(clean, key, verifier, info).score,
        "cover_accuracy": accuracy(model, run.covers, run.cover_labels.cpu()),
        "key_ssim": float(ssim(originals, keyed_pixels).mean()),
        "key_ssim_min": float(ssim(originals, keyed_pixels).min()),
        "key_mse": float((originals - keyed_pixels).pow(2).mean()),
        "logo_source": source,
        "seconds": time.perf_counter() - started,
    }
    return Watermarked(model, verifier, info, report)


SCHEME = register_scheme(
    Scheme(
        name=NAME,
        summary="key samples from an encoder (logo + cover) hidden from a discriminator, answered with key targets",
        paper="Li, Hu, Zhang, Guo: How to Prove Your Model Belongs to You (blind watermark)",
        config=Config,
        embed=embed,
        verify=verify,
        control=control,
        quick={"epochs": 24, "freeze_fraction": 0.35},
    )
)
