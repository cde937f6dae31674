"""Ranking: do confident answers come first?

:func:`auroc`, :func:`risk_coverage_curve` and :func:`aurc`. These accept any finite score where
higher means more confident, not only probabilities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from .inputs import Float, check_pair, mean_or_nan

__all__ = ["RiskCoverageCurve", "aurc", "auroc", "risk_coverage_curve"]


def auroc(p: ArrayLike, y: ArrayLike) -> float:
    """Area under the ROC curve of confidence as a detector of correct answers.

    Parameters
    ----------
    p, y : array-like of shape (n,)
        Any finite score where higher means more confident (not only probabilities), and the
        correctness of each answer (0/1 or bool).

    Returns
    -------
    float
        ``P(p_correct > p_wrong) + ½ P(p_correct = p_wrong)`` for a random correct and a random
        wrong answer, computed by :func:`sklearn.metrics.roc_auc_score`. 0.5 is chance, 1 a
        perfect ranking. NaN — not an error — when ``y`` holds a single class (or nothing), where
        it is undefined, so a summary of an all-correct slice still succeeds.

    References
    ----------
    Hanley, J. A., McNeil, B. J. (1982). "The Meaning and Use of the Area under a Receiver
    Operating Characteristic (ROC) Curve". Radiology 143(1).
    """
    scores, labels = check_pair(p, y, probabilities=False)
    # min/max instead of np.unique: no sort, and the labels are already known to be 0/1.
    if labels.size == 0 or labels.min() == labels.max():
        return math.nan
    from sklearn.metrics import roc_auc_score  # evaluation only: the gateway never loads it

    return float(roc_auc_score(labels, scores))


@dataclass(frozen=True)
class RiskCoverageCurve:
    """Error rate among the most confident answers, at each coverage.

    Attributes
    ----------
    coverage : ndarray of shape (n,)
        ``k/n`` for ``k = 1..n``: the fraction of answers given.
    risk : ndarray of shape (n,)
        Error rate among the ``k`` most confident answers, averaged over the orderings of tied
        confidences; see :func:`risk_coverage_curve`.
    """

    coverage: Float
    risk: Float


def risk_coverage_curve(p: ArrayLike, y: ArrayLike) -> RiskCoverageCurve:
    """Risk (error rate) against coverage when answering the most confident first.

    Parameters
    ----------
    p, y : array-like of shape (n,)
        Any finite score where higher means more confident (not only probabilities), and the
        correctness of each answer (0/1 or bool).

    Returns
    -------
    RiskCoverageCurve
        For ``k = 1..n``, coverage ``k/n`` and risk ``E_k / k``, where ``E_k`` is the number of
        wrong answers among the ``k`` most confident. Empty arrays when ``n = 0``.

    Notes
    -----
    Ties in ``p`` leave the order of the ``k`` most confident undefined, so the curve would
    depend on row order. Inside a block of ``m`` tied answers holding ``w`` wrong ones, following
    ``K`` answers holding ``W`` wrong ones, taking ``j`` of the block gives the expected count

    ``E_{K+j} = W + j · w / m``,

    the mean over every ordering of the tie (a hypergeometric mean). At the end of each block
    (``j = m``) this is exact: the operating point of the rule "answer iff ``p >= `` the block's
    confidence". Between block ends it is the expected risk of a rule that breaks the tie at
    random. The curve is therefore invariant to row order, and :func:`aurc`, its mean, equals the
    AURC averaged over all tie-breaking orders.

    References
    ----------
    Geifman, Y., El-Yaniv, R. (2017). "Selective Classification for Deep Neural Networks".
    NeurIPS.
    """
    scores, labels = check_pair(p, y, probabilities=False)
    n = scores.size
    if n == 0:
        return RiskCoverageCurve(np.empty(0), np.empty(0))
    order = np.argsort(scores, kind="stable")[::-1]  # most confident first
    sorted_scores = scores[order]
    wrong = 1.0 - labels[order]
    starts = np.empty(n, dtype=bool)
    starts[0] = True
    np.not_equal(sorted_scores[1:], sorted_scores[:-1], out=starts[1:])
    block = np.cumsum(starts) - 1
    block_size = np.bincount(block).astype(np.float64)
    block_wrong = np.bincount(block, weights=wrong)
    # Sums of 0/1 in float64 are exact below 2**53, so the curve is bit-for-bit the same under
    # any permutation of the rows.
    size_before = np.cumsum(block_size) - block_size
    wrong_before = np.cumsum(block_wrong) - block_wrong
    k = np.arange(1, n + 1, dtype=np.float64)
    taken = k - size_before[block]
    expected_wrong = wrong_before[block] + block_wrong[block] * (taken / block_size[block])
    return RiskCoverageCurve(coverage=k / n, risk=expected_wrong / k)


def aurc(p: ArrayLike, y: ArrayLike) -> float:
    """Area under the risk–coverage curve (AURC); lower is better.

    Parameters
    ----------
    p, y : array-like of shape (n,)
        Any finite score where higher means more confident (not only probabilities), and the
        correctness of each answer (0/1 or bool).

    Returns
    -------
    float
        ``AURC = (1/n) Σ_{k=1..n} E_k / k``, the mean risk of :func:`risk_coverage_curve` over the
        coverages ``k/n``, ties averaged over their orderings. NaN when ``n = 0``.

    Notes
    -----
    With ``r`` the error rate, no ranking does better than putting every correct answer first,
    which gives ``AURC* = (1/n) Σ_{k=(1−r)n+1..n} (k − (1−r)n) / k ≈ r + (1 − r) ln(1 − r)``
    (Geifman et al. 2019); ``AURC − AURC*`` is their excess AURC. A constant confidence scores
    ``r``.

    References
    ----------
    Geifman, Y., El-Yaniv, R. (2017). "Selective Classification for Deep Neural Networks".
    NeurIPS.

    Geifman, Y., Uziel, G., El-Yaniv, R. (2019). "Bias-Reduced Uncertainty Estimation for Deep
    Neural Classifiers". ICLR.

    Ding, Y., Liu, J., Xiong, J., Shi, Y. (2020). "Revisiting the Evaluation of Uncertainty
    Estimation and Its Application to Explore Model Complexity-Uncertainty Trade-Off". CVPR
    Workshops.

    Examples
    --------
    >>> aurc([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0])  # risks 0, 1/2, 1/3, 1/2
    0.3333333333333333
    """
    return mean_or_nan(risk_coverage_curve(p, y).risk)

