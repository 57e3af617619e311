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

import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn

from contracts.cards import header_size, parse_header
from contracts.errors import ZooError
from contracts.limits import BuildLimits

__all__ = [
    "CARD_FILE",
    "CONFIG_FILE",
    "MAX_CARD_BYTES",
    "ModelCard",
    "TAP_COUNT",
    "WEIGHTS_FILE",
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


from schemes.models.card import (
    CARD_FILE,
    CARD_METADATA_KEY,
    CONFIG_FILE,
    MAX_CARD_BYTES,
    WEIGHTS_FILE,
    ModelCard,
    read_card,
    read_json_file,
    read_limited,
    strict_json,
)
from schemes.models.catalog import create_model, is_open, list_models, register_model

_SHOWN_KEYS = 5


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
    length = header_size(data[:8], len(data), "model", ZooError)
    header = json.dumps(parse_header(data, "model", ZooError), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + data[8 + length :]


def card_from_metadata(header: dict[str, Any], what: str) -> ModelCard:
    metadata = header.get("__metadata__") or {}
    text = metadata.get(CARD_METADATA_KEY) if isinstance(metadata, dict) else None
    if not isinstance(text, str) or len(text) > MAX_CARD_BYTES:
        raise ZooError(f"{what} carries no model card (safetensors metadata {CARD_METADATA_KEY!r})")
    return ModelCard.from_json(strict_json(text, f"{what}: its model card"))


def _build(card: ModelCard, state: Mapping[str, torch.Tensor], limits: BuildLimits | None = None) -> nn.Module:
    """The carded architecture with `state` loaded, checked on `meta` before any allocation."""
    limits = limits or BuildLimits()
    limits.check(card.arch)
    with torch.device("meta"):
        skeleton = card.build(max_parameters=limits.max_parameters)
    check_state(skeleton.state_dict(), state)
    model = card.build(max_parameters=limits.max_parameters)
    model.load_state_dict(state, strict=True)
    model.eval()
    return model


def read_weights_bytes(data: bytes, what: str) -> dict[str, torch.Tensor]:
    """Tensors from untrusted safetensors bytes (header checked strictly first)."""
    parse_header(data, what, ZooError)
    return _tensors(data, what)


def _tensors(data: bytes, what: str) -> dict[str, torch.Tensor]:
    """The tensors of bytes whose header `parse_header` has already accepted."""
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
    card = card_from_metadata(parse_header(data, what, ZooError), what)
    (limits or BuildLimits()).check(card.arch)
    return _build(card, _tensors(data, what), limits), card


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
        (limits or BuildLimits()).check(card.arch)
        with torch.device("meta"):  # the size cap, before the weights are read (they are allocated)
            card.build(max_parameters=(limits or BuildLimits()).max_parameters)
        return _build(card, read_weights(weights_path, max_bytes), limits), card
    data = read_limited(weights_path, max_bytes, "weights file")
    if CARD_METADATA_KEY not in (parse_header(data, str(weights_path), ZooError).get("__metadata__") or {}):
        also = f" or {CONFIG_FILE}" if path.is_dir() else ""
        raise ZooError(f"missing model file: {card_path}{also} (and {weights_path} carries no card of its own)")
    return model_from_bytes(data, max_bytes=max_bytes, what=str(weights_path), limits=limits)


def read_weights(path: Path, max_bytes: int) -> dict[str, torch.Tensor]:
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            prefix = handle.read(9)
    except OSError as exc:
        raise ZooError(f"cannot read weights file {path}: {exc}") from exc
    if size > max_bytes:
        raise ZooError(f"weights file {path} is {size} bytes, over the limit of {max_bytes}")
    header_size(prefix, size, f"weights file {path}", ZooError)
    if prefix[8:9] != b"{":  # a header is a JSON object: refuse anything else before the library reads it
        raise ZooError(f"weights file {path} is not a safetensors file (a pickle or torch.save file is never loaded)")
    try:
        return safetensors.torch.load_file(path, device="cpu")
    except (safetensors.SafetensorError, OSError, ValueError) as exc:
        raise ZooError(f"weights file {path} is not a valid safetensors file: {exc}") from exc


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
