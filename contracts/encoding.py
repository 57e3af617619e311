"""Canonical JSON (RFC 8785) and the strict parser every untrusted byte string goes through."""

from __future__ import annotations

import json
import math
import re
from typing import Any, TypeGuard

import rfc8785

from contracts.errors import MessageError, WmnodeError

#: DESIGN §4.1 caps every message; the API refuses larger bodies before parsing them.
MAX_MESSAGE_BYTES = 64 * 1024

_HEX_RE = re.compile(r"(?:[0-9a-f]{2})+")
#: I-JSON (RFC 7493 §2.2) and RFC 8785 §3.2.2.3: integers beyond ±(2^53 − 1) are not portable.
MAX_SAFE_INT = 2**53 - 1


def canonical(obj: Any) -> bytes:
    """The one encoding that is signed and hashed: RFC 8785 canonical JSON, UTF-8.

    Floats are refused (DESIGN §4.1: scores are decimal strings or integers per mille), so the
    bytes never depend on a float formatter. Without floats, and with ASCII object keys (RFC 8785
    §3.2.3 sorts keys by UTF-16 code units, which for ASCII is Python's order), RFC 8785 is exactly
    `json.dumps` with sorted keys, no white space and no ASCII escaping; that fast path is taken
    when it applies, and the `rfc8785` package otherwise (tests hold the two equal).
    """
    if not _check_value(obj):
        try:
            return rfc8785.dumps(obj)
        except rfc8785.CanonicalizationError as exc:
            raise MessageError(f"cannot canonicalise: {exc}") from exc
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except UnicodeEncodeError as exc:
        raise MessageError("cannot canonicalise: a string is not valid Unicode (lone surrogate)") from exc


def _check_value(obj: Any) -> bool:
    """Refuse floats and out-of-range integers; return False if a key needs RFC 8785's own sort."""
    kind = type(obj)
    if kind is str or kind is bool or obj is None:
        return True
    if kind is int:
        if not -MAX_SAFE_INT <= obj <= MAX_SAFE_INT:
            raise MessageError(f"integer {obj} is outside the I-JSON range ±(2^53 - 1)")
        return True
    if kind is dict:
        fast = True
        for key, value in obj.items():
            if type(key) is not str:
                raise MessageError(f"object keys must be strings, got {type(key).__name__}")
            if not (_check_value(value) and key.isascii()):
                fast = False
        return fast
    if kind is list or kind is tuple:
        return all([_check_value(value) for value in obj])
    if isinstance(obj, float):
        raise MessageError("floats are not allowed in messages (use integers or decimal strings)")
    raise MessageError(f"cannot canonicalise a {kind.__name__}")


class _Refused(ValueError):
    """A strict-JSON rule broken inside `json.loads` (re-raised as the caller's error type)."""


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Refused(f"repeats a field: duplicate JSON key {key!r}")
        out[key] = value
    return out


def _no_float(text: str) -> Any:
    raise _Refused(f"holds a float, and floats are not allowed in messages: {text}")


def _no_constant(text: str) -> Any:
    raise _Refused(f"holds a non-finite number ({text}): {text} is not valid JSON")


def parse_json(
    data: bytes | str,
    *,
    limit: int = MAX_MESSAGE_BYTES,
    floats: bool = False,
    what: str = "message",
    error: type[WmnodeError] = MessageError,
) -> Any:
    """Parse untrusted JSON strictly: size limit, UTF-8, no duplicate keys, NaN or Infinity, and no
    floats unless `floats` (a scheme's info holds β and thresholds; a message never does). The one
    strict reader of the project: messages, infos, cards, safetensors headers, bundle files; `what`
    names the input in errors of type `error`."""
    if isinstance(data, str):
        try:
            data = data.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise error(f"{what} is not valid JSON: {exc}") from exc
    if len(data) > limit:
        raise error(f"{what} is {len(data)} bytes, over the limit of {limit} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what} is not valid JSON: it is not UTF-8 ({exc})") from exc
    try:
        return json.loads(
            text,
            object_pairs_hook=_no_duplicate_keys,
            parse_float=float if floats else _no_float,
            parse_constant=_no_constant,
        )
    except _Refused as exc:
        raise error(f"{what} {exc}") from None
    except json.JSONDecodeError as exc:
        raise error(f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except RecursionError as exc:
        raise error(f"{what} is nested too deeply") from exc
    except ValueError as exc:  # e.g. an integer past Python's int-string digit limit
        raise error(f"{what} is not valid JSON: {exc}") from exc


def is_hex(value: object, nbytes: int | None = None) -> bool:
    """True for a non-empty lowercase hex string (of exactly `nbytes` bytes when given)."""
    if not isinstance(value, str) or (nbytes is not None and len(value) != 2 * nbytes):
        return False
    return _HEX_RE.fullmatch(value) is not None


def is_int(value: object, low: int | None = None, high: int | None = None) -> TypeGuard[int]:
    """True for an int that is not a bool (JSON's `true` parses to Python's 1), within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int):
        return False
    return (low is None or value >= low) and (high is None or value <= high)


def is_number(value: object, low: float = -math.inf, high: float = math.inf) -> TypeGuard[int | float]:
    """True for a finite int or float that is not a bool, within [low, high] (NaN fails)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return False
    return low <= value <= high
