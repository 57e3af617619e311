"""What travels on the Raft port: a small tagged binary codec and a schema per Raft message.

pysyncobj pickles its messages, and unpickling a peer's bytes runs whatever code they name
(DESIGN §6: a member must never run code on another). Its messages are dicts of ints, bools,
bytes, strings, None and lists, so a codec of exactly those types carries them, and decoding is
total: any byte string either decodes to those types or raises `WireError`. After decoding, every
message is checked against the schema of its `type` before pysyncobj's handler sees it, so a
missing key or a wrong type cannot raise inside the tick thread.

Encoding: one tag byte, then
``N`` None · ``F``/``T`` bools · ``i`` int64 big-endian · ``b`` u32 length + bytes ·
``s`` u32 length + UTF-8 · ``l`` u32 count + items · ``d`` u32 count + (string key, value) pairs.
Tuples encode as lists and decode as tuples (pysyncobj's log entries are tuples).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from contracts.encoding import is_int

_I64 = struct.Struct(">q")
_U32 = struct.Struct(">I")
#: Nesting of a Raft message: dict → entries list → entry → bytes.
MAX_DEPTH = 6
#: Log indexes and terms: non-negative and far below any overflow.
MAX_INDEX = 2**62


class WireError(ValueError):
    """Bytes from a peer that are not a well-formed wmnode Raft message."""


def encode(obj: Any) -> bytes:
    out = bytearray()
    _encode(obj, out)
    return bytes(out)


def _encode(obj: Any, out: bytearray) -> None:
    if obj is None:
        out += b"N"
    elif obj is True:
        out += b"T"
    elif obj is False:
        out += b"F"
    elif isinstance(obj, int):
        out += b"i" + _I64.pack(obj)
    elif isinstance(obj, bytes | bytearray):
        out += b"b" + _U32.pack(len(obj)) + obj
    elif isinstance(obj, str):
        raw = obj.encode()
        out += b"s" + _U32.pack(len(raw)) + raw
    elif isinstance(obj, list | tuple):
        out += b"l" + _U32.pack(len(obj))
        for item in obj:
            _encode(item, out)
    elif isinstance(obj, dict):
        out += b"d" + _U32.pack(len(obj))
        for key, value in obj.items():
            if not isinstance(key, str):
                raise TypeError(f"dict keys must be strings, not {type(key).__name__}")
            _encode(key, out)
            _encode(value, out)
    else:
        raise TypeError(f"cannot encode {type(obj).__name__} for the Raft wire")


#: Values in one frame: far above any honest Raft message (a 1 MiB batch of entries is a few
#: thousand), far below what would hold the tick thread for long.
MAX_ITEMS = 65536


def decode(data: bytes, max_items: int = MAX_ITEMS) -> Any:
    """Decode one value that spans `data` exactly; total (only `WireError` escapes). Snapshots,
    bounded by their size instead, pass `max_items=len(data)`."""
    try:
        value, end = _decode(memoryview(data), 0, 0, [max_items])
    except (struct.error, UnicodeDecodeError, IndexError) as exc:
        raise WireError(f"malformed frame: {exc}") from None
    if end != len(data):
        raise WireError("trailing bytes after the message")
    return value


def _decode(buf: memoryview, pos: int, depth: int, budget: list[int]) -> tuple[Any, int]:
    if depth > MAX_DEPTH:
        raise WireError("message nested too deeply")
    budget[0] -= 1
    if budget[0] < 0:
        raise WireError("too many values in one frame")
    tag = buf[pos]
    pos += 1
    if tag == 0x4E:  # N
        return None, pos
    if tag == 0x54:  # T
        return True, pos
    if tag == 0x46:  # F
        return False, pos
    if tag == 0x69:  # i
        return _I64.unpack_from(buf, pos)[0], pos + 8
    if tag in (0x62, 0x73):  # b, s
        (size,) = _U32.unpack_from(buf, pos)
        pos += 4
        if size > len(buf) - pos:
            raise WireError("length runs past the frame")
        raw = bytes(buf[pos : pos + size])
        return (raw if tag == 0x62 else raw.decode()), pos + size
    if tag in (0x6C, 0x64):  # l, d
        (count,) = _U32.unpack_from(buf, pos)
        pos += 4
        if count > len(buf) - pos:  # every item takes at least one byte
            raise WireError("count runs past the frame")
        if tag == 0x6C:
            items = []
            for _ in range(count):
                item, pos = _decode(buf, pos, depth + 1, budget)
                items.append(item)
            return tuple(items), pos
        out: dict[str, Any] = {}
        for _ in range(count):
            key, pos = _decode(buf, pos, depth + 1, budget)
            if not isinstance(key, str) or key in out:
                raise WireError("dict keys must be distinct strings")
            out[key], pos = _decode(buf, pos, depth + 1, budget)
        return out, pos
    raise WireError(f"unknown tag 0x{tag:02x}")


# -- schemas ----------------------------------------------------------------------------------


def _index(value: Any) -> bool:
    return is_int(value, 0, MAX_INDEX - 1)


def _flag(value: Any) -> bool:
    return isinstance(value, bool)


def _entries(value: Any) -> bool:
    return isinstance(value, tuple) and all(
        isinstance(e, tuple) and len(e) == 3 and isinstance(e[0], bytes) and e[0] and _index(e[1]) and _index(e[2])
        for e in value
    )


def _snapshot_chunk(value: Any) -> bool:
    """pysyncobj's snapshot transmission: None (nothing yet) or (data, is_first, is_last).
    (pysyncobj sends False after a read error, which its own follower cannot unpack: refused.)"""
    if value is None:
        return True
    return (
        isinstance(value, tuple)
        and len(value) == 3
        and isinstance(value[0], bytes)
        and _flag(value[1])
        and _flag(value[2])
    )


Check = Callable[[Any], bool]
#: type -> (required keys, optional keys). Anything else (utility commands, read-only peers,
#: pickled-entry "transmission" chunks) is refused.
SCHEMAS: dict[str, tuple[dict[str, Check], dict[str, Check]]] = {
    "request_vote": ({"term": _index, "last_log_index": _index, "last_log_term": _index}, {}),
    "response_vote": ({"term": _index}, {}),
    "timeout_now": ({"term": _index}, {}),
    "next_node_idx": ({"next_node_idx": _index, "reset": _flag, "success": _flag}, {}),
    "apply_command": ({"command": lambda v: isinstance(v, bytes) and bool(v)}, {"request_id": _index}),
    "apply_command_response": ({"request_id": _index}, {"error": _index, "log_idx": _index, "log_term": _index}),
}
_APPEND_COMMON: dict[str, Check] = {"term": _index, "commit_index": _index}
_APPEND_ENTRIES: dict[str, Check] = {**_APPEND_COMMON, "prevLogIdx": _index, "prevLogTerm": _index, "entries": _entries}
_APPEND_SNAPSHOT: dict[str, Check] = {**_APPEND_COMMON, "serialized": _snapshot_chunk}


def check_message(msg: Any) -> dict[str, Any]:
    """The message if it fits its type's schema exactly; `WireError` naming what does not."""
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise WireError("a Raft message is a dict with a string 'type'")
    kind = msg["type"]
    required: dict[str, Check]
    optional: dict[str, Check] = {}
    if kind == "append_entries":
        required = _APPEND_ENTRIES if "prevLogIdx" in msg else _APPEND_SNAPSHOT
    elif kind in SCHEMAS:
        required, optional = SCHEMAS[kind]
    else:
        raise WireError(f"refused Raft message type {kind[:40]!r}")
    keys = set(msg) - {"type"}
    if not set(required) <= keys or not keys <= set(required) | set(optional):
        raise WireError(f"{kind}: keys {sorted(keys)} do not fit its schema")
    for key, check in (required | optional).items():
        if key in msg and not check(msg[key]):
            raise WireError(f"{kind}: bad value for {key!r}")
    if kind == "apply_command_response" and "error" not in msg and not {"log_idx", "log_term"} <= keys:
        raise WireError("apply_command_response: neither an error nor the entry's index and term")
    return msg
