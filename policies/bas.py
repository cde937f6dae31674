"""The Behavioral Alignment Score (BAS) and its weighted variants.

BAS scores a confidence ``s`` by the utility of the threshold rule "answer iff s >= t", integrated
over risk thresholds ``t`` with weight ``w(t)``; a wrong answer at threshold t costs ``t / (1 - t)``
(Wu, Gustafsson et al. 2026, "BAS: A Decision-Theoretic Approach to Evaluating Large Language
Model Confidence", arXiv 2604.03216). Closed forms, with ``s`` clipped to ``[1e-4, 1 - 1e-4]``:

============  =====================  ===========================================
weight w(t)   correct                wrong
============  =====================  ===========================================
1             s                      s + ln(1 - s)
2t            s²                     s² + 2s + 2 ln(1 - s)
3t²           s³                     s³ + 1.5 s² + 3 s + 3 ln(1 - s)
============  =====================  ===========================================

A wrong answer given with confidence near 1 costs without bound, so only honest confidence scores
well: the expected score is maximised by reporting the true probability of being correct.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "CONFIDENCE_CLIP",
    "BASWeight",
    "bas_score_scalar",
    "bas_scores",
    "behavioral_alignment_score",
]

#: Confidences are clipped to ``[CONFIDENCE_CLIP, 1 - CONFIDENCE_CLIP]`` so a wrong answer at
#: confidence 1 costs ``ln(1e-4) ≈ -9.2`` instead of ``-inf``, as in the paper.
CONFIDENCE_CLIP = 1e-4

BASWeight = Literal["uniform", "linear", "quadratic"]
"""``uniform`` is w(t) = 1 (plain BAS), ``linear`` w(t) = 2t, ``quadratic`` w(t) = 3t²."""


def bas_scores(
    confidence: ArrayLike, correct: ArrayLike, *, weight: BASWeight = "uniform"
) -> NDArray[np.float64]:
    """Per-answer BAS contributions.

    Parameters
    ----------
    confidence : array-like of float in [0, 1]
        Stated probability that each answer is correct.
    correct : array-like of bool
        Whether each answer was correct.
    weight : {"uniform", "linear", "quadratic"}, default="uniform"
        Weight over risk thresholds: 1, 2t or 3t². The heavier weights emphasise high-risk
        deployments.

    Returns
    -------
    ndarray of float
        The closed forms in the module docstring, element-wise.
    """
    s = np.clip(np.asarray(confidence, dtype=np.float64), CONFIDENCE_CLIP, 1.0 - CONFIDENCE_CLIP)
    is_correct = np.asarray(correct, dtype=bool)
    log_miss = np.log1p(-s)
    if weight == "uniform":
        return np.where(is_correct, s, s + log_miss)
    if weight == "linear":
        s2 = s * s
        return np.where(is_correct, s2, s2 + 2.0 * s + 2.0 * log_miss)
    if weight == "quadratic":
        s2 = s * s
        s3 = s2 * s
        return np.where(is_correct, s3, s3 + 1.5 * s2 + 3.0 * s + 3.0 * log_miss)
    raise ValueError(f"unknown BAS weight {weight!r}; expected uniform, linear or quadratic")


def behavioral_alignment_score(
    confidence: ArrayLike, correct: ArrayLike, *, weight: BASWeight = "uniform"
) -> float:
    """Mean BAS over a set of answers.

    Parameters
    ----------
    confidence, correct, weight
        See :func:`bas_scores`.

    Returns
    -------
    float
        The mean of :func:`bas_scores`; NaN for no answers. Bounded above by 1 (always-correct
        answers at full confidence) and unbounded below.
    """
    scores = bas_scores(confidence, correct, weight=weight)
    return float(scores.mean()) if scores.size else float("nan")


def bas_score_scalar(confidence: float, correct: bool) -> float:
    """Uniform-weight :func:`bas_scores` of one answer, for the feedback path (no NumPy)."""
    s = min(max(confidence, CONFIDENCE_CLIP), 1.0 - CONFIDENCE_CLIP)
    return s if correct else s + math.log1p(-s)
