"""The rules an info's fields are made of (`contracts.infos`): each returns the field's typed value or
raises an InfoError naming the scheme, the field, its rule and (the start of) the value."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from contracts.datasets import DATASET_NAME_RE
from contracts.encoding import is_hex, is_int, is_number
from contracts.errors import InfoError

MAX_DIM = 4096


def fail(scheme: str, name: str, rule: str, value: object) -> InfoError:
    return InfoError(f"{scheme} info: {name} must be {rule}, got {str(value)[:80]!r}")


def integer(obj: Mapping[str, Any], scheme: str, name: str, low: int, high: int) -> int:
    value = obj[name]
    if not is_int(value, low, high):
        raise fail(scheme, name, f"an integer in [{low}, {high}]", value)
    return value


def number(
    obj: Mapping[str, Any], scheme: str, name: str, low: float, high: float, *, open_low: bool = False,
    open_high: bool = False,
) -> float:  # fmt: skip
    """A finite number in [low, high]; `open_low`, `open_high` leave out an end."""
    value = obj[name]
    if not is_number(value, low, high) or (open_low and value == low) or (open_high and value == high):
        rule = f"a number in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
        raise fail(scheme, name, rule, value)
    return float(value)


def one_of(obj: Mapping[str, Any], scheme: str, name: str, choices: tuple[Any, ...]) -> Any:
    """One of `choices`, of its type (the version 2 is not 2.0 or true)."""
    value = obj[name]
    if not any(type(value) is type(choice) and value == choice for choice in choices):
        words = [str(choice) for choice in choices]
        rule = words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"
        raise fail(scheme, name, rule, value)
    return value


def hex64(obj: Mapping[str, Any], scheme: str, name: str) -> str:
    value = obj[name]
    if not is_hex(value, 32):
        raise fail(scheme, name, "64 lowercase hex digits", value)
    return str(value)


def shape_of(obj: Mapping[str, Any], scheme: str) -> tuple[int, int, int]:
    value = obj["input_shape"]
    if not (isinstance(value, list) and len(value) == 3 and all(is_int(v, 1, MAX_DIM) for v in value)):
        raise fail(scheme, "input_shape", f"three integers in [1, {MAX_DIM}]", value)
    return (value[0], value[1], value[2])


def channels_of(obj: Mapping[str, Any], scheme: str, name: str, channels: int, positive: bool) -> tuple[float, ...]:
    """One number per channel: a mean in (-1e6, 1e6), a standard deviation in [1e-12, 1e6)."""
    value = obj[name]
    low = 1e-12 if positive else -1e6
    ok = isinstance(value, list) and len(value) == channels
    ok = ok and all(is_number(v, low, 1e6) and v != 1e6 and (positive or v != low) for v in value)
    if not ok:
        raise fail(scheme, name, f"{channels} finite number(s), one per channel", value)
    return tuple(float(v) for v in value)


def dataset_of(obj: Mapping[str, Any], scheme: str) -> str:
    name = obj["dataset"]
    if not isinstance(name, str) or not DATASET_NAME_RE.fullmatch(name):
        raise fail(scheme, "dataset", "a data set's name", name)
    return name


def passport_shapes(obj: Mapping[str, Any], scheme: str) -> dict[str, tuple[int, ...]]:
    """1 to 1000 module paths, each with its passport's shape: [1, C, H, W] (conv) or [1, features]
    (FC), sides in [1, 2^20] and at most 2^24 elements."""
    layers = obj["layers"]
    if not isinstance(layers, Mapping) or not 1 <= len(layers) <= 1000:
        raise fail(scheme, "layers", "a map of 1 to 1000 module paths to passport shapes", layers)
    shapes: dict[str, tuple[int, ...]] = {}
    for path, shape in layers.items():
        ok = isinstance(path, str) and 0 < len(path) <= 200 and isinstance(shape, list) and len(shape) in (2, 4)
        if not (ok and all(is_int(v, 1, 1 << 20) for v in shape) and shape[0] == 1 and math.prod(shape) <= 1 << 24):
            raise fail(scheme, f"layers[{str(path)[:80]!r}]", "a passport shape [1, C, H, W] or [1, features]", shape)
        shapes[path] = tuple(shape)
    return shapes
