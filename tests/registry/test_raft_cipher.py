from __future__ import annotations

import pytest

from registry._raft_cipher import InvalidToken, RaftCipher


@pytest.fixture(scope="module")
def pair() -> tuple[RaftCipher, RaftCipher]:
    return RaftCipher("community-secret-0123", "c.example/x"), RaftCipher("community-secret-0123", "c.example/x")


def test_round_trip_between_two_processes_of_one_community(pair: tuple[RaftCipher, RaftCipher]) -> None:
    a, b = pair
    token = a.encrypt_at_time(b"payload", 1234)
    assert b.extract_timestamp(token) == 1234
    assert b.decrypt(token) == b"payload"
    assert a.decrypt(token) == b"payload"


def test_nonces_never_repeat_and_plaintext_does_not_leak(pair: tuple[RaftCipher, RaftCipher]) -> None:
    a, _ = pair
    tokens = [a.encrypt_at_time(b"same bytes", 1) for _ in range(100)]
    assert len({t[17:25] for t in tokens}) == 100  # the counter field
    assert all(b"same bytes" not in t for t in tokens)


@pytest.mark.parametrize("where", [0, 5, 20, 30, 40, -1])
def test_any_flipped_byte_is_refused(pair: tuple[RaftCipher, RaftCipher], where: int) -> None:
    a, b = pair
    token = bytearray(a.encrypt_at_time(b"payload", 7))
    token[where] ^= 1
    with pytest.raises(InvalidToken):
        b.decrypt(bytes(token))


def test_a_forged_timestamp_is_refused(pair: tuple[RaftCipher, RaftCipher]) -> None:
    a, b = pair
    token = bytearray(a.encrypt_at_time(b"payload", 7))
    token[25:33] = (8).to_bytes(8, "big")
    assert b.extract_timestamp(bytes(token)) == 8
    with pytest.raises(InvalidToken, match="does not authenticate"):
        b.decrypt(bytes(token))


def test_another_secret_or_community_cannot_read(pair: tuple[RaftCipher, RaftCipher]) -> None:
    a, _ = pair
    token = a.encrypt_at_time(b"payload", 7)
    for other in (RaftCipher("another-secret-0123", "c.example/x"), RaftCipher("community-secret-0123", "c.example/y")):
        with pytest.raises(InvalidToken, match="does not authenticate"):
            other.decrypt(token)


def test_garbage_is_refused(pair: tuple[RaftCipher, RaftCipher]) -> None:
    _, b = pair
    with pytest.raises(InvalidToken, match="too short"):
        b.extract_timestamp(b"\x01short")
    with pytest.raises(InvalidToken, match="unknown token version"):
        b.decrypt(b"\x02" + bytes(60))
