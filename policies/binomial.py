"""Exact binomial tests and bounds on an error rate, from ``k`` errors in ``n`` independent trials.

The pieces :mod:`policies.risk_control` certifies a risk limit with: the p-value of
``H: error rate > A`` (:func:`binomial_p_value`), the one-sided Clopper-Pearson upper bound it
inverts to (:func:`clopper_pearson_upper_bound`) and the fewest labels that can pass the test
(:func:`labels_needed`); and the checks of counts and levels every risk function shares.

Every function is pure: arrays and numbers in, arrays and numbers out.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

# scipy is imported where it is used: the gateway imports these modules with its risk-limit
# code, and one whose tenants have no risk limit never needs scipy (tests/proxy/test_server.py).

__all__ = [
    "binomial_p_value",
    "check_level",
    "clopper_pearson_upper_bound",
    "error_counts",
    "labels_needed",
]


def check_level(name: str, value: float) -> None:
    """Refuse a level (a rate, a confidence, a share) outside the open interval (0, 1)."""
    if not (isinstance(value, int | float) and 0.0 < value < 1.0):
        raise ValueError(f"{name} must be strictly between 0 and 1, got {value!r}")


def error_counts(errors: ArrayLike, trials: ArrayLike) -> tuple[NDArray[np.float64], ...]:
    """``(k, n)`` as float arrays broadcast together; refused unless finite with ``0 <= k <= n``."""
    k = np.asarray(errors, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    if np.any(~np.isfinite(k)) or np.any(~np.isfinite(n)) or np.any(k < 0) or np.any(k > n):
        raise ValueError("counts must be finite with 0 <= errors <= trials")
    k, n = np.broadcast_arrays(k, n)
    return k, n


def binomial_p_value(
    errors: ArrayLike, trials: ArrayLike, *, max_error_rate: float
) -> NDArray[np.float64]:
    """Exact p-value of ``H: error rate > A`` after ``k`` errors in ``n`` independent trials.

    Parameters
    ----------
    errors, trials : array-like of int
        ``k`` and ``n``, broadcast together; ``0 <= k <= n``.
    max_error_rate : float
        A, in (0, 1).

    Returns
    -------
    ndarray of float
        ``P(Binomial(n, A) <= k)``; 1 where ``n = 0``. Under H the errors are stochastically
        larger than Binomial(n, A), so rejecting when this is ``<= δ`` errs with probability at
        most δ. This is the binary-loss Bentkus p-value of Learn-then-Test (Angelopoulos et al.
        2021, Section 3), which for binary losses is never larger than its Hoeffding p-value
        ``exp(-n h(k/n, A))``.
    """
    from scipy.stats import binom

    check_level("max_error_rate", max_error_rate)
    k, n = error_counts(errors, trials)
    return np.asarray(binom.cdf(k, n, max_error_rate), dtype=np.float64)


def clopper_pearson_upper_bound(
    errors: ArrayLike, trials: ArrayLike, *, confidence: float
) -> NDArray[np.float64]:
    """One-sided Clopper-Pearson upper confidence bound on an error rate.

    Parameters
    ----------
    errors, trials : array-like of int
        ``k`` errors in ``n`` independent trials, broadcast together.
    confidence : float
        C, in (0, 1).

    Returns
    -------
    ndarray of float in [0, 1]
        ``u = Beta⁻¹(C; k + 1, n - k)``, the largest rate with ``P(Binomial(n, u) <= k) >= 1 - C``
        (Clopper and Pearson 1934); 1 where ``k = n`` (including ``n = 0``). ``u <= A`` exactly
        when :func:`binomial_p_value` at A is ``<= 1 - C``.
    """
    from scipy.stats import beta

    check_level("confidence", confidence)
    k, n = error_counts(errors, trials)
    bound = np.ones_like(k)
    informative = k < n
    bound[informative] = beta.ppf(confidence, k[informative] + 1.0, n[informative] - k[informative])
    return bound


def labels_needed(
    *, max_error_rate: float, confidence: float, observed_error_rate: float = 0.0
) -> int | None:
    """Fewest independent labelled answers that can certify ``R(t) <= A`` with confidence C.

    Parameters
    ----------
    max_error_rate : float
        A, in (0, 1).
    confidence : float
        C, in (0, 1).
    observed_error_rate : float, default=0.0
        r, the error rate the answers are expected to show, in [0, A).

    Returns
    -------
    int or None
        The smallest ``n`` with ``P(Binomial(n, A) <= n r) <= 1 - C``, the binomial tail taken at
        the real count ``n r`` through the regularised incomplete beta function
        ``I_{1-A}(n - n r, n r + 1)`` so that it falls smoothly with ``n``. With a perfect record
        (``r = 0``) this is ``⌈ln(1 - C) / ln(1 - A)⌉``: 59 answers for A = 0.05 at C = 0.95.
        None when ``r >= A``, which no number of labels certifies. These are labels *among the
        answers* at the threshold; a labelled set answers only part of its rows, so it needs
        about ``n / answer rate`` labelled questions.
    """
    check_level("max_error_rate", max_error_rate)
    check_level("confidence", confidence)
    if not 0.0 <= observed_error_rate <= 1.0:
        raise ValueError(f"observed_error_rate must be in [0, 1], got {observed_error_rate!r}")
    if observed_error_rate >= max_error_rate:
        return None
    from scipy.special import betainc

    delta = 1.0 - confidence

    def certifies(n: int) -> bool:
        errors = n * observed_error_rate
        return float(betainc(n - errors, errors + 1.0, 1.0 - max_error_rate)) <= delta

    high = max(1, math.ceil(math.log(delta) / math.log1p(-max_error_rate)))
    while not certifies(high):
        high *= 2
    low = 0  # certifies(0) is False: P(Binomial(0, A) <= 0) = 1 > δ
    while high - low > 1:
        middle = (low + high) // 2
        if certifies(middle):
            high = middle
        else:
            low = middle
    return high

