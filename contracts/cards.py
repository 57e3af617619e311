"""A model artifact's card, read torch-free from its safetensors header: the one header reader the
node, its API and its judges share."""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from contracts.encoding import parse_json
from contracts.errors import MessageError, WmnodeError


def card_from_artifact(data: bytes) -> dict[str, Any]:
    """The card a model artifact carries in its safetensors metadata (`wmnode.card`)."""
    return card_summary(header_card(parse_header(data, "the suspect model")))


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


#: A safetensors header larger than this is refused unread (a card is a few hundred bytes; a large
#: model's header, one entry per tensor, well under a megabyte).
MAX_HEADER_BYTES = 16 * 2**20
_PREFIX = 8  # the header's length: an unsigned 64-bit little-endian integer


def header_size(prefix: bytes, total: int | None, what: str, error: type[WmnodeError] = MessageError) -> int:
    """The header length a safetensors file's first 8 bytes announce, checked before anything is
    read: at least 2 (`{}`), at most `MAX_HEADER_BYTES` and what the file holds (`total` bytes, when
    known). A pickle or a torch.save zip announces no such length, so it is refused here unread."""
    if len(prefix) < _PREFIX:
        raise error(f"{what} is not a safetensors file")
    (length,) = struct.unpack("<Q", prefix[:_PREFIX])
    room = MAX_HEADER_BYTES if total is None else min(MAX_HEADER_BYTES, total - _PREFIX)
    if not 2 <= length <= room:
        why = "over 16 MiB" if length > MAX_HEADER_BYTES else "its length does not fit the file"
        raise error(
            f"{what}'s safetensors header is malformed ({why}): it is not a safetensors file (a pickle or "
            "torch.save file is never loaded)"
        )
    return int(length)


def parse_header(data: bytes, what: str, error: type[WmnodeError] = MessageError) -> dict[str, Any]:
    """The safetensors header of `data` (the file, or at least its prefix and header), strictly
    parsed: the one header reader of the project (node, API, judges, zoo)."""
    length = header_size(data[:_PREFIX], len(data), what, error)
    header = parse_json(
        data[_PREFIX : _PREFIX + length], limit=MAX_HEADER_BYTES, floats=True, what=f"{what}'s safetensors header",
        error=error,
    )  # fmt: skip
    if not isinstance(header, dict):
        raise error(f"{what}'s safetensors header is not a JSON object")
    return header


def safetensors_header(path: Path, what: str | None = None, error: type[WmnodeError] = MessageError) -> bytes:
    """The length prefix and header of a stored safetensors file, read without its tensors."""
    what = what or path.name
    with path.open("rb") as handle:
        prefix = handle.read(_PREFIX)
        return prefix + handle.read(header_size(prefix, None, what, error))


def tensor_names(data: bytes) -> set[str]:
    """The tensor names in a safetensors header (`data` holds at least the header)."""
    header = parse_header(data, "the verifier artifact")
    return {name for name in header if name != "__metadata__"}
