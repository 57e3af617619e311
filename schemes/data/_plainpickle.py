"""A pickle reader that admits plain data and plain numpy integer arrays, and nothing else.

The CIFAR batches are Python pickles; unpickling a stranger's file runs whatever it names. This
unpickler resolves only stand-ins for the few numpy globals an integer array needs (`ndarray`,
`dtype`, `_reconstruct`, `_frombuffer`); any other global is refused before anything runs, and an
array is built from the pickle's own bytes only after its dtype, shape and size check out.
"""

from __future__ import annotations

import math
import pickle
import re
from typing import IO, Any

import numpy as np

from contracts.encoding import is_int


def load_plain(stream: IO[bytes]) -> object:
    """Unpickle `stream`, allowing only plain values and numpy integer arrays (Python 2 strings
    stay bytes); arrays come back as `np.ndarray`."""
    record = _PlainUnpickler(stream, encoding="bytes").load()
    if isinstance(record, dict):
        record = {key: value.array if isinstance(value, _ArraySpec) else value for key, value in record.items()}
    return record


class Refused(pickle.UnpicklingError):
    """A pickle asked for something outside the plain-array allow-list."""


PICKLE_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    OverflowError,
    MemoryError,
    RecursionError,
)


class _PlainUnpickler(pickle.Unpickler):
    """Resolves only stand-ins for numpy's array globals; every other global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        stand_in = _ALLOWED_GLOBALS.get((module, name))
        if stand_in is None:
            raise Refused(f"global {module}.{name} is not allowed (only plain numpy integer arrays are)")
        return stand_in


class _NdarrayMarker:
    """Stands for `numpy.ndarray` in a pickle; it cannot be called or built."""


_NDARRAY = _NdarrayMarker()


class _DtypeSpec:
    """A plain integer dtype named by a pickle (the numpy.dtype(code, align, copy) + BUILD pair)."""

    def __init__(self, dtype: np.dtype[Any]) -> None:
        self.dtype = dtype

    def __setstate__(self, state: object) -> None:
        if not (isinstance(state, tuple) and len(state) in (8, 9) and state[2:5] == (None, None, None)):
            raise Refused("only plain (unstructured) dtypes are allowed")
        order = _text(state[1])
        if order not in ("<", ">", "|", "="):
            raise Refused(f"bad byte order {order!r} in a dtype")
        if order in ("<", ">"):
            self.dtype = self.dtype.newbyteorder("<" if order == "<" else ">")


class _ArraySpec:
    """An array being rebuilt from a pickle (`_reconstruct` + BUILD); `array` holds it once built."""

    array: np.ndarray | None = None

    def __setstate__(self, state: object) -> None:
        if isinstance(state, tuple) and len(state) == 5 and state[0] == 1:
            state = state[1:]
        if not (isinstance(state, tuple) and len(state) == 4):
            raise Refused("malformed array state")
        shape, dtype, fortran, raw = state
        self.array = _array_from(raw, dtype, shape, fortran=bool(fortran))


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, str):
        return value
    raise Refused(f"expected a string, found {type(value).__name__}")


def _dtype(code: object, align: object = False, copy: object = True) -> _DtypeSpec:
    text = _text(code)
    if not re.fullmatch(r"[|<>=]?(?:b1|[iu][1248])", text):
        raise Refused(f"dtype {text!r} is not a plain integer type")
    return _DtypeSpec(np.dtype(text))


def _reconstruct(subtype: object, shape: object, code: object) -> _ArraySpec:
    if subtype is not _NDARRAY:
        raise Refused("only numpy.ndarray may be reconstructed")
    return _ArraySpec()


def _frombuffer(raw: object, dtype: object, shape: object, order: object) -> np.ndarray:
    if _text(order) not in ("C", "F"):
        raise Refused(f"bad array order {order!r}")
    return _array_from(raw, dtype, shape, fortran=_text(order) == "F")


def _array_from(raw: object, dtype: object, shape: object, *, fortran: bool) -> np.ndarray:
    """A view of the pickle's bytes (no copy, so memory stays bounded by the file); copied after validation."""
    if not isinstance(dtype, _DtypeSpec):
        raise Refused("an array needs a plain dtype")
    if not isinstance(raw, bytes | bytearray):
        raise Refused("array data must be raw bytes")
    if not (isinstance(shape, tuple) and len(shape) <= 8 and all(_is_size(d) for d in shape)):
        raise Refused(f"bad array shape {shape!r}")
    dims = tuple(int(d) for d in shape)
    needed = math.prod(dims) * dtype.dtype.itemsize
    if needed != len(raw):
        raise Refused(f"array data is {len(raw)} bytes, its shape {dims} needs {needed}")
    flat: np.ndarray = np.frombuffer(raw, dtype=dtype.dtype)
    return flat.reshape(dims, order="F" if fortran else "C")


def _is_size(value: object) -> bool:
    return is_int(value, 0)


_ALLOWED_GLOBALS: dict[tuple[str, str], object] = {
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # numpy < 2 (and the Python 2 originals)
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,  # pickle protocol 5
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
}
