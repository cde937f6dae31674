"""Risk limits with a guarantee: certify a threshold, count the labels it needs, watch it live.

The *selective risk* of the rule "answer iff p >= t" is the error rate among the answers,
``R(t) = P(wrong | p >= t)``. A tenant's limit reads "at most A wrong among the answers, with
confidence C": a threshold ``t̂`` computed from labelled calibration data must satisfy

    P( R(t̂) <= A ) >= C     (probability over the draw of the calibration data).

:func:`certify_selective_risk` does this by Learn-then-Test (Angelopoulos, Bates, Candès, Jordan,
Lei 2021, "Learn then Test: Calibrating Predictive Algorithms to Achieve Risk Control",
arXiv 2110.01052): each threshold ``t`` is a null hypothesis ``H_t: R(t) > A``, tested with the
exact binomial p-value of the errors among the answers (given ``n(t)`` answers the errors are
Binomial(n(t), R(t)) for independent rows); the thresholds are tested from high to low in a fixed
sequence that stops at the first one not rejected, so every test runs at the full level
``δ = 1 - C`` with no multiplicity correction, and the lowest rejected threshold is returned. For
binary losses the exact binomial tail is the Bentkus half of LTT's Hoeffding-Bentkus p-value and
is never larger than the Hoeffding half, so it is the tightest of the three; inverting it gives the
one-sided Clopper-Pearson (1934) bound reported next to the threshold.

Two practical details, both deliberate:

* **Where the sequence starts.** Near the top of the score range few rows are answered, and a
  threshold answering fewer than ``n_min`` rows (:func:`labels_needed`) cannot be certified
  whatever its record, so a sequence starting at the very top stops before it reaches the
  thresholds that could pass. The start, :func:`start_threshold`, is the lowest threshold all
  but sure to pass, judged on labelled rows that are not tested. The best such rows are the
  calibrator's own training data (``start_curve``): they are independent of the tested rows,
  and every label at hand is tested. Without them a random share of the labels (30 % by
  default) chooses the start and the other rows are tested from there down. On the shipped
  data the first way certifies a median of 28 % more answers, up to 65 % (2026-12-07,
  ``benchmarks/bench_risk_limit.py`` at commit 9a1828c). As the start does not depend on the
  tested rows, the guarantee needs nothing but independent rows: no monotone risk, no
  calibration.
  Choosing the start from the tested rows' own scores, or at a fixed rank, would be label-free
  too, but is exact only under a monotone-risk assumption.
* **Groups.** Rows sharing a group (several sampled answers to one question) are not independent,
  and the binomial test needs independent rows. :func:`one_row_per_group` keeps one row per group,
  drawn uniformly at random with a recorded seed: the kept rows are independent when questions
  are, and a random answer to a random question is what live traffic (one answer per request)
  looks like, so the certified quantity is the per-request error rate. It spends one label per
  question; a group-level bound would use every row but needs a bound for bounded, non-binary
  losses (Hoeffding-Bentkus with its factor e, or betting), which loses most of what the extra rows
  bring when the answers to one question are strongly correlated, as sampled answers are.

Why not MAPIE (scikit-learn-contrib, 1.x)? Its ``BinaryClassificationController`` with the
``precision`` risk runs the same Learn-then-Test (Hoeffding-Bentkus p-values, optionally fixed
sequence testing). Run on the shipped data from the same starts (4 files, 4 starts, 7 limits; a
0.001 grid against scores floored to it), MAPIE 1.6 and :func:`fixed_sequence_test` certify the
same answered set in 111 of 112 cases; in the other, MAPIE takes ``⌈n r̂⌉`` of a floating-point
``r̂`` (55.00000000000001 becomes 56) and stops early. It does not fit cleanly: it tests a fixed
grid from the top, so a sparse top of the score range ends the sequence before anything is
certified (it has no held-out start); its fixed sequence infers the direction of testing from the
calibration data's empirical risk and warns whenever that risk is not monotone, which is every
real data set (our tests run with warnings as errors); it knows no groups; and it returns
p-values, not the upper bound a certificate records. What it would do here is a few lines of
SciPy.

For the live monitor, :func:`error_rate_confidence_sequence` gives anytime-valid bounds on an
error rate from running counts: the beta-binomial mixture martingale of Howard, Ramdas, McAuliffe
and Sekhon (2021, "Time-uniform, nonparametric, nonasymptotic confidence sequences", Annals of
Statistics 49(2)), so the bound can be checked after every label without the multiple-looks trap
of a fixed-sample interval.

The binomial tests and bounds are in :mod:`policies.binomial` and the live monitor in
:mod:`policies.confidence_sequence`; both are re-exported here.

Every function is pure: arrays and numbers in, arrays and numbers out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import norm

from .binomial import binomial_p_value, clopper_pearson_upper_bound, labels_needed
from .confidence_sequence import error_rate_confidence_sequence
from .levels import check_level

__all__ = [
    "Certification",
    "SelectiveErrorCurve",
    "SequenceResult",
    "binomial_p_value",
    "certify_selective_risk",
    "clopper_pearson_upper_bound",
    "error_rate_confidence_sequence",
    "fixed_sequence_test",
    "labels_needed",
    "one_row_per_group",
    "projected_labels_needed",
    "selective_error_curve",
    "start_of_curve",
    "start_threshold",
]

# A predicted margin of 2.33 standard deviations: the first test passes 99 times in 100.
_SURE_TO_PASS = 2.326


@dataclass(frozen=True)
class SelectiveErrorCurve:
    """Answers and errors of the rule "answer iff p >= t" at every distinct score ``t``."""

    thresholds: NDArray[np.float64]
    """The distinct scores, from high to low."""
    answered: NDArray[np.int64]
    """``n(t)``: rows with ``p >= t``; increases along :attr:`thresholds`."""
    errors: NDArray[np.int64]
    """``k(t)``: wrong rows among them."""

    @property
    def rows(self) -> int:
        """Rows behind the curve (those answered at its lowest threshold)."""
        return int(self.answered[-1]) if self.answered.size else 0

    def thinned(self, max_points: int) -> SelectiveErrorCurve:
        """At most ``max_points`` of the curve's points, evenly spaced in answers, the last kept.

        Thinning keeps exact points, so what is read from the thinned curve is true of the
        rows; it only forgoes the thresholds in between.
        """
        if max_points < 1:
            raise ValueError(f"max_points must be at least 1, got {max_points}")
        if self.answered.size <= max_points:
            return self
        # The first point at or past each of max_points even steps in answers.
        steps = np.linspace(self.rows / max_points, self.rows, max_points)
        keep = np.unique(np.searchsorted(self.answered, steps))
        return SelectiveErrorCurve(self.thresholds[keep], self.answered[keep], self.errors[keep])


def selective_error_curve(p: ArrayLike, correct: ArrayLike) -> SelectiveErrorCurve:
    """Count answers and errors of "answer iff p >= t" at each distinct ``p``.

    Parameters
    ----------
    p : array-like of float in [0, 1], shape (n,)
        Calibrated probability that each answer is correct.
    correct : array-like of bool, shape (n,)
        Whether each answer was correct.

    Returns
    -------
    SelectiveErrorCurve
        For each distinct score ``t``, from high to low, ``n(t) = #{p_i >= t}`` and
        ``k(t) = #{p_i >= t, wrong}``; the empirical selective risk is ``k(t) / n(t)``.
    """
    scores = np.asarray(p, dtype=np.float64)
    right = np.asarray(correct, dtype=bool)
    if scores.ndim != 1 or right.shape != scores.shape:
        raise ValueError(f"p and correct must be 1-D of one length, got {scores.shape} and "
                         f"{right.shape}")
    if not np.all((scores >= 0.0) & (scores <= 1.0)):  # also refuses NaN
        raise ValueError("p must hold probabilities in [0, 1]")
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    wrong_so_far = np.cumsum(~right[order], dtype=np.int64)
    # The last row of each run of equal scores closes that threshold's answered set.
    ends = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], ranked.size > 0))
    return SelectiveErrorCurve(
        thresholds=ranked[ends], answered=(ends + 1).astype(np.int64), errors=wrong_so_far[ends]
    )


@dataclass(frozen=True)
class Certification:
    """The outcome of :func:`certify_selective_risk`."""

    threshold: float | None
    """Answer iff ``p >= threshold``; None when no threshold could be certified."""
    max_error_rate: float
    confidence: float
    labels: int
    """Independent labelled rows used in all."""
    start_labels: int
    """Rows that chose where the test sequence starts (and were not tested); 0 when a
    ``start_curve`` chose it."""
    start_threshold: float
    """The highest threshold tested."""
    start_from: Literal["start_curve", "held_out_labels"]
    """What chose the start: ``"start_curve"`` (rows outside the labels, such as the
    calibrator's training data) or ``"held_out_labels"`` (a share of the labels)."""
    min_answered: int
    """``n_min``: fewest answers that can certify A at C (:func:`labels_needed`)."""
    answered: int
    """Tested rows answered at :attr:`threshold` (0 when none)."""
    errors: int
    """Wrong rows among them."""
    upper_bound: float | None
    """Clopper-Pearson bound at :attr:`confidence` on the error rate among the answers."""

    @property
    def certified(self) -> bool:
        return self.threshold is not None

    @property
    def test_labels(self) -> int:
        """Rows the fixed sequence tested on."""
        return self.labels - self.start_labels

    @property
    def answer_rate(self) -> float:
        """Share of the tested rows answered at :attr:`threshold`."""
        return self.answered / self.test_labels if self.test_labels else 0.0

    @property
    def error_rate(self) -> float | None:
        """Error rate among the tested rows answered at :attr:`threshold`."""
        return self.errors / self.answered if self.answered else None


def start_threshold(
    p: ArrayLike, correct: ArrayLike, *, max_error_rate: float, confidence: float,
    test_labels: int,
) -> float:
    """The threshold most likely to pass the first test, judged on rows that will not be tested.

    :func:`start_of_curve` on the rows' :func:`selective_error_curve`.
    """
    return start_of_curve(
        selective_error_curve(p, correct), max_error_rate=max_error_rate, confidence=confidence,
        test_labels=test_labels,
    )


def start_of_curve(
    curve: SelectiveErrorCurve, *, max_error_rate: float, confidence: float, test_labels: int
) -> float:
    """The threshold most likely to pass the first test, judged on rows that will not be tested.

    Parameters
    ----------
    curve : SelectiveErrorCurve
        Answers and errors of the rows that choose the start (possibly
        :meth:`~SelectiveErrorCurve.thinned`).
    max_error_rate, confidence : float
        A and C.
    test_labels : int
        Rows the sequence will test on.

    Returns
    -------
    float
        The lowest distinct ``p`` whose predicted standardised margin of the first test

            z(t) = (n̂ (A - r̃) - z_C √(n̂ A (1 - A))) / √(n̂ r̃ (1 - r̃) (1 + n̂ / m(t))),

        where ``m(t)``, ``e(t)`` are the rows answered and wrong here, ``n̂ = m(t) · test_labels
        / m`` the answers expected among the tested rows, ``r̃ = (e(t) + ½) / (m(t) + 1)`` the
        error rate shrunk away from 0, and ``z_C`` the normal quantile at C; the denominator
        counts the noise of both samples, reaches 2.326 (the first test would pass 99 times in
        100), or else the ``p`` with the largest ``z(t)``. 1.0 (test from the top) when there is
        no row here.
        The choice affects how much is certified, never the guarantee: these rows are not tested.
    """
    check_level("max_error_rate", max_error_rate)
    check_level("confidence", confidence)
    if curve.answered.size == 0 or test_labels <= 0:
        return 1.0
    m = curve.answered.astype(np.float64)
    expected = m * test_labels / m[-1]
    rate = (curve.errors + 0.5) / (m + 1.0)
    margin = expected * (max_error_rate - rate) - float(norm.ppf(confidence)) * np.sqrt(
        expected * max_error_rate * (1.0 - max_error_rate)
    )
    noise = np.sqrt(expected * rate * (1.0 - rate) * (1.0 + expected / m))
    z = margin / noise
    # The lowest threshold all but sure to pass, else the likeliest: not the largest expected
    # answer rate, as the margins low in the range are noisy and optimistic (the best of many),
    # and a start that then fails certifies nothing.
    sure = np.flatnonzero(z >= _SURE_TO_PASS)
    return float(curve.thresholds[int(sure[-1]) if sure.size else int(np.argmax(z))])


def certify_selective_risk(
    p: ArrayLike,
    correct: ArrayLike,
    *,
    max_error_rate: float,
    confidence: float,
    start_curve: SelectiveErrorCurve | None = None,
    start_fraction: float = 0.3,
    seed: int = 0,
) -> Certification:
    """Lowest threshold whose error rate among answers is certified ``<= A`` with confidence C.

    Parameters
    ----------
    p : array-like of float in [0, 1], shape (n,)
        Calibrated probabilities of labelled rows the calibrator was not fitted on, one per
        independent question (see :func:`one_row_per_group`).
    correct : array-like of bool, shape (n,)
        Whether each answer was correct.
    max_error_rate : float
        A, in (0, 1): the most wrong answers per answer the limit allows.
    confidence : float
        C, in (0, 1): the probability, over the calibration data, that the limit holds.
    start_curve : SelectiveErrorCurve, optional
        Answers and errors of labelled rows independent of these (the calibrator's training
        data): they choose where testing starts (:func:`start_of_curve`), and every row here is
        tested.
    start_fraction : float, default=0.3
        Without ``start_curve``: the share of the rows, drawn at random, that only choose where
        testing starts (:func:`start_threshold`).
    seed : int, default=0
        Seed of that draw.

    Returns
    -------
    Certification
        On the tested rows, with ``n(t)``, ``k(t)`` from :func:`selective_error_curve` and
        ``π(t) = P(Binomial(n(t), A) <= k(t))``, thresholds ``t <= s`` (the start) are tested
        from high to low and ``t̂`` is the last one before the first with ``π(t) > 1 - C``
        (fixed sequence testing, Learn-then-Test; Angelopoulos et al. 2021). Then
        ``P(R(t̂) <= A) >= C`` for independent rows: ``s`` does not depend on the tested rows,
        and wrongly certifying any threshold needs rejecting the highest bad one below ``s``
        first, a single test at level ``1 - C``. The answered set changes only at the tested
        rows' scores, so testing at those scores tests every threshold. When even the lowest
        score passes, ``t̂ = 0``: answering every row is certified. ``threshold`` is None when
        the first test fails.
    """
    check_level("max_error_rate", max_error_rate)
    check_level("confidence", confidence)
    check_level("start_fraction", start_fraction)
    scores = np.asarray(p, dtype=np.float64)
    right = np.asarray(correct, dtype=bool)
    selective_error_curve(scores, right)  # refuses bad input before anything is drawn
    n_labels = scores.size
    n_min = labels_needed(max_error_rate=max_error_rate, confidence=confidence)
    assert n_min is not None  # a perfect record certifies any A > 0
    chooses = np.zeros(n_labels, dtype=bool)
    if start_curve is not None:
        start_from: Literal["start_curve", "held_out_labels"] = "start_curve"
        start = start_of_curve(start_curve, max_error_rate=max_error_rate,
                               confidence=confidence, test_labels=n_labels)
    else:
        start_from = "held_out_labels"
        chooses[np.random.default_rng(seed).permutation(n_labels)[:round(
            start_fraction * n_labels)]] = True
        start = start_threshold(
            scores[chooses], right[chooses], max_error_rate=max_error_rate,
            confidence=confidence, test_labels=int(np.sum(~chooses)),
        )
    tested = fixed_sequence_test(
        scores[~chooses], right[~chooses], max_error_rate=max_error_rate,
        confidence=confidence, start=start,
    )
    return Certification(
        tested.threshold, max_error_rate, confidence, n_labels, int(np.sum(chooses)), start,
        start_from, n_min, tested.answered, tested.errors, tested.upper_bound,
    )


@dataclass(frozen=True)
class SequenceResult:
    """The outcome of :func:`fixed_sequence_test`."""

    threshold: float | None
    """The lowest threshold rejected before the first that was not; None if the first was not."""
    answered: int
    errors: int
    upper_bound: float | None
    """Clopper-Pearson bound on the error rate among the answers at :attr:`threshold`."""


def fixed_sequence_test(
    p: ArrayLike, correct: ArrayLike, *, max_error_rate: float, confidence: float, start: float
) -> SequenceResult:
    """Test ``H_t: R(t) > A`` for every threshold ``t <= start``, high to low, until one stands.

    Parameters
    ----------
    p, correct : array-like, shape (n,)
        Calibrated probabilities and correctness of independent labelled rows.
    max_error_rate, confidence : float
        A and C; each test runs at level ``δ = 1 - C``.
    start : float
        The highest threshold tested; it must not depend on these rows' labels.

    Returns
    -------
    SequenceResult
        ``t̂``, the last threshold before the first with ``P(Binomial(n(t), A) <= k(t)) > δ``,
        and its counts. Every threshold in ``(t_next, t]`` between two consecutive scores
        answers the same rows, so testing at the scores tests the whole range; ``t̂ = 0`` when the
        lowest score passes. Fixed sequence testing keeps the family-wise error at δ without a
        correction: wrongly rejecting any ``H_t`` needs rejecting the first true one reached, and
        that single test errs with probability at most δ (Angelopoulos et al. 2021, Section 4).
    """
    check_level("max_error_rate", max_error_rate)
    check_level("confidence", confidence)
    curve = selective_error_curve(p, correct)
    tested = np.flatnonzero(curve.thresholds <= start)
    p_values = binomial_p_value(
        curve.errors[tested], curve.answered[tested], max_error_rate=max_error_rate
    )
    failed = np.flatnonzero(p_values > 1.0 - confidence)
    passed = int(failed[0]) if failed.size else int(tested.size)
    if passed == 0:
        return SequenceResult(None, 0, 0, None)
    last = int(tested[passed - 1])
    answered, errors = int(curve.answered[last]), int(curve.errors[last])
    threshold = 0.0 if last == curve.thresholds.size - 1 else float(curve.thresholds[last])
    bound = float(clopper_pearson_upper_bound(errors, answered, confidence=confidence))
    return SequenceResult(threshold, answered, errors, bound)


def projected_labels_needed(
    p: ArrayLike,
    correct: ArrayLike,
    *,
    max_error_rate: float,
    confidence: float,
    start_fraction: float = 0.3,
) -> int | None:
    """Independent labels that would certify a threshold if the observed rates held.

    Parameters
    ----------
    p, correct : array-like, shape (n,)
        Calibrated probabilities and correctness of the independent labelled rows at hand.
    max_error_rate, confidence : float
        A and C.
    start_fraction : float in [0, 1), default=0.3
        As in :func:`certify_selective_risk`: that share of the labels is not tested (0 when a
        start curve chooses the start).

    Returns
    -------
    int or None
        ``min over t of ⌈ labels_needed(A, C, r(t)) / (q(t) (1 - start_fraction)) ⌉`` over the
        distinct scores t whose error rate among answers ``r(t)``, taken at its 80 %
        Clopper-Pearson upper bound, is below A, where ``q(t) = n(t) / n`` is the observed answer
        rate: the labelled questions at which that threshold's answers would be enough, were
        its rates the same on more data. A planning figure, not a promise: the sequence may stop
        above that threshold. None when no threshold qualifies.
    """
    if not 0.0 <= start_fraction < 1.0:
        raise ValueError(f"start_fraction must be in [0, 1), got {start_fraction!r}")
    curve = selective_error_curve(p, correct)
    if curve.answered.size == 0:
        return None
    # The rate at its 80 % upper bound: the best-looking threshold of a small sample looks better
    # than it is, and a projection that promises too little is worse than none.
    rates = clopper_pearson_upper_bound(curve.errors, curve.answered, confidence=0.8)
    best: int | None = None
    for answered, rate in zip(curve.answered, rates, strict=True):
        if rate >= max_error_rate:
            continue
        needed = labels_needed(
            max_error_rate=max_error_rate, confidence=confidence, observed_error_rate=float(rate)
        )
        assert needed is not None  # rate < A
        share = answered / curve.answered[-1] * (1.0 - start_fraction)
        total = math.ceil(needed / share)
        best = total if best is None else min(best, total)
    return best


def one_row_per_group(groups: ArrayLike, *, seed: int) -> NDArray[np.intp]:
    """Indices of one row per group, each drawn uniformly at random within its group.

    Parameters
    ----------
    groups : array-like, shape (n,)
        Group id of each row (rows of one question share it).
    seed : int
        Seed of the draw, recorded so the selection can be reproduced.

    Returns
    -------
    ndarray of int, ascending
        One index per distinct group. When groups are independent the selected rows are, which
        the binomial test needs; rows within one group (sampled answers to one question) are not.
    """
    ids = np.asarray(groups)
    if ids.ndim != 1:
        raise ValueError(f"groups must be 1-D, got shape {ids.shape}")
    shuffled = np.random.default_rng(seed).permutation(ids.size)
    _, first = np.unique(ids[shuffled], return_index=True)
    return np.sort(shuffled[first])

