from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

# auroc imports scikit-learn on first use (the gateway never loads it); load it now, so that cost
# does not land inside the first Hypothesis example's deadline.
import sklearn.metrics  # noqa: F401
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from calibrators.metrics import (
    accuracy,
    aurc,
    auroc,
    bas,
    brier_score,
    expected_calibration_error,
    log_loss,
    reliability_bins,
    risk_coverage_curve,
    summarize,
    utility_at_threshold,
    utility_curve,
)
from policies.bas import behavioral_alignment_score

Rows = list[tuple[float, bool]]

# A coarse grid makes ties in p common, which is where order dependence would show.
tied_confidence = st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0])
confidence = st.one_of(tied_confidence, st.floats(min_value=0.0, max_value=1.0))
rows = st.lists(st.tuples(confidence, st.booleans()), min_size=1, max_size=60)
tied_rows = st.lists(st.tuples(tied_confidence, st.booleans()), min_size=1, max_size=60)
strategies = pytest.mark.parametrize("strategy", ["uniform", "quantile"])


def split(pairs: Rows) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    return np.array([p for p, _ in pairs], dtype=np.float64), np.array([y for _, y in pairs])


def naive_aurc(p: NDArray[np.float64], y: NDArray[np.bool_]) -> float:
    """AURC with ties broken by row order: the textbook definition, order dependent."""
    order = np.argsort(-p, kind="stable")
    errors = np.cumsum(~y[order])
    return float(np.mean(errors / np.arange(1, p.size + 1)))


def minimum_aurc(n_correct: int, n_wrong: int) -> float:
    """AURC of a ranking that puts every correct answer first (Geifman et al. 2019)."""
    n = n_correct + n_wrong
    return sum((k - n_correct) / k for k in range(n_correct + 1, n + 1)) / n


# --------------------------------------------------------------------------------------------
# Known values, by hand
# --------------------------------------------------------------------------------------------


def test_accuracy_is_the_fraction_correct() -> None:
    assert accuracy([1, 0, 1, 1]) == 0.75
    assert accuracy([True, False]) == 0.5
    assert math.isnan(accuracy([]))


@pytest.mark.parametrize("weight", ["uniform", "linear", "quadratic"])
def test_bas_wraps_the_policy_implementation(weight: Any) -> None:
    p, y = [0.9, 0.2, 0.6, 1.0], [1, 0, 0, 1]
    expected = behavioral_alignment_score(p, [True, False, False, True], weight=weight)
    assert bas(p, y, weight=weight) == expected
    assert bas(p, np.array(y, dtype=bool), weight=weight) == expected


def test_uniform_ece_by_hand() -> None:
    # Bins [0, .5) and [.5, 1]: mean confidences .15 and .85 against accuracies 0 and 1.
    assert expected_calibration_error([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], n_bins=2) == (
        pytest.approx(0.15)
    )
    # 0.3 opens bin [.3, .4) although linspace puts that edge at 0.30000000000000004, and
    # p = 1 falls in the last bin: gaps .7 and 0.
    bins = reliability_bins([0.3, 1.0], [1, 1], n_bins=10)
    assert bins.count.tolist() == [0, 0, 0, 1, 0, 0, 0, 0, 0, 1]
    assert expected_calibration_error([0.3, 1.0], [1, 1]) == pytest.approx(0.35)


def test_reliability_bins_by_hand() -> None:
    bins = reliability_bins([0.1, 0.2, 0.8, 0.9, 0.95], [0, 1, 1, 1, 0], n_bins=4)
    np.testing.assert_allclose(bins.edges, [0.0, 0.25, 0.5, 0.75, 1.0])
    assert bins.count.tolist() == [2, 0, 0, 3]
    np.testing.assert_allclose(bins.mean_predicted, [0.15, np.nan, np.nan, 2.65 / 3])
    np.testing.assert_allclose(bins.accuracy, [0.5, np.nan, np.nan, 2 / 3])


def test_quantile_ece_by_hand() -> None:
    # Edges .1, .25, .4: bins {.1, .2} (mean .15, accuracy .5) and {.3, .4} (.35, .5).
    assert expected_calibration_error(
        [0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1], n_bins=2, strategy="quantile"
    ) == pytest.approx(0.25)


def test_quantile_bins_merge_duplicate_edges_from_ties() -> None:
    # Quantiles .2, .2, .2, .35, .8 merge to .2, .35, .8; the tie at .2 stays in one bin.
    p, y = [0.2, 0.2, 0.2, 0.8], [0, 0, 1, 1]
    bins = reliability_bins(p, y, n_bins=4, strategy="quantile")
    np.testing.assert_allclose(bins.edges, [0.2, 0.35, 0.8])
    assert bins.count.tolist() == [3, 1]
    # (3 · |1/3 − .2| + 1 · |1 − .8|) / 4
    assert expected_calibration_error(p, y, n_bins=4, strategy="quantile") == pytest.approx(0.15)


@strategies
def test_a_constant_confidence_is_one_bin(strategy: Any) -> None:
    assert expected_calibration_error([0.5] * 4, [1, 1, 1, 0], strategy=strategy) == pytest.approx(
        0.25
    )
    if strategy == "quantile":
        assert reliability_bins([0.5] * 4, [1, 1, 1, 0], strategy=strategy).count.tolist() == [4]


def test_brier_score_by_hand() -> None:
    assert brier_score([0.8, 0.3], [1, 0]) == pytest.approx((0.2**2 + 0.3**2) / 2)


def test_log_loss_by_hand() -> None:
    assert log_loss([0.8, 0.3], [1, 0]) == pytest.approx(-(math.log(0.8) + math.log(0.7)) / 2)
    # Clipping bounds a confident mistake and keeps a confident success finite, not NaN.
    # (1 − 1e-15 rounds in float64, so the cost is −ln(eps) to four digits, not exactly.)
    assert log_loss([1.0], [0]) == pytest.approx(-math.log(1e-15), rel=1e-4)
    assert log_loss([0.0, 1.0], [0, 1]) == pytest.approx(0.0, abs=1e-12)
    assert log_loss([1.0], [0], eps=1e-3) == pytest.approx(-math.log(1e-3))


def test_auroc_by_hand() -> None:
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert auroc([0.5, 0.5], [0, 1]) == pytest.approx(0.5)  # a tie counts one half
    assert auroc([-3.0, 2.0], [False, True]) == 1.0  # any score, not only probabilities


def test_aurc_without_ties_by_hand() -> None:
    # Risks among the k most confident: 0, 1/2, 1/3, 1/2.
    curve = risk_coverage_curve([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0])
    np.testing.assert_allclose(curve.coverage, [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(curve.risk, [0.0, 1 / 2, 1 / 3, 1 / 2])
    assert aurc([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx(1 / 3)


def test_aurc_with_ties_by_hand() -> None:
    # After the sure answer, a tie of three holding two wrong ones: taking j of them expects
    # 2j/3 errors, so risks are 0, (2/3)/2, (4/3)/3, 2/4 — the mean over the tie's orderings.
    p, y = [0.5, 0.9, 0.5, 0.5], [0, 1, 1, 0]
    np.testing.assert_allclose(risk_coverage_curve(p, y).risk, [0.0, 1 / 3, 4 / 9, 1 / 2])
    assert aurc(p, y) == pytest.approx(23 / 72)
    # A constant confidence ranks nothing: its AURC is the error rate.
    assert aurc([0.7] * 4, [1, 0, 0, 1]) == pytest.approx(0.5)


def test_utility_at_threshold_by_hand() -> None:
    # Answer .9 (correct, +1) and .6 (wrong, −2); withhold .3 (−.5).
    assert utility_at_threshold(
        [0.9, 0.6, 0.3], [1, 0, 1], 0.5, wrong_answer_cost=2.0, abstain_cost=0.5
    ) == pytest.approx(-0.5)
    # p >= threshold answers at equality.
    assert utility_at_threshold([0.6], [0], 0.6, wrong_answer_cost=2.0) == -2.0


def test_utility_curve_by_hand() -> None:
    # t = 0: answer both (+1, −0); t = .5: λ = 1, answer only .9 (+1); t = .95: withhold both.
    curve = utility_curve([0.9, 0.4], [1, 0], [0.0, 0.5, 0.95])
    np.testing.assert_allclose(curve, [0.5, 0.5, 0.0])


def test_utility_curve_integrates_to_bas() -> None:
    rng = np.random.default_rng(7)
    p = rng.uniform(0.01, 0.95, size=400)
    y = rng.random(400) < p
    m = 20_000
    midpoints = (np.arange(m) + 0.5) / m
    integral = float(np.mean(utility_curve(p, y, midpoints)))
    assert integral == pytest.approx(bas(p, y), abs=2e-3)


def test_summarize_reports_every_headline_figure() -> None:
    rng = np.random.default_rng(3)
    p = np.round(rng.random(500), 2)
    y = rng.random(500) < p
    summary = summarize(p, y)
    assert summary == {
        "n": 500.0,
        "accuracy": accuracy(y),
        "bas": bas(p, y),
        "bas_linear": bas(p, y, weight="linear"),
        "bas_quadratic": bas(p, y, weight="quadratic"),
        "ece": expected_calibration_error(p, y),
        "ece_quantile": expected_calibration_error(p, y, strategy="quantile"),
        "brier": brier_score(p, y),
        "log_loss": log_loss(p, y),
        "auroc": auroc(p, y),
        "aurc": aurc(p, y),
    }


def test_summarize_copes_with_a_single_class_and_with_nothing() -> None:
    summary = summarize([0.9, 0.8], [1, 1])
    assert math.isnan(summary["auroc"])
    assert summary["aurc"] == 0.0
    empty = summarize([], [])
    assert empty["n"] == 0.0
    assert all(math.isnan(value) for key, value in empty.items() if key != "n")
    assert risk_coverage_curve([], []).risk.size == 0
    assert math.isnan(utility_curve([], [], [0.5])[0])


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------


@strategies
@given(pairs=rows, n_bins=st.integers(min_value=1, max_value=20))
def test_ece_lies_in_the_unit_interval(pairs: Rows, n_bins: int, strategy: Any) -> None:
    p, y = split(pairs)
    assert 0.0 <= expected_calibration_error(p, y, n_bins=n_bins, strategy=strategy) <= 1.0


@strategies
@given(
    groups=st.lists(
        st.integers(min_value=1, max_value=8).flatmap(
            lambda m: st.tuples(st.just(m), st.integers(min_value=0, max_value=m))
        ),
        min_size=1,
        max_size=12,
    ),
    n_bins=st.integers(min_value=1, max_value=15),
)
def test_ece_is_zero_when_every_bin_is_calibrated(
    groups: list[tuple[int, int]], n_bins: int, strategy: Any
) -> None:
    # m answers at confidence k/m with exactly k correct. Binning is by value, so a group is
    # never split, and whatever groups share a bin, their mean confidence equals their accuracy.
    p = np.concatenate([np.full(m, k / m) for m, k in groups])
    y = np.concatenate([np.arange(m) < k for m, k in groups])
    assert expected_calibration_error(p, y, n_bins=n_bins, strategy=strategy) == pytest.approx(
        0.0, abs=1e-12
    )


@given(
    values=st.lists(
        st.integers(min_value=0, max_value=1000), min_size=10, max_size=200, unique=True
    )
)
def test_quantile_bins_hold_equal_mass_without_ties(values: list[int]) -> None:
    per_bin = len(values) // 10
    p = np.array(values[: 10 * per_bin]) / 1000
    bins = reliability_bins(p, np.ones(p.size, dtype=bool), n_bins=10, strategy="quantile")
    assert bins.count.tolist() == [per_bin] * 10


@strategies
@given(pairs=rows, n_bins=st.integers(min_value=1, max_value=20))
def test_reliability_bins_account_for_every_answer(pairs: Rows, n_bins: int, strategy: Any) -> None:
    p, y = split(pairs)
    bins = reliability_bins(p, y, n_bins=n_bins, strategy=strategy)
    assert bins.count.sum() == p.size
    assert bins.edges.size == bins.count.size + 1
    assert np.all(np.diff(bins.edges) >= 0)
    filled = bins.count > 0
    # Each bin's mean confidence lies inside the bin.
    assert np.all(bins.mean_predicted[filled] >= bins.edges[:-1][filled] - 1e-12)
    assert np.all(bins.mean_predicted[filled] <= bins.edges[1:][filled] + 1e-12)


@given(pairs=rows)
def test_brier_score_lies_in_the_unit_interval(pairs: Rows) -> None:
    assert 0.0 <= brier_score(*split(pairs)) <= 1.0


METRICS: dict[str, Callable[[Any, Any], float]] = {
    "accuracy": lambda p, y: accuracy(y),
    "bas": bas,
    "bas_quadratic": lambda p, y: bas(p, y, weight="quadratic"),
    "ece": expected_calibration_error,
    "ece_quantile": lambda p, y: expected_calibration_error(p, y, strategy="quantile"),
    "brier": brier_score,
    "log_loss": log_loss,
    "auroc": auroc,
    "aurc": aurc,
    "utility": lambda p, y: utility_at_threshold(p, y, 0.5, wrong_answer_cost=3.0),
}


@pytest.mark.parametrize("name", list(METRICS))
@given(pairs=st.one_of(rows, tied_rows), data=st.data())
def test_every_metric_ignores_row_order(name: str, pairs: Rows, data: st.DataObject) -> None:
    shuffled = data.draw(st.permutations(pairs))
    metric = METRICS[name]
    before, after = metric(*split(pairs)), metric(*split(shuffled))
    if math.isnan(before):
        assert math.isnan(after)
    else:
        # Only the order of floating-point summation may differ.
        assert after == pytest.approx(before, rel=1e-9, abs=1e-12)


@given(pairs=st.one_of(rows, tied_rows), data=st.data())
def test_ties_make_no_order_dependence_in_the_risk_coverage_curve(
    pairs: Rows, data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(pairs))
    before, after = risk_coverage_curve(*split(pairs)), risk_coverage_curve(*split(shuffled))
    # Exactly, not approximately: the tie handling sums only 0/1 counts.
    np.testing.assert_array_equal(before.risk, after.risk)
    np.testing.assert_array_equal(before.coverage, after.coverage)
    assert aurc(*split(pairs)) == aurc(*split(shuffled))
    curve_before = utility_curve(*split(pairs), [0.0, 0.25, 0.5, 0.9])
    curve_after = utility_curve(*split(shuffled), [0.0, 0.25, 0.5, 0.9])
    np.testing.assert_allclose(curve_before, curve_after, rtol=1e-12, atol=1e-12)


@given(pairs=st.lists(st.tuples(tied_confidence, st.booleans()), min_size=1, max_size=6))
@settings(max_examples=50, deadline=None)
def test_aurc_is_the_mean_over_every_tie_breaking_order(pairs: Rows) -> None:
    p, y = split(pairs)
    orders = [list(order) for order in itertools.permutations(range(p.size))]
    mean = float(np.mean([naive_aurc(p[order], y[order]) for order in orders]))
    assert aurc(p, y) == pytest.approx(mean, rel=1e-12, abs=1e-15)


@given(
    correct=st.lists(st.one_of(st.sampled_from([0.6, 0.8, 1.0]), st.floats(0.6, 1.0)), max_size=30),
    wrong=st.lists(st.one_of(st.sampled_from([0.0, 0.3, 0.5]), st.floats(0.0, 0.5)), max_size=30),
)
def test_a_perfect_ranking_reaches_the_minimum_aurc(
    correct: list[float], wrong: list[float]
) -> None:
    p = np.array(correct + wrong, dtype=np.float64)
    y = np.array([True] * len(correct) + [False] * len(wrong))
    if p.size == 0:
        return
    assert aurc(p, y) == pytest.approx(minimum_aurc(len(correct), len(wrong)), abs=1e-12)


@given(pairs=st.one_of(rows, tied_rows))
def test_no_ranking_beats_the_minimum_aurc(pairs: Rows) -> None:
    p, y = split(pairs)
    assert aurc(p, y) >= minimum_aurc(int(y.sum()), int((~y).sum())) - 1e-12


@given(pairs=st.one_of(rows, tied_rows))
def test_risk_at_full_coverage_is_the_error_rate(pairs: Rows) -> None:
    p, y = split(pairs)
    curve = risk_coverage_curve(p, y)
    assert curve.coverage[-1] == 1.0
    assert curve.risk[-1] == pytest.approx(1.0 - y.mean())
    assert np.all((curve.risk >= 0.0) & (curve.risk <= 1.0))


@given(pairs=st.one_of(rows, tied_rows))
def test_risk_is_exact_at_the_end_of_every_tie_block(pairs: Rows) -> None:
    # There "answer iff p >= the block's confidence" is an achievable operating point.
    p, y = split(pairs)
    curve = risk_coverage_curve(p, y)
    for k, level in enumerate(-np.sort(-p), start=1):
        if k == p.size or -np.sort(-p)[k] != level:
            answered = p >= level
            assert curve.risk[k - 1] == pytest.approx(1.0 - y[answered].mean())


@given(
    rows_=st.lists(
        st.tuples(st.integers(min_value=0, max_value=1000), st.booleans()), min_size=1, max_size=60
    )
)
def test_ranking_metrics_depend_only_on_the_order_of_scores(rows_: list[tuple[int, bool]]) -> None:
    # A strictly increasing map to log-odds, beyond [0, 1], changes no ranking figure. The grid
    # k/1000 keeps neighbours far enough apart that float rounding cannot merge them.
    k = np.array([k for k, _ in rows_], dtype=np.float64)
    y = np.array([label for _, label in rows_])
    p, log_odds = k / 1000, np.log((k + 1.0) / (1001.0 - k))
    assert aurc(log_odds, y) == aurc(p, y)
    before, after = auroc(p, y), auroc(log_odds, y)
    assert (math.isnan(before) and math.isnan(after)) or after == pytest.approx(before)


@given(pairs=rows, cost=st.floats(min_value=0.0, max_value=100.0))
def test_threshold_zero_answers_everything(pairs: Rows, cost: float) -> None:
    p, y = split(pairs)
    expected = float(np.mean(np.where(y, 1.0, -cost)))
    assert utility_at_threshold(
        p, y, 0.0, wrong_answer_cost=cost, abstain_cost=0.7
    ) == pytest.approx(expected)


@given(
    pairs=rows,
    threshold=st.floats(min_value=1.0, exclude_min=True, allow_infinity=True),
    cost=st.floats(min_value=0.0, max_value=100.0),
    abstain=st.floats(min_value=0.0, max_value=100.0),
)
def test_threshold_above_one_withholds_everything(
    pairs: Rows, threshold: float, cost: float, abstain: float
) -> None:
    p, y = split(pairs)
    assert utility_at_threshold(
        p, y, threshold, wrong_answer_cost=cost, abstain_cost=abstain
    ) == pytest.approx(-abstain)


@given(
    pairs=rows,
    extra=st.lists(st.floats(min_value=0.0, max_value=0.99), max_size=10),
    abstain=st.floats(min_value=0.0, max_value=10.0),
)
def test_utility_curve_matches_utility_at_each_threshold(
    pairs: Rows, extra: list[float], abstain: float
) -> None:
    p, y = split(pairs)
    # Thresholds equal to confidences test that p == t answers.
    thresholds = [float(t) for t in p if t < 1.0] + extra
    curve = utility_curve(p, y, thresholds, abstain_cost=abstain)
    for t, value in zip(thresholds, curve, strict=True):
        expected = utility_at_threshold(
            p, y, t, wrong_answer_cost=t / (1.0 - t), abstain_cost=abstain
        )
        assert value == pytest.approx(expected, rel=1e-9, abs=1e-9)


@given(p=st.lists(confidence, min_size=1, max_size=30), label=st.booleans())
def test_auroc_is_nan_for_a_single_class(p: list[float], label: bool) -> None:
    assert math.isnan(auroc(p, [label] * len(p)))


# --------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------

PAIR_FUNCTIONS: dict[str, Callable[[Any, Any], object]] = {
    "bas": bas,
    "reliability_bins": reliability_bins,
    "ece": expected_calibration_error,
    "ece_quantile": lambda p, y: expected_calibration_error(p, y, strategy="quantile"),
    "brier": brier_score,
    "log_loss": log_loss,
    "auroc": auroc,
    "risk_coverage_curve": risk_coverage_curve,
    "aurc": aurc,
    "utility_at_threshold": lambda p, y: utility_at_threshold(p, y, 0.5, wrong_answer_cost=1.0),
    "utility_curve": lambda p, y: utility_curve(p, y, [0.5]),
    "summarize": summarize,
}
RANKING = {"auroc", "risk_coverage_curve", "aurc"}


@pytest.mark.parametrize("name", list(PAIR_FUNCTIONS))
@given(
    n_p=st.integers(min_value=0, max_value=20),
    n_y=st.integers(min_value=0, max_value=20),
)
def test_a_length_mismatch_raises(name: str, n_p: int, n_y: int) -> None:
    if n_p == n_y:
        return
    with pytest.raises(ValueError, match="same length"):
        PAIR_FUNCTIONS[name](np.full(n_p, 0.5), np.ones(n_y, dtype=bool))


@pytest.mark.parametrize("name", list(PAIR_FUNCTIONS))
@pytest.mark.parametrize(
    ("p", "y", "message"),
    [
        ([0.5, math.nan], [1, 0], "finite"),
        ([0.5, math.inf], [1, 0], "finite"),
        ([0.5, 0.5], [1, 2], "0/1"),
        ([0.5, 0.5], [1.0, 0.5], "0/1"),
        ([0.5, 0.5], [1.0, math.nan], "0/1"),
        ([[0.5, 0.5]], [[1, 0]], "1-D"),
        (0.5, 1, "1-D"),
    ],
)
def test_invalid_inputs_raise(name: str, p: Any, y: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PAIR_FUNCTIONS[name](p, y)


@pytest.mark.parametrize("name", list(PAIR_FUNCTIONS))
def test_probabilities_must_lie_in_the_unit_interval(name: str) -> None:
    p, y = [1.5, 0.2], [1, 0]
    if name in RANKING:
        PAIR_FUNCTIONS[name](p, y)  # a ranking figure takes any finite score
    else:
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            PAIR_FUNCTIONS[name](p, y)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: accuracy([0.5]), "0/1"),
        (lambda: reliability_bins([0.5], [1], n_bins=0), "n_bins"),
        (lambda: reliability_bins([0.5], [1], strategy="bogus"), "strategy"),  # type: ignore[arg-type]
        (lambda: log_loss([0.5], [1], eps=0.0), "eps"),
        (lambda: bas([0.5], [1], weight="bogus"), "weight"),  # type: ignore[arg-type]
        (lambda: utility_at_threshold([0.5], [1], math.nan, wrong_answer_cost=1.0), "NaN"),
        (
            lambda: utility_at_threshold([0.5], [1], 0.5, wrong_answer_cost=-1.0),
            "wrong_answer_cost",
        ),
        (lambda: utility_curve([0.5], [1], [1.0]), "threshold"),
        (lambda: utility_curve([0.5], [1], [[0.5]]), "1-D"),
    ],
)
def test_invalid_options_raise(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
