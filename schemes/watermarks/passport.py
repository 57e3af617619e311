"""Digital passport (Fan, Ng, Chan): passport layers whose γ, β are computed from the conv weights and a
secret passport, so the network works only with the right passport and carries it as a white-box
watermark.

The paper (the arXiv preprint, ../shared/papers/003_*; V1-V3 are Table 1's passport functions):

* Eq. 1: M(N[p], s) = M_p if the running-time passport s = p, else M_p̄ (paralysed).
* Eq. 2: W = {W_p, W_h}, W_h = F(W_p, p): the hidden parameters are computed, never trained.
* Eq. 3-5 (§2.3): after each conv or FC layer, P(x_p) = γ·x_p + β with γ = F_γ(W_p, p_γ) and
  β = F_β(W_p, p_β); Table 1: F = Avg(W * p) (the channel-wise average of the convolution of p with
  the layer's own kernel) or "B" (trainable as in batch norm): V1 = (Avg, B), V2 = (B, Avg),
  V3 = (Avg, Avg). The layer is `schemes._passport_layer.PassportLayer`; the zoo's `NAME-passport`
  models put one after every conv and FC layer except the classifier.
* Eq. 6 (§3.2): γ, β converge to constants c_γ, c_β, which we cache in the layer.
* Eq. 7 (§4.2): I = A_o − A_p (inconsistency), S = A_p − A_t (protection strength), with A_o the
  clean network's accuracy, A_p the accuracy with the valid passport and A_t with a fake one.
* §2.4 passport types: T1 random patterns U[-1, 1]; T2 one fixed image and the feature maps it
  makes in a trained network of the same architecture (footnote 4: two images for V3); T3 N images
  through that network, one of the N maps chosen per layer (N^L combinations).
* §3.2 verification: put the passport functions back, feed the secret passports and compare the
  accuracy on a pre-determined test set with M_p; then add noise to a varying percentage c of the
  passport elements, p^e(c) = p + e(c), and compare with the recorded accuracies M_{p^e(c)}.

Embedding trains a fresh passport-variant model from scratch with cross entropy only (§2.3: "the
original objective functions remain unaltered"), γ, β recomputed from the current weights at every
step. Choices the paper leaves open (its supplement with the hyperparameters is not in the text):

* Layer: conv/FC without bias → BatchNorm(affine=False) → γ·x + β (the normalisation is kept, as in
  the authors' code; without it LeNet-5 V3 loses 7 points). Avg for an FC layer is W·p. Passports
  are one sample shaped as the layer's input: (1, C, H, W) or (1, features). Every conv and FC layer
  except the final classifier is passported (conv-only passports leave a T1 weakness on 1-channel
  inputs: fakes whose means track the real one work), ResNet's 1×1 projection shortcuts included;
  AlexNet: all five convs (the authors' later code passports only the last three).
* Training: Adam, learning rate 1e-3, batch 64, 20 epochs, the model's zoo initialisation, batch
  order from `seed`; afterwards one pass over the training inputs re-estimates the batch-norm
  statistics for the final weights (without it, short runs evaluate at chance: γ of early layers
  is small and the running averages lag the fast-moving scale of the next layer's input). The
  clean reference (`clean_accuracy`, A_o) is the plain architecture with the same initial conv/FC
  weights (zero conv biases), batch order and budget.
* Default V3 + T1. T1 passports come from the key (`p_gamma/<path>`, `p_beta/<path>`: U[-1, 1] on
  the CPU generator). T2 images: two (V3) or one training images chosen by the key permutation
  `t2_images`; T3: N = `t3_candidates` training images chosen by `t3_images`, the map of each layer
  and kind by `t3_choice/<kind>/<path>`; the feature maps come from the clean reference. T2/T3
  passports are not derivable from the key, so the verifier artifact carries them.
* Publication: with `ship_hidden` (default) the cached γ, β of the valid passport ship in the model,
  which is the working model an owner deploys and a thief steals; otherwise the passport-derived ones
  are zero and the model is paralysed without its passport. Verification never reads the cache: it
  recomputes γ, β from the suspect's weights and the key's passports.
* Verification set: `n_eval` test samples of the community's copy of the data, chosen by the key
  permutation `eval-x`, with their true labels (DESIGN §6.1 rule 1: never from the claimant;
  `embed` refuses data no node holds). Score = accuracy with the passports; threshold =
  M_p − δ with δ = 0.10 (the paper gives none; fakes and foreign models score about 0.1).
* Noise profile: levels c ∈ {5, 10, 25, 50} % of every passport's elements (chosen by the key
  permutation `noise/<c·10⁴>/<draw>/<kind>/<path>/mask`), e ~ U[-1, 1] added to them (values from the
  stream `.../values`), `noise_draws` = 5 draws per level. The artifact records mean and std per level;
  a level agrees if |acc − mean| ≤ max(`noise_sigmas`·std, `noise_floor`) = max(3·std, 0.05).
  `passed` requires the score and every level (§3.2 steps 2 and 3).
* Fake passports for the report: `n_fakes` = 100 T1 passports from a key derived from `attack_seed`,
  never the owner's (the attacker of §2.4 does not hold the key; verification never uses them).
* A suspect without passport layers, or with other passport layers, fails with score 0 and a reason.

Measured (benchmarks/passport_versions.py, LeNet-5 on digits, T1, 100 fakes): V1 and V3 keep the
clean accuracy (I ≤ 0) and fakes fall to about 10 % (S ≈ 87 points); V2 does not reproduce the
paper's S = 82.5: the trainable γ grows until β = Avg(W * p_β) stops mattering, fakes keep about
97 % and verification cannot tell the owner's passport from another (the report's
`fakes_stay_below_threshold` is False). V2 is offered for comparison, not for protection, and its
verification fails by design: `verify` requires fake passports to paralyse the suspect.

Fine-tuning the owner's own model (`clean=given`, a timm or torchvision network): each convolution
and the batch norm after it become one passport layer computing what they computed (the norm's
statistics carried over, its affine as the cached γ, β and as "B"; `passport_variant`, refused for
networks whose norms do not follow a convolution), and training with the key's passports then
starts from those weights instead of from scratch (§3.2 trains from scratch). The clean model A_o
is the given model, whose feature maps give the T2/T3 passports.

This module trains and embeds; what a node runs to verify (the evaluation set, the verifier
artifact, the noise profile and the fakes) is `schemes.watermarks._passport_verification`, and the
info's schema is `contracts.infos.PassportInfo`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from contracts.errors import SchemeError
from contracts.infos import PassportInfo
from schemes.data.community import require_community_data
from schemes.data.dataset import Dataset
from schemes.models._passport_layer import (
    KINDS,
    Passports,
    attached,
    fake_passports,
    feature_passports,
    passport_layers,
    passport_shapes,
    t1_passports,
)
from schemes.models.zoo import create_model
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
from schemes.watermarks._passport_verification import (
    FIXED_TENSORS,
    NAME,
    accuracy_with,
    control,
    evaluation_set,
    noise_accuracies,
    verify,
)
from schemes.watermarks.base import Scheme, Watermarked, register_scheme

__all__ = [
    "Config",
    "FIXED_TENSORS",
    "NAME",
    "SCHEME",
    "control",
    "embed",
    "evaluation_set",
    "train_with_passports",
    "verify",
]


@dataclass(frozen=True)
class Config:
    version: str = "V3"
    passport_type: str = "T1"
    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 64
    ship_hidden: bool = True
    n_eval: int = 300
    delta: float = 0.10
    noise_levels: tuple[float, ...] = (0.05, 0.10, 0.25, 0.50)
    noise_draws: int = 5
    noise_sigmas: float = 3.0
    noise_floor: float = 0.05
    n_fakes: int = 100
    t3_candidates: int = 20
    attack_seed: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.version not in PassportInfo.VERSIONS or self.passport_type not in PassportInfo.TYPES:
            raise ValueError(
                f"version must be one of {', '.join(PassportInfo.VERSIONS)} and passport_type one of "
                f"{', '.join(PassportInfo.TYPES)}"
            )
        if self.epochs < 1 or self.batch_size < 1 or not 0 < self.lr < 1:
            raise ValueError("need epochs ≥ 1, batch_size ≥ 1 and 0 < lr < 1")
        if not 1 <= self.n_eval <= 100_000 or not 0 < self.delta < 1 or not 0 <= self.n_fakes <= 100_000:
            raise ValueError("need 1 ≤ n_eval ≤ 100000, 0 < delta < 1 and 0 ≤ n_fakes ≤ 100000")
        if len(self.noise_levels) > 32 or not all(0 < c <= 1 for c in self.noise_levels):
            raise ValueError("noise_levels: at most 32 fractions in (0, 1]")
        if not 1 <= self.noise_draws <= 100 or self.noise_sigmas < 0 or not 0 <= self.noise_floor <= 1:
            raise ValueError("need 1 ≤ noise_draws ≤ 100, noise_sigmas ≥ 0 and 0 ≤ noise_floor ≤ 1")
        if not 2 <= self.t3_candidates <= 10_000 or self.seed < 0 or self.attack_seed < 0:
            raise ValueError("need 2 ≤ t3_candidates ≤ 10000 and non-negative seeds")


# --------------------------------------------------------------------------------------------
# Training and measuring


def _clean_reference(model: nn.Module, data: Dataset, config: Config, progress: Progress | None) -> nn.Module:
    """The plain architecture with the passport model's initial conv/FC weights, trained alike (A_o)."""
    plain = getattr(type(model), "plain_arch", None)
    if not isinstance(plain, str):
        raise SchemeError("passport needs a passport-variant model (create it as '<arch>-passport')")
    with torch.random.fork_rng(devices=[]):  # its own init is overwritten: leave the global RNG alone
        clean = create_model(plain, num_classes=data.num_classes, input_shape=data.input_shape)
    classifier = getattr(type(model), "classifier", None)
    modules, own = dict(clean.named_modules()), dict(model.named_modules())
    if not isinstance(classifier, str):
        raise SchemeError("passport: the model class does not name its classifier")
    with torch.no_grad():
        pairs = [(modules[p], layer.layer) for p, layer in passport_layers(model).items()]
        for target, source in [*pairs, (modules[classifier], own[classifier])]:
            target.weight.copy_(source.weight)
            if isinstance(target.bias, torch.Tensor):
                target.bias.zero_()
                if isinstance(source.bias, torch.Tensor):
                    target.bias.copy_(source.bias)
    clean.to(next(model.parameters()).device)
    generator = torch.Generator().manual_seed(config.seed)
    report = None if progress is None else (lambda e, n, m: progress(e, 2 * n, f"clean {m}"))
    return train_classifier(
        clean, data.x_train, data.y_train,
        epochs=config.epochs, lr=config.lr, batch_size=config.batch_size, generator=generator, progress=report,
        name="passport/clean",
    )  # fmt: skip


def _train(
    model: nn.Module, data: Dataset, passports: Mapping[str, Passports], config: Config, progress: Progress | None
) -> None:
    """From scratch, cross entropy only, γ and β recomputed from the current weights at every step."""
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(config.seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    with attached(model, config.version, passports):
        model.train()
        state = {"model": model, "optimiser": optimiser, "generator": generator}
        for epoch in resumable("passport/train", config.epochs, state):
            total = 0.0
            for x, y in stream(Labelled(data.x_train, data.y_train), config.batch_size, generator, device=device):
                with autocast(device):
                    loss = nn.functional.cross_entropy(model(x), y)
                step(optimiser, loss, model)
                total += float(loss.detach())
            if progress is not None:
                progress(config.epochs + epoch + 1, 2 * config.epochs, f"passport loss {total:.2f}")
        norms = [layer.bn for layer in passport_layers(model).values()]
        recalibrate_norms(model, data.x_train, data.y_train, config.batch_size, norms)
    model.eval()


def train_with_passports(
    model: nn.Module,
    data: Dataset,
    passports: Mapping[str, Passports],
    config: Config,
    progress: Progress | None = None,
) -> None:
    """Train a passport-variant model from scratch with `passports` and cache the valid γ, β."""
    _train(model, data, passports, config, progress)
    with attached(model, config.version, passports):
        for layer in passport_layers(model).values():
            layer.cache(config.ship_hidden)


def _fake_figures(
    model: nn.Module, config: Config, shapes: Mapping[str, tuple[int, ...]], data: Dataset, valid: float
) -> dict[str, Any]:
    accs = [
        accuracy_with(model, config.version, fake_passports(config.attack_seed, i, config.version, shapes),
                       data.x_test, data.y_test)
        for i in range(config.n_fakes)
    ]  # fmt: skip
    if not accs:
        return {"n_fakes": 0}
    mean = sum(accs) / len(accs)
    return {
        "n_fakes": len(accs),
        "fake_accuracy_mean": mean,
        "fake_accuracy_max": max(accs),
        "fake_accuracy_min": min(accs),
        "protection_strength": valid - mean,  # Eq. 7: S = A_p − A_t
    }


def _passports(
    key: bytes, config: Config, shapes: Mapping[str, tuple[int, ...]], data: Dataset, clean: nn.Module
) -> dict[str, Passports]:
    if config.passport_type == "T1":
        return t1_passports(key, config.version, shapes)
    return feature_passports(
        key, config.version, config.passport_type, config.t3_candidates, shapes, data.x_train, clean
    )


def _verifier(
    model: nn.Module, key: bytes, config: Config, passports: Mapping[str, Passports], data: Dataset
) -> dict[str, torch.Tensor]:
    """What a node cannot derive from the key: M_p, the noise profile M_{p^e(c)} (mean and std over
    the draws of each level) and, for T2/T3, the passports."""
    x_eval, y_eval = evaluation_set(key, data, config.n_eval)
    levels = torch.tensor(config.noise_levels, dtype=torch.float32)
    noise = noise_accuracies(model, key, config.version, passports, levels.tolist(), config.noise_draws, x_eval, y_eval)
    verifier = {
        "expected_acc": torch.tensor([accuracy_with(model, config.version, passports, x_eval, y_eval)]),
        "noise_levels": levels,
        "noise_mean": torch.tensor([statistics.fmean(a) for a in noise], dtype=torch.float32),
        "noise_std": torch.tensor([statistics.pstdev(a) for a in noise], dtype=torch.float32),
    }
    if config.passport_type != "T1":
        for path, pair in passports.items():
            verifier.update({f"{kind}/{path}": p for kind, p in zip(KINDS, pair, strict=True) if p is not None})
    return verifier


def _info(config: Config, shapes: Mapping[str, tuple[int, ...]], data: Dataset) -> dict[str, Any]:
    """The public parameters a verifier needs (`contracts.infos.PassportInfo`)."""
    return {
        "scheme": NAME,
        "version": config.version,
        "passport_type": config.passport_type,
        "layers": {path: list(shape) for path, shape in shapes.items()},
        "delta": config.delta,
        "noise_draws": config.noise_draws,
        "noise_sigmas": config.noise_sigmas,
        "noise_floor": config.noise_floor,
        "dataset": data.name,
        "n_eval": min(config.n_eval, data.x_test.shape[0]),
        "input_shape": list(data.input_shape),
        "mean": list(data.mean),
        "std": list(data.std),
        "num_classes": data.num_classes,
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
    """Train the clean reference and the passport model, measure fakes and the noise profile, cache
    γ, β for publication, and verify the result."""
    started, cpu_started = time.perf_counter(), time.process_time()
    require_community_data(data, NAME)  # before any training: the evaluation set must be rebuildable
    layers = passport_layers(model)
    if not layers:
        raise SchemeError("passport needs a passport-variant model (create it as '<arch>-passport')")
    device = next(model.parameters()).device
    shapes = passport_shapes(model, data.x_test[:1].to(device))
    if clean is None:
        clean = _clean_reference(model, data, config, progress)
    clean_acc = accuracy(clean, data.x_test, data.y_test)
    passports = _passports(key, config, shapes, data, clean)
    _train(model, data, passports, config, progress)
    valid = accuracy_with(model, config.version, passports, data.x_test, data.y_test)
    fakes = _fake_figures(model, config, shapes, data, valid)
    verifier = _verifier(model, key, config, passports, data)
    with attached(model, config.version, passports):
        for layer in layers.values():
            layer.cache(config.ship_hidden)
    info = _info(config, shapes, data)
    verdict = verify(model, key, verifier, info)
    report = {
        "clean_accuracy": clean_acc,
        "accuracy": valid,
        "deployed_accuracy": accuracy(model, data.x_test, data.y_test),  # cached γ, β, no passport
        "inconsistency": clean_acc - valid,  # Eq. 7: I = A_o − A_p
        **fakes,
        "wm_score": verdict.score,
        "threshold": verdict.threshold,
        **({"fakes_stay_below_threshold": fakes["fake_accuracy_max"] < verdict.threshold} if config.n_fakes else {}),
        "noise_profile": {
            f"{c:g}": m for c, m in zip(config.noise_levels, verifier["noise_mean"].tolist(), strict=True)
        },
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu_started,
    }
    return Watermarked(model, verifier, info, report)


SCHEME = register_scheme(
    Scheme(
        name=NAME,
        summary="passport layers: γ, β computed from the weights and a secret passport; fakes paralyse the model",
        paper="Fan, Ng, Chan: digital passport",
        config=Config,
        embed=embed,
        verify=verify,
        control=control,
        model_arch=lambda arch: f"{arch}-passport",
        quick={"epochs": 6, "n_fakes": 10, "noise_draws": 2},
    )
)
