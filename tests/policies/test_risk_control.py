from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.special import betaln
from scipy.stats import binom

from policies.risk_control import (
    binomial_p_value,
    certify_selective_risk,
    clopper_pearson_upper_bound,
    error_rate_confidence_sequence,
    fixed_sequence_test,
    labels_needed,
    one_row_per_group,
    projected_labels_needed,
    selective_error_curve,
    start_of_curve,
    start_threshold,
)

levels = st.floats(min_value=0.01, max_value=0.99)
limits = st.floats(min_value=0.01, max_value=0.5)
# Scores on a coarse grid so that ties, which calibrators produce, are common.
rows = st.lists(
    st.tuples(st.integers(0, 20).map(lambda i: i / 20), st.booleans()), min_size=1, max_size=300
)


def _arrays(data: list[tuple[float, bool]]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([p for p, _ in data]), np.array([c for _, c in data])


@given(rows)
def test_the_curve_counts_answers_and_errors_at_each_distinct_score(
        data: list[tuple[float, bool]]) -> None:
    p, correct = _arrays(data)
    curve = selective_error_curve(p, correct)
    assert list(curve.thresholds) == sorted(set(p.tolist()), reverse=True)
    for t, n, k in zip(curve.thresholds, curve.answered, curve.errors, strict=True):
        assert n == np.sum(p >= t)
        assert k == np.sum((p >= t) & ~correct)


@given(rows, st.integers(1, 40))
def test_a_thinned_curve_keeps_exact_points_evenly_spread_and_the_last(
        data: list[tuple[float, bool]], points: int) -> None:
    curve = selective_error_curve(*_arrays(data))
    thin = curve.thinned(points)
    assert thin.answered.size <= points
    assert thin.rows == curve.rows and thin.errors[-1] == curve.errors[-1]
    kept = np.searchsorted(-curve.thresholds, -thin.thresholds)
    assert np.array_equal(curve.thresholds[kept], thin.thresholds)  # exact points, in order
    assert np.array_equal(curve.answered[kept], thin.answered)
    assert np.array_equal(curve.errors[kept], thin.errors)
    if curve.answered.size > points:
        # No gap between kept points is much wider than an even step (ties can force one).
        steps = np.diff(np.concatenate([[0], thin.answered]))
        widest_tie = int(np.max(np.diff(np.concatenate([[0], curve.answered]))))
        assert steps.max() <= curve.rows / points + widest_tie


def test_a_curve_is_thinned_to_at_least_one_point() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        selective_error_curve([0.5], [True]).thinned(0)


def test_the_curve_refuses_what_is_not_a_probability() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        selective_error_curve([0.5, math.nan], [True, False])
    with pytest.raises(ValueError, match="one length"):
        selective_error_curve([0.5, 0.2], [True])


@given(n=st.integers(0, 400), k=st.integers(0, 400), a=limits, b=limits)
def test_the_p_value_is_a_probability_rising_with_errors_and_falling_with_the_limit(
        n: int, k: int, a: float, b: float) -> None:
    k = min(k, n)
    low, high = sorted((a, b))
    p = float(binomial_p_value(k, n, max_error_rate=low))
    assert 0.0 <= p <= 1.0
    assert float(binomial_p_value(k, n, max_error_rate=high)) <= p + 1e-12
    if k < n:
        assert p <= float(binomial_p_value(k + 1, n, max_error_rate=low)) + 1e-12


@given(n=st.integers(0, 400), k=st.integers(0, 400), c=st.floats(0.6, 0.99),
       d=st.floats(0.6, 0.99))
def test_the_clopper_pearson_bound_lies_above_the_rate_and_widens_with_confidence(
        n: int, k: int, c: float, d: float) -> None:
    k = min(k, n)
    low, high = sorted((c, d))
    u = float(clopper_pearson_upper_bound(k, n, confidence=low))
    assert 0.0 <= u <= 1.0
    if n:
        assert u >= k / n - 1e-12
    assert float(clopper_pearson_upper_bound(k, n, confidence=high)) >= u - 1e-12


@given(n=st.integers(1, 400), k=st.integers(0, 400), a=limits, c=levels)
def test_the_bound_is_within_the_limit_exactly_when_the_test_rejects(
        n: int, k: int, a: float, c: float) -> None:
    k = min(k, n)
    p_value = float(binomial_p_value(k, n, max_error_rate=a))
    assume(abs(p_value - (1 - c)) > 1e-9)
    bound = float(clopper_pearson_upper_bound(k, n, confidence=c))
    assert (bound <= a) == (p_value <= 1 - c)


@pytest.mark.parametrize(("limit", "confidence", "expected"), [
    (0.05, 0.95, 59), (0.1, 0.95, 29), (0.01, 0.95, 299), (0.02, 0.99, 228), (0.2, 0.9, 11),
])
def test_a_perfect_record_needs_the_closed_form_count(
        limit: float, confidence: float, expected: int) -> None:
    assert labels_needed(max_error_rate=limit, confidence=confidence) == expected
    assert expected == math.ceil(math.log(1 - confidence) / math.log(1 - limit))


@given(a=limits, b=limits, c=levels, d=levels, share=st.floats(0.0, 0.95))
def test_labels_needed_falls_with_the_limit_and_rises_with_confidence_and_errors(
        a: float, b: float, c: float, d: float, share: float) -> None:
    low, high = sorted((a, b))
    weak, strong = sorted((c, d))
    base = labels_needed(max_error_rate=low, confidence=weak)
    assert base is not None
    assert labels_needed(max_error_rate=high, confidence=weak) <= base  # type: ignore[operator]
    assert labels_needed(max_error_rate=low, confidence=strong) >= base  # type: ignore[operator]
    observed = labels_needed(max_error_rate=low, confidence=weak,
                             observed_error_rate=share * low)
    assert observed is not None and observed >= base


@given(a=limits, c=levels, share=st.floats(0.0, 0.9))
def test_labels_needed_is_the_first_count_that_certifies(a: float, c: float, share: float) -> None:
    r = share * a
    n = labels_needed(max_error_rate=a, confidence=c, observed_error_rate=r)
    assert n is not None
    if r == 0.0:
        assert binom.cdf(0, n, a) <= 1 - c < binom.cdf(0, n - 1, a)


def test_no_number_of_labels_certifies_a_rate_at_or_above_the_limit() -> None:
    assert labels_needed(max_error_rate=0.1, confidence=0.95, observed_error_rate=0.1) is None
    assert labels_needed(max_error_rate=0.1, confidence=0.95, observed_error_rate=0.3) is None


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, math.nan, 2.0])
def test_levels_outside_the_open_unit_interval_are_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        labels_needed(max_error_rate=bad, confidence=0.95)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        certify_selective_risk([0.9], [True], max_error_rate=0.1, confidence=bad)


def _reference_sequence(p: np.ndarray, correct: np.ndarray, a: float, c: float,
                        start: float) -> float | None:
    """The fixed sequence test written as its definition: one threshold at a time."""
    certified = None
    for t in sorted({x for x in p.tolist() if x <= start}, reverse=True):
        answered = p >= t
        if binom.cdf(np.sum(~correct[answered]), answered.sum(), a) > 1 - c:
            break
        certified = t
    if certified is not None and certified == p.min():
        return 0.0
    return certified


@given(rows, limits, levels, st.integers(0, 20).map(lambda i: i / 20))
def test_the_fixed_sequence_matches_its_definition(
        data: list[tuple[float, bool]], a: float, c: float, start: float) -> None:
    p, correct = _arrays(data)
    result = fixed_sequence_test(p, correct, max_error_rate=a, confidence=c, start=start)
    assert result.threshold == _reference_sequence(p, correct, a, c, start)
    if result.threshold is not None:
        assert result.upper_bound is not None and result.upper_bound <= a + 1e-12
        assert result.answered == np.sum(p >= result.threshold)


@given(rows, limits, limits, levels, levels, st.integers(0, 20).map(lambda i: i / 20))
def test_a_looser_limit_or_lower_confidence_never_raises_the_threshold(
        data: list[tuple[float, bool]], a: float, b: float, c: float, d: float,
        start: float) -> None:
    p, correct = _arrays(data)
    tight, loose = sorted((a, b))
    weak, strong = sorted((c, d))
    strict = fixed_sequence_test(p, correct, max_error_rate=tight, confidence=strong, start=start)
    for relaxed in (
        fixed_sequence_test(p, correct, max_error_rate=loose, confidence=strong, start=start),
        fixed_sequence_test(p, correct, max_error_rate=tight, confidence=weak, start=start),
    ):
        if strict.threshold is not None:
            assert relaxed.threshold is not None and relaxed.threshold <= strict.threshold


@given(rows, limits, levels, st.integers(0, 10))
def test_a_certification_is_bounded_and_counts_its_labels(
        data: list[tuple[float, bool]], a: float, c: float, seed: int) -> None:
    p, correct = _arrays(data)
    result = certify_selective_risk(p, correct, max_error_rate=a, confidence=c, seed=seed)
    assert result.labels == len(data)
    assert result.start_labels == round(0.3 * len(data))
    assert 0.0 <= result.answer_rate <= 1.0
    if result.threshold is None:
        assert result.upper_bound is None and result.answered == 0
    else:
        assert 0.0 <= result.threshold <= result.start_threshold
        assert result.upper_bound is not None and result.upper_bound <= a + 1e-12
        assert result.answered >= result.min_answered


@given(rows, rows, limits, levels)
def test_a_start_curve_chooses_the_start_and_every_label_is_tested(
        start_rows: list[tuple[float, bool]], data: list[tuple[float, bool]], a: float,
        c: float) -> None:
    curve = selective_error_curve(*_arrays(start_rows))
    p, correct = _arrays(data)
    result = certify_selective_risk(p, correct, max_error_rate=a, confidence=c,
                                    start_curve=curve, seed=3)
    assert result.start_from == "start_curve"
    assert result.start_labels == 0 and result.test_labels == len(data)
    start = start_of_curve(curve, max_error_rate=a, confidence=c, test_labels=len(data))
    assert result.start_threshold == start
    tested = fixed_sequence_test(p, correct, max_error_rate=a, confidence=c, start=start)
    assert (result.threshold, result.answered, result.errors) == (
        tested.threshold, tested.answered, tested.errors)


def test_a_certification_is_reproducible_from_its_seed() -> None:
    rng = np.random.default_rng(3)
    p = rng.uniform(size=500)
    correct = rng.uniform(size=500) < p
    first = certify_selective_risk(p, correct, max_error_rate=0.2, confidence=0.9, seed=7)
    assert first == certify_selective_risk(p, correct, max_error_rate=0.2, confidence=0.9, seed=7)


def test_the_start_is_where_answers_are_likely_to_pass() -> None:
    # Scores 0.99 (always right), 0.6 (right 60 %): a limit of 10 % can hold only on the first.
    p = np.array([0.99] * 100 + [0.6] * 100)
    correct = np.array([True] * 100 + [True] * 60 + [False] * 40)
    assert start_threshold(p, correct, max_error_rate=0.1, confidence=0.95,
                           test_labels=400) == 0.99
    assert start_threshold(p, correct, max_error_rate=0.4, confidence=0.95,
                           test_labels=4000) == 0.6


# A known population: scores on a grid with known P(correct | p), so R(t) is exact.
GRID = np.linspace(0.05, 0.99, 48)


def _selective_risk(weights: np.ndarray, accuracy: np.ndarray, threshold: float) -> float:
    answered = threshold <= GRID
    if not answered.any():
        return 0.0
    return float(np.sum(weights[answered] * (1 - accuracy[answered])) / weights[answered].sum())


@pytest.mark.parametrize(("accuracy", "limit"), [
    (GRID, 0.15),                           # calibrated
    (GRID ** 1.5, 0.15),                    # over-confident: errors higher than p says
    (np.full(GRID.size, 0.84), 0.15),       # flat: every threshold is 1 point over the limit
    (np.where(GRID > 0.8, 0.8, 0.95), 0.1),  # not monotone: the top is worse
])
@pytest.mark.parametrize("start", ["held_out_labels", "start_curve"])
def test_the_certified_threshold_exceeds_the_limit_in_at_most_1_minus_c_of_draws(
        accuracy: np.ndarray, limit: float, start: str) -> None:
    rng = np.random.default_rng(0)
    weights = np.ones(GRID.size) / GRID.size
    confidence, draws, failures = 0.9, 400, 0

    def draw(size: int) -> tuple[np.ndarray, np.ndarray]:
        index = rng.choice(GRID.size, size=size, p=weights)
        return GRID[index], rng.uniform(size=size) < accuracy[index]

    for seed in range(draws):
        p, correct = draw(400)
        # A start curve from other rows of the same population (a calibrator's training data).
        curve = selective_error_curve(*draw(400)) if start == "start_curve" else None
        result = certify_selective_risk(p, correct, max_error_rate=limit, start_curve=curve,
                                        confidence=confidence, seed=seed)
        if result.threshold is not None:
            failures += _selective_risk(weights, accuracy, result.threshold) > limit
    allowed = 1 - confidence
    assert failures / draws <= allowed + 3 * math.sqrt(allowed * confidence / draws)


def test_one_row_is_kept_per_group_at_random() -> None:
    groups = np.repeat(np.arange(50), 4)
    picks = [one_row_per_group(groups, seed=seed) for seed in range(200)]
    for kept in picks:
        assert sorted(groups[kept].tolist()) == list(range(50))
    # Each of a group's 4 rows is kept about a quarter of the time.
    share = np.mean([kept[0] for kept in picks] == np.arange(4)[:, None], axis=1)
    assert np.all(np.abs(share - 0.25) < 0.12)
    assert np.array_equal(one_row_per_group(groups, seed=1), one_row_per_group(groups, seed=1))


def test_projected_labels_are_none_when_every_threshold_errs_too_often() -> None:
    assert projected_labels_needed([0.9, 0.8], [False, False], max_error_rate=0.1,
                                   confidence=0.95) is None


@given(rows, limits, levels)
def test_projected_labels_are_at_least_a_perfect_record(
        data: list[tuple[float, bool]], a: float, c: float) -> None:
    p, correct = _arrays(data)
    projected = projected_labels_needed(p, correct, max_error_rate=a, confidence=c)
    if projected is not None:
        assert projected >= labels_needed(max_error_rate=a, confidence=c)  # type: ignore[operator]


@given(t=st.integers(0, 5000), s=st.integers(0, 5000), c=levels, mean=levels,
       strength=st.floats(0.1, 100))
@settings(deadline=None)
def test_the_confidence_sequence_is_an_interval_around_the_rate(
        t: int, s: int, c: float, mean: float, strength: float) -> None:
    s = min(s, t)
    lower, upper = (float(x) for x in error_rate_confidence_sequence(
        s, t, confidence=c, prior_mean=mean, prior_strength=strength))
    assert 0.0 <= lower <= upper <= 1.0
    if t:
        assert lower - 1e-9 <= s / t <= upper + 1e-9
    wider = error_rate_confidence_sequence(s, t, confidence=min(0.999, c + 0.005),
                                           prior_mean=mean, prior_strength=strength)
    assert float(wider[0]) <= lower + 1e-9 and float(wider[1]) >= upper - 1e-9


def test_the_confidence_sequence_holds_at_every_time_at_once() -> None:
    """Checked after every label, the bounds miss the true rate on at most α of paths."""
    rng = np.random.default_rng(0)
    rate, alpha, paths, steps = 0.1, 0.1, 300, 2000
    errors = np.cumsum(rng.uniform(size=(paths, steps)) < rate, axis=1)
    trials = np.broadcast_to(np.arange(1, steps + 1), errors.shape)
    lower, upper = error_rate_confidence_sequence(
        errors, trials, confidence=1 - alpha, prior_mean=rate, prior_strength=10)
    missed = np.any((lower > rate) | (upper < rate), axis=1).mean()
    assert missed <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / paths)
    # A fixed-sample interval checked as often is not time-uniform: it misses far more often.
    naive = np.any(clopper_pearson_upper_bound(errors, trials, confidence=1 - alpha) < rate,
                   axis=1).mean()
    assert naive > missed


def test_the_confidence_sequence_detects_a_rate_above_the_limit() -> None:
    lower, _ = error_rate_confidence_sequence(60, 300, confidence=0.95, prior_mean=0.1,
                                              prior_strength=10)
    assert float(lower) > 0.1
    lower, upper = error_rate_confidence_sequence(0, 0, confidence=0.95)
    assert (float(lower), float(upper)) == (0.0, 1.0)


@given(t=st.integers(1, 10**7), share=st.floats(0, 1), c=levels, mean=levels,
       strength=st.floats(0.1, 100))
@settings(deadline=None)
def test_the_confidence_sequence_is_the_mixture_martingales_level_set(
        t: int, share: float, c: float, mean: float, strength: float) -> None:
    """Its edges are where ``log M_t(μ) = log(1/α)``, with ``log B`` from SciPy's ``betaln``
    (the serving path computes it with ``math.lgamma``, to run without SciPy)."""
    s = round(share * t)
    a, b = mean * strength, (1 - mean) * strength

    def log_m(mu: float) -> float:
        mixture = float(betaln(a + s, b + t - s) - betaln(a, b))
        return mixture - s * math.log(mu) - (t - s) * math.log1p(-mu)

    lower, upper = (float(x) for x in error_rate_confidence_sequence(
        s, t, confidence=c, prior_mean=mean, prior_strength=strength))
    level = -math.log1p(-c)
    for edge in (lower, upper):
        # The bisection's step is 2^-64 of [0, 1]: an edge within 1e-9 of 0 or 1 is found to
        # that absolute precision only, where log M changes fast (and errs outwards).
        if 1e-9 < edge < 1.0 - 1e-9:
            assert log_m(edge) == pytest.approx(level, abs=1e-5)
