"""A model named by what defines its function (DESIGN §4.4), read torch-free from its artifact.

The artifact hash names a file: any byte of its card changes it, so a thief who re-cards a copy
(another input size, free fields, label names) would make a model the registry had never seen, and
its owner would need a claim for every copy. Decisions and the standing owner are keyed instead by

    SHA-256( canonical JSON of {"card": {arch, model_args, mean, std}, "tensors": [[name, dtype, shape], ...]}
             ‖ the tensors' bytes, in name order )

the weights as stored (names, dtypes, shapes, bytes, whatever order the file holds them in) and the
card fields that change what the model computes: its architecture, the arguments it is built with
and its normalisation. Whoever uploads a victim's weights under a normalisation of its own names
another model, not the victim's. The input size is not among them: a judge runs a suspect at the
shape its owner published (schemes.suspect).
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, BinaryIO

from contracts.cards import card_summary, header_card, header_size, parse_header
from contracts.encoding import canonical, is_int
from contracts.errors import MessageError

__all__ = ["model_identity", "model_identity_of"]

_CHUNK = 1 << 20


def model_identity(path: Path) -> str:
    """The function identity of the model artifact at `path` (a wmnode safetensors file)."""
    with path.open("rb") as handle:
        return _identity(handle)


def model_identity_of(data: bytes) -> str:
    """The function identity of a model artifact's bytes."""
    return _identity(io.BytesIO(data))


def _identity(handle: BinaryIO) -> str:
    prefix = handle.read(8)
    length = header_size(prefix, None, "the suspect model")
    header = _check_tensors(parse_header(prefix + handle.read(length), "the suspect model"))
    start = 8 + length
    tensors = sorted((name, spec) for name, spec in header.items() if name != "__metadata__")
    described = {"card": _function_card(header), "tensors": [[n, s["dtype"], s["shape"]] for n, s in tensors]}
    try:
        digest = hashlib.sha256(canonical(described))
    except (TypeError, ValueError) as exc:
        raise MessageError(f"the suspect model's header cannot be read: {str(exc)[:80]}") from None
    for _, spec in tensors:
        begin, end = spec["data_offsets"]
        handle.seek(start + begin)
        left = end - begin
        while left:
            chunk = handle.read(min(left, _CHUNK))
            if not chunk:
                raise MessageError("the suspect model ends before its tensors do")
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def _check_tensors(header: dict[str, Any]) -> dict[str, Any]:
    """Every tensor entry names a dtype, a shape and two ordered offsets."""
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        ok = isinstance(spec, dict) and isinstance(spec.get("dtype"), str) and isinstance(spec.get("shape"), list)
        offsets = spec.get("data_offsets") if isinstance(spec, dict) else None
        ok = ok and isinstance(offsets, list) and len(offsets) == 2
        ok = ok and all(is_int(v, low=0) for v in offsets or ())
        if not ok or offsets is None or offsets[0] > offsets[1]:
            raise MessageError(f"the suspect model's tensor {str(name)[:40]!r} is malformed")
    return header


def _function_card(header: dict[str, Any]) -> dict[str, Any]:
    """The card fields that define the function: architecture, arguments, normalisation."""
    card = header_card(header)
    summary = card_summary(card)
    args = card.get("model_args", {})
    try:  # floats travel as their shortest repr: canonical JSON here carries none (DESIGN §4.1)
        return {
            "arch": str(summary["arch"]),
            "model_args": json.dumps(args if isinstance(args, dict) else {}, sort_keys=True, separators=(",", ":")),
            "mean": [repr(float(v)) for v in summary["mean"] or ()],
            "std": [repr(float(v)) for v in summary["std"] or ()],
        }
    except (TypeError, ValueError) as exc:
        raise MessageError(f"the suspect model's card has a malformed normalisation: {exc}") from None
