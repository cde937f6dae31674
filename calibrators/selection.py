"""Choosing and fitting a calibrator by grouped cross-validation.

``auto`` tries every method that fits the score fields — each single-score method on each score,
and the multi-score methods on all of them — and keeps the one with the best out-of-fold
Behavioral Alignment Score. Folds are grouped: answers to one question (one ``group``) are never
split between the rows a candidate is fitted on and the rows it is scored on, which would leak
the question's difficulty into the score. The winner is then refitted on every row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .artifact import CandidateReport, CrossValidationReport, FittedCalibrator, TrainingSummary
from .dataset import CalibrationData
from .errors import DataError, MethodError
from .methods import METHODS, Calibrator
from .metrics import bas, summarize
from .signals import ScoreSpec, to_logit_space

__all__ = [
    "AUTO",
    "Candidate",
    "CandidateResult",
    "FitOutcome",
    "candidates_for",
    "cross_validate",
    "fit_calibrator",
    "grouped_folds",
    "logit_matrix",
]

AUTO = "auto"
DEFAULT_FOLDS = 5

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


@dataclass(frozen=True, eq=False)
class FitOutcome:
    """A fitted calibrator with the cross-validation that chose it."""

    calibrator: FittedCalibrator
    selected: CandidateResult
    results: list[CandidateResult]


def fit_calibrator(
    data: CalibrationData,
    *,
    method: str = AUTO,
    n_folds: int = DEFAULT_FOLDS,
    sources: Sequence[str] | None = None,
    progress: Progress | None = None,
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
    progress : callable, optional
        Told of each finished fold fit.

    Returns
    -------
    FitOutcome
        The best candidate by out-of-fold BAS fitted on every row, its cross-validation result,
        and every candidate's.

    Raises
    ------
    DataError
        When the data has one class only or too few groups, or no candidate could be fitted.
    ValueError
        For an unknown method or one none of the scores can feed.
    """
    data.require_both_classes()
    candidates = candidates_for(data.specs, method)
    results = cross_validate(data, candidates, n_folds=n_folds, progress=progress)
    best = max(results, key=lambda result: result.score)
    if best.error is not None:
        raise DataError(data.source, f"no calibrator could be fitted: {best.error}")
    Z = logit_matrix(data)[:, best.candidate.columns]
    estimator = best.candidate.make().fit(Z, data.correct)
    if progress is not None:
        progress(1)
    n_folds_used = min(n_folds, data.n_groups)
    calibrator = FittedCalibrator(
        estimator=estimator,
        features=tuple(data.specs[j] for j in best.candidate.columns),
        training=TrainingSummary(
            rows=data.n_rows,
            positives=int(data.correct.sum()),
            groups=data.n_groups,
            fingerprint=data.fingerprint(),
            sources=list(sources) if sources is not None else [data.source],
            label=data.label,
            scores=[str(spec) for spec in data.specs],
        ),
        cross_validation=CrossValidationReport(
            folds=n_folds_used,
            selected=best.candidate.name,
            candidates=[result.report() for result in results],
        ),
    )
    return FitOutcome(calibrator, best, results)
