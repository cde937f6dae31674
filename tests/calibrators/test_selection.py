from __future__ import annotations

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression
from sklearn.model_selection import StratifiedGroupKFold

from calibrators.dataset import CalibrationData, read_calibration_data
from calibrators.errors import DataError
from calibrators.metrics import bas, expected_calibration_error
from calibrators.selection import (
    EVENTS_PER_FEATURE,
    MIN_ROWS,
    LabelShortfall,
    TooLittleDataError,
    candidates_for,
    cross_validate,
    fit_calibrator,
    grouped_folds,
    multi_score_columns,
    paired_standard_error,
    require_enough_data,
)
from calibrators.signals import ScoreKind, ScoreSpec, parse_score_spec
from policies.bas import bas_scores
from tests.support.shipped_data import CHEMBENCH_GPT4O, NQ_GPT35, NQ_LLAMA2, NQ_SCORES


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


@pytest.mark.slow
def test_auto_keeps_the_best_out_of_fold_bas_and_reports_every_candidate() -> None:
    data = read_nq(NQ_LLAMA2).subset(np.arange(5_000))
    outcome = fit_calibrator(data)
    fitted = [r for r in outcome.results if r.error is None]
    best = max(fitted, key=lambda r: r.score)
    if outcome.selected is not best:
        # Only a combination that wins within noise gives way, to the best single-score one.
        assert len(best.candidate.columns) > 1 and len(outcome.selected.candidate.columns) == 1
        assert outcome.selected.score == max(
            r.score for r in fitted if r.candidate.method not in {"logistic",
                                                                  "logistic_isotonic",
                                                                  "binned_logistic"})
        assert best.oof is not None and outcome.selected.oof is not None
        assert best.score - outcome.selected.score <= paired_standard_error(
            data, best.oof, outcome.selected.oof)
    report = outcome.calibrator.cross_validation
    assert report is not None and report.selected == outcome.selected.candidate.name
    assert {c.name for c in report.candidates} == {c.name for c in candidates_for(data.specs)}
    assert all(len(c.fold_bas) == 5 for c in report.candidates)


def small_data(correct: list[bool], groups: list[int] | None = None) -> CalibrationData:
    spec = ScoreSpec("p", ScoreKind.PROBABILITY)
    n = len(correct)
    scores = np.linspace(0.1, 0.9, n).reshape(-1, 1)
    group_ids = np.arange(n) if groups is None else np.array(groups)
    return CalibrationData(scores, np.array(correct), group_ids, (spec,), "y", "d.jsonl")


def test_too_few_groups() -> None:
    data = small_data([False, True], groups=[0, 0])
    with pytest.raises(DataError, match="at least 2 groups"):
        fit_calibrator(data, min_rows=1, min_groups_per_class=1)


def test_twenty_rows_are_refused_whatever_the_method() -> None:
    data = small_data([i % 2 == 0 for i in range(20)])
    for method in ("auto", "identity", "platt"):
        with pytest.raises(DataError, match=(
                r"^d.jsonl: too little labelled data to fit a calibrator: 20 labelled rows "
                r"\(at least 30 needed\)\. Needed: 10 more labelled rows\. Collect or label more")):
            fit_calibrator(data, method=method)


@pytest.mark.slow
def test_too_few_groups_of_one_class_are_refused() -> None:
    # 40 rows, but the wrong answers all come from 4 questions.
    correct = [i >= 8 for i in range(40)]
    groups = [i // 2 for i in range(40)]
    with pytest.raises(DataError, match=(
            r"4 groups with a wrong answer \(at least 5 needed\)\.")):
        fit_calibrator(small_data(correct, groups))
    correct[8] = False  # a fifth question with a wrong answer
    assert fit_calibrator(small_data(correct, groups)).calibrator.training is not None


def test_nothing_but_identity_fitted_is_refused() -> None:
    """Every learning candidate failing must not leave the raw score as the 'calibrator'."""
    # The wrong answers all belong to one question: the fold scored on it is trained on
    # correct answers only.
    data = small_data([i >= 5 for i in range(20)], groups=[max(i, 4) for i in range(20)])
    with pytest.raises(DataError, match=r"no calibrator could be fitted: fold \d: fitting needs "
                       "both correct and wrong answers"):
        fit_calibrator(data, min_rows=1, min_groups_per_class=1)
    # Asked for by name, identity needs no fitting.
    identity = fit_calibrator(data, method="identity", min_rows=1, min_groups_per_class=1)
    assert identity.selected.candidate.method == "identity"


def test_enough_data_is_accepted_at_the_minimums() -> None:
    data = small_data([i % 2 == 0 for i in range(MIN_ROWS)])
    require_enough_data(data)
    with pytest.raises(DataError, match=f"{MIN_ROWS - 1} labelled rows"):
        require_enough_data(data.subset(np.arange(MIN_ROWS - 1)))
    assert fit_calibrator(data).calibrator.training.rows == MIN_ROWS  # type: ignore[union-attr]


@pytest.mark.slow
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


def noisy_signals(n_questions: int, accuracy: float, n_noise: int, seed: int) -> CalibrationData:
    """One weakly informative probability score and ``n_noise`` scores of pure noise."""
    rng = np.random.default_rng(seed)
    correct = rng.random(n_questions) < accuracy
    signal = np.clip(0.15 + 0.25 * correct + rng.normal(0, 0.15, n_questions), 0.01, 0.99)
    noise = rng.random((n_questions, n_noise)) * 0.98 + 0.01
    specs = (ScoreSpec("signal", ScoreKind.PROBABILITY),
             *(ScoreSpec(f"noise{j}", ScoreKind.PROBABILITY) for j in range(n_noise)))
    return CalibrationData(np.column_stack([signal, noise]), correct, np.arange(n_questions),
                           specs, "correct", "small.jsonl")


@pytest.mark.slow
def test_few_right_answers_combine_only_the_scores_best_alone() -> None:
    # The small real SmolLM2 run's shape: ~70 rows, 8 right answers, 11 scores.
    data = noisy_signals(70, 0.12, 10, seed=1)
    singles = [c for c in candidates_for(data.specs) if len(c.columns) == 1]
    results = cross_validate(data, singles)
    columns = multi_score_columns(data, results)
    assert len(columns) == 2  # 8 right answers: fewer than EVENTS_PER_FEATURE per score
    assert 0 in columns  # the informative score is one of them
    outcome = fit_calibrator(data)
    combined = [r for r in outcome.results if len(r.candidate.columns) > 1]
    assert combined and all(r.candidate.columns == columns for r in combined)


@pytest.mark.slow
def test_enough_right_answers_combine_every_score() -> None:
    data = noisy_signals(400, 0.5, 3, seed=2)  # ~200 of each class: 50 per score
    assert min(int(data.correct.sum()), int((~data.correct).sum())) >= EVENTS_PER_FEATURE * 4
    results = cross_validate(data, [c for c in candidates_for(data.specs)
                                    if len(c.columns) == 1])
    assert multi_score_columns(data, results) == (0, 1, 2, 3)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(8))
def test_a_combination_of_noise_does_not_win_on_few_right_answers(seed: int) -> None:
    """Held out, auto on 11 scores (1 informative, 8 right answers to fit on) stays near 0 BAS
    or above: a combination is kept only when it clearly beat the best score alone."""
    data = noisy_signals(140, 0.12, 10, seed=seed)
    fit_part, eval_part = split_by_group(data)
    outcome = fit_calibrator(fit_part)
    selected = outcome.selected.candidate
    if len(selected.columns) > 1:  # a combination kept: it beat the best single by > 1 SE
        best_single = max((r for r in outcome.results if len(r.candidate.columns) == 1),
                          key=lambda r: r.score)
        assert outcome.selected.oof is not None and best_single.oof is not None
        assert outcome.selected.score - best_single.score > paired_standard_error(
            fit_part, outcome.selected.oof, best_single.oof)
    columns = [eval_part.specs.index(spec) for spec in outcome.calibrator.features]
    p = outcome.calibrator.predict(eval_part.scores[:, columns])
    assert bas(p, eval_part.correct) > -0.05


def test_the_paired_standard_error_is_over_questions() -> None:
    spec = ScoreSpec("p", ScoreKind.PROBABILITY)
    correct = np.array([True, False, True, False])
    a = np.array([0.9, 0.2, 0.6, 0.5])
    b = np.array([0.5, 0.5, 0.5, 0.5])
    diff = bas_scores(a, correct) - bas_scores(b, correct)

    def data(groups: list[int]) -> CalibrationData:
        return CalibrationData(a.reshape(-1, 1), correct, np.array(groups), (spec,), "y", "d")

    # One question per row: the usual standard error of a mean.
    assert paired_standard_error(data([0, 1, 2, 3]), a, b) == pytest.approx(
        diff.std(ddof=1) / 2)
    # Two questions of two rows: the rows of one question move together.
    sums = np.array([diff[:2].sum(), diff[2:].sum()])
    expected = np.sqrt(2 / 1 * np.sum((sums - 2 * diff.mean()) ** 2)) / 4
    assert paired_standard_error(data([0, 0, 1, 1]), a, b) == pytest.approx(expected)
    assert paired_standard_error(data([0, 0, 0, 0]), a, b) == 0.0
    assert paired_standard_error(data([0, 1, 2, 3]), a, a) == 0.0


CHEMBENCH_LLAMA = CHEMBENCH_GPT4O.parent / "chembench_llama-3.1-8b-instruct_tokenprob.jsonl"


def test_the_selection_records_its_rule_and_figures() -> None:
    """200 real answers: beta has the best out-of-fold BAS, platt is within one standard error
    of it and simpler, so platt is chosen, and the selection says so with the figures."""
    data = read_calibration_data(CHEMBENCH_LLAMA, scores=[parse_score_spec("token_prob")],
                                 label="correct").subset(np.arange(200))
    outcome = fit_calibrator(data)
    selection = outcome.selection
    assert selection.rule == "one_standard_error" and selection.selected is outcome.selected
    assert selection.best.score == max(r.score for r in outcome.results)
    assert selection.best is not selection.selected and selection.simpler
    assert (selection.best.candidate.name, selection.selected.candidate.name) == \
        ("beta(token_prob)", "platt(token_prob)")
    gap = selection.best.score - selection.selected.score
    assert 0 < gap <= selection.standard_error
    assert selection.standard_error == pytest.approx(paired_standard_error(
        data, selection.best.oof, selection.selected.oof))  # type: ignore[arg-type]
    named = fit_calibrator(data, method="platt").selection
    assert named.rule == "best_bas" and named.selected is named.best


def test_a_shortfall_says_how_many_more_labels_of_which_kind() -> None:
    # 46 labels, 3 of them right (each its own question): 2 more right questions needed,
    # about 2 · 46 / 3 = 31 more labels at the rate so far.
    data = small_data([i < 3 for i in range(46)])
    with pytest.raises(TooLittleDataError) as refused:
        require_enough_data(data)
    short = refused.value.shortfall
    assert (short.rows_needed, short.correct_groups_needed, short.wrong_groups_needed) == (0, 2, 0)
    assert short.labels_needed == 31
    assert ("3 groups with a correct answer (at least 5 needed). Needed: 2 more groups "
            "(questions) with a correct answer; at the rates so far (3 groups with a correct "
            "answer and 43 with a wrong one in 46 rows) that is about 31 more labelled rows. "
            "Collect or label more answers and fit again") in str(refused.value)
    both = LabelShortfall(rows=7, correct_groups=4, wrong_groups=3, min_rows=30,
                          min_groups_per_class=5)
    assert (both.rows_needed, both.correct_groups_needed, both.wrong_groups_needed,
            both.labels_needed) == (23, 1, 2, 23)
