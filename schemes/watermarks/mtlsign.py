"""MTLSign embedding (Li, Yang, Wang, Liew): the watermark as an extra binary task, eq. (7)-(10).

    L2(W) = Σ_{D_primary} l(M_WM(x), y) + Σ_{D_WM} l_WM(f_WM(x), y) + λ1·R_func(W) + λ2·R_DA(W)

* R_func(W) = ‖W − W0‖²₂ (eq. 8) keeps the watermarked backbone near the clean one (W0).
* R_DA(W) = Σ_{W_t ← tune(W) on D'_primary} Σ_{D_WM} l_WM(f_WM^{W_t}(x), y) (eq. 9). Choice (the
  paper leaves open how W_t is obtained): *first-order, simulated tuning*. Every `da_every`
  embedding epochs the owner runs `da_attacks` fine-tunes (`da_epochs` each) of a copy of the
  current model on D'_primary (10 % of the training data, Adam, the clean training's learning rate
  times each of `da_lr_scales`) and keeps the parameter shifts Δ = W_t − W. Until the next
  refresh R_DA is the watermark loss at W + Δ, with ∂W_t/∂W taken as the identity (Δ constant):
  the branch learns to classify D_WM under the kinds of drift an adversary's tuning causes — the
  "data augmentation in the parameter space" reading of §3.2.
* Both the backbone and cWM are trained; only the backbone with its classifier is published.
* Fine-tuning the owner's own model (`embed(..., clean=given)`, `wmnode embed --model`): the paper
  trains the clean model and then minimises L2 from its weights W0; here W0 is the given model (the
  clean training is skipped and the given model is the fidelity baseline), and eq. (10) is minimised
  from it as above. The head reads the first three stages any architecture has (`schemes.zoo.wm_taps`).
  Batch norms, which the paper's backbones lack, stay in eval mode while the branch reads D_WM
  (`_norms_frozen`): mixing QR batches into their statistics drops a fine-tuned ResNet to chance;
  and their statistics are taken again with the final weights when the embedding ends.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from contracts.errors import InfoError, SchemeError, ZooError
from mtlsign import verify as algorithm1
from mtlsign.bound import PAPER_GUESS_ACCURACY_MAX
from mtlsign.dwm import WatermarkSet, build_dwm
from mtlsign.head import WatermarkHead, head_input_size, tap_features
from mtlsign.pikey import key_sequence
from mtlsign.verify import Verdict, WatermarkInfo, branch_accuracy
from schemes.data.dataset import Dataset
from schemes.models.zoo import check_state, wm_taps
from schemes.training.distributed import broadcast_modules
from schemes.training.loops import (
    Labelled,
    Progress,
    accuracy,
    autocast,
    recalibrate_norms,
    step,
    stream,
    train_classifier,
)
from schemes.training.resume import epochs as resumable
from schemes.watermarks.base import Scheme, Suspect, Watermarked, register_scheme, require_module


@dataclass(frozen=True)
class Config:
    n: int = 600
    gamma: float = 0.7
    clean_epochs: int = 30
    embed_epochs: int = 60
    lr: float = 1e-3
    batch_size: int = 64
    wm_batch_size: int = 64
    lambda_func: float = 0.005
    lambda_da: float = 1.0
    da_fraction: float = 0.1
    da_attacks: int = 3
    da_epochs: int = 20
    da_lr_scales: tuple[float, ...] = (1.0, 3.0, 10.0)
    da_every: int = 3
    hidden: int = 256
    pool: int = 4
    seed: int = 0


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def _simulated_shifts(
    model: nn.Module, data: Dataset, subset: torch.Tensor, config: Config, generator: torch.Generator
) -> list[dict[str, torch.Tensor]]:
    """Δ = W_t − W for `da_attacks` simulated fine-tunes of the current model on D'_primary."""
    start, shifts = _params(model), []
    for i in range(config.da_attacks):
        scale = config.da_lr_scales[i % len(config.da_lr_scales)]
        tuned = train_classifier(
            copy.deepcopy(model),
            data.x_train,
            data.y_train,
            epochs=config.da_epochs,
            lr=config.lr * scale,
            batch_size=config.batch_size,
            generator=generator,
            subset=subset,
        )
        shifts.append({k: v.detach() - start[k] for k, v in tuned.named_parameters()})
    return shifts


@contextlib.contextmanager
def _norms_frozen(model: nn.Module) -> Iterator[None]:
    """Batch norms in eval mode while the branch reads D_WM (choice: the paper's backbones have none).
    The branch then sees D_WM through the statistics of D_primary, as verification does, and QR
    batches never move those statistics: mixed in, they leave a fine-tuned network's task accuracy
    at chance."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    for norm in norms:
        norm.eval()
    try:
        yield
    finally:
        for norm in norms:
            norm.train()


def _wm_loss(
    model: nn.Module,
    head: WatermarkHead,
    info: WatermarkInfo,
    x: torch.Tensor,
    y: torch.Tensor,
    params: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    with _norms_frozen(model):
        _, taps = tap_features(model, info.taps, x, params)
    return nn.functional.cross_entropy(head(taps), y)


def _embed_epoch(
    model: nn.Module,
    head: WatermarkHead,
    info: WatermarkInfo,
    data: Dataset,
    dwm: WatermarkSet,
    w0: dict[str, torch.Tensor],
    shifts: list[dict[str, torch.Tensor]],
    optimiser: torch.optim.Optimizer,
    config: Config,
    generator: torch.Generator,
) -> dict[str, float]:
    model.train()
    head.train()
    n_wm, device = dwm.x.shape[0], dwm.x.device
    totals = {"primary": 0.0, "wm": 0.0, "func": 0.0, "da": 0.0}
    primary_batches = stream(Labelled(data.x_train, data.y_train), config.batch_size, generator, device=device)
    for number, (images, labels) in enumerate(primary_batches):
        wm_index = torch.randint(0, n_wm, (config.wm_batch_size,), generator=generator)
        with autocast(device):
            primary = nn.functional.cross_entropy(model(images), labels)
            wm = _wm_loss(model, head, info, dwm.x[wm_index], dwm.y[wm_index])
        params = dict(model.named_parameters())
        func = sum(((params[k] - w0[k]) ** 2).sum() for k in w0)  # R_func in full precision
        da = torch.zeros((), device=device)
        with autocast(device):
            if shifts and config.lambda_da:
                shift = shifts[number % len(shifts)]
                moved = {k: v + shift[k] for k, v in params.items()}
                da = _wm_loss(model, head, info, dwm.x[wm_index], dwm.y[wm_index], moved)
        loss = primary + wm + config.lambda_func * func + config.lambda_da * da
        step(optimiser, loss, model, head)
        for name, value in (("primary", primary), ("wm", wm), ("func", func), ("da", da)):
            totals[name] += float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
    return totals


def embed(
    model: nn.Module,
    data: Dataset,
    key: bytes,
    config: Config = Config(),
    progress: Progress | None = None,
    *,
    clean: nn.Module | None = None,
) -> Watermarked:
    """Train the clean model (W0), then minimise L2 of eq. (10); returns the model, cWM and info.
    With `clean` (the owner's trained model, whose weights `model` starts from) the clean training
    is skipped: W0 is the given model."""
    started = time.perf_counter()
    device = next(model.parameters()).device  # CUDA or CPU: whichever the caller put the model on
    generator = torch.Generator().manual_seed(config.seed)
    if clean is None:
        train_classifier(
            model,
            data.x_train,
            data.y_train,
            epochs=config.clean_epochs,
            lr=config.lr,
            batch_size=config.batch_size,
            generator=generator,
            name="mtlsign/clean",
        )
    clean_accuracy = accuracy(model if clean is None else clean, data.x_test, data.y_test)
    w0 = _params(model)
    taps = wm_taps(model, data.input_shape)
    info = WatermarkInfo(
        config.n, config.gamma, taps, config.pool, config.hidden, data.input_shape, tuple(data.mean), tuple(data.std)
    )
    head = WatermarkHead(head_input_size(model, taps, data.input_shape, config.pool), config.hidden, config.pool)
    head.to(device)
    broadcast_modules(head)  # under torchrun, every rank's cWM starts as rank 0's
    dwm = build_dwm(key, config.n, data.input_shape, data.mean, data.std, device=device)
    _minimise_l2(model, head, info, data, dwm, w0, config, generator, progress)
    deviation = torch.cat([(p.detach() - w0[k]).abs().flatten() for k, p in model.named_parameters()])
    report = {
        "clean_accuracy": clean_accuracy,
        "accuracy": accuracy(model, data.x_test, data.y_test),
        "wm_score": branch_accuracy(model, head, info, dwm),
        "threshold": config.gamma,
        "mean_parameter_deviation": float(deviation.mean()),
        "seconds": time.perf_counter() - started,
    }
    verifier = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    return Watermarked(model, verifier, info.to_json(), report)


def _minimise_l2(
    model: nn.Module,
    head: WatermarkHead,
    info: WatermarkInfo,
    data: Dataset,
    dwm: WatermarkSet,
    w0: dict[str, torch.Tensor],
    config: Config,
    generator: torch.Generator,
    progress: Progress | None,
) -> None:
    """Eq. (10) over `embed_epochs`, R_DA's simulated shifts refreshed every `da_every` epochs on
    D'_primary; the model and cWM end in eval mode."""
    subset = torch.randperm(data.x_train.shape[0], generator=generator)[
        : max(1, int(config.da_fraction * data.x_train.shape[0]))
    ]
    optimiser = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=config.lr)
    shifts: list[dict[str, torch.Tensor]] = []
    state = {"model": model, "head": head, "optimiser": optimiser, "generator": generator, "shifts": shifts}
    for epoch in resumable("mtlsign/embed", config.embed_epochs, state, next(model.parameters()).device):
        if config.lambda_da and epoch % config.da_every == 0:
            shifts[:] = _simulated_shifts(model, data, subset, config, generator)
        totals = _embed_epoch(model, head, info, data, dwm, w0, shifts, optimiser, config, generator)
        if progress is not None:
            progress(epoch + 1, config.embed_epochs, f"wm loss {totals['wm']:.2f} da {totals['da']:.2f}")
    # Batch norms (none in the paper's backbones) kept statistics of weights that moved at every
    # step; taken again over D_primary with the final weights, a fine-tuned ResNet-18's accuracy came
    # back from 0.65 to 0.89 (the given model's: 0.91) and its branch still read D_WM at 1.0.
    recalibrate_norms(model, data.x_train, data.y_train, config.batch_size)
    model.eval()
    head.eval()


def load_head(model: nn.Module, verifier: Mapping[str, torch.Tensor], info: WatermarkInfo) -> WatermarkHead:
    """cWM from its weights, shaped for `model` (the suspect) and `info`."""
    head = WatermarkHead(head_input_size(model, info.taps, info.input_shape, info.pool), info.hidden, info.pool)
    try:
        check_state(head.state_dict(), verifier)
    except ZooError as exc:
        raise SchemeError(f"mtlsign verifier: {exc}") from exc
    head.load_state_dict(dict(verifier))
    return head.to(next(model.parameters()).device).eval()


def verify(suspect: Suspect, key: bytes, verifier: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> Verdict:
    """Algorithm 1 on a white-box suspect: f_WM = cWM on the suspect's taps, D_WM from the key."""
    model = require_module("mtlsign", suspect)
    try:
        parsed = WatermarkInfo.from_json(info)
    except InfoError as exc:
        raise SchemeError(str(exc)) from exc
    taps = wm_taps(model, parsed.input_shape)
    if taps != parsed.taps:
        # cWM reads the early layers the zoo names (§3.2): a claimant may not point it at others.
        raise SchemeError(f"mtlsign info: taps {list(parsed.taps)} are not this architecture's {list(taps)}")
    verdict = algorithm1.verify(model, key, load_head(model, verifier, parsed), parsed)
    # Null (§4.1, appendix A): a watermark branch that ignores the key guesses each label bit right
    # with probability at most 0.575, the top of the range the paper saw for random cWM heads, or
    # the share of the key's majority label if higher: a head that answers one label everywhere
    # (what a head fitted to other backbones does on a new one) scores exactly that share.
    labels = key_sequence(key, parsed.n).labels
    majority = max(float(labels.mean()), 1.0 - float(labels.mean()))
    details = {**verdict.details, "chance_rate": max(PAPER_GUESS_ACCURACY_MAX, majority), "label_majority": majority}
    return Verdict(verdict.passed, verdict.score, verdict.threshold, details)


SCHEME = register_scheme(
    Scheme(
        name="mtlsign",
        summary="extra binary task read by a head on early layers; QR-code key samples",
        paper="Li, Yang, Wang, Liew: MTLSign",
        config=Config,
        embed=embed,
        verify=verify,
        bound="chernoff",
        key_inputs=True,
        quick={"n": 600, "clean_epochs": 8, "embed_epochs": 40, "da_attacks": 1, "da_epochs": 3},
    )
)
