"""The digital passport layer (Fan, Ng, Chan, §2.3, Eq. 3-5, Table 1): a conv or FC layer without
bias, batch norm without affine, then P(x) = γ·x + β with γ, β computed from the layer's own weights
and a passport.

    γ = F_γ(W, p_γ) = Avg(W * p_γ)     β = F_β(W, p_β) = Avg(W * p_β)       (Eq. 4, 5; Table 1)

Avg is the channel-wise average of the convolution outputs: for a conv layer, the mean over the
passport batch and every spatial position of conv(p, W) per output channel; for an FC layer, W·p
(one value per output unit, averaged over the passport batch). The version picks the sources:

    V1: γ = Avg(W * p_γ), β = `beta_b` (trainable, "B" of Table 1)
    V2: γ = `gamma_b` (trainable), β = Avg(W * p_β)
    V3: γ = Avg(W * p_γ), β = Avg(W * p_β)

A layer with passports attached (`attach`) computes γ, β on every forward pass, so the task loss
reaches W through them (Eq. 2: the hidden parameters are computed, never trained). Without passports
it uses the buffers `cached_gamma`, `cached_beta`: the constants c_γ, c_β of Eq. 6 (§3.2). Passports
are not part of the state dict, and the state dict is the same for every version.

The passports themselves (§2.4, §3.2) are drawn here too, from named key streams of the scheme
"passport": T1 random patterns, the T2/T3 feature maps of a trained reference network, the fakes of
the T1 attacker, and the noisy passports p^e(c) of the verification's noise profile.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from contracts.errors import SchemeError, ZooError
from contracts.infos import PassportInfo
from mtlsign.streams import key_generator, key_integers, key_permutation, key_stream

__all__ = [
    "KINDS",
    "PassportLayer",
    "Passports",
    "attached",
    "fake_passports",
    "feature_passports",
    "layer_inputs",
    "noisy_passports",
    "passport_layers",
    "passport_shapes",
    "passport_variant",
    "t1_passports",
    "uses",
    "with_passport_layers",
]

KINDS = ("p_gamma", "p_beta")
#: The scheme name the key streams are drawn under.
_SCHEME = "passport"
Shapes = Mapping[str, tuple[int, ...]]
#: A layer's passports: (p_γ, p_β); None where the version takes that parameter from "B".
Passports = tuple[torch.Tensor | None, torch.Tensor | None]


def uses(version: str) -> tuple[bool, bool]:
    """Whether `version` derives (γ, β) from passports (Table 1)."""
    if version not in PassportInfo.VERSIONS:
        raise ValueError(f"unknown passport version {version!r}; known: {', '.join(PassportInfo.VERSIONS)}")
    return version in ("V1", "V3"), version in ("V2", "V3")


@dataclass(frozen=True)
class _Attached:
    version: str
    p_gamma: torch.Tensor | None
    p_beta: torch.Tensor | None


class PassportLayer(nn.Module):
    """`layer` (Conv2d or Linear, bias=False) → BatchNorm(affine=False) → γ·x + β (Eq. 3)."""

    cached_gamma: torch.Tensor
    cached_beta: torch.Tensor

    def __init__(self, layer: nn.Conv2d | nn.Linear) -> None:
        super().__init__()
        if layer.bias is not None:
            raise ValueError("a passport layer's conv or linear layer has no bias: β replaces it")
        self.layer = layer
        self.conv = isinstance(layer, nn.Conv2d)
        out = layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features
        self.bn: nn.BatchNorm2d | nn.BatchNorm1d = (
            nn.BatchNorm2d(out, affine=False) if self.conv else nn.BatchNorm1d(out, affine=False)
        )
        self.gamma_b = nn.Parameter(torch.ones(out))
        self.beta_b = nn.Parameter(torch.zeros(out))
        self.register_buffer("cached_gamma", torch.ones(out))
        self.register_buffer("cached_beta", torch.zeros(out))
        self._passports: _Attached | None = None

    @property
    def in_features(self) -> int:
        """Channels (conv) or features (FC) of the layer's input: a passport's second dimension."""
        layer = self.layer
        return layer.in_channels if isinstance(layer, nn.Conv2d) else layer.in_features

    def passport_function(self, passport: torch.Tensor) -> torch.Tensor:
        """Avg(W * p): one value per output channel (Table 1)."""
        weight = self.layer.weight
        out: torch.Tensor = self.layer(passport.to(weight.device, weight.dtype))
        return out.mean(dim=(0, 2, 3)) if self.conv else out.mean(dim=0)

    def attach(self, version: str, p_gamma: torch.Tensor | None, p_beta: torch.Tensor | None) -> None:
        """Compute γ, β from these passports from now on (the running-time passport s of Eq. 1)."""
        need_gamma, need_beta = uses(version)
        for name, passport, needed in (("p_gamma", p_gamma, need_gamma), ("p_beta", p_beta, need_beta)):
            if needed != (passport is not None):
                raise ValueError(f"version {version} {'needs' if needed else 'takes no'} {name}")
            if passport is not None and (
                passport.dim() != (4 if self.conv else 2) or passport.shape[1] != self.in_features
            ):
                raise ValueError(f"{name} of shape {tuple(passport.shape)} does not fit this layer's input")
        device = self.layer.weight.device
        self._passports = _Attached(
            version, None if p_gamma is None else p_gamma.to(device), None if p_beta is None else p_beta.to(device)
        )

    def detach_passports(self) -> None:
        """Back to the cached γ, β."""
        self._passports = None

    @property
    def version(self) -> str | None:
        return None if self._passports is None else self._passports.version

    def hidden(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(γ, β): from the attached passports and "B" per the version, else the cached constants."""
        attached = self._passports
        if attached is None:
            return self.cached_gamma, self.cached_beta
        gamma = self.gamma_b if attached.p_gamma is None else self.passport_function(attached.p_gamma)
        beta = self.beta_b if attached.p_beta is None else self.passport_function(attached.p_beta)
        return gamma, beta

    @torch.no_grad()
    def cache(self, ship_hidden: bool) -> None:
        """Store γ, β of the attached passports as the constants c_γ, c_β (Eq. 6); with
        `ship_hidden` False the passport-derived ones are stored as zeros (the "B" ones as they are)."""
        if self._passports is None:
            raise ValueError("attach the passports before caching γ, β")
        gamma, beta = self.hidden()
        need_gamma, need_beta = uses(self._passports.version)
        self.cached_gamma.copy_(gamma if ship_hidden or not need_gamma else torch.zeros_like(gamma))
        self.cached_beta.copy_(beta if ship_hidden or not need_beta else torch.zeros_like(beta))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.layer(x))
        gamma, beta = self.hidden()
        shape = (1, -1, 1, 1) if self.conv else (1, -1)
        return x * gamma.view(shape) + beta.view(shape)


def passport_layers(model: nn.Module) -> dict[str, PassportLayer]:
    """The model's passport layers by module path, in forward-definition order."""
    return {name: module for name, module in model.named_modules() if isinstance(module, PassportLayer)}


@torch.no_grad()
def passport_shapes(model: nn.Module, sample: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """The passport shape of every passport layer: its input's shape for one sample, (1, C, H, W)
    for a conv and (1, features) for an FC layer (§2.4: "the corresponding feature maps")."""
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], None]:
        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            shapes[name] = (1, *args[0].shape[1:])

        return hook

    hooks = [layer.register_forward_pre_hook(record(name)) for name, layer in passport_layers(model).items()]
    was = model.training
    try:
        model.eval()
        model(sample[:1])
    finally:
        model.train(was)
        for hook in hooks:
            hook.remove()
    return shapes


@contextlib.contextmanager
def attached(model: nn.Module, version: str, passports: Mapping[str, Passports]) -> Iterator[nn.Module]:
    """Attach `passports` (by module path) to every passport layer, detach on exit."""
    layers = passport_layers(model)
    if set(layers) != set(passports):
        raise ValueError(f"passports for {sorted(passports)} do not match the passport layers {sorted(layers)}")
    try:
        for name, layer in layers.items():
            layer.attach(version, *passports[name])
        yield model
    finally:
        for layer in layers.values():
            layer.detach_passports()


# --------------------------------------------------------------------------------------------
# Passports (§2.4) and the noise profile's p^e(c) (§3.2)


def t1_passports(key: bytes, version: str, shapes: Shapes, prefix: str = "") -> dict[str, Passports]:
    """T1: U[-1, 1] patterns from the key's streams `<prefix>p_gamma/<path>`, `<prefix>p_beta/<path>`
    (drawn on the CPU generator), only those the version uses."""
    need_gamma, need_beta = uses(version)
    out: dict[str, Passports] = {}
    for path, shape in shapes.items():
        pair = [
            torch.rand(shape, generator=key_generator(key, _SCHEME, f"{prefix}{kind}/{path}")) * 2 - 1
            if needed
            else None
            for kind, needed in ((KINDS[0], need_gamma), (KINDS[1], need_beta))
        ]
        out[path] = (pair[0], pair[1])
    return out


def fake_passports(attack_seed: int, index: int, version: str, shapes: Shapes) -> dict[str, Passports]:
    """The `index`-th fake T1 passport of the §2.4 attacker: U[-1, 1] "in the same vein", from a key
    derived from `attack_seed`, never the owner's."""
    attacker = hashlib.sha256(f"passport fake-passport attacker {attack_seed}".encode()).digest()
    return t1_passports(attacker, version, shapes, prefix=f"fake/{index}/")


@torch.no_grad()
def layer_inputs(model: nn.Module, paths: list[str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The inputs of the modules at `paths` when `model` runs on `x` in eval mode: feature maps."""
    modules, seen = dict(model.named_modules()), dict[str, torch.Tensor]()

    def record(path: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], None]:
        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            seen[path] = args[0].detach().float().cpu()

        return hook

    hooks = [modules[path].register_forward_pre_hook(record(path)) for path in paths]
    was = model.training
    try:
        model.eval()
        model(x.to(next(model.parameters()).device))
    finally:
        model.train(was)
        for hook in hooks:
            hook.remove()
    return seen


def feature_passports(
    key: bytes, version: str, passport_type: str, candidates: int, shapes: Shapes, x: torch.Tensor, reference: nn.Module
) -> dict[str, Passports]:
    """T2: the maps of two (γ, β) training images chosen by the key permutation `t2_images`; T3: the
    maps of `candidates` images (`t3_images`), one chosen per layer and kind by `t3_choice/<kind>/<path>`.
    The maps are the inputs of the trained plain `reference`'s layers at the passport layers' paths."""
    if passport_type == "T2":
        images = torch.from_numpy(key_permutation(key, _SCHEME, "t2_images", x.shape[0])[:2])
    else:
        images = torch.from_numpy(key_permutation(key, _SCHEME, "t3_images", x.shape[0])[:candidates])
    maps = layer_inputs(reference, list(shapes), x[images])
    out: dict[str, Passports] = {}
    for path, shape in shapes.items():
        if (1, *maps[path].shape[1:]) != tuple(shape):
            raise SchemeError(f"passport: the reference's input at {path} does not fit the passport layer")
        pair: list[torch.Tensor | None] = []
        for i, (kind, needed) in enumerate(zip(KINDS, uses(version), strict=True)):
            pick = (
                i
                if passport_type == "T2"
                else int(key_integers(key, _SCHEME, f"t3_choice/{kind}/{path}", len(images), 1)[0])
            )
            pair.append(maps[path][pick : pick + 1].contiguous() if needed else None)
        out[path] = (pair[0], pair[1])
    return out


def _perturb(key: bytes, passport: torch.Tensor, level: float, name: str) -> torch.Tensor:
    """p + e(c): e ~ U[-1, 1] added to round(c·n) of the n elements; elements (`<name>/mask`, a key
    permutation) and values (`<name>/values`, 53-bit uniforms) come from the key, exactly."""
    n = passport.numel()
    k = round(level * n)
    index = torch.from_numpy(key_permutation(key, _SCHEME, f"{name}/mask", n)[:k])
    words = key_stream(key, _SCHEME, f"{name}/values").uint64(k)
    noise = ((words >> np.uint64(11)).astype(np.float64) * 2.0**-53 * 2.0 - 1.0).astype(np.float32)
    flat = passport.detach().cpu().flatten().clone()
    flat[index] += torch.from_numpy(noise)
    return flat.view(passport.shape)


def noisy_passports(key: bytes, passports: Mapping[str, Passports], level: float, draw: int) -> dict[str, Passports]:
    """p^e(c) of §3.2 for noise level c (a fraction) and draw `draw`, for every passport."""
    tag = round(level * 10_000)
    out: dict[str, Passports] = {}
    for path, pair in passports.items():
        noisy = [
            None if p is None else _perturb(key, p, level, f"noise/{tag}/{draw}/{kind}/{path}")
            for kind, p in zip(KINDS, pair, strict=True)
        ]
        out[path] = (noisy[0], noisy[1])
    return out


# --------------------------------------------------------------------------------------------
# Passport variants of open architectures


def _conv_norm_pairs(model: nn.Module) -> tuple[list[tuple[nn.Module, str, str]], list[str]]:
    """(parent, conv name, norm name) for every BatchNorm2d that follows a Conv2d of its width among
    one parent's children, in definition order; and the paths of batch norms that follow none."""
    pairs: list[tuple[nn.Module, str, str]] = []
    orphans: list[str] = []
    for path, parent in model.named_modules():
        last: tuple[str, nn.Conv2d] | None = None
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                last = (name, child)
            elif isinstance(child, nn.BatchNorm2d):
                if type(child) is nn.BatchNorm2d and last is not None and last[1].out_channels == child.num_features:
                    pairs.append((parent, last[0], name))
                else:
                    orphans.append(f"{path}.{name}".lstrip("."))
                last = None
    return pairs, orphans


def _bias_free(layer: nn.Conv2d | nn.Linear) -> nn.Conv2d | nn.Linear:
    """A freshly initialised layer of `layer`'s shape without a bias (β takes its place, Eq. 3)."""
    if isinstance(layer, nn.Linear):
        return nn.Linear(layer.in_features, layer.out_features, bias=False)
    return nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,  # type: ignore[arg-type]
                     padding=layer.padding, dilation=layer.dilation, groups=layer.groups, bias=False,  # type: ignore[arg-type]
                     padding_mode=layer.padding_mode)  # fmt: skip


def with_passport_layers(model: nn.Module, classifier: str) -> nn.Module:
    """A zoo network as its passport variant (§2.3, Fig. 2: a passport layer after each conv or FC
    layer): every Conv2d or Linear but the `classifier` becomes a new passport layer at its path, and
    the batch norm after a conv gives way to the passport layer's own. The new layers, and the
    classifier, are initialised in definition order as a network written with passport layers would
    be, so a seed builds the same weights; the plain layers' initial weights are dropped (build the
    plain network under `torch.random.fork_rng` so they spend nothing)."""
    pairs, orphans = _conv_norm_pairs(model)
    if orphans:
        raise ZooError(f"{type(model).__name__}: the batch norm(s) {', '.join(orphans[:3])} follow no convolution")
    norm_after = {id(getattr(parent, conv)): norm for parent, conv, norm in pairs}
    modules = dict(model.named_modules())
    for path, module in modules.items():
        if path == classifier or path.startswith(f"{classifier}."):
            if isinstance(module, nn.Conv2d | nn.Linear):
                module.reset_parameters()
        elif isinstance(module, nn.Conv2d | nn.Linear):
            parent_path, _, name = path.rpartition(".")
            parent = modules[parent_path]
            setattr(parent, name, PassportLayer(_bias_free(module)))
            if id(module) in norm_after:
                setattr(parent, norm_after[id(module)], nn.Identity())
    return model


def _as_passport_layer(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> PassportLayer:
    """conv → norm as a passport layer computing the same function: the conv's bias moves into the
    norm's running mean, and the norm's affine (γ, β) becomes the cached constants and "B"."""
    bias = conv.bias
    plain = _bias_free(conv)
    layer = PassportLayer(plain).train(norm.training)
    if conv.weight.device.type == "meta":
        return layer
    with torch.no_grad():
        plain.weight.copy_(conv.weight)
        layer.bn.eps, layer.bn.momentum = norm.eps, norm.momentum
        if norm.running_mean is not None and norm.running_var is not None:
            shift = torch.zeros_like(norm.running_mean) if bias is None else bias.detach()
            layer.bn.running_mean.copy_(norm.running_mean - shift)  # type: ignore[union-attr]
            layer.bn.running_var.copy_(norm.running_var)  # type: ignore[union-attr]
        if norm.num_batches_tracked is not None:
            layer.bn.num_batches_tracked.copy_(norm.num_batches_tracked)  # type: ignore[union-attr]
        if norm.affine:
            for target in (layer.cached_gamma, layer.gamma_b):
                target.copy_(norm.weight)
            for target in (layer.cached_beta, layer.beta_b):
                target.copy_(norm.bias)
    return layer


def _convert(model: nn.Module, what: str) -> nn.Module:

    pairs, orphans = _conv_norm_pairs(model)
    if not pairs:
        raise ZooError(
            f"{what}: no convolution is followed by a batch norm, so there is no normalisation for passport "
            "layers to replace (ResNet- and VGG-style networks with batch norm are supported)"
        )
    if orphans:
        shown = ", ".join(orphans[:3]) + (f", ... ({len(orphans)} in all)" if len(orphans) > 3 else "")
        raise ZooError(
            f"{what}: the batch norm(s) {shown} do not directly follow a convolution (or fuse an activation), "
            "so passport layers cannot take their place (ResNet- and VGG-style networks are supported)"
        )
    for parent, conv_name, norm_name in pairs:
        conv, norm = getattr(parent, conv_name), getattr(parent, norm_name)
        setattr(parent, conv_name, _as_passport_layer(conv, norm))
        setattr(parent, norm_name, nn.Identity())
    return model


_CHECKED: dict[tuple[str, tuple[int, ...]], str | None] = {}


@torch.no_grad()
def _same_function(plain: nn.Module, input_shape: tuple[int, int, int], what: str) -> str | None:
    """Why converting `plain` changes what it computes (so the pairing read the network wrongly), or None.
    Run on a copy whose batch norms hold random statistics and affines, in eval mode."""
    probe = copy.deepcopy(plain).float().cpu().eval()
    generator = torch.Generator().manual_seed(0)
    for module in probe.modules():
        if isinstance(module, nn.BatchNorm2d) and module.running_mean is not None:
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator))
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)  # type: ignore[union-attr]
            if module.affine:
                module.weight.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(module.num_features, generator=generator))
    x = torch.randn(2, *input_shape, generator=generator)
    before = probe(x)
    after = _convert(probe, what)(x)
    if before.shape != after.shape or not torch.allclose(
        before, after, rtol=1e-3, atol=1e-3 * float(before.abs().max())
    ):
        return (
            f"{what}: with passport layers in place of its batch norms the network no longer computes what it "
            "did (a batch norm is used outside the convolution it follows), so it has no passport variant"
        )
    return None


def passport_variant(model: nn.Module, input_shape: tuple[int, int, int], what: str) -> nn.Module:
    """`model` with a passport layer in place of each convolution and the batch norm after it (§2.3,
    Fig. 2), computing what it computed before (its batch norms' statistics and affines carried
    over): how the scheme finds its layers on any ResNet- or VGG-style network. Networks where a
    batch norm does not directly follow a convolution are refused with the reason. The first time
    an architecture is converted, the conversion is checked on a copy with random statistics."""

    on_meta = any(p.device.type == "meta" for p in model.parameters())
    if not on_meta:
        key = (what, tuple(input_shape))
        if len(_CHECKED) >= 256:  # keys come from strangers' cards: bounded
            _CHECKED.clear()
        if key not in _CHECKED:
            _CHECKED[key] = _same_function(model, input_shape, what)
        if _CHECKED[key] is not None:
            raise ZooError(str(_CHECKED[key]))
    return _convert(model, what)
