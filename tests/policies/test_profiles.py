from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.profiles import PRESETS, RiskProfile
from policies.utility import expected_utility_scalar


def test_presets_run_from_casual_to_critical() -> None:
    thresholds = {name: profile.threshold for name, profile in PRESETS.items()}
    assert thresholds == pytest.approx(
        {"casual": 0.375, "balanced": 1.9 / 3, "cautious": 0.78, "high_stakes": 0.895, "critical": 0.99}
    )
    assert list(thresholds) == ["casual", "balanced", "cautious", "high_stakes", "critical"]
    assert list(thresholds.values()) == sorted(thresholds.values())


def test_each_preset_says_who_it_is_for_and_its_threshold() -> None:
    for profile in PRESETS.values():
        assert f"p ≥ {profile.threshold:.3g}" in profile.description


def test_presets_are_read_only() -> None:
    with pytest.raises(TypeError):
        PRESETS["casual"] = RiskProfile(0.0)  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS["casual"].wrong_answer_cost = 0.0  # type: ignore[misc]


@given(t=st.floats(min_value=0.0, max_value=0.999, exclude_max=True))
def test_explicit_threshold_is_free_abstention_at_bas_cost(t: float) -> None:
    profile = RiskProfile.from_threshold(t)
    assert profile.abstain_cost == 0.0
    assert profile.wrong_answer_cost == pytest.approx(t / (1 - t))
    assert profile.threshold == pytest.approx(t, abs=1e-12)
    # Utilities stay defined, and answering at exactly t breaks even with abstaining.
    at_t = expected_utility_scalar(
        t, True, wrong_answer_cost=profile.wrong_answer_cost, abstain_cost=0.0
    )
    assert at_t == pytest.approx(0.0, abs=1e-9)


def test_explicit_threshold_examples() -> None:
    assert RiskProfile.from_threshold(0.8).wrong_answer_cost == pytest.approx(4.0)
    assert RiskProfile.from_threshold(0.0) == RiskProfile(0.0, 0.0, "explicit threshold 0.0")
    for bad in (1.0, -0.1, math.nan):
        with pytest.raises(ValueError, match="threshold"):
            RiskProfile.from_threshold(bad)


@pytest.mark.parametrize(("wrong", "abstain", "field"), [(-1.0, 0.0, "wrong_answer_cost"), (math.inf, 0.0, "wrong_answer_cost"), (1.0, -0.5, "abstain_cost"), (1.0, math.nan, "abstain_cost")])
def test_costs_are_validated(wrong: float, abstain: float, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        RiskProfile(wrong, abstain)


def test_abstaining_dearer_than_a_wrong_answer_always_answers() -> None:
    assert RiskProfile(0.5, 1.0).threshold == 0.0
