"""Canonical JSON (RFC 8785) and the strict parser every untrusted byte string goes through."""

from __future__ import annotations

import json
from typing import Any

import rfc8785

from registry.errors import MessageError

#: DESIGN §4.1 caps every message; the API refuses larger bodies before parsing them.
MAX_MESSAGE_BYTES = 64 * 1024

_HEX = frozenset("0123456789abcdef")


def canonical(obj: Any) -> bytes:
    """The one encoding that is signed and hashed: RFC 8785 canonical JSON, UTF-8.

    Floats are refused (DESIGN §4.1: scores are decimal strings or integers per mille), so the
    bytes never depend on a float formatter.
    """
    _refuse_floats(obj)
    try:
        return rfc8785.dumps(obj)
    except rfc8785.CanonicalizationError as exc:
        raise MessageError(f"cannot canonicalise: {exc}") from exc


def _refuse_floats(obj: Any) -> None:
    if isinstance(obj, float):
        raise MessageError("floats are not allowed in messages (use integers or decimal strings)")
    if isinstance(obj, dict):
        for value in obj.values():
            _refuse_floats(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            _refuse_floats(value)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise MessageError(f"duplicate JSON key {key!r}")
        out[key] = value
    return out


def _no_float(text: str) -> Any:
    raise MessageError(f"floats are not allowed in messages: {text}")


def _no_constant(text: str) -> Any:
    raise MessageError(f"{text} is not valid JSON")


def parse_json(data: bytes, *, limit: int = MAX_MESSAGE_BYTES) -> Any:
    """Parse untrusted JSON strictly: size limit, UTF-8, no duplicate keys, floats or NaN."""
    if len(data) > limit:
        raise MessageError(f"message is {len(data)} bytes, over the limit of {limit} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MessageError(f"message is not UTF-8: {exc}") from exc
    try:
        return json.loads(
            text,
            object_pairs_hook=_no_duplicate_keys,
            parse_float=_no_float,
            parse_constant=_no_constant,
        )
    except json.JSONDecodeError as exc:
        raise MessageError(f"message is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except RecursionError as exc:
        raise MessageError("message is nested too deeply") from exc


def is_hex(value: object, nbytes: int | None = None) -> bool:
    """True for a lowercase hex string (of exactly `nbytes` bytes when given)."""
    if not isinstance(value, str) or len(value) % 2 or not value:
        return False
    if nbytes is not None and len(value) != 2 * nbytes:
        return False
    return all(ch in _HEX for ch in value)
