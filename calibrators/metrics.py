"""Evaluation metrics for calibrated confidence.

Every function takes predicted probabilities of correctness ``p`` and correctness labels ``y``
(0/1 or bool) of equal length and is pure and vectorised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.metrics import roc_auc_score

from policies.bas import BASWeight, behavioral_alignment_score
from policies.utility import realized_utility, wrong_answer_cost_for_threshold

__all__ = [
    "ReliabilityBins",
    "RiskCoverageCurve",
    "accuracy",
    "aurc",
    "auroc",
    "bas",
    "brier_score",
    "expected_calibration_error",
    "log_loss",
    "reliability_bins",
    "risk_coverage_curve",
    "summarize",
    "utility_at_threshold",
    "utility_curve",
]

BinStrategy = Literal["uniform", "quantile"]
Float = NDArray[np.float64]


def _pair(p: ArrayLike, y: ArrayLike) -> tuple[Float, Float]:
    p_arr = np.asarray(p, dtype=np.float64).ravel()
    y_arr = np.asarray(y, dtype=np.float64).ravel()
    if p_arr.shape != y_arr.shape:
        raise ValueError(f"p and y differ in length: {p_arr.size} != {y_arr.size}")
    return p_arr, y_arr


def accuracy(y: ArrayLike) -> float:
    """Fraction of correct answers."""
    labels = np.asarray(y, dtype=np.float64)
    return float(labels.mean()) if labels.size else float("nan")


def bas(p: ArrayLike, y: ArrayLike, *, weight: BASWeight = "uniform") -> float:
    """Mean Behavioral Alignment Score; see :func:`policies.bas.behavioral_alignment_score`."""
    p_arr, y_arr = _pair(p, y)
    return behavioral_alignment_score(p_arr, y_arr.astype(bool), weight=weight)


@dataclass(frozen=True)
class ReliabilityBins:
    """Per-bin counts, mean confidence and observed accuracy (empty bins hold NaN means)."""

    edges: Float
    count: NDArray[np.int64]
    mean_predicted: Float
    accuracy: Float


def reliability_bins(
    p: ArrayLike, y: ArrayLike, *, n_bins: int = 10, strategy: BinStrategy = "uniform"
) -> ReliabilityBins:
    """Bin answers by confidence for reliability diagrams and ECE.

    Parameters
    ----------
    p, y : array-like
        Confidences in [0, 1] and correctness.
    n_bins : int, default=10
        Number of bins.
    strategy : {"uniform", "quantile"}, default="uniform"
        Equal-width bins over [0, 1] (a confidence of exactly 1 falls in the last bin), or
        equal-mass bins at the quantiles of ``p`` (duplicate edges merged).
    """
    p_arr, y_arr = _pair(p, y)
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    elif strategy == "quantile":
        if p_arr.size == 0:
            edges = np.array([0.0, 1.0])
        else:
            edges = np.unique(np.quantile(p_arr, np.linspace(0.0, 1.0, n_bins + 1)))
            if edges.size == 1:
                edges = np.array([edges[0], edges[0]])
    else:
        raise ValueError(f"unknown strategy {strategy!r}; expected uniform or quantile")
    n = edges.size - 1
    # Inner edges with side="right" put a value equal to an edge in the upper bin; clipping puts
    # the maximum (for example p = 1) in the last bin.
    index = np.clip(np.searchsorted(edges[1:-1], p_arr, side="right"), 0, n - 1)
    count = np.bincount(index, minlength=n)
    sum_p = np.bincount(index, weights=p_arr, minlength=n)
    sum_y = np.bincount(index, weights=y_arr, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.where(count > 0, sum_p / np.maximum(count, 1), np.nan)
        acc = np.where(count > 0, sum_y / np.maximum(count, 1), np.nan)
    return ReliabilityBins(edges, count.astype(np.int64), mean_p, acc)


def expected_calibration_error(
    p: ArrayLike, y: ArrayLike, *, n_bins: int = 10, strategy: BinStrategy = "uniform"
) -> float:
    """Expected calibration error.

    ``ECE = Σ_b (n_b / n) · |acc_b − conf_b|`` over the bins of :func:`reliability_bins`
    (Naeini, Cooper and Hauskrecht, AAAI 2015; Guo et al., ICML 2017).
    """
    bins = reliability_bins(p, y, n_bins=n_bins, strategy=strategy)
    total = int(bins.count.sum())
    if total == 0:
        return float("nan")
    filled = bins.count > 0
    gaps = np.abs(bins.accuracy[filled] - bins.mean_predicted[filled])
    return float(np.sum(bins.count[filled] * gaps) / total)


def brier_score(p: ArrayLike, y: ArrayLike) -> float:
    """Mean squared error of the confidence, ``mean((p − y)²)`` (Brier 1950)."""
    p_arr, y_arr = _pair(p, y)
    return float(np.mean((p_arr - y_arr) ** 2)) if p_arr.size else float("nan")


def log_loss(p: ArrayLike, y: ArrayLike, *, eps: float = 1e-15) -> float:
    """Mean negative log-likelihood, with ``p`` clipped to ``[eps, 1 − eps]``."""
    p_arr, y_arr = _pair(p, y)
    if not p_arr.size:
        return float("nan")
    clipped = np.clip(p_arr, eps, 1.0 - eps)
    return float(-np.mean(y_arr * np.log(clipped) + (1.0 - y_arr) * np.log1p(-clipped)))


def auroc(p: ArrayLike, y: ArrayLike) -> float:
    """Area under the ROC curve of confidence as a detector of correct answers.

    NaN when only one class is present, where it is undefined.
    """
    p_arr, y_arr = _pair(p, y)
    if np.unique(y_arr).size < 2:
        return float("nan")
    return float(roc_auc_score(y_arr, p_arr))


@dataclass(frozen=True)
class RiskCoverageCurve:
    """Error rate among the most confident answers at each coverage."""

    coverage: Float
    risk: Float


def risk_coverage_curve(p: ArrayLike, y: ArrayLike) -> RiskCoverageCurve:
    """Risk (error rate) against coverage when answering the most confident first.

    Answers with tied confidence are accepted or withheld together, so the curve is evaluated at
    the end of each block of ties and does not depend on row order (Geifman and El-Yaniv,
    NeurIPS 2017).
    """
    p_arr, y_arr = _pair(p, y)
    if not p_arr.size:
        return RiskCoverageCurve(np.empty(0), np.empty(0))
    order = np.argsort(-p_arr, kind="stable")
    sorted_p = p_arr[order]
    errors = np.cumsum(1.0 - y_arr[order])
    # Last index of each block of equal confidence.
    ends = np.flatnonzero(np.append(sorted_p[1:] != sorted_p[:-1], True))
    accepted = ends + 1.0
    return RiskCoverageCurve(accepted / p_arr.size, errors[ends] / accepted)


def aurc(p: ArrayLike, y: ArrayLike) -> float:
    """Area under the risk–coverage curve; lower is better.

    The mean, over coverages ``k/n`` for ``k = 1..n``, of the error rate among the ``k`` most
    confident answers, where tied answers share their block's error rate (Geifman et al. 2019;
    Ding et al. 2020).
    """
    p_arr, y_arr = _pair(p, y)
    if not p_arr.size:
        return float("nan")
    curve = risk_coverage_curve(p_arr, y_arr)
    # Each tie block contributes its risk once per answer it holds, so ties do not depend on
    # order.
    accepted = np.rint(curve.coverage * p_arr.size)
    block_sizes = np.diff(np.concatenate([[0.0], accepted]))
    return float(np.sum(curve.risk * block_sizes) / p_arr.size)


def utility_at_threshold(
    p: ArrayLike,
    y: ArrayLike,
    threshold: float,
    *,
    wrong_answer_cost: float,
    abstain_cost: float = 0.0,
) -> float:
    """Mean realized utility per request when answering iff ``p >= threshold``."""
    p_arr, y_arr = _pair(p, y)
    answered = p_arr >= threshold
    utilities = realized_utility(
        y_arr.astype(bool), answered, wrong_answer_cost=wrong_answer_cost,
        abstain_cost=abstain_cost,
    )
    return float(utilities.mean()) if utilities.size else float("nan")


def utility_curve(
    p: ArrayLike, y: ArrayLike, thresholds: ArrayLike, *, abstain_cost: float = 0.0
) -> Float:
    """Mean realized utility at each BAS risk threshold ``t``, where a wrong answer costs t/(1−t).

    Averaged over ``t`` uniform on [0, 1) with ``abstain_cost = 0`` this is the BAS.
    """
    p_arr, y_arr = _pair(p, y)
    return np.array(
        [
            utility_at_threshold(
                p_arr, y_arr, float(t), wrong_answer_cost=wrong_answer_cost_for_threshold(float(t)),
                abstain_cost=abstain_cost,
            )
            for t in np.asarray(thresholds, dtype=np.float64)
        ]
    )


def summarize(p: ArrayLike, y: ArrayLike) -> dict[str, float]:
    """Every headline figure of a set of confidences at once."""
    p_arr, y_arr = _pair(p, y)
    return {
        "n": float(p_arr.size),
        "accuracy": accuracy(y_arr),
        "bas": bas(p_arr, y_arr),
        "bas_linear": bas(p_arr, y_arr, weight="linear"),
        "bas_quadratic": bas(p_arr, y_arr, weight="quadratic"),
        "ece": expected_calibration_error(p_arr, y_arr),
        "ece_quantile": expected_calibration_error(p_arr, y_arr, strategy="quantile"),
        "brier": brier_score(p_arr, y_arr),
        "log_loss": log_loss(p_arr, y_arr),
        "auroc": auroc(p_arr, y_arr),
        "aurc": aurc(p_arr, y_arr),
    }
