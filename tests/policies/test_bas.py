from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import quad

from policies.bas import (
    CONFIDENCE_CLIP,
    BASWeight,
    bas_score_scalar,
    bas_scores,
    behavioral_alignment_score,
)

WEIGHTS: dict[BASWeight, Callable[[float], float]] = {
    "uniform": lambda t: 1.0,
    "linear": lambda t: 2.0 * t,
    "quadratic": lambda t: 3.0 * t * t,
}
# Away from the clip edges, where the closed forms and the integral agree exactly.
inner = st.floats(min_value=0.001, max_value=0.995)


def threshold_utility(s: float, correct: bool, t: float) -> float:
    """Utility of 'answer iff s >= t' at risk threshold t, where a wrong answer costs t/(1-t)."""
    if s < t:
        return 0.0
    return 1.0 if correct else -t / (1.0 - t)


def integrated_bas(s: float, correct: bool, weight: BASWeight) -> float:
    w = WEIGHTS[weight]
    # The utility is 0 for t > s, so integrating [0, s] is integrating [0, 1).
    integral, _ = quad(lambda t: w(t) * threshold_utility(s, correct, t), 0.0, s, limit=200)
    return float(integral)


def expected_bas(s: np.ndarray, q: float, weight: BASWeight) -> np.ndarray:
    """Expected BAS of reporting confidence s when the true P(correct) is q."""
    right = bas_scores(s, np.ones_like(s, dtype=bool), weight=weight)
    wrong = bas_scores(s, np.zeros_like(s, dtype=bool), weight=weight)
    return q * right + (1.0 - q) * wrong


@pytest.mark.parametrize("weight", list(WEIGHTS))
@given(s=inner, correct=st.booleans())
@settings(max_examples=40, deadline=None)
def test_closed_form_equals_the_integrated_threshold_utility(
    weight: BASWeight, s: float, correct: bool
) -> None:
    closed = float(bas_scores([s], [correct], weight=weight)[0])
    assert closed == pytest.approx(integrated_bas(s, correct, weight), rel=1e-7, abs=1e-9)


@pytest.mark.parametrize("weight", list(WEIGHTS))
@pytest.mark.parametrize("s", np.linspace(0.01, 0.99, 25).tolist())
def test_closed_form_on_a_grid(weight: BASWeight, s: float) -> None:
    for correct in (True, False):
        closed = float(bas_scores([s], [correct], weight=weight)[0])
        assert closed == pytest.approx(integrated_bas(s, correct, weight), rel=1e-7, abs=1e-9)


@pytest.mark.parametrize("weight", list(WEIGHTS))
@given(q=st.floats(min_value=0.01, max_value=0.99))
@settings(max_examples=30, deadline=None)
def test_reporting_the_true_probability_maximises_expected_bas(weight: BASWeight, q: float) -> None:
    grid = np.linspace(0.0005, 0.9995, 4001)
    assert grid[np.argmax(expected_bas(grid, q, weight))] == pytest.approx(q, abs=1e-3)


@pytest.mark.parametrize("weight", list(WEIGHTS))
@given(q=st.floats(min_value=0.01, max_value=0.99), s=st.floats(min_value=0.01, max_value=0.98))
@settings(max_examples=40, deadline=None)
def test_expected_bas_rises_to_the_true_probability_and_falls_after(
    weight: BASWeight, q: float, s: float
) -> None:
    # d/ds of ∫_0^s w(t) E[u(t)] dt is w(s) (q − s) / (1 − s): zero only at s = q, positive
    # below it and negative above, so s = q is the unique maximum.
    h = 1e-6
    numeric = (expected_bas(np.array([s + h]), q, weight) - expected_bas(np.array([s - h]), q, weight))[0] / (2 * h)
    analytic = WEIGHTS[weight](s) * (q - s) / (1.0 - s)
    assert numeric == pytest.approx(analytic, rel=1e-4, abs=1e-5)


@given(
    s=st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=50),
    data=st.data(),
)
def test_bas_is_at_most_one_and_finite(s: list[float], data: st.DataObject) -> None:
    correct = data.draw(st.lists(st.booleans(), min_size=len(s), max_size=len(s)))
    for weight in WEIGHTS:
        scores = bas_scores(s, correct, weight=weight)
        assert np.all(scores <= 1.0)
        assert np.all(np.isfinite(scores))
        assert behavioral_alignment_score(s, correct, weight=weight) <= 1.0


@pytest.mark.parametrize("weight", list(WEIGHTS))
@pytest.mark.parametrize("correct", [True, False])
def test_confidence_is_clipped_at_1e_4(weight: BASWeight, correct: bool) -> None:
    low, high = CONFIDENCE_CLIP, 1.0 - CONFIDENCE_CLIP
    scores = bas_scores([0.0, low, 1e-9, 1.0, high, 1.0 - 1e-9], [correct] * 6, weight=weight)
    assert scores[0] == scores[1] == scores[2]
    assert scores[3] == scores[4] == scores[5]
    # Just inside the clip the score moves again.
    assert bas_scores([2 * low], [correct], weight=weight)[0] != scores[0]


def test_a_confident_wrong_answer_costs_ln_1e_4_not_infinity() -> None:
    assert bas_scores([1.0], [False])[0] == pytest.approx(
        1 - CONFIDENCE_CLIP + math.log(CONFIDENCE_CLIP)
    )


def test_known_values() -> None:
    assert behavioral_alignment_score([0.8, 0.5], [True, False]) == pytest.approx(
        (0.8 + 0.5 + math.log(0.5)) / 2
    )
    assert bas_scores([0.5], [True], weight="linear")[0] == pytest.approx(0.25)
    assert bas_scores([0.5], [True], weight="quadratic")[0] == pytest.approx(0.125)
    assert math.isnan(behavioral_alignment_score([], []))
    with pytest.raises(ValueError, match="unknown BAS weight"):
        bas_scores([0.5], [True], weight="cubic")  # type: ignore[arg-type]


@given(p=st.floats(min_value=0.0, max_value=0.9999))
def test_calibrated_confidence_scores_non_negative_in_expectation(p: float) -> None:
    # Expected BAS of an honest confidence p: p + (1 - p) ln(1 - p) >= 0 (up to the 1e-4 clip).
    expected = p * bas_scores([p], [True])[0] + (1 - p) * bas_scores([p], [False])[0]
    assert expected >= -1e-6


@given(st.floats(0.0, 1.0), st.booleans())
def test_the_scalar_form_equals_the_array_form(s: float, correct: bool) -> None:
    assert bas_score_scalar(s, correct) == pytest.approx(float(bas_scores([s], [correct])[0]))
