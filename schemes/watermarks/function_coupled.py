"""Function-coupled watermarks (Wen, Li, Jiang, Xu): fused triggers (Eq. 1–3), masking (Eq. 4–6), fine-tuning (Eq. 7–8).

Algorithm 1, with these readings of what the paper leaves open (and three deviations, marked):

* Triggers (§4.1, Eq. 1): images fused from training instances of two classes b1, b2, all
  labelled t ∉ {b1, b2}. Invisible fusion (Eq. 3b, default): r·X_b1^p + (1 − r)·X_b2^q, r = 0.5
  (§5.3–5.4), on the normalised tensors (normalising and resizing are affine, so this equals
  fusing raw images). Direct fusion (Eq. 2b, `mode="direct"`) yields 2W×2H; here each base is
  average-pooled to half the input size, b1 top-left, b2 bottom-right, the rest white (pixel 1).
* Masking (§4.2.2): one mask per epoch (Alg. 1 line 4), M ~ Bernoulli(1 − p) on the weight of
  every Conv2d and Linear layer but the zoo's `classifier`; biases unmasked. The paper calls p
  "the ratio of the preserved elements", but 1/(1 − p) keeps the expectation only if p is the
  dropped ratio: p is the drop probability (0.1). The Eq. 4 forward (W ⊙ M)/(1 − p) goes
  through `torch.func.functional_call`, so autograd yields Eq. 6's gradient (∂L/∂W ⊙ M)/(1 − p).
  Inference is Eq. 5: plain weights, nothing to strip.
* Deviation: Adam (lr 1e-3, batch 64, as the clean model) instead of Eq. 6's SGD step. Adam's
  moments would still move masked entries, so each step restores them: only kept weights move.
* Training-time fine-tuning (§4.3): after each epoch (Alg. 1 lines 10–11) one plain step of
  Eq. 7, η' = 1e-4, on Eq. 8's mean CE over all of X_ft (10 % of the training images, true
  labels), with the epoch's mask.
* Training (Alg. 1) starts from the caller's freshly initialised model, on the training set
  plus n_train triggers. `clean_accuracy` is a copy of the same initial model trained with
  `train_classifier` for the same epochs.
* Counts: n_train = 200 (~12 % of digits' 1,438 training images, far above the paper's "< 1 %":
  14 triggers are not learnt reliably); the first n_verify = 90 (§4.4) verify and are trained on.
* Deviation, parts (version 2): the paper gives a key one triple (t, b1, b2) and all K_wm
  triggers to it (Eq. 1). A watermark generalises over its classes, not its pairs, and a plain
  model labels some pairs' blends one class anyway, so a key independent of the suspect passes
  whenever its one triple is one the suspect answers so: at least 1/360 of keys on 10 classes,
  whatever n, which no community's bound admits. Here a key has PARTS = 5 triples with distinct
  base pairs, and Eq. 1 is applied to each with a fifth of the triggers (n_train = 200: 40 each;
  n_verify = 90: 18 each), labelled its own t; a key independent of the suspect passes only if
  about all five of its triples are ones the suspect answers so (`survey`).
* Secrets, from the key (prefix "function-coupled"): candidate k's part j is (t, b1, b2) = the
  first three entries of the permutation "classes/k/i" for the i-th i = 0, 1, … whose base pair
  no earlier part has; its distinct base pairs from "pairs/k/j" (uniform integers into the product
  of the b1 and b2 pools, repeats skipped, prefix-stable, so the verification triggers are the
  first of the training ones); X_ft from "ft"; batch order from "order"; masks from "masks".
* Deviation, screening: a clean model may already send a pair's blends to one class (digits:
  → 8). Embed takes the first candidate k < CANDIDATES (4, `contracts.infos.FunctionCoupledInfo`)
  each of whose parts' verification triggers the clean reference labels t at a rate below
  max_clean_rate (0.3) and records k in `info`. The claimant thus chooses among CANDIDATES sets of
  its key: a vote's bound counts every one (`choices` in the verdict's details; the judge
  multiplies the bound by it, DESIGN §6.1 rule 4).
* Verification (§4.4): the share of the 90 triggers the suspect labels with their part's t (labels
  only); the paper names no threshold: 0.9 here.
* Triggers from the key alone (DESIGN §6.1 rule 1): the verifier artifact is empty. Every node
  rebuilds the 90 triggers from the key over the community's copy of the data (`schemes.community`:
  digits, split with the community's seed), so a claimant cannot ship generic inputs; `embed`
  refuses data that no node could rebuild them from, before any training. `info` records the
  data set, its split and the SHA-256 of the training tensors; a node whose copy hashes otherwise
  raises (an `error` vote), never a wrong verdict.
* Fine-tuning the owner's own model (`clean=given`): Algorithm 1 starts from the given weights
  instead of a fresh initialisation (lines 3-12 unchanged: masks, X_ft, triggers); the given model is
  the clean model the triples are screened against and the fidelity baseline.

This module trains (masking, fine-tuning, screening) and embeds; the key's triples and fused
triggers are `schemes.watermarks._function_coupled_triggers`, what a node runs to verify (and the
survey) is `schemes.watermarks._function_coupled_verification`, and the info's schema is
`contracts.infos.FunctionCoupledInfo`.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from contracts.datasets import COMMUNITY_SPLIT_SEED, COMMUNITY_TEST_FRACTION
from contracts.errors import SchemeError
from contracts.infos import FunctionCoupledInfo
from mtlsign.streams import key_generator, key_permutation
from schemes.data.community import require_community_data
from schemes.data.dataset import Dataset
from schemes.training.loops import (
    Joined,
    Labelled,
    Progress,
    Source,
    accuracy,
    autocast,
    recalibrate_norms,
    step,
    stream,
    sync_gradients,
    train_classifier,
)
from schemes.training.resume import epochs as resumable
from schemes.watermarks._function_coupled_triggers import (
    NAME,
    PARTS,
    Triple,
    base_pairs,
    build_triggers,
    candidate_triples,
    dataset_digest,
    fuse,
    part_sizes,
)
from schemes.watermarks._function_coupled_verification import (
    SURVEY_BLENDS,
    SURVEY_PAIRS,
    pooled_tail,
    survey,
    verify,
)
from schemes.watermarks.base import Scheme, Watermarked, predict_labels, register_scheme

__all__ = [
    "Config",
    "NAME",
    "PARTS",
    "SCHEME",
    "SURVEY_BLENDS",
    "SURVEY_PAIRS",
    "base_pairs",
    "build_triggers",
    "candidate_triples",
    "dataset_digest",
    "draw_masks",
    "embed",
    "finetune_step",
    "fuse",
    "masked_forward",
    "masked_step",
    "masked_weight_names",
    "part_sizes",
    "pooled_tail",
    "survey",
    "verify",
]

_FT_CHUNK = 256


@dataclass(frozen=True)
class Config:
    mode: str = "invisible"
    r: float = 0.5
    n_train: int = 200
    n_verify: int = 90
    epochs: int = 30
    lr: float = 1e-3
    batch_size: int = 64
    p: float = 0.1
    lr_ft: float = 1e-4
    ft_fraction: float = 0.1
    threshold: float = 0.9
    max_clean_rate: float = 0.3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in FunctionCoupledInfo.MODES or not 0 <= self.r <= 1:
            raise ValueError(f"need mode in {FunctionCoupledInfo.MODES} and 0 ≤ r ≤ 1")
        if not 1 <= self.n_verify <= self.n_train or self.epochs < 1 or self.batch_size < 1:
            raise ValueError("need 1 ≤ n_verify ≤ n_train, epochs ≥ 1 and batch_size ≥ 1")
        if not 0 <= self.p < 1 or not 0 < self.ft_fraction <= 1 or self.lr <= 0 or self.lr_ft < 0:
            raise ValueError("need 0 ≤ p < 1, 0 < ft_fraction ≤ 1, lr > 0 and lr_ft ≥ 0")
        if not 0 < self.threshold <= 1 or not 0 < self.max_clean_rate <= 1:
            raise ValueError("need 0 < threshold ≤ 1 and 0 < max_clean_rate ≤ 1")


def masked_weight_names(model: nn.Module) -> list[str]:
    """The weights Eq. 4 masks: every Conv2d and Linear layer but the classifier."""
    head = getattr(model, "classifier", None)
    return [
        f"{path}.weight"
        for path, module in model.named_modules()
        if isinstance(module, nn.Conv2d | nn.Linear) and not (head and (path == head or path.startswith(f"{head}.")))
    ]


def draw_masks(model: nn.Module, names: list[str], p: float, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """One Bernoulli(1 − p) keep-mask per weight, drawn on the CPU, then moved to the weight's device."""
    params = dict(model.named_parameters())
    return {n: (torch.rand(params[n].shape, generator=generator) >= p).to(params[n].device) for n in names}


def masked_forward(model: nn.Module, masks: Mapping[str, torch.Tensor], p: float, x: torch.Tensor) -> torch.Tensor:
    """Eq. 4: the forward pass with W replaced by (W ⊙ M)/(1 − p)."""
    params = dict(model.named_parameters())
    scaled = {n: params[n] * m / (1 - p) for n, m in masks.items()}
    out: torch.Tensor = functional_call(model, scaled, (x,))
    return out


def masked_step(
    model: nn.Module,
    masks: Mapping[str, torch.Tensor],
    p: float,
    optimiser: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
) -> float:
    """One Eq. 6 update (by `optimiser`); masked entries are restored so that only kept weights move."""
    params = dict(model.named_parameters())
    before = {n: params[n].detach().clone() for n in masks}
    with autocast(x.device):
        loss = F.cross_entropy(masked_forward(model, masks, p, x), y)
    step(optimiser, loss, model)
    with torch.no_grad():
        for n, m in masks.items():
            params[n].copy_(torch.where(m, params[n], before[n]))
    return float(loss.detach())


def finetune_step(model: nn.Module, masks: Mapping[str, torch.Tensor], p: float, ft: Source, lr: float) -> float:
    """Eq. 7 with Eq. 8's loss: one plain gradient step on the mean CE over all of X_ft (streamed in
    chunks; under torchrun each rank sums its share and the sums are added)."""
    model.zero_grad(set_to_none=True)
    total, n = 0.0, len(ft)
    device = next(model.parameters()).device
    for x, y in stream(ft, _FT_CHUNK, shuffle=False, device=device):
        with autocast(device):
            loss = F.cross_entropy(masked_forward(model, masks, p, x), y, reduction="sum") / n
        loss.backward()  # type: ignore[no-untyped-call]
        total += float(loss.detach())
    sync_gradients(model, average=False)
    with torch.no_grad():
        for param in model.parameters():
            if param.grad is not None:
                param.sub_(lr * param.grad)
    model.zero_grad(set_to_none=True)
    return total


def _train_watermarked(
    model: nn.Module,
    train: Source,
    ft: Source,
    key: bytes,
    config: Config,
    progress: Progress | None,
) -> None:
    """Algorithm 1 lines 3–12 on the training set ∪ triggers and X_ft."""
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    order, mask_draws = key_generator(key, NAME, "order"), key_generator(key, NAME, "masks")
    names = masked_weight_names(model)
    model.train()
    state = {"model": model, "optimiser": optimiser, "order": order, "masks": mask_draws}
    for epoch in resumable("function-coupled/train", config.epochs, state):
        masks = draw_masks(model, names, config.p, mask_draws)  # line 4: one mask per epoch
        device = next(model.parameters()).device
        total = sum(
            masked_step(model, masks, config.p, optimiser, x, y)
            for x, y in stream(train, config.batch_size, order, device=device)
        )
        ft_loss = finetune_step(model, masks, config.p, ft, config.lr_ft)  # lines 10–11
        if progress is not None:
            progress(config.epochs + epoch + 1, 2 * config.epochs, f"watermark: loss {total:.2f} ft {ft_loss:.3f}")
    model.eval()


def _screen(key: bytes, clean: nn.Module, data: Dataset, config: Config) -> tuple[int, list[Triple], float]:
    """The first candidate each of whose parts' verification triggers the clean model rarely labels t."""
    sizes = part_sizes(config.n_verify)
    for candidate in range(FunctionCoupledInfo.CANDIDATES):
        triples = candidate_triples(key, data.num_classes, candidate)
        wm, labels = build_triggers(key, data, triples, config.n_verify, config.mode, config.r, candidate)
        hits = (predict_labels(clean, wm) == labels).double()
        rate = max(float(part.mean()) for part in torch.split(hits, sizes))
        if rate < config.max_clean_rate:
            return candidate, triples, rate
    raise SchemeError(
        f"function-coupled: a clean model already labels the triggers of a part of each of the "
        f"{FunctionCoupledInfo.CANDIDATES} candidates of this key with its target ≥ {config.max_clean_rate}; "
        "embed under another nonce"
    )


def _source(data: Dataset) -> dict[str, Any]:
    """The data set's name, the community's split of it and its digest; refuses data no node holds."""
    require_community_data(data, NAME)
    return {
        "dataset": data.name,
        "split_seed": COMMUNITY_SPLIT_SEED,
        "test_fraction": COMMUNITY_TEST_FRACTION,
        "dataset_sha256": dataset_digest(data),
    }


def _info(data: Dataset, config: Config, candidate: int, source: dict[str, Any]) -> dict[str, Any]:
    return {
        "scheme": NAME, "version": FunctionCoupledInfo.VERSION, "mode": config.mode, "r": config.r,
        "n_train": config.n_train, "n_verify": config.n_verify, "threshold": config.threshold, "candidate": candidate,
        "num_classes": data.num_classes, "input_shape": list(data.input_shape), "mean": list(data.mean),
        "std": list(data.std), **source,
    }  # fmt: skip


def embed(
    model: nn.Module,
    data: Dataset,
    key: bytes,
    config: Config = Config(),
    progress: Progress | None = None,
    *,
    clean: nn.Module | None = None,
) -> Watermarked:
    """Clean reference, screening, then Algorithm 1 from the same initial weights."""
    started, cpu_started = time.perf_counter(), time.process_time()
    source = _source(data)  # before any training: refuse data no verifier could rebuild
    if clean is None:
        clean = train_classifier(
            copy.deepcopy(model), data.x_train, data.y_train, epochs=config.epochs, lr=config.lr,
            batch_size=config.batch_size,
            generator=torch.Generator().manual_seed(config.seed),
            progress=None if progress is None else lambda i, _, m: progress(i, 2 * config.epochs, f"clean: {m}"),
            name="function-coupled/clean",
        )  # fmt: skip
    candidate, triples, clean_rate = _screen(key, clean, data, config)
    triggers, targets = build_triggers(key, data, triples, config.n_train, config.mode, config.r, candidate)
    n = int(data.y_train.shape[0])
    ft = torch.from_numpy(key_permutation(key, NAME, "ft", n)[: math.ceil(config.ft_fraction * n)])
    marked = Labelled(triggers, targets)
    train = Joined([Labelled(data.x_train, data.y_train), marked])
    _train_watermarked(model, train, Labelled(data.x_train, data.y_train, ft), key, config, progress)
    # Batch norms (none in the paper's networks) saw masked, rescaled weights all along: their
    # statistics are taken again with the weights the model is published with.
    recalibrate_norms(model, data.x_train, data.y_train, config.batch_size)
    info = _info(data, config, candidate, source)
    verifier: dict[str, torch.Tensor] = {}
    verdict = verify(model, key, verifier, info)
    report = {
        "clean_accuracy": accuracy(clean, data.x_test, data.y_test),
        "accuracy": accuracy(model, data.x_test, data.y_test),
        "wm_score": verdict.score,
        "threshold": config.threshold,
        "train_trigger_score": float((predict_labels(model, triggers) == targets).double().mean()),
        "clean_model_score": clean_rate,
        "candidate": candidate,
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu_started,
    }
    return Watermarked(model, verifier, info, report)


SCHEME = register_scheme(
    Scheme(
        name=NAME,
        summary="triggers fused from two classes' training images, labelled t; masked training and fine-tuning",
        paper="Wen, Li, Jiang, Xu: function-coupled watermarks",
        config=Config,
        embed=embed,
        verify=verify,
        survey=survey,
        quick={"epochs": 20},
    )
)
