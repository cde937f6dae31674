"""Calibration: is ``p`` the probability it claims to be?

:func:`expected_calibration_error` over :func:`reliability_bins`, :func:`brier_score` and
:func:`log_loss`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .inputs import Float, check_pair, mean_or_nan

__all__ = [
    "BinStrategy",
    "ReliabilityBins",
    "brier_score",
    "expected_calibration_error",
    "log_loss",
    "reliability_bins",
]

BinStrategy = Literal["uniform", "quantile"]
"""``uniform``: equal-width bins over [0, 1]; ``quantile``: equal-mass bins at quantiles of p."""


@dataclass(frozen=True)
class ReliabilityBins:
    """Answers grouped by confidence: the data of a reliability diagram and of the ECE.

    Attributes
    ----------
    edges : ndarray of shape (n_bins + 1,)
        Bin edges, increasing. Bin ``b`` holds ``edges[b] <= p < edges[b + 1]``; the last bin
        also holds ``p == edges[-1]``.
    count : ndarray of shape (n_bins,), int
        Number of answers in each bin.
    mean_predicted : ndarray of shape (n_bins,)
        Mean confidence in each bin; NaN for an empty bin.
    accuracy : ndarray of shape (n_bins,)
        Observed fraction correct in each bin; NaN for an empty bin.
    """

    edges: Float
    count: NDArray[np.int64]
    mean_predicted: Float
    accuracy: Float


def _quantile_edges(scores: Float, n_bins: int) -> Float:
    if scores.size == 0:
        return np.array([0.0, 1.0])
    # Ties make quantiles repeat; a repeated edge would bound an empty bin of zero width, so
    # merge them. Binning is by value, so a block of tied confidences is never split.
    edges = np.unique(np.quantile(scores, np.linspace(0.0, 1.0, n_bins + 1)))
    if edges.size == 1:  # every confidence equal: one bin of zero width
        edges = np.repeat(edges, 2)
    return edges


def _bin_of_each(scores: Float, n_bins: int, strategy: BinStrategy
                 ) -> tuple[Float, NDArray[np.intp]]:
    """The bin edges, and the bin of each confidence, for :func:`reliability_bins`."""
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
        return edges, np.minimum(np.floor(scores * n_bins).astype(np.intp), n_bins - 1)
    if strategy == "quantile":
        edges = _quantile_edges(scores, n_bins)
        # side="right": a confidence equal to an inner edge opens the bin above it, matching the
        # half-open [lower, upper) bins; the maximum lands in the last bin because the outer
        # edges are not searched.
        return edges, np.searchsorted(edges[1:-1], scores, side="right")
    raise ValueError(f"unknown strategy {strategy!r}; expected 'uniform' or 'quantile'")


def reliability_bins(
    p: ArrayLike, y: ArrayLike, *, n_bins: int = 10, strategy: BinStrategy = "uniform"
) -> ReliabilityBins:
    """Bin answers by confidence, for reliability diagrams and the ECE.

    Parameters
    ----------
    p, y : array-like of shape (n,)
        Predicted probability that each answer is correct (in [0, 1]), and its correctness
        (0/1 or bool).
    n_bins : int, default=10
        Number of bins (at least 1). With ``strategy="quantile"`` tied confidences can merge
        edges, leaving fewer bins.
    strategy : {"uniform", "quantile"}, default="uniform"
        ``"uniform"``: equal-width bins ``[k/B, (k+1)/B)`` over [0, 1], a confidence of exactly 1
        falling in the last bin. ``"quantile"``: equal-mass bins whose edges are the quantiles
        of ``p`` at ``k/B``, duplicate edges merged.

    Returns
    -------
    ReliabilityBins
        Edges, counts, mean confidence and observed accuracy per bin.

    Notes
    -----
    Uniform bins are assigned as ``min(floor(B·p), B − 1)`` rather than by comparing with
    ``linspace`` edges: ``linspace(0, 1, 11)[3]`` is ``0.30000000000000004``, which would put
    ``p = 0.3`` in the bin below the edge it equals.

    Equal-mass bins follow the adaptive calibration error of Nixon et al. (2019).

    References
    ----------
    Nixon, J., Dusenberry, M., Zhang, L., Jerfel, G., Tran, D. (2019). "Measuring Calibration in
    Deep Learning". CVPR Workshops.
    """
    scores, labels = check_pair(p, y)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins!r}")
    edges, index = _bin_of_each(scores, int(n_bins), strategy)
    size = edges.size - 1
    count = np.bincount(index, minlength=size)
    sum_p = np.bincount(index, weights=scores, minlength=size)
    sum_y = np.bincount(index, weights=labels, minlength=size)
    filled = count > 0
    mean_predicted = np.full(size, np.nan)
    observed = np.full(size, np.nan)
    mean_predicted[filled] = sum_p[filled] / count[filled]
    observed[filled] = sum_y[filled] / count[filled]
    return ReliabilityBins(edges, count.astype(np.int64), mean_predicted, observed)


def expected_calibration_error(
    p: ArrayLike, y: ArrayLike, *, n_bins: int = 10, strategy: BinStrategy = "uniform"
) -> float:
    """Expected calibration error (ECE).

    Parameters
    ----------
    p, y : array-like of shape (n,)
        Predicted probability that each answer is correct (in [0, 1]), and its correctness
        (0/1 or bool).
    n_bins : int, default=10
        Number of bins, see :func:`reliability_bins`.
    strategy : {"uniform", "quantile"}, default="uniform"
        Equal-width or equal-mass bins, see :func:`reliability_bins`.

    Returns
    -------
    float
        ``ECE = Σ_b (n_b / n) · |acc_b − conf_b|`` over the non-empty bins of
        :func:`reliability_bins`, where ``acc_b`` is the fraction correct and ``conf_b`` the mean
        confidence in bin ``b``. In [0, 1]; 0 is perfectly calibrated at this binning. NaN when
        ``n = 0``.

    References
    ----------
    Naeini, M. P., Cooper, G. F., Hauskrecht, M. (2015). "Obtaining Well Calibrated
    Probabilities Using Bayesian Binning". AAAI.

    Guo, C., Pleiss, G., Sun, Y., Weinberger, K. Q. (2017). "On Calibration of Modern Neural
    Networks". ICML.

    Examples
    --------
    >>> expected_calibration_error([0.25, 0.75], [0, 1], n_bins=2)  # both bins off by 1/4
    0.25
    """
    bins = reliability_bins(p, y, n_bins=n_bins, strategy=strategy)
    total = int(bins.count.sum())
    if total == 0:
        return math.nan
    filled = bins.count > 0
    gaps = np.abs(bins.accuracy[filled] - bins.mean_predicted[filled])
    return float(np.sum(bins.count[filled] * gaps) / total)


def brier_score(p: ArrayLike, y: ArrayLike) -> float:
    """Brier score: the mean squared error of the confidence.

    Parameters
    ----------
    p, y : array-like of shape (n,)
        Predicted probability that each answer is correct (in [0, 1]), and its correctness
        (0/1 or bool).

    Returns
    -------
    float
        ``(1/n) Σ_i (p_i − y_i)²``, in [0, 1]; lower is better. A strictly proper scoring rule:
        its expectation is minimised by the true probability. NaN when ``n = 0``.

    References
    ----------
    Brier, G. W. (1950). "Verification of Forecasts Expressed in Terms of Probability". Monthly
    Weather Review 78(1).
    """
    scores, labels = check_pair(p, y)
    return mean_or_nan((scores - labels) ** 2)


def log_loss(p: ArrayLike, y: ArrayLike, *, eps: float = 1e-15) -> float:
    """Mean negative log-likelihood of the correctness labels.

    Parameters
    ----------
    p, y : array-like of shape (n,)
        Predicted probability that each answer is correct (in [0, 1]), and its correctness
        (0/1 or bool).
    eps : float, default=1e-15
        ``p`` is clipped to ``[eps, 1 − eps]``, so a confident mistake costs ``−ln(eps)`` (≈ 34.5)
        instead of infinity. Must lie in (0, 0.5).

    Returns
    -------
    float
        ``−(1/n) Σ_i [y_i ln p_i + (1 − y_i) ln(1 − p_i)]``, at least 0; lower is better. NaN when
        ``n = 0``.

    References
    ----------
    Good, I. J. (1952). "Rational Decisions". Journal of the Royal Statistical Society B 14(1).
    """
    if not 0.0 < eps < 0.5:
        raise ValueError(f"eps must lie in (0, 0.5), got {eps!r}")
    scores, labels = check_pair(p, y)
    clipped = np.clip(scores, eps, 1.0 - eps)
    # Select the log-likelihood term rather than weighting both by y, whose 0 · ln(·) would turn
    # an extreme but unused term into NaN.
    return mean_or_nan(-np.where(labels == 1.0, np.log(clipped), np.log1p(-clipped)))

