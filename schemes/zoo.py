"""The model zoo: architectures registered by name (timm-style) and safetensors + JSON-card artifacts.

Artifacts follow DESIGN §4.5: weights travel as safetensors next to a small JSON card naming the
architecture, its arguments, input shape and normalisation. Loading never unpickles anything.

The card is also written into the safetensors header's `__metadata__` (key `wmnode.card`), so
`model.safetensors` alone is a complete model artifact: that one file is what a claim points at
and what nodes fetch. Loading from untrusted bytes builds the carded architecture on the `meta`
device first and checks the weights against it, so a card cannot make a node allocate more than
the (size-limited) weights file holds.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import safetensors
import safetensors.torch
import torch
from torch import nn

from registry.errors import WmnodeError

__all__ = [
    "BuildLimits",
    "CARD_FILE",
    "CONFIG_FILE",
    "MAX_CARD_BYTES",
    "ModelCard",
    "TAP_COUNT",
    "WEIGHTS_FILE",
    "ZooError",
    "card_from_metadata",
    "check_state",
    "create_model",
    "is_open",
    "list_models",
    "load_model",
    "model_from_bytes",
    "model_to_bytes",
    "read_card",
    "read_json_file",
    "read_weights",
    "read_weights_bytes",
    "register_model",
    "save_model",
    "strict_json",
    "transfer_weights",
    "wm_taps",
]

#: File names inside an artifact directory.
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "model.json"
#: An open architecture's card: timm's `config.json`, so the directory is in the Hub layout.
CONFIG_FILE = "config.json"
#: A card is a few hundred bytes; anything this large is not a card.
MAX_CARD_BYTES = 64 * 1024
#: How many offending keys an error message lists before it says "...".
_SHOWN_KEYS = 5
#: The safetensors metadata key that carries the card.
CARD_METADATA_KEY = "wmnode.card"
_MAX_HEADER_BYTES = 16 * 2**20

_ModelT = TypeVar("_ModelT", bound=nn.Module)
_MODELS: dict[str, type[nn.Module]] = {}


class ZooError(WmnodeError):
    """A model name, model card or weights file is unknown, malformed, oversize or does not match."""

    http_status = 400


# --------------------------------------------------------------------------------------------
# Registry


def register_model(name: str) -> Callable[[type[_ModelT]], type[_ModelT]]:
    """Class decorator registering an architecture under `name`; a duplicate name is an error.

    The class is built as `cls(num_classes=..., input_shape=...)` and must declare `wm_taps`
    (module paths whose outputs a watermark head may read) and `classifier` (the final layer).
    """

    def decorate(cls: type[_ModelT]) -> type[_ModelT]:
        if name in _MODELS:
            raise ZooError(f"model {name!r} is already registered (by {_MODELS[name].__qualname__})")
        taps = getattr(cls, "wm_taps", None)
        if not isinstance(taps, tuple) or not all(isinstance(tap, str) for tap in taps):
            raise ZooError(f"model {name!r}: class attribute 'wm_taps' must be a tuple of module paths")
        if not isinstance(getattr(cls, "classifier", None), str):
            raise ZooError(f"model {name!r}: class attribute 'classifier' must name the final layer")
        _MODELS[name] = cls
        return cls

    return decorate


def list_models() -> list[str]:
    """The registered architecture names, sorted."""
    return sorted(_MODELS)


def create_model(
    name: str,
    *,
    num_classes: int,
    input_shape: tuple[int, int, int],
    model_args: Mapping[str, Any] | None = None,
    max_parameters: int | None = None,
) -> nn.Module:
    """A freshly initialised `name` model for `input_shape` = (channels, height, width) inputs:
    a registered zoo model, or an open architecture (`timm:NAME`, `torchvision:NAME`, see
    `schemes.hub`) built with `model_args` and counted on `meta` against `max_parameters` first."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ZooError(f"num_classes must be a positive integer, got {num_classes!r}")
    shape = _check_input_shape(input_shape)
    if is_open(name):
        from schemes.hub import MAX_PARAMETERS, create_open

        cap = MAX_PARAMETERS if max_parameters is None else max_parameters
        return create_open(name, num_classes=num_classes, input_shape=shape, model_args=model_args, max_parameters=cap)
    if model_args:
        raise ZooError(f"model {name!r} is a zoo model: it takes no model_args")
    cls = _model_class(name)
    model = cls(num_classes=num_classes, input_shape=shape)
    if max_parameters is not None:
        count = sum(p.numel() for p in model.parameters())
        if count > max_parameters:
            raise ZooError(f"{name} has {count:,} parameters, over the cap of {max_parameters:,}")
    return model


def is_open(arch: object) -> bool:
    """Whether `arch` names an open architecture (`library:NAME`) rather than a zoo model."""
    return isinstance(arch, str) and ":" in arch


def _model_class(name: str) -> type[nn.Module]:
    try:
        return _MODELS[name]
    except KeyError:
        raise ZooError(f"unknown model {name!r}; known models: {', '.join(list_models())}") from None


def _check_input_shape(shape: object) -> tuple[int, int, int]:
    if (
        not isinstance(shape, tuple | list)
        or len(shape) != 3
        or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)
    ):
        raise ZooError(f"input_shape must be three positive integers (channels, height, width), got {shape!r}")
    return (shape[0], shape[1], shape[2])


# --------------------------------------------------------------------------------------------
# Model card


@dataclass(frozen=True)
class ModelCard:
    """The JSON card beside the weights: which architecture to build and how inputs are normalised.

    `arch` is a zoo name or an open architecture (`timm:NAME`, `torchvision:NAME`, `schemes.hub`),
    whose keyword arguments are `model_args` and whose final layer `classifier` names. `mean` and
    `std` hold one value per input channel. `extra` is free-form JSON (scheme info, ...); it is
    copied through JSON on construction, so tuples in it become lists.

    A zoo model's card is written in the zoo's own shape (`model.json`); an open architecture's in
    timm's `config.json` shape, so its artifact directory is in the Hub layout. `from_json` reads
    either.
    """

    arch: str
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    extra: dict[str, Any] = field(default_factory=dict, hash=False)
    model_args: dict[str, Any] = field(default_factory=dict, hash=False)
    classifier: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.arch, str) or not (self.arch in _MODELS or is_open(self.arch)):
            raise ZooError(f"field 'arch': unknown model {self.arch!r}; known models: {', '.join(list_models())}, "
                           "timm:NAME, torchvision:NAME")  # fmt: skip
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ZooError(f"field 'num_classes' must be a positive integer, got {self.num_classes!r}")
        try:
            shape = _check_input_shape(self.input_shape)
        except ZooError as exc:
            raise ZooError(f"field 'input_shape': {exc}") from None
        object.__setattr__(self, "input_shape", shape)
        object.__setattr__(self, "mean", _channel_floats("mean", self.mean, shape[0], positive=False))
        object.__setattr__(self, "std", _channel_floats("std", self.std, shape[0], positive=True))
        object.__setattr__(self, "extra", _json_copy(self.extra))
        object.__setattr__(self, "model_args", _json_copy(self.model_args, "model_args"))
        if is_open(self.arch):
            from schemes.hub import check_open

            check_open(self.arch, self.model_args, shape)
        elif self.model_args or self.classifier:
            raise ZooError(f"model {self.arch!r} is a zoo model: its card takes no model_args or classifier")

    @property
    def open(self) -> bool:
        """Whether the architecture is an open one (its card is a `config.json`)."""
        return is_open(self.arch)

    def to_json(self) -> dict[str, Any]:
        """The card as a JSON-ready dict (tuples become lists), in the shape its file takes."""
        if self.open:
            from schemes.hub import config_of

            return config_of(self.arch, self.num_classes, self.input_shape, self.mean, self.std,
                             self.model_args, self.classifier, self.extra)  # fmt: skip
        return {
            "arch": self.arch,
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "mean": list(self.mean),
            "std": list(self.std),
            "extra": _json_copy(self.extra),
        }

    @classmethod
    def from_json(cls, obj: object) -> ModelCard:
        """Validate a decoded card; unknown or missing fields and wrong types name the field."""
        if not isinstance(obj, dict):
            raise ZooError("a model card must be a JSON object")
        if "architecture" in obj:  # timm's config.json shape
            from schemes.hub import card_fields

            return cls(**card_fields(obj))
        names = {"arch", "num_classes", "input_shape", "mean", "std", "extra"}
        unknown = sorted(str(key) for key in set(obj) - names)
        if unknown:
            raise ZooError(f"unknown field(s) in model card: {', '.join(unknown)}")
        missing = sorted(names - set(obj))
        if missing:
            raise ZooError(f"missing field(s) in model card: {', '.join(missing)}")
        if not isinstance(obj["arch"], str):
            raise ZooError("field 'arch' must be a string")
        if is_open(obj["arch"]):
            raise ZooError("field 'arch' must name a zoo model (an open architecture's card is a config.json)")
        for name in ("input_shape", "mean", "std"):
            if not isinstance(obj[name], list):
                raise ZooError(f"field {name!r} must be a JSON array")
        return cls(**obj)

    def to_bytes(self) -> bytes:
        """The card file's bytes: sorted keys, indent 2, trailing newline."""
        return (json.dumps(self.to_json(), sort_keys=True, indent=2, allow_nan=False) + "\n").encode()

    @property
    def file_name(self) -> str:
        """`model.json` for a zoo model, `config.json` (the Hub layout) for an open architecture."""
        return CONFIG_FILE if self.open else CARD_FILE

    def build(self, *, max_parameters: int | None = None) -> nn.Module:
        """A freshly initialised model of this card's architecture."""
        return create_model(self.arch, num_classes=self.num_classes, input_shape=self.input_shape,
                            model_args=self.model_args, max_parameters=max_parameters)  # fmt: skip


def _channel_floats(name: str, values: object, channels: int, *, positive: bool) -> tuple[float, ...]:
    if not isinstance(values, tuple | list) or len(values) != channels:
        raise ZooError(f"field {name!r} must hold one number per input channel ({channels}), got {values!r}")
    out: list[float] = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ZooError(f"field {name!r} must hold finite numbers, got {value!r}")
        if positive and value <= 0:
            raise ZooError(f"field {name!r} must hold positive numbers, got {value!r}")
        out.append(float(value))
    return tuple(out)


def _json_copy(extra: object, name: str = "extra") -> dict[str, Any]:
    if not isinstance(extra, dict) or not all(isinstance(key, str) for key in extra):
        raise ZooError(f"field {name!r} must be a JSON object with string keys")
    try:
        copied: dict[str, Any] = json.loads(json.dumps(extra, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ZooError(f"field {name!r} is not JSON-serialisable: {exc}") from exc
    return copied


# --------------------------------------------------------------------------------------------
# Saving and loading


def save_model(model: nn.Module, card: ModelCard, directory: Path) -> tuple[Path, Path]:
    """Write `model.safetensors` and the card (`model.json`, or `config.json` for an open
    architecture) into `directory`; returns (weights, card) paths.

    The state dict must be exactly what `card` describes, so whatever is saved can be loaded.
    """
    data = model_to_bytes(model, card)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights_path, card_path = directory / WEIGHTS_FILE, directory / card.file_name
    tmp_weights = weights_path.with_name(weights_path.name + ".tmp")
    tmp_weights.write_bytes(data)
    os.replace(tmp_weights, weights_path)
    tmp_card = card_path.with_name(card_path.name + ".tmp")
    tmp_card.write_bytes(card.to_bytes())
    os.replace(tmp_card, card_path)
    stale = directory / (CARD_FILE if card.open else CONFIG_FILE)
    if stale.is_file():  # a card of the other shape would contradict this one
        stale.unlink()
    return weights_path, card_path


@dataclass(frozen=True)
class BuildLimits:
    """What a node agrees to build from a stranger's card (a community's `[verification]`):
    architectures matching one of `architectures` (shell patterns: `lenet5`, `timm:resnet*`,
    `torchvision:*`), at most `max_parameters` parameters, counted on `meta` before allocation."""

    architectures: tuple[str, ...] = ("*",)
    max_parameters: int = 350_000_000

    def check(self, card: ModelCard) -> None:
        if not any(fnmatch.fnmatchcase(card.arch, pattern) for pattern in self.architectures):
            raise ZooError(
                f"architecture {card.arch!r} is not one this community builds ({', '.join(self.architectures)})"
            )


def _metadata(card: ModelCard) -> dict[str, str]:
    return {"format": "pt", CARD_METADATA_KEY: json.dumps(card.to_json(), sort_keys=True, separators=(",", ":"))}


def model_to_bytes(model: nn.Module, card: ModelCard) -> bytes:
    """The one-file artifact: safetensors weights with the card in the header's metadata.

    The bytes are a function of the weights and the card alone (the header is rewritten with
    sorted keys), so one model always has one hash: claimants who upload the same model name it
    alike, which is what lets the registry see two claims on one model.
    """
    state = {key: value.detach().to("cpu").contiguous().clone() for key, value in model.state_dict().items()}
    with torch.device("meta"):
        reference = card.build()
    check_state(reference.state_dict(), state)
    return _canonical_header(safetensors.torch.save(state, metadata=_metadata(card)))


def _canonical_header(data: bytes) -> bytes:
    """Re-serialise a safetensors header with sorted keys (the library writes its metadata map in
    hash order), padded with spaces to 8 bytes as the format does; the tensor bytes are unchanged."""
    (length,) = struct.unpack("<Q", data[:8])
    header = json.dumps(json.loads(data[8 : 8 + length]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + data[8 + length :]


def _header(data: bytes, what: str) -> dict[str, Any]:
    """The safetensors header of `data`, strictly parsed (length-checked, no duplicate fields)."""
    if len(data) < 10:
        raise ZooError(f"{what} is not a safetensors file")
    (header_len,) = struct.unpack("<Q", data[:8])
    if not 2 <= header_len <= min(_MAX_HEADER_BYTES, len(data) - 8) or data[8:9] != b"{":
        raise ZooError(f"{what} is not a safetensors file (a pickle or torch.save file is never loaded)")
    header = strict_json(data[8 : 8 + header_len], f"{what}: the safetensors header")
    if not isinstance(header, dict):
        raise ZooError(f"{what}: the safetensors header is not a JSON object")
    return header


def card_from_metadata(header: dict[str, Any], what: str) -> ModelCard:
    metadata = header.get("__metadata__") or {}
    text = metadata.get(CARD_METADATA_KEY) if isinstance(metadata, dict) else None
    if not isinstance(text, str) or len(text) > MAX_CARD_BYTES:
        raise ZooError(f"{what} carries no model card (safetensors metadata {CARD_METADATA_KEY!r})")
    return ModelCard.from_json(strict_json(text, f"{what}: its model card"))


def _build(card: ModelCard, state: Mapping[str, torch.Tensor], limits: BuildLimits | None = None) -> nn.Module:
    """The carded architecture with `state` loaded, checked on `meta` before any allocation."""
    limits = limits or BuildLimits()
    limits.check(card)
    with torch.device("meta"):
        skeleton = card.build(max_parameters=limits.max_parameters)
    check_state(skeleton.state_dict(), state)
    model = card.build(max_parameters=limits.max_parameters)
    model.load_state_dict(state, strict=True)
    model.eval()
    return model


def read_weights_bytes(data: bytes, what: str) -> dict[str, torch.Tensor]:
    """Tensors from untrusted safetensors bytes (header checked strictly first)."""
    _header(data, what)
    try:
        return safetensors.torch.load(data)
    except (safetensors.SafetensorError, ValueError) as exc:
        raise ZooError(f"{what} is not a valid safetensors file: {exc}") from exc


def model_from_bytes(
    data: bytes, *, max_bytes: int = 512 * 2**20, what: str = "model", limits: BuildLimits | None = None
) -> tuple[nn.Module, ModelCard]:
    """Load a one-file artifact (`model_to_bytes`) from untrusted bytes; eval mode, on the CPU.
    The card is checked against `limits` before any weight is read."""
    if len(data) > max_bytes:
        raise ZooError(f"{what} is {len(data)} bytes, over the limit of {max_bytes}")
    card = card_from_metadata(_header(data, what), what)
    (limits or BuildLimits()).check(card)
    return _build(card, read_weights_bytes(data, what), limits), card


def load_model(
    directory_or_file: Path, *, max_bytes: int = 2 * 2**30, limits: BuildLimits | None = None
) -> tuple[nn.Module, ModelCard]:
    """Build the carded architecture and load its safetensors weights; the model is in eval mode.

    Accepts an artifact directory (`model.safetensors` with `model.json`, or with `config.json`:
    a directory in timm's Hub layout loads as it is), the `.safetensors` file with its `.json`
    card beside it, or a `.safetensors` file alone that carries its card in its metadata. Never
    unpickles: a file that is not safetensors is refused before any tensor is read.
    """
    path = Path(directory_or_file)
    if path.is_dir():
        weights_path, card_path = path / WEIGHTS_FILE, path / CARD_FILE
        if not card_path.is_file() and (path / CONFIG_FILE).is_file():
            card_path = path / CONFIG_FILE
    elif path.suffix == ".safetensors":
        weights_path, card_path = path, path.with_suffix(".json")
    else:
        raise ZooError(f"{path} is neither an artifact directory nor a .safetensors file")
    if not weights_path.is_file():
        raise ZooError(f"missing model file: {weights_path}")
    if card_path.is_file():
        card = read_card(card_path)
        (limits or BuildLimits()).check(card)
        with torch.device("meta"):  # the size cap, before the weights are read (they are allocated)
            card.build(max_parameters=(limits or BuildLimits()).max_parameters)
        return _build(card, read_weights(weights_path, max_bytes), limits), card
    data = _read_limited(weights_path, max_bytes, "weights file")
    if CARD_METADATA_KEY not in (_header(data, str(weights_path)).get("__metadata__") or {}):
        also = f" or {CONFIG_FILE}" if path.is_dir() else ""
        raise ZooError(f"missing model file: {card_path}{also} (and {weights_path} carries no card of its own)")
    return model_from_bytes(data, max_bytes=max_bytes, what=str(weights_path), limits=limits)


def read_card(path: Path) -> ModelCard:
    """Read and validate a card file (at most `MAX_CARD_BYTES`)."""
    return ModelCard.from_json(read_json_file(path, MAX_CARD_BYTES, "model card"))


def read_json_file(path: Path, limit: int, what: str) -> Any:
    """Strict JSON from an untrusted file: size-limited, no repeated fields, no NaN/Infinity."""
    return strict_json(_read_limited(path, limit, what), f"{what} {path}")


def strict_json(data: bytes | str, what: str) -> Any:
    """Strict JSON from untrusted bytes: no repeated fields, no NaN/Infinity; `what` names it in errors."""
    try:
        return json.loads(data, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except RecursionError:
        raise ZooError(f"{what} nests too deeply") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ZooError(f"{what} is not valid JSON: {exc}") from exc


def _read_limited(path: Path, limit: int, what: str) -> bytes:
    try:
        with path.open("rb") as handle:
            raw = handle.read(limit + 1)
    except OSError as exc:
        raise ZooError(f"cannot read {what} {path}: {exc}") from exc
    if len(raw) > limit:
        raise ZooError(f"{what} {path} is larger than {limit} bytes")
    return raw


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ZooError("JSON object repeats a field")
    return obj


def _no_constants(name: str) -> float:
    raise ZooError(f"JSON holds a non-finite number ({name})")


def read_weights(path: Path, max_bytes: int) -> dict[str, torch.Tensor]:
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            prefix = handle.read(9)
    except OSError as exc:
        raise ZooError(f"cannot read weights file {path}: {exc}") from exc
    if size > max_bytes:
        raise ZooError(f"weights file {path} is {size} bytes, over the limit of {max_bytes}")
    _check_safetensors_header(path, prefix, size)
    try:
        return safetensors.torch.load_file(path, device="cpu")
    except (safetensors.SafetensorError, OSError, ValueError) as exc:
        raise ZooError(f"weights file {path} is not a valid safetensors file: {exc}") from exc


def _check_safetensors_header(path: Path, prefix: bytes, size: int) -> None:
    """Refuse early what cannot be safetensors: an 8-byte little-endian header length, then '{'."""
    if len(prefix) == 9:
        (header_len,) = struct.unpack("<Q", prefix[:8])
        if 2 <= header_len <= size - 8 and prefix[8:9] == b"{":
            return
    raise ZooError(f"weights file {path} is not a safetensors file (a pickle or torch.save file is never loaded)")


def check_state(expected: Mapping[str, torch.Tensor], actual: Mapping[str, torch.Tensor]) -> None:
    missing = sorted(set(expected) - set(actual))
    unexpected = sorted(set(actual) - set(expected))
    mismatched = sorted(
        f"{key} {tuple(actual[key].shape)} != {tuple(expected[key].shape)}"
        for key in set(expected) & set(actual)
        if actual[key].shape != expected[key].shape
    )
    # Dtypes too: 1-byte tensors loaded into float32 parameters would take 4x the file's size.
    retyped = sorted(
        f"{key} {actual[key].dtype} != {expected[key].dtype}"
        for key in set(expected) & set(actual)
        if actual[key].dtype != expected[key].dtype
    )
    problems = [
        f"{label}: {_some(items)}"
        for label, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatch", mismatched),
            ("dtype mismatch", retyped),
        )
        if items
    ]
    if problems:
        raise ZooError("weights do not match the architecture; " + "; ".join(problems))


def _some(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN_KEYS])
    return shown + (f", ... ({len(items)} in all)" if len(items) > _SHOWN_KEYS else "")


# The built-in architectures register themselves on import; importing them last keeps the cycle
# harmless (everything they use from this module is defined by now).
from schemes import architectures as _architectures  # noqa: E402, F401

# --------------------------------------------------------------------------------------------
# What schemes find on any architecture


#: How many early stages MTLSign's head reads (§4.1: "the outputs of the first three layers").
TAP_COUNT = 3


def wm_taps(model: nn.Module, input_shape: tuple[int, int, int]) -> tuple[str, ...]:
    """Module paths of the model's first `TAP_COUNT` stages, where a watermark head may read: a zoo
    model's declared `wm_taps`; a timm model's first `feature_info` modules; otherwise the last
    module of each of the first spatial resolutions among the top-level layers (a top-level
    `Sequential`, such as VGG's `features`, is looked into), found by one forward pass. The answer is a
    function of the architecture alone, so every node finds the same taps."""
    declared = getattr(type(model), "wm_taps", None)
    if isinstance(declared, tuple):
        return declared
    info = getattr(model, "feature_info", None)
    modules = dict(model.named_modules())
    if isinstance(info, list) and all(isinstance(f, dict) and f.get("module") in modules for f in info) and info:
        return tuple(dict.fromkeys(str(f["module"]) for f in info))[:TAP_COUNT]
    return _traced_stages(model, input_shape)


def _stage_candidates(model: nn.Module) -> list[tuple[str, nn.Module]]:
    out: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        if isinstance(child, nn.Sequential):
            out.extend((f"{name}.{sub}", grandchild) for sub, grandchild in child.named_children())
        else:
            out.append((name, child))
    return out


@torch.no_grad()
def _traced_stages(model: nn.Module, input_shape: tuple[int, int, int]) -> tuple[str, ...]:
    candidates = _stage_candidates(model)
    sizes: dict[str, tuple[int, ...]] = {}
    hooks = [
        module.register_forward_hook(
            lambda _m, _a, out, p=path: (
                sizes.__setitem__(p, tuple(out.shape[2:])) if isinstance(out, torch.Tensor) and out.dim() == 4 else None
            )
        )
        for path, module in candidates
    ]
    was = model.training
    try:
        model.eval()
        parameter = next(model.parameters())
        model(torch.zeros(1, *input_shape, device=parameter.device, dtype=parameter.dtype))
    except RuntimeError as exc:
        raise ZooError(f"{type(model).__name__} cannot run on inputs of shape {input_shape}: {exc}") from None
    finally:
        model.train(was)
        for hook in hooks:
            hook.remove()
    order = [path for path, _ in candidates if path in sizes]
    stages = [path for i, path in enumerate(order) if i + 1 == len(order) or sizes[order[i + 1]] != sizes[path]]
    if not stages:
        raise ZooError(f"{type(model).__name__} has no convolutional stage for a watermark head to read")
    return tuple(stages[:TAP_COUNT])


def transfer_weights(source: nn.Module, target: nn.Module) -> None:
    """Load `source`'s weights into `target`, an architecture with the same layers and possibly more
    outputs: every tensor is copied; a classifier tensor that grew along its first dimension keeps
    its trained rows, and the new rows (a new label's class) keep `target`'s initialisation."""
    have, want = source.state_dict(), target.state_dict()
    if set(have) != set(want):
        raise ZooError(f"the given model's layers do not match {type(target).__name__}'s: "
                       f"{_some(sorted(set(have) ^ set(want)))}")  # fmt: skip
    merged: dict[str, torch.Tensor] = {}
    for key, old in have.items():
        new = want[key]
        if old.shape == new.shape:
            merged[key] = old
        elif old.dim() >= 1 and old.shape[1:] == new.shape[1:] and old.shape[0] < new.shape[0]:
            grown = new.detach().clone()
            grown[: old.shape[0]] = old.to(grown.dtype)
            merged[key] = grown
        else:
            raise ZooError(f"the given model's {key} {tuple(old.shape)} does not fit {tuple(new.shape)}")
    target.load_state_dict(merged, strict=True)
