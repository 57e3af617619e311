"""MTLSign appendix A ("Derivation for the unambiguity condition"): the length m for N and the Chernoff bound.

The paper draws the N watermark integers from [0, 2^m) with m = 3·⌈log2 N⌉ ≥ log2(N^3), which makes a
collision between two keys' watermark sets negligible. An adversary whose watermark branch guesses each
label right with probability at most p then passes Algorithm 1 (X ≥ γ·N correct out of N) with probability

    Pr{X ≥ γ·N} ≤ ((1 − p + p·e^λ) / e^(γ·λ))^N        for any λ ≥ 0.

§4.1 sets N = 600, γ = 0.7, λ = 0.34, reports a random cWM's accuracy within [0.425, 0.575] and prints
"less than 2.69 × 10⁻⁸". No natural reading of the formula reproduces that figure: p = 0.5 gives 1.07e-14,
the interval's top p = 0.575 gives 3.37e-8 (the figure is 25 % lower), and the figure corresponds to
p ≈ 0.5739 (see `implied_guess_accuracy`). `piracy_bound` therefore computes the reading we can defend.
Everything is computed in log space, so large N neither overflows nor underflows before the final exp.
"""

from __future__ import annotations

import math

from contracts.encoding import is_int

PAPER_N = 600
PAPER_GAMMA = 0.7
PAPER_LAMBDA = 0.34
# §4.1: "all accuracy fell in [0.425, 0.575]" for a randomly initialised cWM over 5,000 D_WM.
PAPER_GUESS_ACCURACY_MAX = 0.575
# §4.1 prints this bound for (N, γ, λ) above; see the module docstring for why it is not reproduced.
PAPER_PRINTED_BOUND = 2.69e-8


def _check_n(n: int, least: int) -> None:
    if not is_int(n):
        raise TypeError(f"N must be an int, got {type(n).__name__}")
    if n < least:
        raise ValueError(f"N must be ≥ {least}, got {n}")


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ValueError(f"{name} must lie in [0, 1], got {value}")


def _check_lambda(lam: float) -> None:
    if not 0.0 <= lam < math.inf:
        raise ValueError(f"λ must be a finite number ≥ 0, got {lam}")


def m_for(n: int) -> int:
    """Bits per watermark integer for N of them: m = 3·⌈log2 N⌉ (§3.2), so that m ≥ log2(N^3)."""
    _check_n(n, 2)
    return 3 * (n - 1).bit_length()  # (n − 1).bit_length() == ⌈log2 n⌉ exactly, with no float rounding


def _log_mgf(p: float, lam: float) -> float:
    """ln(1 − p + p·e^λ), the log moment generating function of one guess, without overflow in e^λ."""
    if p == 0.0:
        return 0.0
    if p == 1.0:
        return lam
    a, b = math.log1p(-p), math.log(p) + lam
    hi, lo = max(a, b), min(a, b)
    return hi + math.log1p(math.exp(lo - hi))


def log_chernoff_bound(n: int, gamma: float, p: float, lam: float) -> float:
    """Natural log of `chernoff_bound`: min(0, N·(ln(1 − p + p·e^λ) − γ·λ))."""
    _check_n(n, 1)
    _check_probability("γ", gamma)
    _check_probability("p", p)
    _check_lambda(lam)
    return min(0.0, n * (_log_mgf(p, lam) - gamma * lam))


def chernoff_bound(n: int, gamma: float, p: float, lam: float) -> float:
    """Appendix A: Pr{X ≥ γ·N} ≤ ((1 − p + p·e^λ) / e^(γ·λ))^N, clamped to at most 1."""
    return math.exp(log_chernoff_bound(n, gamma, p, lam))


def best_lambda(gamma: float, p: float) -> float:
    """The λ ≥ 0 minimising the bound: ln(γ(1 − p) / (p(1 − γ))) when γ > p, else 0 (the bound is then 1).

    At this λ the bound equals exp(−N·KL(γ ‖ p)), the tightest the Chernoff method gives.
    """
    for name, value in (("γ", gamma), ("p", p)):
        if not 0.0 < value < 1.0:
            raise ValueError(f"{name} must lie strictly between 0 and 1, got {value}")
    if gamma <= p:
        return 0.0
    return math.log(gamma) + math.log1p(-p) - math.log(p) - math.log1p(-gamma)


def piracy_bound(
    n: int = PAPER_N, gamma: float = PAPER_GAMMA, lam: float = PAPER_LAMBDA, p: float = PAPER_GUESS_ACCURACY_MAX
) -> float:
    """§4.1's bound on a successful piracy, reading p as the largest accuracy a random cWM reached (0.575).

    With the paper's N = 600, γ = 0.7, λ = 0.34 this gives 3.37e-8, not the printed 2.69e-8.
    """
    return chernoff_bound(n, gamma, p, lam)


def implied_guess_accuracy(
    bound: float, n: int = PAPER_N, gamma: float = PAPER_GAMMA, lam: float = PAPER_LAMBDA
) -> float:
    """The guess accuracy p at which `chernoff_bound(n, gamma, p, lam)` equals `bound`.

    Solves N·(ln(1 − p + p·e^λ) − γλ) = ln(bound) in closed form: p = expm1(ln(bound)/N + γλ) / expm1(λ).
    For the paper's printed 2.69e-8 this is p ≈ 0.5739, an accuracy the paper never states.
    """
    if not 0.0 < bound <= 1.0:
        raise ValueError(f"the bound must lie in (0, 1], got {bound}")
    _check_n(n, 1)
    _check_probability("γ", gamma)
    _check_lambda(lam)
    if lam == 0.0:
        raise ValueError("λ = 0 makes the bound 1 for every p, so no p is implied")
    p = math.expm1(math.log(bound) / n + gamma * lam) / math.expm1(lam)
    if p < 0.0:
        raise ValueError(f"no p in [0, 1] gives a bound as small as {bound} at N={n}, γ={gamma}, λ={lam}")
    return p
