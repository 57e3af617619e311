"""A model artifact's card, read torch-free from its safetensors header: the one header reader the
node, its API and its judges share."""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from contracts.errors import MessageError


def card_from_artifact(data: bytes) -> dict[str, Any]:
    """The card a model artifact carries in its safetensors metadata (`wmnode.card`)."""
    return card_summary(header_card(_header(data, "the suspect model")))


def header_card(header: Mapping[str, Any]) -> dict[str, Any]:
    """The whole card in a parsed safetensors header's metadata (`wmnode.card`), as JSON."""
    try:
        card = json.loads(header["__metadata__"]["wmnode.card"])
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise MessageError("the suspect model carries no model card in its metadata") from exc
    if not isinstance(card, dict):
        raise MessageError("the suspect model's card is not a JSON object")
    return card


def card_summary(card: Mapping[str, Any]) -> dict[str, Any]:
    """The fields a node checks, from either card shape (schemes.zoo.ModelCard): the zoo's own
    (`arch`, `input_shape`, `mean`, `std` at the top) or timm's config.json (`architecture`, and
    `pretrained_cfg` with `input_size`, `mean`, `std`), read exactly as the judge's loader reads it
    (a bare timm name is `timm:NAME`), so the node and its judge see one card."""
    if "architecture" not in card:
        return {k: card.get(k) for k in ("arch", "num_classes", "input_shape", "mean", "std")}
    arch = card.get("architecture")
    cfg = card.get("pretrained_cfg")
    cfg = cfg if isinstance(cfg, dict) else {}
    if isinstance(arch, str) and ":" not in arch:
        arch = f"timm:{arch}"
    return {"arch": arch, "num_classes": card.get("num_classes"), "input_shape": cfg.get("input_size"),
            "mean": cfg.get("mean"), "std": cfg.get("std")}  # fmt: skip


def safetensors_header(path: Path) -> bytes:
    """The length prefix and header of a stored safetensors file (at most 16 MiB of header)."""
    with path.open("rb") as handle:
        prefix = handle.read(8)
        length = int.from_bytes(prefix, "little") if len(prefix) == 8 else 0
        if length > 16 * 2**20:
            raise MessageError(f"{path.name}: safetensors header over 16 MiB")
        return prefix + handle.read(length)


def tensor_names(data: bytes) -> set[str]:
    """The tensor names in a safetensors header (`data` holds at least the header)."""
    header = _header(data, "the verifier artifact")
    return {name for name in header if name != "__metadata__"}


def _header(data: bytes, what: str) -> dict[str, Any]:
    if len(data) < 8:
        raise MessageError(f"{what} is not a safetensors file")
    (length,) = struct.unpack("<Q", data[:8])
    if not 2 <= length <= min(len(data) - 8, 16 * 2**20):
        raise MessageError(f"{what}'s safetensors header is malformed")
    try:
        header = json.loads(data[8 : 8 + length])
    except (ValueError, RecursionError) as exc:
        raise MessageError(f"{what}'s safetensors header is not JSON") from exc
    if not isinstance(header, dict):
        raise MessageError(f"{what}'s safetensors header is not a JSON object")
    return header
