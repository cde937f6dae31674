"""Evaluation metrics for calibrated confidence.

Every function takes predicted probabilities of correctness ``p`` and correctness labels ``y``
(0/1 or bool) of equal length, is pure and is vectorised: no Python loop runs over rows, so
:func:`summarize` handles millions of answers. The figures fall into three families, a module
each (every name is importable from here):

- **calibration** (:mod:`~calibrators.metrics.calibration`):
  :func:`expected_calibration_error` over :func:`reliability_bins`, :func:`brier_score` and
  :func:`log_loss` — is ``p`` the probability it claims to be?
- **ranking** (:mod:`~calibrators.metrics.ranking`): :func:`auroc`, :func:`risk_coverage_curve`
  and :func:`aurc` — do confident answers come first? These accept any finite score where
  higher means more confident, not only probabilities.
- **decisions** (:mod:`~calibrators.metrics.decisions`): :func:`bas`,
  :func:`utility_at_threshold` and :func:`utility_curve` — what the guardrail earns by answering
  iff ``p >= t``, priced by :mod:`policies.utility` and :mod:`policies.bas`.

:func:`accuracy` and :func:`summarize`, every headline figure at once, are here; the validation
of ``p`` and ``y`` they all share is in :mod:`~calibrators.metrics.inputs`.

An empty input yields NaN for every scalar figure, as
:func:`policies.bas.behavioral_alignment_score` does, so a summary of an empty slice can still be
written out.
"""

from __future__ import annotations

from numpy.typing import ArrayLike

from .calibration import (
    BinStrategy,
    ReliabilityBins,
    brier_score,
    expected_calibration_error,
    log_loss,
    reliability_bins,
)
from .decisions import bas, utility_at_threshold, utility_curve
from .inputs import check_labels, check_pair, mean_or_nan
from .ranking import RiskCoverageCurve, aurc, auroc, risk_coverage_curve

__all__ = [
    "BinStrategy",
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


def accuracy(y: ArrayLike) -> float:
    """Fraction of correct answers.

    Parameters
    ----------
    y : array-like of shape (n,), 0/1 or bool
        Correctness of each answer.

    Returns
    -------
    float
        ``(1/n) Σ_i y_i``; NaN when ``n = 0``.
    """
    return mean_or_nan(check_labels(y))


def summarize(p: ArrayLike, y: ArrayLike) -> dict[str, float]:
    """Every headline figure of a set of confidences at once.

    Parameters
    ----------
    p, y : array-like of shape (n,)
        Predicted probability that each answer is correct (in [0, 1]), and its correctness
        (0/1 or bool).

    Returns
    -------
    dict of str to float
        ``n`` (the number of answers, as a float so every value has one type), ``accuracy``,
        ``bas``, ``bas_linear``, ``bas_quadratic`` (:func:`bas` with each weight), ``ece`` and
        ``ece_quantile`` (10 equal-width and 10 equal-mass bins), ``brier``, ``log_loss``,
        ``auroc`` and ``aurc``. Undefined figures are NaN.
    """
    # Validate once, so a bad input fails with one message before any work is done.
    scores, labels = check_pair(p, y)
    return {
        "n": float(scores.size),
        "accuracy": accuracy(labels),
        "bas": bas(scores, labels),
        "bas_linear": bas(scores, labels, weight="linear"),
        "bas_quadratic": bas(scores, labels, weight="quadratic"),
        "ece": expected_calibration_error(scores, labels),
        "ece_quantile": expected_calibration_error(scores, labels, strategy="quantile"),
        "brier": brier_score(scores, labels),
        "log_loss": log_loss(scores, labels),
        "auroc": auroc(scores, labels),
        "aurc": aurc(scores, labels),
    }

