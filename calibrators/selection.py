"""Choosing and fitting a calibrator by grouped cross-validation.

``auto`` tries every method that fits the score fields — each single-score method on each score,
and the multi-score methods on several of them — and keeps the one with the best out-of-fold
Behavioral Alignment Score. Folds are grouped: answers to one question (one ``group``) are never
split between the rows a candidate is fitted on and the rows it is scored on, which would leak
the question's difficulty into the score. The winner is then refitted on every row.

Combining scores is guarded against overfitting small data, where a 10-score model fitted on 8
right answers can win the out-of-fold ranking by chance and then lose on new answers:

- a multi-score candidate combines at most one score per :data:`EVENTS_PER_FEATURE` rows of the
  rarer class (right or wrong answers), and at least 2: the scores that are best alone;
- the choice follows the one-standard-error rule: the simplest candidate (fewest scores, then
  fewest learned parameters) whose out-of-fold BAS is within one standard error of the best
  one's, the error being that of their paired difference over questions on the same folds. A
  combination, or a many-parameter method, is chosen only for a gain beyond noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from policies.bas import bas_scores

from .artifact import (
    CandidateReport,
    CrossValidationReport,
    FittedCalibrator,
    StoreQuery,
    TrainingCurve,
    TrainingSummary,
)
from .dataset import CalibrationData
from .errors import DataError, MethodError
from .methods import METHODS, Calibrator
from .metrics import bas, summarize
from .signals import ScoreSpec, to_logit_space

__all__ = [
    "AUTO",
    "EVENTS_PER_FEATURE",
    "MIN_GROUPS_PER_CLASS",
    "MIN_ROWS",
    "SIMPLICITY_ORDER",
    "Candidate",
    "CandidateResult",
    "FitOutcome",
    "LabelShortfall",
    "Selection",
    "TooLittleDataError",
    "candidates_for",
    "cross_validate",
    "fit_calibrator",
    "grouped_folds",
    "logit_matrix",
    "multi_score_columns",
    "paired_standard_error",
    "require_enough_data",
]

AUTO = "auto"
DEFAULT_FOLDS = 5

MIN_ROWS = 30
"""Fewest labelled rows ``fit_calibrator`` accepts.

The out-of-fold figures that pick the method (BAS first) are means over rows; below about 30
rows their standard error is as large as the differences between methods they rank, and each of
the 5 folds is scored on a handful of answers, so the choice would be noise."""

MIN_GROUPS_PER_CLASS = 5
"""Fewest groups (questions) with a correct answer, and with a wrong one, ``fit_calibrator``
accepts.

Folds are grouped and stratified: with at least as many groups of each class as the default 5
folds, each fold can be scored on both classes and trained on several groups of each, so every
method can be fitted on every fold. With fewer, some fold trains on one class only and fails."""

EVENTS_PER_FEATURE = 10
"""Rows of the rarer class (right or wrong answers) per score that ``auto``'s multi-score
candidates need: the usual events-per-variable floor for logistic models (Peduzzi et al. 1996,
J Clin Epidemiol 49:1373). With fewer, they combine only the scores best alone, as many as the
rarer class allows (at least 2)."""

Progress = Callable[[int], object]
"""Called with the number of steps just completed (for a progress bar)."""


@dataclass(frozen=True)
class Candidate:
    """A calibration method applied to some of the score fields."""

    method: str
    columns: tuple[int, ...]
    fields: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.method}({', '.join(self.fields)})"

    def make(self) -> Calibrator:
        return METHODS[self.method]()


@dataclass(frozen=True, eq=False)
class CandidateResult:
    """A candidate's out-of-fold predictions and figures, or why it failed."""

    candidate: Candidate
    oof: NDArray[np.float64] | None
    summary: dict[str, float]
    fold_bas: list[float]
    error: str | None = None

    @property
    def score(self) -> float:
        value = self.summary.get("bas", math.nan)
        return value if self.error is None and math.isfinite(value) else -math.inf

    def report(self) -> CandidateReport:
        return CandidateReport(
            name=self.candidate.name,
            method=self.candidate.method,
            features=list(self.candidate.fields),
            oof={k: (v if math.isfinite(v) else None) for k, v in self.summary.items()},
            fold_bas=self.fold_bas,
            error=self.error,
        )


def candidates_for(specs: Sequence[ScoreSpec], method: str = AUTO) -> list[Candidate]:
    """The candidates ``method`` stands for given the score fields.

    A single-score method given several scores is tried on each of them; ``auto`` tries every
    method.

    Raises
    ------
    ValueError
        For an unknown method, or one that none of the scores can feed (for example ``identity``
        on a score that is not a probability).
    """
    if method != AUTO and method not in METHODS:
        allowed = ", ".join([AUTO, *METHODS])
        raise MethodError(f"unknown calibration method {method!r}; choose one of {allowed}")
    names = [method] if method != AUTO else list(METHODS)
    candidates: list[Candidate] = []
    for name in names:
        cls = METHODS[name]
        if cls.n_scores is None:
            # Multi-score methods only add something over single-score ones with several scores.
            if len(specs) > 1 or method != AUTO:
                columns = tuple(range(len(specs)))
                candidates.append(Candidate(name, columns, tuple(s.field for s in specs)))
            continue
        for j, spec in enumerate(specs):
            if cls.needs_probability and not spec.kind.is_probabilistic:
                continue
            candidates.append(Candidate(name, (j,), (spec.field,)))
    if not candidates:
        raise MethodError(f"method {method!r} needs a probability score; none of the scores is one")
    return candidates


def logit_matrix(data: CalibrationData) -> NDArray[np.float64]:
    """The data's scores mapped to logit space, column by column."""
    return np.column_stack(
        [to_logit_space(data.scores[:, j], spec.kind) for j, spec in enumerate(data.specs)]
    )


def grouped_folds(
    data: CalibrationData, n_folds: int
) -> list[tuple[NDArray[np.intp], NDArray[np.intp]]]:
    """Train/test row indices of up to ``n_folds`` folds that never split a group."""
    n_groups = data.n_groups
    if n_groups < 2:
        raise DataError(data.source, "cross-validation needs at least 2 groups (questions)")
    # Stratified so every fold has about the data's accuracy: with few questions, plain group
    # folds can differ in base rate enough to swamp the calibration error being measured.
    from sklearn.model_selection import StratifiedGroupKFold

    splitter = StratifiedGroupKFold(n_splits=min(n_folds, n_groups), shuffle=True, random_state=0)
    return list(splitter.split(data.scores, data.correct, groups=data.groups))


@dataclass(frozen=True)
class LabelShortfall:
    """How far labelled data falls short of what a fit needs, and how many more labels to get."""

    rows: int
    correct_groups: int
    """Groups (questions) with at least one correct answer."""
    wrong_groups: int
    """Groups with at least one wrong answer."""
    min_rows: int
    min_groups_per_class: int

    @property
    def rows_needed(self) -> int:
        return max(0, self.min_rows - self.rows)

    @property
    def correct_groups_needed(self) -> int:
        return max(0, self.min_groups_per_class - self.correct_groups)

    @property
    def wrong_groups_needed(self) -> int:
        return max(0, self.min_groups_per_class - self.wrong_groups)

    @property
    def labels_needed(self) -> int:
        """More labelled rows that would, at the rates seen so far, cover every shortfall.

        A row so far added a new group with a correct answer at the rate ``correct_groups /
        rows`` (one in 15 when the model is mostly wrong), so ``k`` more such groups take about
        ``k · rows / correct_groups`` rows; likewise for wrong answers. An estimate: the next
        labels may come at other rates.
        """
        estimates = [self.rows_needed]
        for needed, have in ((self.correct_groups_needed, self.correct_groups),
                             (self.wrong_groups_needed, self.wrong_groups)):
            if needed:
                estimates.append(math.ceil(needed * self.rows / have))
        return max(estimates)


class TooLittleDataError(DataError):
    """Labelled data too small to choose and fit a calibrator on; ``shortfall`` says by how
    much."""

    def __init__(self, path: str, message: str, shortfall: LabelShortfall) -> None:
        super().__init__(path, message)
        self.shortfall = shortfall


def require_enough_data(
    data: CalibrationData, *, min_rows: int = MIN_ROWS,
    min_groups_per_class: int = MIN_GROUPS_PER_CLASS,
) -> None:
    """Refuse data too small to choose and fit a calibrator on.

    Parameters
    ----------
    data : CalibrationData
        Labelled scores, with groups.
    min_rows : int, default=MIN_ROWS
        Fewest labelled rows.
    min_groups_per_class : int, default=MIN_GROUPS_PER_CLASS
        Fewest groups holding a correct answer, and fewest holding a wrong one.

    Raises
    ------
    DataError
        When the data has one class only.
    TooLittleDataError
        Naming every minimum the data misses, what it has, how many more of each kind are
        needed and about how many more labelled rows would bring them (its ``shortfall``).
    """
    data.require_both_classes()
    shortfall = LabelShortfall(
        rows=data.n_rows,
        correct_groups=int(np.unique(data.groups[data.correct]).size),
        wrong_groups=int(np.unique(data.groups[~data.correct]).size),
        min_rows=min_rows, min_groups_per_class=min_groups_per_class)
    short, needed = [], []
    if shortfall.rows_needed:
        short.append(f"{data.n_rows} labelled rows (at least {min_rows} needed)")
        needed.append(f"{shortfall.rows_needed} more labelled rows")
    for count, more, which in (
            (shortfall.correct_groups, shortfall.correct_groups_needed, "a correct"),
            (shortfall.wrong_groups, shortfall.wrong_groups_needed, "a wrong")):
        if more:
            short.append(f"{count} groups with {which} answer (at least {min_groups_per_class} "
                         "needed)")
            needed.append(f"{more} more groups (questions) with {which} answer")
    if short:
        rates = ("" if shortfall.labels_needed == shortfall.rows_needed else
                 f"; at the rates so far ({shortfall.correct_groups} groups with a correct "
                 f"answer and {shortfall.wrong_groups} with a wrong one in {data.n_rows} rows) "
                 f"that is about {shortfall.labels_needed} more labelled rows")
        raise TooLittleDataError(
            data.source, "too little labelled data to fit a calibrator: " + "; ".join(short)
            + ". Needed: " + ", ".join(needed) + rates
            + ". Collect or label more answers and fit again", shortfall)


def cross_validate(
    data: CalibrationData,
    candidates: Sequence[Candidate],
    *,
    n_folds: int = DEFAULT_FOLDS,
    progress: Progress | None = None,
) -> list[CandidateResult]:
    """Out-of-fold predictions and figures of each candidate under grouped k-fold."""
    from sklearn.base import clone

    logits = logit_matrix(data)
    labels = data.correct
    folds = grouped_folds(data, n_folds)
    results = []
    for candidate in candidates:
        oof = np.empty(data.n_rows, dtype=np.float64)
        fold_bas: list[float] = []
        error = None
        for fold_number, (train, test) in enumerate(folds, start=1):
            Z = logits[:, candidate.columns]
            try:
                model = clone(candidate.make()).fit(Z[train], labels[train])
            except ValueError as exc:
                error = f"fold {fold_number}: {exc}"
                break
            oof[test] = np.clip(model.predict(Z[test]), 0.0, 1.0)
            fold_bas.append(bas(oof[test], labels[test]))
            if progress is not None:
                progress(1)
        if error is not None:
            results.append(CandidateResult(candidate, None, {}, [], error))
            if progress is not None:
                progress(len(folds) - len(fold_bas))
            continue
        results.append(CandidateResult(candidate, oof, summarize(oof, labels), fold_bas))
    return results


def _is_multi(candidate: Candidate) -> bool:
    return METHODS[candidate.method].n_scores is None


def multi_score_columns(
    data: CalibrationData, single_results: Sequence[CandidateResult]
) -> tuple[int, ...]:
    """The score columns ``auto``'s multi-score candidates combine (see the module docstring).

    Every column when the rarer class has :data:`EVENTS_PER_FEATURE` rows per score; else the
    columns whose best single-score candidate scored highest out of fold, one per
    :data:`EVENTS_PER_FEATURE` rows of the rarer class and at least 2, in their data order.
    """
    n_columns = len(data.specs)
    positives = int(data.correct.sum())
    allowed = max(2, min(positives, data.n_rows - positives) // EVENTS_PER_FEATURE)
    if allowed >= n_columns:
        return tuple(range(n_columns))
    alone = dict.fromkeys(range(n_columns), -math.inf)
    for result in single_results:
        (column,) = result.candidate.columns
        alone[column] = max(alone[column], result.score)
    ranked = sorted(range(n_columns), key=lambda j: (-alone[j], j))
    return tuple(sorted(ranked[:allowed]))


def _cross_validate_auto(
    data: CalibrationData, candidates: Sequence[Candidate], *, n_folds: int,
    progress: Progress | None,
) -> list[CandidateResult]:
    """``auto``'s candidates cross-validated: single-score ones, then multi-score ones over
    :func:`multi_score_columns`. Results in the candidates' order."""
    singles = [c for c in candidates if not _is_multi(c)]
    single_results = cross_validate(data, singles, n_folds=n_folds, progress=progress)
    columns = multi_score_columns(data, single_results)
    multis = [Candidate(c.method, columns, tuple(data.specs[j].field for j in columns))
              for c in candidates if _is_multi(c)]
    multi_results = iter(cross_validate(data, multis, n_folds=n_folds, progress=progress))
    single_iter = iter(single_results)
    return [next(multi_results) if _is_multi(c) else next(single_iter) for c in candidates]


def paired_standard_error(
    data: CalibrationData, a: NDArray[np.float64], b: NDArray[np.float64]
) -> float:
    """Standard error of mean BAS(a) − mean BAS(b), two predictions of the same rows.

    Rows of one question are not independent: the per-row differences are summed per group and
    the error is the cluster-robust one over groups (Cameron and Miller 2015). 0 for one group.
    """
    diff = bas_scores(a, data.correct) - bas_scores(b, data.correct)
    _, group_index = np.unique(data.groups, return_inverse=True)
    n_groups = int(group_index.max()) + 1 if diff.size else 0
    if n_groups < 2:
        return 0.0
    sums = np.bincount(group_index, weights=diff, minlength=n_groups)
    counts = np.bincount(group_index, minlength=n_groups)
    residual = sums - counts * diff.mean()
    return float(math.sqrt(n_groups / (n_groups - 1) * np.sum(residual**2)) / diff.size)


#: Simplest first: how many parameters a single-score method learns (``auto``'s tie-break).
_SIMPLICITY = {"identity": 0, "temperature": 1, "platt": 2, "beta": 3, "histogram": 4,
               "isotonic": 4}
SIMPLICITY_ORDER = "identity < temperature < platt < beta < histogram = isotonic"
"""``auto``'s order of single-score methods, simplest first (as its explanations state it)."""


def _complexity(candidate: Candidate) -> tuple[int, int]:
    return len(candidate.columns), _SIMPLICITY.get(candidate.method, len(_SIMPLICITY))


@dataclass(frozen=True, eq=False)
class Selection:
    """Which candidate was chosen, by which rule, and the figures that decided it."""

    rule: str
    """``one_standard_error`` (``auto``) or ``best_bas`` (a method named)."""
    selected: CandidateResult
    best: CandidateResult
    """The candidate with the highest out-of-fold BAS (may be the selected one)."""
    standard_error: float
    """Paired standard error of the best's BAS minus the selected's (0 when they are one)."""

    @property
    def simpler(self) -> bool:
        """Whether the selected candidate is simpler than the best by BAS (fewer scores, then
        a simpler method)."""
        return _complexity(self.selected.candidate) < _complexity(self.best.candidate)


def _select(data: CalibrationData, results: Sequence[CandidateResult]) -> Selection:
    """``auto``'s choice by the one-standard-error rule (Breiman et al. 1984; Hastie,
    Tibshirani and Friedman 2009, §7.10): the simplest candidate — fewest scores, then fewest
    learned parameters — whose out-of-fold BAS is within one paired standard error of the best
    one's; among equally simple ones, the higher BAS."""
    best = max(results, key=lambda result: result.score)
    if best.oof is None:
        return Selection("one_standard_error", best, best, 0.0)
    errors = {id(r): paired_standard_error(data, best.oof, r.oof) for r in results
              if r.oof is not None and r.score > -math.inf}
    close = [r for r in results if id(r) in errors and best.score - r.score <= errors[id(r)]]
    chosen = min(close, key=lambda r: (_complexity(r.candidate), -r.score))
    return Selection("one_standard_error", chosen, best,
                     0.0 if chosen is best else errors[id(chosen)])


@dataclass(frozen=True, eq=False)
class FitOutcome:
    """A fitted calibrator with the cross-validation that chose it."""

    calibrator: FittedCalibrator
    selected: CandidateResult
    results: list[CandidateResult]
    selection: Selection


def fit_calibrator(
    data: CalibrationData,
    *,
    method: str = AUTO,
    n_folds: int = DEFAULT_FOLDS,
    sources: Sequence[str] | None = None,
    store: StoreQuery | None = None,
    progress: Progress | None = None,
    min_rows: int = MIN_ROWS,
    min_groups_per_class: int = MIN_GROUPS_PER_CLASS,
) -> FitOutcome:
    """Cross-validate the candidates ``method`` stands for and fit the best on all rows.

    Parameters
    ----------
    data : CalibrationData
        Labelled scores, with groups.
    method : str, default="auto"
        A method name from :data:`calibrators.methods.METHODS`, or ``auto``.
    n_folds : int, default=5
        Grouped folds (fewer when there are fewer groups).
    sources : sequence of str, optional
        Where the data came from, for the artifact; defaults to the data's file.
    store : StoreQuery, optional
        The decision store query the data came from, recorded so that the rows can be found
        again (the risk card's expected figures).
    progress : callable, optional
        Told of each finished fold fit.
    min_rows, min_groups_per_class : int
        The least data accepted (see :func:`require_enough_data`).

    Returns
    -------
    FitOutcome
        The best candidate by out-of-fold BAS fitted on every row, its cross-validation result,
        and every candidate's.

    Raises
    ------
    DataError
        When the data has one class only, fewer rows or groups per class than the minimums,
        or no candidate could be fitted. ``identity`` learns nothing, so under ``auto`` it does
        not count as fitted: a fit where every other candidate failed is refused, not answered
        with the raw score.
    ValueError
        For an unknown method or one none of the scores can feed.
    """
    candidates = candidates_for(data.specs, method)  # a bad option first: the data may be fine
    require_enough_data(data, min_rows=min_rows, min_groups_per_class=min_groups_per_class)
    if method == AUTO:
        results = _cross_validate_auto(data, candidates, n_folds=n_folds, progress=progress)
    else:
        results = cross_validate(data, candidates, n_folds=n_folds, progress=progress)
    selection = _selection(data, results, auto=method == AUTO)
    best = selection.selected
    Z = logit_matrix(data)[:, best.candidate.columns]
    estimator = best.candidate.make().fit(Z, data.correct)
    if progress is not None:
        progress(1)
    from .certification import training_curve  # SciPy's statistics: only once fitted

    curve = training_curve(np.clip(estimator.predict(Z), 0.0, 1.0), data.correct, data.groups)
    calibrator = FittedCalibrator(
        estimator=estimator,
        features=tuple(data.specs[j] for j in best.candidate.columns),
        training=_training_summary(data, sources, store, curve),
        cross_validation=CrossValidationReport(
            folds=min(n_folds, data.n_groups),
            selected=best.candidate.name,
            candidates=[result.report() for result in results],
        ),
    )
    return FitOutcome(calibrator, best, results, selection)


def _selection(data: CalibrationData, results: Sequence[CandidateResult], *, auto: bool
               ) -> Selection:
    """The candidate to fit on every row: ``auto``'s by :func:`_select`, else the best score.

    Raises :class:`DataError` when no candidate was fitted; under ``auto``, ``identity``
    (which learns nothing) does not count.
    """
    learned = [r for r in results
               if r.error is None and (not auto or r.candidate.method != "identity")]
    if not learned:
        first_error = next((r.error for r in results if r.error is not None), "")
        raise DataError(data.source, f"no calibrator could be fitted: {first_error}")
    if auto:
        return _select(data, results)
    top = max(results, key=lambda r: r.score)
    return Selection("best_bas", top, top, 0.0)


def _training_summary(data: CalibrationData, sources: Sequence[str] | None,
                      store: StoreQuery | None, curve: TrainingCurve) -> TrainingSummary:
    """What the artifact records of its training data (``sources`` default to the data's
    file; ``store``: the decision store query the rows came from; ``curve``: the calibrator's
    answers on it)."""
    return TrainingSummary(
        rows=data.n_rows,
        positives=int(data.correct.sum()),
        groups=data.n_groups,
        fingerprint=data.fingerprint(),
        sources=list(sources) if sources is not None else [data.source],
        label=data.label,
        scores=[str(spec) for spec in data.specs],
        store=store,
        curve=curve,
    )
