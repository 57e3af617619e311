"""The false-positive bounds a judge's vote states (registry/bounds.py, used by schemes/judge.py):
the exact binomial tail against brute force, Chernoff above it, and the text a vote carries.

(Kept with the scheme tests because the judge is the scheme side's; it mirrors registry/bounds.py.)"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from contracts.bounds import BOUND_KINDS, BOUND_RE, binomial_tail, bound_text, chernoff_tail, false_positive_bound
from mtlsign.bound import best_lambda, chernoff_bound

PROBABILITIES = (0.01, 0.1, 1 / 9, 0.25, 0.5, 0.575, 0.9)


def _brute_tail(n: int, k: int, p: float) -> float:
    """P[Bin(n, p) ≥ k] summed exactly over the outcomes, in rationals."""
    q = Fraction(p)
    return float(sum(math.comb(n, i) * q**i * (1 - q) ** (n - i) for i in range(max(k, 0), n + 1)))


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13])
def test_the_binomial_tail_is_the_brute_force_sum(n: int) -> None:
    for p in PROBABILITIES:
        for k in range(-1, n + 2):
            assert binomial_tail(n, k, p) == pytest.approx(_brute_tail(n, k, p), rel=1e-9, abs=1e-300), (n, k, p)


def test_the_binomial_tail_at_its_edges() -> None:
    assert binomial_tail(10, 0, 0.1) == 1.0 and binomial_tail(10, -3, 0.0) == 1.0
    assert binomial_tail(10, 11, 0.9) == 0.0
    assert binomial_tail(10, 1, 0.0) == 0.0 and binomial_tail(10, 10, 1.0) == 1.0
    assert binomial_tail(2, 1, 0.5) == pytest.approx(0.75) and binomial_tail(3, 3, 0.5) == pytest.approx(0.125)
    # Far in the tail the log-space sum neither underflows to a wrong zero too early nor overflows.
    tiny = binomial_tail(100, 90, 0.1)
    assert 0 < tiny < 1e-70 and tiny == pytest.approx(_brute_tail(100, 90, 0.1), rel=1e-9)
    assert binomial_tail(10_000, 9_000, 0.5) == 0.0  # below the smallest float: 0, not an error


@pytest.mark.parametrize(
    ("n", "k", "p"),
    [(10, 8, 0.5), (20, 19, 0.1), (100, 25, 0.01), (100, 81, 1 / 9), (600, 420, 0.575), (90, 81, 1 / 8), (5, 5, 0.3)],
)
def test_chernoff_is_never_below_the_exact_tail(n: int, k: int, p: float) -> None:
    exact, chernoff = binomial_tail(n, k, p), chernoff_tail(n, k, p)
    assert exact <= chernoff <= 1.0
    gamma = k / n
    if gamma < 1:
        kl = gamma * math.log(gamma / p) + (1 - gamma) * math.log((1 - gamma) / (1 - p))
        assert chernoff == pytest.approx(math.exp(-n * kl), rel=1e-12)
    else:
        assert chernoff == pytest.approx(p**n, rel=1e-12)  # KL(1 ‖ p) = ln(1/p)


def test_chernoff_is_mtlsigns_appendix_a_at_its_best_lambda() -> None:
    for gamma, p in ((0.7, 0.575), (0.7, 0.5), (0.9, 0.575)):
        k = round(gamma * 600)
        assert chernoff_tail(600, k, p) == pytest.approx(chernoff_bound(600, gamma, p, best_lambda(gamma, p)), rel=1e-9)


def test_chernoff_is_one_at_or_below_the_chance_rate() -> None:
    assert chernoff_tail(100, 50, 0.5) == 1.0 and chernoff_tail(100, 10, 0.5) == 1.0
    assert chernoff_tail(100, 60, 0.0) == 0.0


def test_false_positive_bound_counts_the_answers_the_threshold_needs() -> None:
    # 0.7 · 600 is 420.00000000000006 in floats: still 420 answers, not 421.
    assert false_positive_bound("binomial", 600, 0.7, 0.575) == binomial_tail(600, 420, 0.575)
    assert false_positive_bound("chernoff", 600, 0.7, 0.575) == chernoff_tail(600, 420, 0.575)
    assert false_positive_bound("binomial", 90, 0.9, 1 / 8) == binomial_tail(90, 81, 1 / 8)
    assert false_positive_bound("binomial", 100, 0.255, 0.01) == binomial_tail(100, 26, 0.01)  # rounds up
    assert false_positive_bound("binomial", 10, 0.5, 1.5) == 1.0  # p is clamped to [0, 1]
    assert false_positive_bound("binomial", 10, 0.5, -0.5) == 0.0
    assert set(BOUND_KINDS) == {"binomial", "chernoff"}
    with pytest.raises(ValueError, match="unknown bound 'hoeffding'; known: binomial, chernoff"):
        false_positive_bound("hoeffding", 10, 0.5, 0.5)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (2.3e-9, "2.30e-09"),
        (1.0, "1.00e+00"),
        (0.5, "5.00e-01"),
        (1.2345e-7, "1.23e-07"),
        (1e-300, "1.00e-300"),
        (0.0, "0.00e+00"),
        (3.0, "1.00e+00"),
        (-1e-9, "0.00e+00"),
    ],
)
def test_bound_text_is_three_significant_digits_in_scientific_notation(value: float, text: str) -> None:
    assert bound_text(value) == text
    assert BOUND_RE.fullmatch(text)
    assert float(text) == pytest.approx(min(1.0, max(0.0, value)), rel=5e-3)


def test_bound_re_refuses_other_shapes() -> None:
    for text in ("2.3e-09", "2.30E-09", "0.1", "1e-9", "2.30e-9", " 2.30e-09", "nan", "inf"):
        assert not BOUND_RE.fullmatch(text), text


def test_the_binomial_tail_matches_the_full_sum() -> None:
    """The tail sums outward from its largest term and stops at e⁻⁴⁰ of it (plus a geometric bound
    on the rest): the full sum of every term agrees to rounding, far into both tails."""
    import random

    def full(n: int, k: int, p: float) -> float:
        terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(p)
                 + (n - i) * math.log1p(-p) for i in range(k, n + 1)]  # fmt: skip
        top = max(terms)
        return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))

    draw = random.Random(0)
    for _ in range(500):
        n = draw.choice([1, 5, 18, 90, 600, 4800])
        k, p = draw.randint(1, n), draw.choice([draw.random(), 1e-9, 1 - 1e-6, 0.5])
        expected = full(n, k, p)
        assert binomial_tail(n, k, p) == pytest.approx(expected, rel=1e-10, abs=1e-300), (n, k, p)
