from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import quad

from policies.bas import CONFIDENCE_CLIP, bas_scores, behavioral_alignment_score

WEIGHTS = {"uniform": lambda t: 1.0, "linear": lambda t: 2.0 * t, "quadratic": lambda t: 3.0 * t * t}
inner = st.floats(min_value=0.001, max_value=0.995)


def threshold_utility(s: float, correct: bool, t: float) -> float:
    """Utility of 'answer iff s >= t' at risk threshold t, where a wrong answer costs t/(1-t)."""
    if s < t:
        return 0.0
    return 1.0 if correct else -t / (1.0 - t)


@pytest.mark.parametrize("weight", list(WEIGHTS))
@given(s=inner, correct=st.booleans())
@settings(max_examples=40, deadline=None)
def test_closed_form_equals_the_integrated_threshold_utility(
    weight: str, s: float, correct: bool
) -> None:
    w = WEIGHTS[weight]
    integral, _ = quad(lambda t: w(t) * threshold_utility(s, correct, t), 0.0, s, limit=200)
    closed = float(bas_scores([s], [correct], weight=weight)[0])  # type: ignore[arg-type]
    assert closed == pytest.approx(integral, rel=1e-7, abs=1e-9)


@pytest.mark.parametrize("weight", list(WEIGHTS))
@given(q=st.floats(min_value=0.01, max_value=0.99))
@settings(max_examples=30, deadline=None)
def test_reporting_the_true_probability_maximises_expected_bas(weight: str, q: float) -> None:
    grid = np.linspace(0.0005, 0.9995, 4001)
    expected = q * bas_scores(grid, np.ones_like(grid, bool), weight=weight) + (1 - q) * bas_scores(  # type: ignore[arg-type]
        grid, np.zeros_like(grid, bool), weight=weight  # type: ignore[arg-type]
    )
    assert grid[np.argmax(expected)] == pytest.approx(q, abs=1e-3)


@given(
    s=st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=50),
    data=st.data(),
)
def test_bas_is_at_most_one_and_clipped(s: list[float], data: st.DataObject) -> None:
    correct = data.draw(st.lists(st.booleans(), min_size=len(s), max_size=len(s)))
    for weight in WEIGHTS:
        scores = bas_scores(s, correct, weight=weight)  # type: ignore[arg-type]
        assert np.all(scores <= 1.0)
        assert np.all(np.isfinite(scores))
    # A wrong answer at confidence 1 costs ln(1e-4), not -inf.
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
