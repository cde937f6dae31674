from __future__ import annotations

import pytest

from policies.profiles import PRESETS, RiskProfile


def test_presets_run_from_casual_to_critical() -> None:
    thresholds = [profile.threshold for profile in PRESETS.values()]
    assert list(PRESETS) == ["casual", "balanced", "cautious", "high_stakes", "critical"]
    assert thresholds == sorted(thresholds)
    assert thresholds[0] == pytest.approx(0.375)
    assert thresholds[-1] == pytest.approx(0.99)
    assert all(profile.description for profile in PRESETS.values())


def test_each_preset_description_states_its_threshold() -> None:
    for profile in PRESETS.values():
        assert f"p ≥ {profile.threshold:.3g}" in profile.description


def test_explicit_threshold_profile() -> None:
    profile = RiskProfile.from_threshold(0.8)
    assert profile.threshold == pytest.approx(0.8)
    assert profile.wrong_answer_cost == pytest.approx(4.0)
    assert profile.abstain_cost == 0.0


def test_costs_are_validated() -> None:
    with pytest.raises(ValueError, match="wrong_answer_cost"):
        RiskProfile(-1.0)
