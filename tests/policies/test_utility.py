from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from policies.utility import (
    expected_utility,
    expected_utility_scalar,
    optimal_threshold,
    realized_utility,
    realized_utility_scalar,
    should_answer,
    wrong_answer_cost_for_threshold,
)

costs = st.floats(min_value=0.0, max_value=1e4)
probabilities = st.floats(min_value=0.0, max_value=1.0)


@given(wrong=costs, abstain=costs)
def test_threshold_is_a_probability(wrong: float, abstain: float) -> None:
    assert 0.0 <= optimal_threshold(wrong_answer_cost=wrong, abstain_cost=abstain) <= 1.0


@given(a=costs, b=costs, abstain=costs)
def test_threshold_rises_with_the_cost_of_a_wrong_answer(a: float, b: float, abstain: float) -> None:
    low, high = sorted((a, b))
    assert optimal_threshold(wrong_answer_cost=low, abstain_cost=abstain) <= optimal_threshold(
        wrong_answer_cost=high, abstain_cost=abstain
    ) + 1e-12


@given(wrong=costs, a=costs, b=costs)
def test_threshold_falls_with_the_cost_of_abstaining(wrong: float, a: float, b: float) -> None:
    low, high = sorted((a, b))
    assert optimal_threshold(wrong_answer_cost=wrong, abstain_cost=high) <= optimal_threshold(
        wrong_answer_cost=wrong, abstain_cost=low
    ) + 1e-12


@given(wrong=st.floats(min_value=0.01, max_value=1e3), abstain=st.floats(0.0, 1e3), p=probabilities)
def test_the_threshold_rule_maximises_expected_utility(wrong: float, abstain: float, p: float) -> None:
    t = optimal_threshold(wrong_answer_cost=wrong, abstain_cost=abstain)
    answer = expected_utility_scalar(p, True, wrong_answer_cost=wrong, abstain_cost=abstain)
    withhold = expected_utility_scalar(p, False, wrong_answer_cost=wrong, abstain_cost=abstain)
    if should_answer(p, t):
        assert answer >= withhold - 1e-9
    else:
        assert withhold >= answer - 1e-9


@given(wrong=st.floats(min_value=0.01, max_value=1e3), abstain=st.floats(0.0, 1e3))
def test_answering_and_abstaining_tie_at_the_threshold(wrong: float, abstain: float) -> None:
    t = optimal_threshold(wrong_answer_cost=wrong, abstain_cost=abstain)
    assume(0.0 < t < 1.0)
    answer = expected_utility_scalar(t, True, wrong_answer_cost=wrong, abstain_cost=abstain)
    assert answer == pytest.approx(-abstain, rel=1e-9, abs=1e-9)


@given(wrong=st.floats(min_value=0.0, max_value=1e3), abstain=st.floats(0.0, 1e3), p=probabilities)
def test_answering_wins_strictly_above_the_threshold_and_abstaining_below(
    wrong: float, abstain: float, p: float
) -> None:
    t = optimal_threshold(wrong_answer_cost=wrong, abstain_cost=abstain)
    assume(abs(p - t) > 1e-6)
    options = {"wrong_answer_cost": wrong, "abstain_cost": abstain}
    gain = expected_utility_scalar(p, True, **options) - expected_utility_scalar(p, False, **options)
    if p > t:
        assert gain > 0
        assert should_answer(p, t)
    else:
        assert gain < 0
        assert not should_answer(p, t)
    if 0.0 < t < 1.0:
        # The gain of answering is linear in p: (1 + λ)(p − t).
        assert gain == pytest.approx((1 + wrong) * (p - t), rel=1e-9, abs=1e-9)


@given(p=probabilities, answer=st.booleans(), wrong=costs, abstain=costs)
def test_expected_utility_is_the_mean_realized_utility(
    p: float, answer: bool, wrong: float, abstain: float
) -> None:
    options = {"wrong_answer_cost": wrong, "abstain_cost": abstain}
    mean = p * realized_utility_scalar(True, answer, **options) + (1 - p) * realized_utility_scalar(
        False, answer, **options
    )
    assert expected_utility_scalar(p, answer, **options) == pytest.approx(mean, abs=1e-6)


@given(
    rows=st.lists(st.tuples(probabilities, st.booleans(), st.booleans()), min_size=1, max_size=30),
    wrong=costs,
    abstain=costs,
)
def test_scalar_paths_match_the_vectorised_ones(
    rows: list[tuple[float, bool, bool]], wrong: float, abstain: float
) -> None:
    p, answer, correct = (np.array(column) for column in zip(*rows, strict=True))
    options = {"wrong_answer_cost": wrong, "abstain_cost": abstain}
    assert np.allclose(
        expected_utility(p, answer, **options),
        [expected_utility_scalar(float(x), bool(a), **options) for x, a in zip(p, answer, strict=True)],
    )
    assert np.allclose(
        realized_utility(correct, answer, **options),
        [realized_utility_scalar(bool(c), bool(a), **options) for c, a in zip(correct, answer, strict=True)],
    )


@given(t=st.floats(min_value=0.0, max_value=0.999))
def test_bas_threshold_round_trip(t: float) -> None:
    # With free abstention, the cost t/(1-t) makes t the optimal threshold.
    assert optimal_threshold(wrong_answer_cost=wrong_answer_cost_for_threshold(t)) == pytest.approx(t)


def test_known_thresholds_and_bad_costs() -> None:
    assert optimal_threshold(wrong_answer_cost=1.0) == 0.5
    assert optimal_threshold(wrong_answer_cost=4.0, abstain_cost=0.1) == pytest.approx(0.78)
    assert optimal_threshold(wrong_answer_cost=0.5, abstain_cost=1.0) == 0.0
    for bad in (-1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="wrong_answer_cost"):
            optimal_threshold(wrong_answer_cost=bad)
        with pytest.raises(ValueError, match="abstain_cost"):
            optimal_threshold(wrong_answer_cost=1.0, abstain_cost=bad)
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\)"):
        wrong_answer_cost_for_threshold(1.0)
    assert not should_answer(math.nan, 0.0)  # missing confidence never answers
