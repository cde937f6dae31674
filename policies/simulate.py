"""What-if replay of decisions under candidate policies: coverage, abstention errors, utility.

Given each decision's calibrated confidence ``p`` (NaN when it had none), whether it was
answered, its label (NaN when unlabelled) and its group (the request it belongs to), a policy
``(t, λ, a)`` is replayed by deciding again: answer iff ``p >= t``. A decision made without
confidence keeps its recorded decision, since ``on_missing_confidence`` does not depend on the
threshold. Per candidate:

- coverage: answered / all decisions (labelled or not: the answer rate needs no label);
- accuracy when answered: correct / answered, over labelled decisions;
- over-abstention: withheld-but-correct / labelled (the store's ``abstained_correct``);
- under-abstention: answered-but-wrong / labelled (the store's ``answered_wrong``);
- realized utility per labelled request: +1 answered and correct, −λ answered and wrong, −a
  withheld (:func:`policies.utility.realized_utility`), with a percentile bootstrap 95 %
  interval that resamples whole groups, so the choices of one request stay together
  (Efron & Tibshirani 1993, ch. 13; the cluster bootstrap of Davison & Hinkley 1997, §3.8).

The BAS of the confidences (Wu, Gustafsson et al. 2026) integrates the utility over every
threshold, so one set of confidences has one BAS whatever the candidate: it is reported once.

Every function is pure: arrays in, numbers out; randomness only from the given seed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .bas import behavioral_alignment_score
from .profiles import PRESETS
from .utility import optimal_threshold, realized_utility, realized_utility_scalar

__all__ = [
    "DEFAULT_BOOTSTRAP",
    "DEFAULT_GRID",
    "Candidate",
    "CandidateResult",
    "Interval",
    "OptimalThreshold",
    "ReplayData",
    "Simulation",
    "live_realized_utility_per_request",
    "preset_candidates",
    "simulate",
    "threshold_grid",
]

DEFAULT_BOOTSTRAP = 1000
"""Bootstrap resamples: the 2.5th and 97.5th percentiles of 1000 are stable to about ±0.01 of
the interval's width, enough for a decision about a threshold."""
CONFIDENCE_LEVEL = 0.95


def threshold_grid(step: float = 0.01) -> NDArray[np.float64]:
    """Thresholds ``0, step, 2·step, ...`` below 1 (answer-everything to near-abstain-all)."""
    if not 0.0 < step < 1.0:
        raise ValueError(f"the grid step must be in (0, 1), got {step!r}")
    return np.round(np.arange(0.0, 1.0 - 1e-12, step), 10)


DEFAULT_GRID = threshold_grid()


@dataclass(frozen=True)
class Candidate:
    """A policy to replay: answer iff ``p >= threshold``; utilities priced at (λ, a).

    ``kind`` says where it came from: ``configured`` (the tenant's policy), ``preset``,
    ``costs`` (explicit λ/a, threshold from them) or ``grid`` (a threshold under the
    reference costs).
    """

    name: str
    threshold: float
    wrong_answer_cost: float
    abstain_cost: float
    kind: str

    @classmethod
    def from_costs(cls, name: str, wrong_answer_cost: float, abstain_cost: float = 0.0,
                   *, kind: str = "costs") -> Candidate:
        """The candidate whose threshold is optimal for (λ, a): ``(λ − a) / (1 + λ)``."""
        threshold = optimal_threshold(wrong_answer_cost=wrong_answer_cost,
                                      abstain_cost=abstain_cost)
        return cls(name, threshold, wrong_answer_cost, abstain_cost, kind)


def preset_candidates() -> list[Candidate]:
    """One candidate per preset of :data:`policies.profiles.PRESETS`."""
    return [Candidate(name, profile.threshold, profile.wrong_answer_cost, profile.abstain_cost,
                      "preset") for name, profile in PRESETS.items()]


@dataclass(frozen=True, eq=False)
class ReplayData:
    """Decisions to replay, as parallel arrays.

    Parameters
    ----------
    confidence : array of float
        Calibrated P(correct); NaN for a decision made without confidence.
    answered : array of bool
        The recorded decision (used as is where ``confidence`` is NaN).
    correct : array of float
        1.0 correct, 0.0 wrong, NaN unlabelled.
    groups : array of int, optional
        The request (or question) of each decision, any ids (made dense here); default: each
        its own.
    """

    confidence: NDArray[np.float64]
    answered: NDArray[np.bool_]
    correct: NDArray[np.float64]
    groups: NDArray[np.int64] = field(default_factory=lambda: np.empty(0, dtype=np.int64))

    def __post_init__(self) -> None:
        n = self.confidence.shape[0]
        if self.groups.size == 0 and n:
            object.__setattr__(self, "groups", np.arange(n, dtype=np.int64))
        elif self.groups.size:
            # Dense ids 0..G-1, so a resample's counts index them directly.
            _, dense = np.unique(self.groups, return_inverse=True)
            object.__setattr__(self, "groups", dense.reshape(-1).astype(np.int64))
        shapes = {a.shape for a in (self.confidence, self.answered, self.correct, self.groups)}
        if len(shapes) != 1 or self.confidence.ndim != 1:
            raise ValueError(f"replay arrays must be 1-D and of one length, got {shapes}")
        p = self.confidence[~np.isnan(self.confidence)]
        if p.size and (p.min() < 0.0 or p.max() > 1.0):
            raise ValueError("confidences must be in [0, 1] (or NaN for none)")
        y = self.correct[~np.isnan(self.correct)]
        if y.size and not np.isin(y, (0.0, 1.0)).all():
            raise ValueError("labels must be 0, 1 or NaN (unlabelled)")

    @classmethod
    def from_lists(cls, confidence: Sequence[float | None], answered: Sequence[bool],
                   correct: Sequence[float | None],
                   groups: Sequence[str] | None = None) -> ReplayData:
        """Build from sequences; ``None`` in ``confidence`` or ``correct`` reads as NaN."""
        def floats(values: Sequence[float | None]) -> NDArray[np.float64]:
            return np.array([math.nan if v is None else float(v) for v in values],
                            dtype=np.float64)
        dense = None
        if groups is not None:
            _, dense = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
        return cls(floats(confidence), np.asarray(answered, dtype=bool), floats(correct),
                   np.empty(0, np.int64) if dense is None else dense.astype(np.int64))

    @property
    def n(self) -> int:
        return int(self.confidence.shape[0])

    @property
    def labelled(self) -> NDArray[np.bool_]:
        return ~np.isnan(self.correct)

    def decide(self, threshold: float) -> NDArray[np.bool_]:
        """Answer iff ``p >= threshold``; decisions without confidence keep their record."""
        with np.errstate(invalid="ignore"):
            fresh = self.confidence >= threshold
        return np.where(np.isnan(self.confidence), self.answered, fresh)


@dataclass(frozen=True)
class Interval:
    """A two-sided interval; NaN ends when it is undefined (no labels)."""

    low: float
    high: float

    def as_json(self) -> list[float | None]:
        return [_finite_or_none(self.low), _finite_or_none(self.high)]


@dataclass(frozen=True)
class CandidateResult:
    """What one candidate policy would have done on the replayed decisions."""

    candidate: Candidate
    decisions: int
    labelled: int
    coverage: float
    accuracy_answered: float
    over_abstention: float
    under_abstention: float
    utility: float
    """Realized utility per labelled request, at the candidate's own (λ, a)."""
    utility_interval: Interval
    reference_utility: float
    """The same decisions priced at the reference (configured) costs: comparable across rows."""
    reference_utility_interval: Interval

    def as_json(self) -> dict[str, object]:
        c = self.candidate
        return {
            "name": c.name, "kind": c.kind, "threshold": c.threshold,
            "wrong_answer_cost": c.wrong_answer_cost, "abstain_cost": c.abstain_cost,
            "decisions": self.decisions, "labelled": self.labelled,
            "coverage": _finite_or_none(self.coverage),
            "accuracy_answered": _finite_or_none(self.accuracy_answered),
            "over_abstention": _finite_or_none(self.over_abstention),
            "under_abstention": _finite_or_none(self.under_abstention),
            "utility_per_request": _finite_or_none(self.utility),
            "utility_interval": self.utility_interval.as_json(),
            "reference_utility_per_request": _finite_or_none(self.reference_utility),
            "reference_utility_interval": self.reference_utility_interval.as_json(),
        }


@dataclass(frozen=True)
class OptimalThreshold:
    """The threshold that maximised realized utility on these labels, at the reference costs.

    ``distance`` is the reference threshold minus the optimum (positive: the configured policy
    withholds more than these labels reward); its interval, and that of the utility the
    configured threshold leaves on the table (``regret``), come from the same bootstrap.
    """

    threshold: float
    utility: float
    distance: float
    distance_interval: Interval
    regret: float
    regret_interval: Interval

    def as_json(self) -> dict[str, object]:
        return {
            "threshold": _finite_or_none(self.threshold),
            "utility_per_request": _finite_or_none(self.utility),
            "configured_minus_optimal": _finite_or_none(self.distance),
            "configured_minus_optimal_interval": self.distance_interval.as_json(),
            "utility_lost_at_configured": _finite_or_none(self.regret),
            "utility_lost_at_configured_interval": self.regret_interval.as_json(),
        }


@dataclass(frozen=True)
class Simulation:
    """Every candidate's replay, the curve over a threshold grid and the optimum."""

    results: list[CandidateResult]
    reference: Candidate
    grid: NDArray[np.float64]
    grid_utility: NDArray[np.float64]
    grid_coverage: NDArray[np.float64]
    grid_over_abstention: NDArray[np.float64]
    grid_under_abstention: NDArray[np.float64]
    optimum: OptimalThreshold
    bas: float
    """BAS of the labelled decisions' confidences (those with one)."""
    decisions: int
    labelled: int
    without_confidence: int
    groups: int
    bootstrap: int
    seed: int


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _rate(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def _utilities(data: ReplayData, answer: NDArray[np.bool_], wrong_answer_cost: float,
               abstain_cost: float) -> NDArray[np.float64]:
    """Per-decision realized utility; 0 where unlabelled (those carry no weight in means)."""
    labelled = data.labelled
    u = realized_utility(np.nan_to_num(data.correct) == 1.0, answer,
                         wrong_answer_cost=wrong_answer_cost, abstain_cost=abstain_cost)
    return np.where(labelled, u, 0.0)


def _percentile_interval(values: NDArray[np.float64]) -> Interval:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return Interval(math.nan, math.nan)
    tail = (1.0 - CONFIDENCE_LEVEL) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return Interval(float(low), float(high))


def _resamples(groups: NDArray[np.int64], n_groups: int, resamples: int,
               seed: int) -> Iterator[NDArray[np.float64]]:
    """Row weights of each bootstrap resample: how often each row's group was drawn.

    One resample at a time: a matrix of them all would take ``resamples × rows`` floats
    (800 MB for 100 000 decisions).
    """
    rng = np.random.default_rng(seed)
    for _ in range(resamples):
        drawn = np.bincount(rng.integers(0, n_groups, size=n_groups), minlength=n_groups)
        yield drawn[groups].astype(np.float64)


class _OptimumSearch:
    """The utility-maximising threshold of a grid, for the labelled decisions under (λ, a).

    Rows are the labelled decisions with a confidence, sorted once; those without one keep
    their decision at every threshold, so they add the same utility to every cut (``fixed``)
    and cannot move the optimum. Utility is flat between adjacent confidences, so thresholds
    tie: the one nearest the reference threshold wins, and a reference threshold that is
    optimal is at distance 0.
    """

    def __init__(self, data: ReplayData, grid: NDArray[np.float64], reference: Candidate
                 ) -> None:
        self._rows = data.labelled & ~np.isnan(data.confidence)
        self._unscored = data.labelled & np.isnan(data.confidence)
        self._unscored_u = _utilities(data, data.answered, reference.wrong_answer_cost,
                                      reference.abstain_cost)[self._unscored]
        p = data.confidence[self._rows]
        order = np.argsort(p, kind="stable")
        self._sorted_rows = np.flatnonzero(self._rows)[order]  # one gather per resample
        correct = data.correct[self._rows] == 1.0
        self._gain = np.where(correct, 1.0, -reference.wrong_answer_cost)[order]
        self._withhold = -reference.abstain_cost
        # The reference threshold joins the grid, so "at the optimum" includes staying put.
        self.grid = np.unique(np.append(grid, reference.threshold))
        self._at = int(np.searchsorted(self.grid, reference.threshold))
        self._prefer = reference.threshold
        self._cuts = np.searchsorted(p[order], self.grid, side="left")

    def __call__(self, weights: NDArray[np.float64]) -> tuple[float, float, float]:
        """(best threshold, its utility, the reference threshold's utility) under ``weights``."""
        w = weights[self._sorted_rows]
        extra = weights[self._unscored]
        total = w.sum() + extra.sum()
        if total == 0 or w.size == 0:
            return math.nan, math.nan, math.nan
        # Withheld below the cut, answered from it: prefix sums price every cut at once.
        withheld = np.concatenate([[0.0], np.cumsum(w * self._withhold)])
        answered = np.concatenate([[0.0], np.cumsum((w * self._gain)[::-1])])[::-1]
        utility = (withheld[self._cuts] + answered[self._cuts]
                   + float(extra @ self._unscored_u)) / total
        tied = np.flatnonzero(utility >= utility.max() - 1e-12)
        best = int(tied[np.argmin(np.abs(self.grid[tied] - self._prefer))])
        return float(self.grid[best]), float(utility[best]), float(utility[self._at])


def simulate(
    data: ReplayData,
    candidates: Sequence[Candidate],
    *,
    reference: Candidate,
    grid: ArrayLike = DEFAULT_GRID,
    bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> Simulation:
    """Replay ``data`` under each candidate, and find the utility-optimal threshold.

    Parameters
    ----------
    data : ReplayData
        The decisions. Unlabelled ones count towards coverage only.
    candidates : sequence of Candidate
        The policies to replay (the reference is not added: include it to see its row).
    reference : Candidate
        The configured policy: its (λ, a) price the grid, the optimum and the comparable
        ``reference_utility`` column; its threshold is what the optimum is measured from.
    grid : array-like of float
        Thresholds for the curve and the search for the optimum.
    bootstrap : int, default=1000
        Group resamples for the 95 % percentile intervals; 0 for none (NaN intervals).
    seed : int, default=0
        Seed of the resampling: the same data and seed give the same intervals.

    Returns
    -------
    Simulation
    """
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be >= 0, got {bootstrap}")
    grid_arr = np.asarray(grid, dtype=np.float64)
    answers = [data.decide(c.threshold) for c in candidates]
    priced = _priced(data, answers, candidates, reference)
    search = _OptimumSearch(data, grid_arr, reference)
    n_groups = int(np.unique(data.groups).size) if data.n else 0
    replicates, optima = _bootstrap(data, priced, search, n_groups, bootstrap, seed)
    point = _point_means(priced, int(data.labelled.sum()))
    results = [
        _candidate_result(data, candidate, answer, point, replicates, own=i,
                          at_reference=len(candidates) + i)
        for i, (candidate, answer) in enumerate(zip(candidates, answers, strict=True))
    ]
    curve = _curve(data, grid_arr, reference)
    scored = data.labelled & ~np.isnan(data.confidence)
    return Simulation(
        results=results, reference=reference, grid=grid_arr, grid_utility=curve[0],
        grid_coverage=curve[1], grid_over_abstention=curve[2], grid_under_abstention=curve[3],
        optimum=_optimum(search, data.n, reference, optima),
        bas=behavioral_alignment_score(data.confidence[scored], data.correct[scored] == 1.0),
        decisions=data.n, labelled=int(data.labelled.sum()),
        without_confidence=int(np.isnan(data.confidence).sum()), groups=n_groups,
        bootstrap=bootstrap, seed=seed,
    )


def _priced(data: ReplayData, answers: Sequence[NDArray[np.bool_]],
            candidates: Sequence[Candidate], reference: Candidate) -> NDArray[np.float64]:
    """Per-decision utilities, one row per candidate at its own costs, then one per candidate
    at the reference costs; the last row counts the labelled decisions.

    A resample's means are then one product with its row weights, all rows at once.
    """
    if not data.n:
        return np.zeros((2 * len(candidates) + 1, 0))
    return np.vstack([
        *(_utilities(data, a, c.wrong_answer_cost, c.abstain_cost)
          for a, c in zip(answers, candidates, strict=True)),
        *(_utilities(data, a, reference.wrong_answer_cost, reference.abstain_cost)
          for a in answers),
        data.labelled.astype(np.float64),
    ])


def _bootstrap(data: ReplayData, priced: NDArray[np.float64], search: _OptimumSearch,
               n_groups: int, resamples: int, seed: int
               ) -> tuple[NDArray[np.float64], list[tuple[float, float, float]]]:
    """Each group resample's mean utilities (one row per resample, a column per priced row)
    and its optimum search ``(best threshold, its utility, the reference's utility)``."""
    means, optima = [], []
    if n_groups:
        for weights in _resamples(data.groups, n_groups, resamples, seed):
            sums = priced @ weights
            with np.errstate(invalid="ignore", divide="ignore"):
                means.append(sums[:-1] / sums[-1])
            optima.append(search(weights))
    replicates = (np.asarray(means, dtype=np.float64) if means
                  else np.empty((0, priced.shape[0] - 1)))
    return replicates, optima


def _point_means(priced: NDArray[np.float64], n_labelled: int) -> NDArray[np.float64]:
    """Each priced row's mean utility per labelled decision; NaN without labels."""
    if not n_labelled:
        return np.full(priced.shape[0] - 1, math.nan)
    return np.asarray(priced[:-1].sum(axis=1) / n_labelled, dtype=np.float64)


def _candidate_result(data: ReplayData, candidate: Candidate, answer: NDArray[np.bool_],
                      point: NDArray[np.float64], replicates: NDArray[np.float64], *,
                      own: int, at_reference: int) -> CandidateResult:
    """One candidate's rates, and its utilities from the priced rows ``own`` (its costs) and
    ``at_reference`` (the reference's)."""
    labelled = data.labelled
    n_labelled = int(labelled.sum())
    correct = np.nan_to_num(data.correct) == 1.0
    answered_labelled = answer & labelled
    return CandidateResult(
        candidate=candidate,
        decisions=data.n,
        labelled=n_labelled,
        coverage=_rate(float(answer.sum()), data.n),
        accuracy_answered=_rate(float((answered_labelled & correct).sum()),
                                float(answered_labelled.sum())),
        over_abstention=_rate(float((~answer & labelled & correct).sum()), n_labelled),
        under_abstention=_rate(float((answered_labelled & ~correct).sum()), n_labelled),
        utility=float(point[own]), utility_interval=_percentile_interval(replicates[:, own]),
        reference_utility=float(point[at_reference]),
        reference_utility_interval=_percentile_interval(replicates[:, at_reference]),
    )


def _optimum(search: _OptimumSearch, n: int, reference: Candidate,
             optima: Sequence[tuple[float, float, float]]) -> OptimalThreshold:
    """The optimum on every decision, with the bootstrap intervals of its distance from the
    reference threshold and of the utility the reference leaves on the table."""
    best_t, best_u, here = search(np.ones(n))
    return OptimalThreshold(
        threshold=best_t, utility=best_u, distance=reference.threshold - best_t,
        distance_interval=_percentile_interval(
            np.asarray([reference.threshold - t for t, _, _ in optima], dtype=np.float64)),
        regret=best_u - here,
        regret_interval=_percentile_interval(
            np.asarray([u - h for _, u, h in optima], dtype=np.float64)),
    )


def _curve(data: ReplayData, grid: NDArray[np.float64], reference: Candidate
           ) -> tuple[NDArray[np.float64], ...]:
    """Utility (reference costs), coverage, over- and under-abstention at each grid threshold."""
    rows = np.empty((4, grid.size))
    labelled = data.labelled
    n_labelled = int(labelled.sum())
    correct = np.nan_to_num(data.correct) == 1.0
    for i, t in enumerate(grid.tolist()):
        answer = data.decide(t)
        u = _utilities(data, answer, reference.wrong_answer_cost, reference.abstain_cost)
        rows[0, i] = _rate(float(u.sum()), n_labelled)
        rows[1, i] = _rate(float(answer.sum()), data.n)
        rows[2, i] = _rate(float((~answer & labelled & correct).sum()), n_labelled)
        rows[3, i] = _rate(float((answer & labelled & ~correct).sum()), n_labelled)
    return rows[0], rows[1], rows[2], rows[3]


def live_realized_utility_per_request(
    correct: Sequence[bool], answered: Sequence[bool], wrong_answer_costs: Sequence[float],
    abstain_costs: Sequence[float],
) -> float:
    """Realized utility per labelled request, summed exactly as the live metric sums it.

    The decision store adds :func:`policies.utility.realized_utility_scalar` of each label,
    priced at the costs stored with its decision, into ``feedback_totals`` one label at a
    time; ``/metrics`` exports that sum and the count. Adding the same scalars in the same
    (label) order here gives the same float, so the replay can be checked against the live
    figure. NaN for no labels.

    Parameters
    ----------
    correct, answered : sequence of bool
        Each labelled decision's label and recorded decision, in the order they were labelled.
    wrong_answer_costs, abstain_costs : sequence of float
        The λ and a stored with each decision.
    """
    total = 0.0
    count = 0
    for is_correct, was_answered, wrong, withhold in zip(
        correct, answered, wrong_answer_costs, abstain_costs, strict=True
    ):
        total += realized_utility_scalar(bool(is_correct), bool(was_answered),
                                         wrong_answer_cost=wrong, abstain_cost=withhold)
        count += 1
    return total / count if count else math.nan
