from __future__ import annotations

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression
from sklearn.model_selection import StratifiedGroupKFold

from calibrators.dataset import CalibrationData, read_calibration_data
from calibrators.errors import DataError
from calibrators.metrics import bas, expected_calibration_error
from calibrators.selection import candidates_for, fit_calibrator, grouped_folds
from calibrators.signals import ScoreKind, ScoreSpec, parse_score_spec
from tests.shipped import CHEMBENCH_GPT4O, NQ_GPT35, NQ_LLAMA2, NQ_SCORES


def read_nq(path: object) -> CalibrationData:
    specs = [parse_score_spec(s) for s in NQ_SCORES]
    return read_calibration_data(path, scores=specs, label="correct", group="group")  # type: ignore[arg-type]


def split_by_group(data: CalibrationData) -> tuple[CalibrationData, CalibrationData]:
    """Two halves that never share a question, with about the same accuracy.

    Stratified: 1,500 questions are few enough that a plain random half can differ in accuracy
    by 0.03, which no calibrator fitted on the other half can know about.
    """
    splitter = StratifiedGroupKFold(n_splits=2, shuffle=True, random_state=0)
    fit_rows, eval_rows = next(splitter.split(data.scores, data.correct, groups=data.groups))
    return data.subset(fit_rows), data.subset(eval_rows)


def test_folds_never_split_a_group() -> None:
    data = read_nq(NQ_GPT35).subset(np.arange(2_000))
    folds = grouped_folds(data, 5)
    assert len(folds) == 5
    for train, test in folds:
        assert not set(data.groups[train]) & set(data.groups[test])
    assert sorted(np.concatenate([test for _, test in folds]).tolist()) == list(range(2_000))


def test_candidates_for_each_method() -> None:
    specs = [ScoreSpec("p", ScoreKind.PROBABILITY), ScoreSpec("n", ScoreKind.REAL)]
    names = {c.name for c in candidates_for(specs)}
    assert "isotonic(p)" in names and "isotonic(n)" in names
    assert "identity(p)" in names and "identity(n)" not in names  # n is not a probability
    assert "logistic(p, n)" in names
    assert [c.name for c in candidates_for(specs, "platt")] == ["platt(p)", "platt(n)"]
    assert not [c for c in candidates_for(specs[:1]) if c.method == "logistic"]
    with pytest.raises(ValueError, match="needs a probability score"):
        candidates_for(specs[1:], "identity")
    with pytest.raises(ValueError, match="unknown calibration method 'magic'"):
        candidates_for(specs, "magic")


def test_auto_keeps_the_best_out_of_fold_bas_and_reports_every_candidate() -> None:
    data = read_nq(NQ_LLAMA2).subset(np.arange(5_000))
    outcome = fit_calibrator(data)
    scores = {r.candidate.name: r.summary["bas"] for r in outcome.results if r.error is None}
    assert outcome.selected.summary["bas"] == max(scores.values())
    report = outcome.calibrator.cross_validation
    assert report is not None and report.selected == outcome.selected.candidate.name
    assert {c.name for c in report.candidates} == {c.name for c in candidates_for(data.specs)}
    assert all(len(c.fold_bas) == 5 for c in report.candidates)


def test_too_few_groups() -> None:
    spec = ScoreSpec("p", ScoreKind.PROBABILITY)
    data = CalibrationData(
        np.array([[0.2], [0.8]]), np.array([False, True]), np.array([0, 0]), (spec,), "y", "d"
    )
    with pytest.raises(DataError, match="at least 2 groups"):
        fit_calibrator(data)


@pytest.mark.parametrize("path", [NQ_GPT35, NQ_LLAMA2], ids=["gpt-3.5", "llama-2"])
def test_auto_on_real_data_meets_the_acceptance_bar(path: object) -> None:
    """Fit on half the questions, evaluate on the other half (never splitting a question)."""
    fit_part, eval_part = split_by_group(read_nq(path))
    assert eval_part.n_rows >= 5_000
    calibrator = fit_calibrator(fit_part).calibrator
    columns = [eval_part.specs.index(spec) for spec in calibrator.features]
    p = calibrator.predict(eval_part.scores[:, columns])
    calibrated_bas = bas(p, eval_part.correct)

    best_isotonic = max(
        bas(
            IsotonicRegression(out_of_bounds="clip")
            .fit(fit_part.scores[:, j], fit_part.correct)
            .predict(eval_part.scores[:, j]),
            eval_part.correct,
        )
        for j in range(len(NQ_SCORES))
    )
    assert calibrated_bas >= 0
    assert calibrated_bas >= best_isotonic - 0.005
    assert expected_calibration_error(p, eval_part.correct, n_bins=10) <= 0.03

    multi = fit_calibrator(fit_part, method="binned_logistic").calibrator
    multi_bas = bas(multi.predict(eval_part.scores), eval_part.correct)
    assert multi_bas > best_isotonic


def test_single_signal_file() -> None:
    data = read_calibration_data(
        CHEMBENCH_GPT4O, scores=[parse_score_spec("token_prob")], label="correct", group="group"
    )
    fit_part, eval_part = split_by_group(data)
    calibrator = fit_calibrator(fit_part).calibrator
    assert bas(calibrator.predict(eval_part.scores), eval_part.correct) > bas(
        eval_part.scores[:, 0], eval_part.correct
    )
