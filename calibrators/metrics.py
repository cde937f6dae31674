"""Evaluation metrics for calibrated confidence.

Every function takes predicted probabilities of correctness ``p`` and correctness labels ``y``
(0/1 or bool) of equal length, is pure and is vectorised: no Python loop runs over rows, so
:func:`summarize` handles millions of answers. The figures fall into three families:

- **calibration**: :func:`expected_calibration_error` over :func:`reliability_bins`,
  :func:`brier_score` and :func:`log_loss` — is ``p`` the probability it claims to be?
- **ranking**: :func:`auroc`, :func:`risk_coverage_curve` and :func:`aurc` — do confident answers
  come first? These accept any finite score where higher means more confident, not only
  probabilities.
- **decisions**: :func:`bas`, :func:`utility_at_threshold` and :func:`utility_curve` — what the
  guardrail earns by answering iff ``p >= t``, priced by :mod:`policies.utility` and
  :mod:`policies.bas`.

An empty input yields NaN for every scalar figure, as
:func:`policies.bas.behavioral_alignment_score` does, so a summary of an empty slice can still be
written out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from policies.bas import BASWeight, behavioral_alignment_score
from policies.utility import realized_utility, wrong_answer_cost_for_threshold

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

BinStrategy = Literal["uniform", "quantile"]
"""``uniform``: equal-width bins over [0, 1]; ``quantile``: equal-mass bins at quantiles of p."""

Float = NDArray[np.float64]


def _labels(y: ArrayLike) -> Float:
    """Correctness as a 1-D float array of 0.0/1.0 (floats, because most metrics average it)."""
    raw = np.asarray(y)
    if raw.ndim != 1:
        raise ValueError(f"y must be 1-D, got shape {raw.shape}")
    labels = raw.astype(np.float64)
    # Bool input is 0/1 by construction; anything else (0.5, 2, NaN) is not a correctness label.
    if raw.dtype != np.bool_ and not np.all((labels == 0.0) | (labels == 1.0)):
        raise ValueError("y must hold only 0/1 or True/False correctness labels")
    return labels


def _scores(p: ArrayLike, *, probabilities: bool) -> Float:
    """Confidences as a 1-D float array; finite, and within [0, 1] when they are probabilities."""
    scores = np.asarray(p, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"p must be 1-D, got shape {scores.shape}")
    if scores.size == 0:
        return scores
    lowest, highest = float(scores.min()), float(scores.max())
    # min/max propagate NaN, so one pass over the data catches NaN, infinities and the range.
    if not (math.isfinite(lowest) and math.isfinite(highest)):
        raise ValueError("p must be finite (no NaN or infinity)")
    if probabilities and (lowest < 0.0 or highest > 1.0):
        raise ValueError(f"p must lie in [0, 1], got values in [{lowest!r}, {highest!r}]")
    return scores


def _pair(p: ArrayLike, y: ArrayLike, *, probabilities: bool = True) -> tuple[Float, Float]:
    """Validated ``(p, y)``: both 1-D and of equal length."""
    scores = _scores(p, probabilities=probabilities)
    labels = _labels(y)
    if scores.shape != labels.shape:
        raise ValueError(
            f"p and y must have the same length, got {scores.size} confidences "
            f"and {labels.size} labels"
        )
    return scores, labels


def _mean(values: Float) -> float:
    return float(values.mean()) if values.size else math.nan


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
    return _mean(_labels(y))


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
    scores, labels = _pair(p, y)
    return behavioral_alignment_score(scores, labels.astype(bool), weight=weight)


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
    scores, labels = _pair(p, y)
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
    scores, labels = _pair(p, y)
    return _mean((scores - labels) ** 2)


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
    scores, labels = _pair(p, y)
    clipped = np.clip(scores, eps, 1.0 - eps)
    # Select the log-likelihood term rather than weighting both by y, whose 0 · ln(·) would turn
    # an extreme but unused term into NaN.
    return _mean(-np.where(labels == 1.0, np.log(clipped), np.log1p(-clipped)))


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
    scores, labels = _pair(p, y, probabilities=False)
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
    scores, labels = _pair(p, y, probabilities=False)
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
    return _mean(risk_coverage_curve(p, y).risk)


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
    scores, labels = _pair(p, y)
    utilities = realized_utility(
        labels.astype(bool),
        scores >= threshold,
        wrong_answer_cost=wrong_answer_cost,
        abstain_cost=abstain_cost,
    )
    return _mean(utilities)


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
    scores, labels = _pair(p, y)
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
    scores, labels = _pair(p, y)
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
