from __future__ import annotations

import json

import pytest
import rfc8785
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from contracts.encoding import MAX_MESSAGE_BYTES, canonical, is_hex, parse_json
from contracts.errors import MessageError


def test_canonical_sorts_keys_and_drops_whitespace() -> None:
    assert canonical({"b": 1, "a": [1, "x"], "é": "ü"}) == '{"a":[1,"x"],"b":1,"é":"ü"}'.encode()


def test_canonical_round_trips_through_the_strict_parser() -> None:
    obj = {"type": "publish", "v": 1, "nested": {"z": [1, 2, {"y": "s"}]}}
    assert parse_json(canonical(obj)) == obj
    assert canonical(parse_json(canonical(obj))) == canonical(obj)


def test_canonical_refuses_floats() -> None:
    with pytest.raises(MessageError, match="floats are not allowed"):
        canonical({"score": 0.7})


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b'{"a": 1, "a": 2}', "duplicate JSON key 'a'"),
        (b'{"a": 1.5}', "floats are not allowed"),
        (b'{"a": NaN}', "NaN is not valid JSON"),
        (b'{"a": ', "not valid JSON"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_parse_json_rejects(raw: bytes, fragment: str) -> None:
    with pytest.raises(MessageError, match=fragment):
        parse_json(raw)


def test_parse_json_enforces_the_size_limit() -> None:
    with pytest.raises(MessageError, match="over the limit of 65536 bytes"):
        parse_json(b'"' + b"a" * MAX_MESSAGE_BYTES + b'"')


def test_parse_json_refuses_deep_nesting() -> None:
    with pytest.raises(MessageError, match="nested too deeply"):
        parse_json(b"[" * 20000 + b"]" * 20000, limit=10**6)


@pytest.mark.parametrize(
    ("value", "nbytes", "ok"),
    [
        ("ab", 1, True),
        ("AB", 1, False),
        ("abc", None, False),
        ("", None, False),
        ("zz", 1, False),
        ("abcd", 1, False),
        (5, None, False),
    ],
)
def test_is_hex(value: object, nbytes: int | None, ok: bool) -> None:
    assert is_hex(value, nbytes) is ok


# The fast path of `canonical` must be byte-for-byte RFC 8785 (the rfc8785 package) wherever it
# is taken; JSON values without floats, with integers in the I-JSON range.
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=25,
)


def _is_encodable(value: object) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode()
        return True
    except UnicodeEncodeError:
        return False


@settings(max_examples=400, deadline=None)
@given(_json_values)
def test_canonical_equals_rfc8785(value: object) -> None:
    assume(_is_encodable(value))
    assert canonical(value) == rfc8785.dumps(value)


def test_non_ascii_keys_sort_by_utf16_code_units() -> None:
    # U+FF61 sorts before U+1F600 by code point but after it in UTF-16 (0xD83D < 0xFF61).
    value = {"\U0001f600": 1, "\uff61": 2, "a": 3}
    assert canonical(value) == rfc8785.dumps(value)
    assert canonical(value).index("\uff61".encode()) > canonical(value).index("\U0001f600".encode())


def test_canonical_refuses_lone_surrogates_and_big_integers() -> None:
    with pytest.raises(MessageError, match="lone surrogate"):
        canonical({"a": "\ud800"})
    with pytest.raises(MessageError, match="outside the I-JSON range"):
        canonical({"a": 2**53})
    with pytest.raises(MessageError, match="cannot canonicalise a set"):
        canonical({"a": {1}})


def test_an_integer_too_long_for_python_is_a_message_error_not_a_crash() -> None:
    with pytest.raises(MessageError, match="not valid JSON"):
        parse_json(b'{"time": ' + b"1" * 5000 + b"}")
