"""Anytime-valid bounds on a live error rate: a confidence sequence from running counts.

:func:`error_rate_confidence_sequence` is the beta-binomial mixture martingale of Howard, Ramdas,
McAuliffe and Sekhon (2021, "Time-uniform, nonparametric, nonasymptotic confidence sequences",
Annals of Statistics 49(2)): its bounds may be checked after every label without the
multiple-looks trap of a fixed-sample interval. It watches a risk limit that
:mod:`policies.risk_control` certified.

Every function is pure: arrays and numbers in, arrays and numbers out.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .binomial import check_level, error_counts

__all__ = ["error_rate_confidence_sequence"]

# Bisection halves [0, 1] this many times: below float64 resolution near any root in (0, 1).
_BISECTION_STEPS = 64


def error_rate_confidence_sequence(
    errors: ArrayLike,
    trials: ArrayLike,
    *,
    confidence: float,
    prior_mean: float = 0.5,
    prior_strength: float = 1.0,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Anytime-valid lower and upper bounds on an error rate from running counts.

    Parameters
    ----------
    errors, trials : array-like of int
        ``S_t`` errors in the first ``t`` labelled trials, broadcast together.
    confidence : float
        1 - α, in (0, 1): the probability that the bounds hold at every ``t`` at once.
    prior_mean, prior_strength : float, default=0.5 and 1.0
        The mixing distribution Beta(a, b) with ``a = prior_mean · prior_strength`` and
        ``b = (1 - prior_mean) · prior_strength``. The bounds are valid for any choice; they are
        tightest near rates close to ``prior_mean`` at sample sizes comparable to
        ``prior_strength`` and beyond. To watch a limit A, ``prior_mean = A`` and
        ``prior_strength = 10`` work well.

    Returns
    -------
    (lower, upper) : tuple of ndarray of float in [0, 1]
        The interval ``{μ : M_t(μ) < 1/α}`` of the beta-binomial mixture martingale

            M_t(μ) = B(a + S_t, b + t - S_t) / B(a, b) / (μ^S_t (1 - μ)^(t - S_t)),

        the likelihood ratio of the Beta(a, b) mixture against a rate μ. For the true rate it is
        a non-negative martingale with ``M_0 = 1``, so by Ville's inequality
        ``P(∃ t: μ outside the interval) <= α`` (Howard, Ramdas, McAuliffe, Sekhon 2021,
        Section 3, the conjugate-mixture boundary; Robbins 1970). ``log M_t`` is convex in μ, so
        the set is an interval, found by bisection on each side of ``S_t / t``. At ``t = 0`` it is
        ``[0, 1]``. Both sides hold together: ``lower > A`` proves the rate is above A (a
        breach) with the same confidence that ``upper`` bounds it.
    """
    # Here, not at import: the gateway loads scipy only to watch a tenant's risk limit.
    from scipy.special import betaln

    check_level("confidence", confidence)
    check_level("prior_mean", prior_mean)
    if not (math.isfinite(prior_strength) and prior_strength > 0):
        raise ValueError(f"prior_strength must be finite and > 0, got {prior_strength!r}")
    s, t = error_counts(errors, trials)
    a, b = prior_mean * prior_strength, (1.0 - prior_mean) * prior_strength
    f = t - s
    log_mixture = betaln(a + s, b + f) - betaln(a, b)
    log_level = -math.log1p(-confidence)  # log(1/α)

    def log_ratio(mu: NDArray[np.float64]) -> NDArray[np.float64]:
        with np.errstate(divide="ignore", invalid="ignore"):
            log_likelihood = np.where(s > 0, s * np.log(mu), 0.0) + np.where(
                f > 0, f * np.log1p(-mu), 0.0
            )
        return np.asarray(log_mixture - log_likelihood, dtype=np.float64)

    def inside(mu: NDArray[np.float64]) -> NDArray[np.bool_]:
        return log_ratio(mu) < log_level

    with np.errstate(invalid="ignore"):
        centre = np.where(t > 0, s / np.where(t > 0, t, 1.0), 0.5)
    # Upper: the root of log M(μ) = log(1/α) in [centre, 1]; 1 when no failure has been seen.
    upper = _interval_edge(inside, centre.copy(), np.ones_like(centre))
    # Lower: the root in [0, centre]; 0 when no error has been seen.
    lower = _interval_edge(inside, centre.copy(), np.zeros_like(centre))
    return (np.where((s > 0) & (t > 0), lower, 0.0),
            np.where((f > 0) & (t > 0), upper, 1.0))


def _interval_edge(
    inside: Callable[[NDArray[np.float64]], NDArray[np.bool_]],
    inner: NDArray[np.float64],
    outer: NDArray[np.float64],
) -> NDArray[np.float64]:
    """The edge of an interval between ``inner`` (in it) and ``outer``, elementwise, by bisection.

    :data:`_BISECTION_STEPS` halvings; the outer end is returned, so the edge errs outwards.
    """
    for _ in range(_BISECTION_STEPS):
        middle = (inner + outer) / 2.0
        is_inside = inside(middle)
        inner = np.where(is_inside, middle, inner)
        outer = np.where(is_inside, outer, middle)
    return outer

