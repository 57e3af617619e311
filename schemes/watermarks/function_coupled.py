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
  → 8). Embed takes the first candidate k < MAX_CANDIDATES each of whose parts' verification
  triggers the clean reference labels t at a rate below max_clean_rate (0.3) and records k in
  `info`. The claimant thus chooses among MAX_CANDIDATES sets of its key: a vote's bound counts
  every one (`choices` in the verdict's details; the judge multiplies the bound by it, DESIGN §6.1
  rule 4).
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
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from contracts.bounds import rate_upper_bound
from contracts.datasets import COMMUNITY_SPLIT_SEED, COMMUNITY_TEST_FRACTION
from contracts.errors import DataError, SchemeError
from contracts.infos import FUNCTION_COUPLED_SURVEY_BLENDS, FUNCTION_COUPLED_SURVEY_PAIRS
from mtlsign.streams import key_generator, key_integers, key_permutation
from mtlsign.verify import Verdict
from schemes.data.community import claim_data, require_community_data
from schemes.data.community import dataset_digest as community_digest
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
from schemes.watermarks.base import Scheme, Suspect, Watermarked, predict_labels, register_scheme

NAME = "function-coupled"
VERSION = 2
#: Candidate sets of triples a key may use (screening); verify refuses a larger index.
MAX_CANDIDATES = 4
#: Triples (t, b1, b2) per key, each with its share of the triggers (version 2; see the module text).
PARTS = 5
#: Data sets every node can load without a local path, so verify can rebuild the triggers.
_REBUILDABLE = ("digits",)
_FT_CHUNK = 256
_MODES = ("invisible", "direct")
_INFO_FIELDS = frozenset(
    {"scheme", "version", "mode", "r", "n_train", "n_verify", "threshold", "candidate", "num_classes",
     "input_shape", "mean", "std", "dataset", "split_seed", "test_fraction", "dataset_sha256"}
)  # fmt: skip

Triple = tuple[int, int, int]  # (t, b1, b2)


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
        if self.mode not in _MODES or not 0 <= self.r <= 1:
            raise ValueError(f"need mode in {_MODES} and 0 ≤ r ≤ 1")
        if not 1 <= self.n_verify <= self.n_train or self.epochs < 1 or self.batch_size < 1:
            raise ValueError("need 1 ≤ n_verify ≤ n_train, epochs ≥ 1 and batch_size ≥ 1")
        if not 0 <= self.p < 1 or not 0 < self.ft_fraction <= 1 or self.lr <= 0 or self.lr_ft < 0:
            raise ValueError("need 0 ≤ p < 1, 0 < ft_fraction ≤ 1, lr > 0 and lr_ft ≥ 0")
        if not 0 < self.threshold <= 1 or not 0 < self.max_clean_rate <= 1:
            raise ValueError("need 0 < threshold ≤ 1 and 0 < max_clean_rate ≤ 1")


def candidate_triples(key: bytes, num_classes: int, candidate: int) -> list[Triple]:
    """Candidate `candidate`'s PARTS triples (t, b1, b2): three distinct classes each, uniform
    (Eq. 1b, §4.1.2), no two with the same base pair (their blends would need two labels)."""
    if num_classes < 4:
        raise SchemeError(f"function-coupled needs at least 4 classes for {PARTS} base pairs, got {num_classes}")
    triples: list[Triple] = []
    pairs: set[frozenset[int]] = set()
    for draw in range(64 * PARTS):  # 4 classes: 6 pairs, 5 wanted; a miss is ≤ 5/6 a draw
        t, b1, b2 = (int(v) for v in key_permutation(key, NAME, f"classes/{candidate}/{draw}", num_classes)[:3])
        if frozenset((b1, b2)) not in pairs:
            pairs.add(frozenset((b1, b2)))
            triples.append((t, b1, b2))
            if len(triples) == PARTS:
                return triples
    raise SchemeError(f"function-coupled: key gives fewer than {PARTS} distinct base pairs")  # pragma: no cover


def part_sizes(n: int) -> list[int]:
    """How n triggers split over the parts: the first n mod PARTS parts take one more."""
    return [n // PARTS + (j < n % PARTS) for j in range(PARTS)]


def _distinct(key: bytes, name: str, bound: int, n: int) -> list[int]:
    """The first n distinct values of the stream's uniform integers in [0, bound)."""
    count = n
    while True:
        seen = dict.fromkeys(int(v) for v in key_integers(key, NAME, name, bound, count))
        if len(seen) >= n:
            return list(seen)[:n]
        count *= 2


def base_pairs(
    key: bytes, y_train: torch.Tensor, triple: Triple, n: int, stream_name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (p, q) into the training set of n distinct base pairs of classes b1 and b2."""
    pool1, pool2 = ((y_train.cpu() == b).nonzero().flatten() for b in triple[1:])
    bound = pool1.shape[0] * pool2.shape[0]
    if n > bound:
        raise SchemeError(f"function-coupled: classes {triple[1:]} give {bound} base pairs, {n} are needed")
    picks = torch.tensor(_distinct(key, f"pairs/{stream_name}", bound, n), dtype=torch.int64)
    return pool1[picks // pool2.shape[0]], pool2[picks % pool2.shape[0]]


def fuse(
    first: torch.Tensor, second: torch.Tensor, mode: str, r: float, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """Eq. 3b (invisible) or Eq. 2b at the input size (direct) on normalised (N, C, H, W) images."""
    if mode == "invisible":
        return r * first + (1 - r) * second
    channels, height, width = first.shape[1:]
    m = torch.tensor(mean, dtype=torch.float32).view(1, channels, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, channels, 1, 1)
    top, left = height // 2, width // 2
    out = torch.ones(first.shape[0], channels, height, width)  # white quadrants, in pixel units
    out[:, :, :top, :left] = F.adaptive_avg_pool2d(first * s + m, (top, left))
    out[:, :, top:, left:] = F.adaptive_avg_pool2d(second * s + m, (height - top, width - left))
    return (out - m) / s


def blends(key: bytes, data: Dataset, triple: Triple, n: int, mode: str, r: float, stream_name: str) -> torch.Tensor:
    """n fused images of the triple's base classes (CPU float32, normalised), bit for bit from the key."""
    p, q = base_pairs(key, data.y_train, triple, n, stream_name)
    x = data.x_train
    return fuse(x[p].cpu(), x[q].cpu(), mode, r, data.mean, data.std).contiguous()


def build_triggers(
    key: bytes, data: Dataset, triples: list[Triple], n: int, mode: str, r: float, candidate: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The candidate's first n triggers and their labels, part by part (each part prefix-stable)."""
    parts = [
        blends(key, data, triple, size, mode, r, f"{candidate}/{j}")
        for j, (triple, size) in enumerate(zip(triples, part_sizes(n), strict=True))
    ]
    labels = [torch.full((x.shape[0],), triple[0], dtype=torch.int64) for triple, x in zip(triples, parts, strict=True)]
    return torch.cat(parts), torch.cat(labels)


def dataset_digest(data: Dataset[Any]) -> str:
    """SHA-256 of the training tensors as loaded (float32 images, int64 labels); of an image folder,
    what `schemes.community.dataset_digest` hashes (its files' manifest, shape and normalisation)."""
    if not isinstance(data.x_train, torch.Tensor):
        return community_digest(data)
    digest = hashlib.sha256(data.x_train.cpu().to(torch.float32).contiguous().numpy().tobytes())
    digest.update(data.y_train.cpu().to(torch.int64).contiguous().numpy().tobytes())
    return digest.hexdigest()


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
    for candidate in range(MAX_CANDIDATES):
        triples = candidate_triples(key, data.num_classes, candidate)
        wm, labels = build_triggers(key, data, triples, config.n_verify, config.mode, config.r, candidate)
        hits = (predict_labels(clean, wm) == labels).double()
        rate = max(float(part.mean()) for part in torch.split(hits, sizes))
        if rate < config.max_clean_rate:
            return candidate, triples, rate
    raise SchemeError(
        f"function-coupled: a clean model already labels the triggers of a part of each of the "
        f"{MAX_CANDIDATES} candidates of this key with its target ≥ {config.max_clean_rate}; embed under another nonce"
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
        "scheme": NAME, "version": VERSION, "mode": config.mode, "r": config.r, "n_train": config.n_train,
        "n_verify": config.n_verify, "threshold": config.threshold, "candidate": candidate,
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


def _is_int(value: object, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def _is_number(value: object, low: float, high: float) -> bool:
    return type(value) in (int, float) and low <= value <= high  # type: ignore[operator]  # NaN fails


def _require(ok: bool, info: Mapping[str, Any], name: str, rule: str) -> None:
    if not ok:
        raise SchemeError(f"function-coupled info: {name} must be {rule}, got {info[name]!r}")


def _parse_info(info: Mapping[str, Any]) -> dict[str, Any]:
    """`info` checked field by field; any defect is a SchemeError naming the field."""
    if not isinstance(info, Mapping):
        raise SchemeError("function-coupled info must be a JSON object")
    missing, unknown = sorted(_INFO_FIELDS - set(info)), sorted(set(info) - _INFO_FIELDS)
    if missing or unknown:
        raise SchemeError(f"function-coupled info: missing fields {missing}, unknown fields {unknown}")
    _require(info["scheme"] == NAME, info, "scheme", repr(NAME))
    _require(info["version"] == VERSION and type(info["version"]) is int, info, "version", str(VERSION))
    _require(info["mode"] in _MODES, info, "mode", f"one of {', '.join(_MODES)}")
    _require(_is_number(info["r"], 0, 1), info, "r", "a number in [0, 1]")
    _require(_is_int(info["n_train"], 1, 10**6), info, "n_train", "an integer in [1, 1000000]")
    _require(_is_int(info["n_verify"], 1, info["n_train"]), info, "n_verify", "an integer in [1, n_train]")
    _require(_is_number(info["threshold"], 1e-9, 1), info, "threshold", "a number in (0, 1]")
    _require(_is_int(info["candidate"], 0, MAX_CANDIDATES - 1), info, "candidate", f"in [0, {MAX_CANDIDATES - 1}]")
    _require(_is_int(info["num_classes"], 4, 10**6), info, "num_classes", "an integer in [4, 1000000]")
    shape = info["input_shape"]
    ok = isinstance(shape, list) and len(shape) == 3 and all(_is_int(v, 1, 4096) for v in shape)
    _require(ok, info, "input_shape", "three integers in [1, 4096]")
    for name, low in (("mean", -1e6), ("std", 1e-12)):
        values = info[name]
        ok = isinstance(values, list) and len(values) == shape[0] and all(_is_number(v, low, 1e6) for v in values)
        _require(ok, info, name, f"{shape[0]} number(s), one per channel{', positive' * (name == 'std')}")
    _require(isinstance(info["dataset"], str) and 0 < len(info["dataset"]) <= 100, info, "dataset", "a name")
    digest = info["dataset_sha256"]
    ok = isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)
    _require(ok, info, "dataset_sha256", "64 lowercase hex digits")
    seed, fraction = info["split_seed"], info["test_fraction"]
    _require(seed is None or _is_int(seed, 0, 2**32 - 1), info, "split_seed", "null or an integer ≥ 0")
    _require(seed is not None or info["dataset"] not in _REBUILDABLE, info, "split_seed", "set for this data set")
    _require((seed is None) == (fraction is None), info, "test_fraction", "null exactly when split_seed is")
    _require(fraction is None or _is_number(fraction, 1e-9, 1 - 1e-9), info, "test_fraction", "in (0, 1)")
    return {**info, "input_shape": tuple(shape)}


def _community_copy(parsed: Mapping[str, Any]) -> Dataset:
    data = claim_data(parsed["dataset"], parsed["input_shape"], parsed["mean"], parsed["std"], NAME)
    if dataset_digest(data) != parsed["dataset_sha256"]:
        # This node's copy, or the claimant's digest: an `error` vote either way, never a wrong verdict.
        raise DataError(f"function-coupled: this node's copy of {parsed['dataset']!r} differs from the owner's")
    return data


def _rebuild(key: bytes, parsed: Mapping[str, Any], triples: list[Triple]) -> tuple[torch.Tensor, torch.Tensor]:
    """The key's verification triggers and labels over this node's copy of the owner's data."""
    if (parsed["split_seed"], parsed["test_fraction"]) != (COMMUNITY_SPLIT_SEED, COMMUNITY_TEST_FRACTION):
        raise SchemeError("function-coupled info: the triggers must come from the community's split of its data")
    data = _community_copy(parsed)
    return build_triggers(key, data, triples, parsed["n_verify"], parsed["mode"], parsed["r"], parsed["candidate"])


def verify(suspect: Suspect, key: bytes, verifier: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> Verdict:
    """§4.4: the authentication success rate, the share of the 90 triggers the suspect labels with
    their part's t."""
    parsed = _parse_info(info)
    if len(verifier):
        raise SchemeError("function-coupled verifier must be empty: the triggers come from the key, never the claimant")
    triples = candidate_triples(key, parsed["num_classes"], parsed["candidate"])
    threshold, n = parsed["threshold"], parsed["n_verify"]
    triggers, labels = _rebuild(key, parsed, triples)
    correct = predict_labels(suspect, triggers) == labels
    hits = int(correct.sum())
    # Null per answer: t is uniform over the K − 2 classes that are not bases, whatever a
    # key-independent model answers for the blends. Answers to one pair's blends are not
    # independent: `survey` measures that shared choice on the suspect.
    details = {"targets": [t[0] for t in triples], "bases": [list(t[1:]) for t in triples], "n": n,
               "target_answers": hits, "part_answers": [int(c.sum()) for c in torch.split(correct, part_sizes(n))],
               "chance_rate": 1 / (parsed["num_classes"] - 2), "choices": MAX_CANDIDATES}  # fmt: skip
    return Verdict(hits / n >= threshold, hits / n, threshold, details)


#: The survey's fresh blends per ordered base pair, and the most base pairs it asks about: at 20
#: blends, the upper rates of pairs answered t half the time left 1.5e-6 on an owner's LeNet-5
#: (digits, 5 parts); at 80, 6.6e-8 (measured on three keys: 20 → 80 lowered each 20-fold).
SURVEY_BLENDS, SURVEY_PAIRS = FUNCTION_COUPLED_SURVEY_BLENDS, FUNCTION_COUPLED_SURVEY_PAIRS


def survey(suspect: Suspect, seed: bytes, verifier: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> Verdict:
    """The null of the shared choices, measured on the suspect (DESIGN §6.1 rule 3).

    A part's answers share one triple (t, b1, b2), and a watermark generalises over its classes,
    not its pairs: measured, a model watermarked on (7, 9, 6) labels blends of fresh 9/6 pairs 7 at
    0.98, and a plain digits model labels some other pair's blends one class at 0.8-0.97. So the
    binomial tail over n answers says nothing about a key whose triples the suspect answers so
    generically. The survey asks the suspect about `SURVEY_BLENDS` blends of fresh pairs (drawn
    from `seed`, the claim's control seed) of every ordered base pair (at most `SURVEY_PAIRS`, drawn
    from the seed when there are more), and takes for each triple r̄, the Clopper-Pearson upper
    bound (α = 10⁻³) on the rate at which the suspect labels its blends t. A part of m answers,
    its triple uniform, then gets c right with probability at most the mean over triples of
    P[Bin(m, r̄) = c]; the parts drawn independently, the score is the chance that their sum
    reaches the threshold. (A key's parts have distinct base pairs, which only lowers that chance
    while fewer than one triple in eight is answered generically.) With one part, as in the paper,
    the score is at least about 1/360 on 10 classes for any suspect that answers its own triple."""
    parsed = _parse_info(info)
    if len(verifier):
        raise SchemeError("function-coupled verifier must be empty: the triggers come from the key, never the claimant")
    data = _community_copy(parsed)
    classes, n, threshold = parsed["num_classes"], parsed["n_verify"], parsed["threshold"]
    pairs = [(b1, b2) for b1 in range(classes) for b2 in range(classes) if b1 != b2]
    if len(pairs) > SURVEY_PAIRS:
        pairs = [pairs[int(i)] for i in key_permutation(seed, NAME, "survey/pairs", len(pairs))[:SURVEY_PAIRS]]
    fresh = [
        blends(seed, data, (-1, b1, b2), SURVEY_BLENDS, parsed["mode"], parsed["r"], f"survey/{i}")
        for i, (b1, b2) in enumerate(pairs)
    ]
    labels = predict_labels(suspect, torch.cat(fresh)).view(len(pairs), SURVEY_BLENDS)
    hits: list[int] = []
    for (b1, b2), answers in zip(pairs, labels, strict=True):
        counts = torch.bincount(answers.clamp(0, classes), minlength=classes + 1)
        hits += [int(counts[t]) for t in range(classes) if t not in (b1, b2)]
    # One upper bound per distinct count (at most SURVEY_BLENDS + 1), not per triple: 720 searches took 0.6 s.
    upper = {h: rate_upper_bound(h, SURVEY_BLENDS) for h in set(hits)}
    rates = [upper[h] for h in hits]
    generic = sum(h >= threshold * SURVEY_BLENDS for h in hits)
    share = pooled_tail(rates, part_sizes(n), math.ceil(threshold * n - 1e-9))
    details = {"n": len(pairs) * SURVEY_BLENDS, "pairs": len(pairs), "triples": len(rates), "generic": generic}
    return Verdict(False, share, 0.0, details)


def pooled_tail(rates: list[float], sizes: list[int], k: int) -> float:
    """P[X_1 + … + X_P ≥ k], X_j independent, each Bin(m_j, r) with r drawn uniformly from `rates`."""
    total = [1.0]  # distribution of the sum so far
    for m in sizes:
        part = [sum(math.comb(m, c) * r**c * (1 - r) ** (m - c) for r in rates) / len(rates) for c in range(m + 1)]
        total = [
            sum(total[i] * part[c - i] for i in range(max(0, c - m), min(c, len(total) - 1) + 1))
            for c in range(len(total) + m)
        ]
    return min(1.0, sum(total[k:]))


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
