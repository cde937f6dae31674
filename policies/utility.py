"""The abstention utility model: thresholds, expected utility and realized utility.

Each response scores +1 when answered correctly, ``-wrong_answer_cost`` (λ) when answered wrongly
and ``-abstain_cost`` (a) when withheld. With a calibrated ``p = P(correct)`` answering has expected
utility ``p - (1 - p) λ`` and abstaining ``-a``, so answering is optimal iff
``p >= (λ - a) / (1 + λ)``.

With ``a = 0`` this is the risk threshold ``t`` of the Behavioral Alignment Score, where a wrong
answer costs ``t / (1 - t)`` (Wu, Gustafsson et al. 2026, arXiv 2604.03216).

Every function is pure. The array functions accept anything NumPy broadcasts; the ``*_scalar``
variants take and return Python floats, because NumPy's per-call overhead (a few microseconds)
would dominate the request path, which decides one response at a time.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "expected_utility",
    "expected_utility_scalar",
    "optimal_threshold",
    "realized_utility",
    "realized_utility_scalar",
    "should_answer",
    "wrong_answer_cost_for_threshold",
]


def _check_costs(wrong_answer_cost: float, abstain_cost: float) -> None:
    if not (wrong_answer_cost >= 0 and math.isfinite(wrong_answer_cost)):
        raise ValueError(f"wrong_answer_cost must be finite and >= 0, got {wrong_answer_cost!r}")
    if not (abstain_cost >= 0 and math.isfinite(abstain_cost)):
        raise ValueError(f"abstain_cost must be finite and >= 0, got {abstain_cost!r}")


def optimal_threshold(*, wrong_answer_cost: float, abstain_cost: float = 0.0) -> float:
    """Smallest P(correct) at which answering maximises expected utility.

    Parameters
    ----------
    wrong_answer_cost : float
        λ >= 0, the utility lost by a wrong answer.
    abstain_cost : float, default=0.0
        a >= 0, the utility lost by withholding an answer.

    Returns
    -------
    float
        ``t* = (λ - a) / (1 + λ)`` clipped to ``[0, 1]``. When ``a >= λ`` abstaining is never
        better than answering and ``t* = 0``.

    Notes
    -----
    Answer iff ``p - (1 - p) λ >= -a``, i.e. ``p (1 + λ) >= λ - a``. With ``a = 0`` this inverts
    the BAS paper's penalty ``λ = t / (1 - t)`` (Wu, Gustafsson et al. 2026).
    """
    _check_costs(wrong_answer_cost, abstain_cost)
    threshold = (wrong_answer_cost - abstain_cost) / (1.0 + wrong_answer_cost)
    return min(1.0, max(0.0, threshold))


def wrong_answer_cost_for_threshold(threshold: float) -> float:
    """The cost λ that makes ``threshold`` optimal when abstaining is free.

    Parameters
    ----------
    threshold : float
        t in ``[0, 1)``.

    Returns
    -------
    float
        ``λ = t / (1 - t)``, the BAS paper's penalty for a wrong answer at risk threshold t.
    """
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {threshold!r}")
    return threshold / (1.0 - threshold)


def should_answer(p: float, threshold: float) -> bool:
    """The decision rule: answer iff ``p >= threshold``.

    A NaN confidence never answers: missing confidence is not high confidence.
    """
    return p >= threshold


def expected_utility(
    p: ArrayLike, answer: ArrayLike, *, wrong_answer_cost: float, abstain_cost: float = 0.0
) -> NDArray[np.float64]:
    """Expected utility of each decision given ``p = P(correct)``.

    Parameters
    ----------
    p : array-like of float in [0, 1]
        Calibrated probability that the answer is correct.
    answer : array-like of bool
        True where the response is answered, False where it is withheld.
    wrong_answer_cost, abstain_cost : float
        λ and a, see :func:`optimal_threshold`.

    Returns
    -------
    ndarray of float
        ``p - (1 - p) λ`` where answered, ``-a`` where withheld.
    """
    _check_costs(wrong_answer_cost, abstain_cost)
    p_arr = np.asarray(p, dtype=np.float64)
    answered = np.asarray(answer, dtype=bool)
    return np.where(answered, p_arr - (1.0 - p_arr) * wrong_answer_cost, -abstain_cost)


def expected_utility_scalar(
    p: float, answer: bool, *, wrong_answer_cost: float, abstain_cost: float = 0.0
) -> float:
    """Scalar :func:`expected_utility` for the request path (no NumPy overhead)."""
    if answer:
        return p - (1.0 - p) * wrong_answer_cost
    return -abstain_cost


def realized_utility(
    correct: ArrayLike, answer: ArrayLike, *, wrong_answer_cost: float, abstain_cost: float = 0.0
) -> NDArray[np.float64]:
    """Utility each decision actually earned once its correctness is known.

    Parameters
    ----------
    correct : array-like of bool
        Whether the (possibly withheld) answer was correct.
    answer : array-like of bool
        True where the response was answered.
    wrong_answer_cost, abstain_cost : float
        λ and a, see :func:`optimal_threshold`.

    Returns
    -------
    ndarray of float
        ``+1`` answered and correct, ``-λ`` answered and wrong, ``-a`` withheld.
    """
    _check_costs(wrong_answer_cost, abstain_cost)
    is_correct = np.asarray(correct, dtype=bool)
    answered = np.asarray(answer, dtype=bool)
    return np.where(answered, np.where(is_correct, 1.0, -wrong_answer_cost), -abstain_cost)


def realized_utility_scalar(
    correct: bool, answer: bool, *, wrong_answer_cost: float, abstain_cost: float = 0.0
) -> float:
    """Scalar :func:`realized_utility` for the request and feedback paths."""
    if not answer:
        return -abstain_cost
    return 1.0 if correct else -wrong_answer_cost
