"""Decisions: what the guardrail earns by answering iff ``p >= t``.

:func:`bas`, :func:`utility_at_threshold` and :func:`utility_curve`, priced by
:mod:`policies.utility` and :mod:`policies.bas`.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from policies.bas import BASWeight, behavioral_alignment_score
from policies.utility import realized_utility, wrong_answer_cost_for_threshold

from .inputs import Float, check_pair, mean_or_nan

__all__ = ["bas", "utility_at_threshold", "utility_curve"]


def bas(p: ArrayLike, y: ArrayLike, *, weight: BASWeight = "uniform") -> float:
    """Mean Behavioral Alignment Score of confidences ``p``.

    A thin, validating wrapper around :func:`policies.bas.behavioral_alignment_score`, which holds
    the closed forms.

    Parameters
    ----------
    p, y : array-like of shape (n,)
        Predicted probability that each answer is correct (in [0, 1]), and its correctness
        (0/1 or bool).
    weight : {"uniform", "linear", "quadratic"}, default="uniform"
        Weight ``w(t)`` over risk thresholds: 1, 2t or 3t².

    Returns
    -------
    float
        ``BAS = (1/n) Σ_i ∫₀¹ w(t) U_t(p_i, y_i) dt``, where ``U_t`` is +1 for a correct answer,
        ``−t/(1−t)`` for a wrong one and 0 for an abstention under "answer iff p ≥ t". At most 1,
        unbounded below; higher is better. NaN when ``n = 0``.

    References
    ----------
    Wu, Gustafsson et al. (2026). "BAS: A Decision-Theoretic Approach to Evaluating Large
    Language Model Confidence". arXiv:2604.03216.
    """
    scores, labels = check_pair(p, y)
    return behavioral_alignment_score(scores, labels.astype(bool), weight=weight)


def utility_at_threshold(
    p: ArrayLike,
    y: ArrayLike,
    threshold: float,
    *,
    wrong_answer_cost: float,
    abstain_cost: float = 0.0,
) -> float:
    """Mean realized utility per request when answering iff ``p >= threshold``.

    Parameters
    ----------
    p, y : array-like of shape (n,)
        Predicted probability that each answer is correct (in [0, 1]), and its correctness
        (0/1 or bool).
    threshold : float
        Answer iff ``p >= threshold``. 0 answers everything; above 1 withholds everything.
    wrong_answer_cost : float
        λ >= 0, the utility lost by a wrong answer.
    abstain_cost : float, default=0.0
        a >= 0, the utility lost by withholding an answer.

    Returns
    -------
    float
        ``(1/n) Σ_i u_i`` with ``u_i`` from :func:`policies.utility.realized_utility`: +1 answered
        and correct, ``−λ`` answered and wrong, ``−a`` withheld. NaN when ``n = 0``.
    """
    if math.isnan(threshold):
        raise ValueError("threshold must not be NaN")
    scores, labels = check_pair(p, y)
    utilities = realized_utility(
        labels.astype(bool),
        scores >= threshold,
        wrong_answer_cost=wrong_answer_cost,
        abstain_cost=abstain_cost,
    )
    return mean_or_nan(utilities)


def utility_curve(
    p: ArrayLike, y: ArrayLike, thresholds: ArrayLike, *, abstain_cost: float = 0.0
) -> Float:
    """Mean realized utility per request at each BAS risk threshold ``t``.

    Parameters
    ----------
    p, y : array-like of shape (n,)
        Predicted probability that each answer is correct (in [0, 1]), and its correctness
        (0/1 or bool).
    thresholds : array-like of shape (m,), float in [0, 1)
        Risk thresholds ``t``; at each, answer iff ``p >= t`` and a wrong answer costs
        ``λ(t) = t / (1 − t)`` (:func:`policies.utility.wrong_answer_cost_for_threshold`, which
        rejects ``t`` outside [0, 1)).
    abstain_cost : float, default=0.0
        a >= 0, the utility lost by withholding an answer.

    Returns
    -------
    ndarray of shape (m,)
        ``utility_at_threshold(p, y, t, wrong_answer_cost=λ(t), abstain_cost=a)`` for each ``t``;
        all NaN when ``n = 0``.

    Notes
    -----
    One sort of ``p`` serves every threshold: the counts of correct, wrong and withheld answers
    at ``t`` come from a binary search, and :func:`policies.utility.realized_utility` prices the
    three outcomes. The cost is O(n log n + m log n) rather than O(n · m).

    With ``a = 0``, ``∫₀¹ utility_curve(p, y, t) dt`` is the uniform-weight BAS of ``p``
    (before the BAS clips ``p`` to [1e-4, 1 − 1e-4]).

    References
    ----------
    Wu, Gustafsson et al. (2026). "BAS: A Decision-Theoretic Approach to Evaluating Large
    Language Model Confidence". arXiv:2604.03216.
    """
    scores, labels = check_pair(p, y)
    grid = np.asarray(thresholds, dtype=np.float64)
    if grid.ndim != 1:
        raise ValueError(f"thresholds must be 1-D, got shape {grid.shape}")
    n = scores.size
    correct, wrong, withheld = _outcome_counts(scores, labels, grid)
    outcomes_correct = np.array([True, False, False])
    outcomes_answered = np.array([True, True, False])
    curve = np.empty(grid.size)
    # One iteration per threshold, not per row: the costs are scalars in policies.utility.
    for i, t in enumerate(grid.tolist()):
        gain, loss, withhold = realized_utility(
            outcomes_correct,
            outcomes_answered,
            wrong_answer_cost=wrong_answer_cost_for_threshold(t),
            abstain_cost=abstain_cost,
        ).tolist()
        total = gain * correct[i] + loss * wrong[i] + withhold * withheld[i]
        curve[i] = total / n if n else math.nan
    return curve


def _outcome_counts(scores: Float, labels: Float, grid: Float
                    ) -> tuple[Float, Float, NDArray[np.intp]]:
    """At each threshold ``t`` of ``grid``: answers correct and wrong (``p >= t``), and withheld.

    One sort of ``p``, then a binary search per threshold: O((n + m) log n).
    """
    order = np.argsort(scores, kind="stable")
    correct_in_lowest = np.concatenate([[0.0], np.cumsum(labels[order])])
    withheld = np.searchsorted(scores[order], grid, side="left")  # rows with p < t
    correct = correct_in_lowest[-1] - correct_in_lowest[withheld]
    wrong = (scores.size - withheld) - correct
    return correct, wrong, withheld

