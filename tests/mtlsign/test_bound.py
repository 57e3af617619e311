from __future__ import annotations

import math

import pytest

from mtlsign.bound import (
    PAPER_GAMMA,
    PAPER_LAMBDA,
    PAPER_N,
    PAPER_PRINTED_BOUND,
    best_lambda,
    chernoff_bound,
    implied_guess_accuracy,
    log_chernoff_bound,
    m_for,
    piracy_bound,
)


@pytest.mark.parametrize(("n", "m"), [(2, 3), (3, 6), (4, 6), (5, 9), (600, 30), (1024, 30), (1025, 33)])
def test_m_for_is_three_times_ceil_log2(n: int, m: int) -> None:
    assert m_for(n) == m


def test_m_for_meets_appendix_a_condition() -> None:
    # Appendix A: m = 3·⌈log2 N⌉ ≥ log2(N^3), i.e. the integer range holds N^3 values.
    assert all(2 ** m_for(n) >= n**3 for n in range(2, 5000))


@pytest.mark.parametrize("n", [1, 0, -600])
def test_m_for_rejects_fewer_than_two(n: int) -> None:
    with pytest.raises(ValueError, match=f"N must be ≥ 2, got {n}"):
        m_for(n)


@pytest.mark.parametrize("n", [600.0, True, "600"])
def test_m_for_rejects_non_integers(n: object) -> None:
    with pytest.raises(TypeError, match="N must be an int"):
        m_for(n)  # type: ignore[arg-type]


def test_chernoff_bound_matches_the_formula() -> None:
    expected = ((1 - 0.5 + 0.5 * math.exp(0.34)) / math.exp(0.7 * 0.34)) ** 600
    assert chernoff_bound(600, 0.7, 0.5, 0.34) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(1.0669e-14, rel=1e-4)


def test_bound_decreases_with_n_even_past_underflow() -> None:
    logs = [log_chernoff_bound(n, 0.7, 0.575, 0.34) for n in (10, 100, 600, 10**4, 10**6, 10**9)]
    assert all(a > b for a, b in zip(logs, logs[1:], strict=False))
    assert math.isfinite(logs[-1])
    assert chernoff_bound(10**9, 0.7, 0.575, 0.34) == 0.0


def test_bound_decreases_with_gamma() -> None:
    bounds = [chernoff_bound(600, g, 0.5, 0.34) for g in (0.6, 0.65, 0.7, 0.8, 0.9, 1.0)]
    assert all(a > b for a, b in zip(bounds, bounds[1:], strict=False))


@pytest.mark.parametrize(("gamma", "p"), [(0.7, 0.5), (0.7, 0.575), (0.6, 0.55), (0.95, 0.1)])
def test_best_lambda_minimises_over_a_grid(gamma: float, p: float) -> None:
    lam = best_lambda(gamma, p)
    grid = min(log_chernoff_bound(600, gamma, p, k / 1000) for k in range(0, 6001))
    best = log_chernoff_bound(600, gamma, p, lam)
    assert best <= grid + 1e-9
    kl = gamma * math.log(gamma / p) + (1 - gamma) * math.log((1 - gamma) / (1 - p))
    assert best == pytest.approx(-600 * kl, rel=1e-9)


def test_best_lambda_is_zero_when_gamma_does_not_exceed_p() -> None:
    assert best_lambda(0.5, 0.5) == 0.0
    assert best_lambda(0.4, 0.575) == 0.0


@pytest.mark.parametrize(("gamma", "p"), [(0.0, 0.5), (1.0, 0.5), (0.7, 0.0), (0.7, 1.0), (0.7, math.nan)])
def test_best_lambda_rejects_degenerate_inputs(gamma: float, p: float) -> None:
    with pytest.raises(ValueError, match="must lie strictly between 0 and 1"):
        best_lambda(gamma, p)


def test_bound_is_clamped_to_one() -> None:
    assert chernoff_bound(600, 0.4, 0.575, 0.34) == 1.0  # γ below p: the raw expression exceeds 1
    assert chernoff_bound(600, 0.7, 0.5, 0.0) == 1.0
    assert chernoff_bound(600, 0.7, 0.5, 800.0) == 1.0  # e^800 overflows a float; the log form does not


def test_large_lambda_does_not_overflow() -> None:
    # γ = 1: the bound tends to p^N as λ grows.
    assert chernoff_bound(600, 1.0, 0.5, 800.0) == pytest.approx(0.5**600, rel=1e-9)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 0.7, 0.5, 0.34), "N must be ≥ 1, got 0"),
        ((600, 1.5, 0.5, 0.34), r"γ must lie in \[0, 1\], got 1.5"),
        ((600, 0.7, -0.1, 0.34), r"p must lie in \[0, 1\], got -0.1"),
        ((600, 0.7, math.nan, 0.34), r"p must lie in \[0, 1\], got nan"),
        ((600, 0.7, 0.5, -1.0), "λ must be a finite number ≥ 0, got -1.0"),
        ((600, 0.7, 0.5, math.inf), "λ must be a finite number ≥ 0, got inf"),
    ],
)
def test_chernoff_bound_rejects_invalid_inputs(args: tuple[int, float, float, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        chernoff_bound(*args)


def test_piracy_bound_at_the_papers_parameters() -> None:
    # §4.1 (N = 600, γ = 0.7, λ = 0.34) prints "less than 2.69 × 10⁻⁸". No natural reading reproduces it:
    # p = 0.575, the top of the stated accuracy interval, gives 3.37e-8 (pinned here); p = 0.5 gives 1.07e-14;
    # the best λ at p = 0.575 gives 2.23e-9. The printed figure is what p ≈ 0.5739 would give.
    assert piracy_bound() == pytest.approx(3.3714e-8, rel=1e-4)
    assert piracy_bound() != pytest.approx(PAPER_PRINTED_BOUND, rel=5e-3)
    assert chernoff_bound(PAPER_N, PAPER_GAMMA, 0.575, best_lambda(PAPER_GAMMA, 0.575)) == pytest.approx(
        2.2259e-9, rel=1e-4
    )


def test_printed_figure_corresponds_to_an_accuracy_of_0_5739() -> None:
    p = implied_guess_accuracy(PAPER_PRINTED_BOUND)
    assert p == pytest.approx(0.57385, abs=1e-5)
    assert chernoff_bound(PAPER_N, PAPER_GAMMA, p, PAPER_LAMBDA) == pytest.approx(PAPER_PRINTED_BOUND, rel=5e-3)


@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 0.575, 0.65])
def test_implied_guess_accuracy_inverts_the_bound(p: float) -> None:
    bound = chernoff_bound(600, 0.7, p, 0.34)
    assert implied_guess_accuracy(bound, 600, 0.7, 0.34) == pytest.approx(p, abs=1e-9)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0.0,), r"the bound must lie in \(0, 1\], got 0.0"),
        ((1.5,), r"the bound must lie in \(0, 1\], got 1.5"),
        ((1e-8, 600, 0.7, 0.0), "λ = 0 makes the bound 1 for every p"),
        ((1e-300, 600, 0.7, 0.34), "no p in"),
    ],
)
def test_implied_guess_accuracy_rejects_invalid_inputs(args: tuple[float, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        implied_guess_accuracy(*args)  # type: ignore[arg-type]
