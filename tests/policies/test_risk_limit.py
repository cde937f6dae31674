"""The serving rule of a risk limit and its live verdict: invariants, and the false-alarm rate of
watching a limit after every label."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.risk_control import error_rate_confidence_sequence
from policies.risk_limit import (
    LIVE_PRIOR_STRENGTH,
    certificate_covers,
    limited_threshold,
    live_bound,
)

probabilities = st.floats(min_value=0.0, max_value=1.0)
limits = st.floats(min_value=0.01, max_value=0.5)
levels = st.floats(min_value=0.5, max_value=0.99)


@given(probabilities, probabilities)
def test_the_threshold_in_force_is_the_larger_of_cost_and_certified(cost: float,
                                                                    certified: float) -> None:
    threshold = limited_threshold(cost, certified)
    assert threshold == max(cost, certified)
    # Answering at it answers a subset of what either threshold alone would answer.
    for p in (cost, certified, (cost + certified) / 2):
        if threshold is not None and p >= threshold:
            assert p >= cost and p >= certified


@given(probabilities)
def test_nothing_certified_answers_nothing(cost: float) -> None:
    assert limited_threshold(cost, None) is None


@given(limits, levels, limits, levels)
def test_a_certificate_covers_exactly_the_limits_it_implies(
        certified_a: float, certified_c: float, a: float, c: float) -> None:
    covers = certificate_covers(certified_max_error_rate=certified_a,
                                certified_confidence=certified_c, max_error_rate=a,
                                confidence=c)
    assert covers == (certified_a <= a and certified_c >= c)
    assert certificate_covers(certified_max_error_rate=a, certified_confidence=c,
                              max_error_rate=a, confidence=c)


@given(labels=st.integers(0, 2000), errors=st.integers(0, 2000), a=limits, c=levels)
def test_the_live_bound_brackets_the_observed_rate_and_breaches_only_above_the_limit(
        labels: int, errors: int, a: float, c: float) -> None:
    errors = min(errors, labels)
    bound = live_bound(errors, labels, max_error_rate=a, confidence=c)
    assert 0.0 <= bound.lower <= bound.upper <= 1.0
    if labels:
        assert bound.error_rate == errors / labels
        assert bound.lower <= errors / labels <= bound.upper
    else:
        assert (bound.lower, bound.upper, bound.error_rate) == (0.0, 1.0, None)
    assert bound.breached == (bound.lower > a)
    if bound.breached:
        assert errors / labels > a  # a breach is never proven by a rate at or under the limit
    lower, upper = error_rate_confidence_sequence(errors, labels, confidence=c, prior_mean=a,
                                                  prior_strength=LIVE_PRIOR_STRENGTH)
    assert (bound.lower, bound.upper) == (float(lower), float(upper))


@settings(deadline=None, max_examples=50)
@given(labels=st.integers(1, 500), a=limits, c=levels)
def test_more_errors_never_lower_the_bounds(labels: int, a: float, c: float) -> None:
    errors = np.arange(labels + 1)
    lower, upper = error_rate_confidence_sequence(errors, labels, confidence=c, prior_mean=a,
                                                  prior_strength=LIVE_PRIOR_STRENGTH)
    assert np.all(np.diff(lower) >= -1e-12) and np.all(np.diff(upper) >= -1e-12)


def test_plenty_of_wrong_answers_prove_a_breach_and_plenty_of_right_ones_do_not() -> None:
    assert live_bound(20, 40, max_error_rate=0.1, confidence=0.9).breached
    assert not live_bound(2, 40, max_error_rate=0.1, confidence=0.9).breached
    # The upper bound falls below the limit once enough right answers are seen.
    assert live_bound(10, 1000, max_error_rate=0.05, confidence=0.95).upper < 0.05


@pytest.mark.parametrize(("rate", "a"), [(0.05, 0.05), (0.1, 0.1), (0.02, 0.05)])
def test_watching_after_every_label_raises_few_false_alarms(rate: float, a: float) -> None:
    """A true rate at (or under) the limit, checked after each of 1,000 labels on 400 paths:
    the share of paths ever breached stays under 1 - C, plus noise (Ville's inequality)."""
    confidence = 0.9
    rng = np.random.default_rng(11)
    wrong = rng.random((400, 1000)) < rate
    errors = np.cumsum(wrong, axis=1)
    trials = np.broadcast_to(np.arange(1, 1001), errors.shape)
    lower, _ = error_rate_confidence_sequence(errors, trials, confidence=confidence,
                                              prior_mean=a, prior_strength=LIVE_PRIOR_STRENGTH)
    ever_breached = (lower > a).any(axis=1).mean()
    # 400 paths: a share of 0.1 is known to about ±0.03 (two standard errors).
    assert ever_breached <= 1 - confidence + 0.03
