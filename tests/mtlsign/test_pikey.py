from __future__ import annotations

import hashlib

import numpy as np

from mtlsign.pikey import key_sequence

KEY = hashlib.sha256(b"owner key").digest()


def test_n_distinct_integers_below_2_to_the_m_and_n_bits() -> None:
    seq = key_sequence(KEY, 600)
    assert seq.m == 30
    assert seq.integers.shape == (600,) and len(set(seq.integers.tolist())) == 600
    assert seq.integers.min() >= 0 and seq.integers.max() < 1 << 30
    assert seq.labels.shape == (600,) and set(np.unique(seq.labels)) <= {0, 1}
    assert 0.4 < seq.labels.mean() < 0.6


def test_the_same_key_rebuilds_the_same_sequence_and_another_key_does_not() -> None:
    a, b = key_sequence(KEY, 600), key_sequence(KEY, 600)
    assert (a.integers == b.integers).all() and (a.labels == b.labels).all()
    other = key_sequence(hashlib.sha256(b"other").digest(), 600)
    assert len(set(a.integers.tolist()) & set(other.integers.tolist())) == 0
    assert (a.labels != other.labels).any()


def test_a_prefix_is_stable_when_n_grows_with_the_same_m() -> None:
    small, large = key_sequence(KEY, 520), key_sequence(KEY, 600)  # both m = 30
    assert (small.integers == large.integers[:520]).all()


def test_tiny_n_still_finds_distinct_integers() -> None:
    seq = key_sequence(KEY, 2)  # m = 3: eight possible values
    assert len(set(seq.integers.tolist())) == 2 and seq.integers.max() < 8
