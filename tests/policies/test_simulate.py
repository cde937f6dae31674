"""The replay math of ``policy simulate``, against figures computed here row by row."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.profiles import PRESETS
from policies.simulate import (
    Candidate,
    ReplayData,
    live_realized_utility_per_request,
    preset_candidates,
    simulate,
    threshold_grid,
)


def random_replay(seed: int, n: int = 300) -> ReplayData:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 1, n)
    p[rng.uniform(size=n) < 0.05] = np.nan  # decided without confidence
    correct = (rng.uniform(size=n) < np.nan_to_num(p, nan=0.5)).astype(float)
    correct[rng.uniform(size=n) < 0.3] = np.nan  # unlabelled
    answered = rng.uniform(size=n) < 0.5
    groups = rng.integers(0, n // 2, n)
    return ReplayData(p, answered, correct, groups.astype(np.int64))


def by_hand(data: ReplayData, c: Candidate) -> dict[str, float]:
    """Each figure of one candidate, one row at a time."""
    answered = labelled = answered_labelled = answered_correct = withheld_correct = 0
    answered_wrong = 0
    utility = 0.0
    for p, recorded, y in zip(data.confidence.tolist(), data.answered.tolist(),
                              data.correct.tolist(), strict=True):
        answer = recorded if math.isnan(p) else p >= c.threshold
        answered += answer
        if math.isnan(y):
            continue
        labelled += 1
        if answer:
            answered_labelled += 1
            answered_correct += y == 1
            answered_wrong += y == 0
            utility += 1.0 if y == 1 else -c.wrong_answer_cost
        else:
            withheld_correct += y == 1
            utility -= c.abstain_cost
    return {
        "coverage": answered / data.n,
        "accuracy_answered": answered_correct / answered_labelled,
        "over_abstention": withheld_correct / labelled,
        "under_abstention": answered_wrong / labelled,
        "utility": utility / labelled,
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_candidate_matches_a_row_by_row_count(seed: int) -> None:
    data = random_replay(seed)
    candidates = [*preset_candidates(), Candidate("t=0.4", 0.4, 1.5, 0.2, "grid")]
    reference = Candidate.from_costs("configured", 3.0, 0.1, kind="configured")
    result = simulate(data, candidates, reference=reference, bootstrap=0)
    for row in result.results:
        expected = by_hand(data, row.candidate)
        for name, value in expected.items():
            assert getattr(row, name) == pytest.approx(value, abs=1e-12), name
        priced = Candidate(row.candidate.name, row.candidate.threshold,
                           reference.wrong_answer_cost, reference.abstain_cost, "x")
        assert row.reference_utility == pytest.approx(by_hand(data, priced)["utility"])
    assert result.labelled == int((~np.isnan(data.correct)).sum())
    assert result.without_confidence == int(np.isnan(data.confidence).sum())


def test_unlabelled_decisions_count_towards_coverage_only() -> None:
    labelled = ReplayData.from_lists([0.9, 0.2, 0.7], [True, False, True], [1.0, 0.0, 0.0])
    more = ReplayData.from_lists([0.9, 0.2, 0.7, 0.95, 0.1], [True] * 5,
                                 [1.0, 0.0, 0.0, None, None])
    c = Candidate("t", 0.5, 1.0, 0.0, "grid")
    a, b = (simulate(d, [c], reference=c, bootstrap=0).results[0] for d in (labelled, more))
    assert (a.utility, a.over_abstention, a.under_abstention, a.accuracy_answered) == (
        b.utility, b.over_abstention, b.under_abstention, b.accuracy_answered)
    assert a.coverage == pytest.approx(2 / 3) and b.coverage == pytest.approx(3 / 5)


def test_a_decision_without_confidence_keeps_its_recorded_decision() -> None:
    data = ReplayData.from_lists([None, None], [True, False], [0.0, 1.0])
    for t in (0.0, 0.99):
        (row,) = simulate(data, [Candidate("t", t, 2.0, 0.5, "grid")],
                          reference=Candidate("r", t, 2.0, 0.5, "x"), bootstrap=0).results
        assert row.coverage == 0.5
        assert row.utility == pytest.approx((-2.0 - 0.5) / 2)


def test_the_bootstrap_is_seeded_and_resamples_whole_groups() -> None:
    data = random_replay(5)
    c = [Candidate.from_costs("balanced", 2.0, 0.1)]
    first = simulate(data, c, reference=c[0], bootstrap=300, seed=7)
    again = simulate(data, c, reference=c[0], bootstrap=300, seed=7)
    other = simulate(data, c, reference=c[0], bootstrap=300, seed=8)
    assert first.results[0].utility_interval == again.results[0].utility_interval
    assert first.results[0].utility_interval != other.results[0].utility_interval
    low, high = first.results[0].utility_interval.low, first.results[0].utility_interval.high
    assert low < first.results[0].utility < high
    # Every row twice, in the same group: a group bootstrap draws the pairs together, so the
    # intervals are those of the single rows (a row bootstrap would narrow them).
    doubled = ReplayData(np.repeat(data.confidence, 2), np.repeat(data.answered, 2),
                         np.repeat(data.correct, 2), np.repeat(data.groups, 2))
    twice = simulate(doubled, c, reference=c[0], bootstrap=300, seed=7)
    assert twice.results[0].utility_interval.low == pytest.approx(low)
    assert twice.results[0].utility_interval.high == pytest.approx(high)


def test_the_optimum_is_the_best_threshold_of_the_grid_by_brute_force() -> None:
    data = random_replay(11)
    reference = Candidate.from_costs("configured", 4.0, 0.1, kind="configured")
    grid = threshold_grid(0.05)
    result = simulate(data, [], reference=reference, grid=grid, bootstrap=50)
    utilities = {float(t): by_hand(data, Candidate("t", float(t), 4.0, 0.1, "g"))["utility"]
                 for t in [*grid.tolist(), reference.threshold]}
    best = max(utilities.values())
    assert result.optimum.utility == pytest.approx(best)
    assert utilities[result.optimum.threshold] == pytest.approx(best)
    assert result.optimum.regret == pytest.approx(best - utilities[reference.threshold])
    assert result.optimum.distance == pytest.approx(
        reference.threshold - result.optimum.threshold)
    interval = result.optimum.regret_interval
    assert 0.0 <= interval.low <= interval.high
    # The curve is the same replay at each grid threshold.
    assert result.grid_utility == pytest.approx([utilities[float(t)] for t in grid])


def test_a_configured_threshold_tied_with_the_optimum_is_at_distance_zero() -> None:
    # Nothing between 0.3 and 0.8: every threshold in (0.3, 0.8] earns the same.
    data = ReplayData.from_lists([0.2, 0.3, 0.8, 0.9], [True] * 4, [0.0, 0.0, 1.0, 1.0])
    reference = Candidate("configured", 0.6, 1.0, 0.0, "configured")
    result = simulate(data, [], reference=reference, bootstrap=0)
    assert result.optimum.threshold == 0.6 and result.optimum.distance == 0.0
    assert result.optimum.regret == 0.0


def test_bas_is_that_of_the_labelled_confidences() -> None:
    from policies.bas import behavioral_alignment_score

    data = random_replay(3)
    result = simulate(data, [], reference=Candidate("r", 0.5, 1.0, 0.0, "x"), bootstrap=0)
    keep = ~np.isnan(data.confidence) & ~np.isnan(data.correct)
    assert result.bas == behavioral_alignment_score(data.confidence[keep],
                                                    data.correct[keep] == 1)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans(),
                          st.sampled_from([0.0, 0.1, 1.0, 4.0, 9.0]),
                          st.sampled_from([0.0, 0.05, 0.25])), min_size=1, max_size=40))
def test_the_live_figure_is_the_mean_of_the_scalar_utility(
    rows: list[tuple[bool, bool, float, float]]
) -> None:
    correct, answered, wrong, withhold = zip(*rows, strict=True)
    expected = 0.0
    for y, a, lam, ab in rows:
        expected += (1.0 if y else -lam) if a else -ab
    assert live_realized_utility_per_request(correct, answered, wrong, withhold) == (
        pytest.approx(expected / len(rows)))


def test_no_labels_give_nan_not_an_error() -> None:
    data = ReplayData.from_lists([0.9, 0.1], [True, False], [None, None])
    (row,) = simulate(data, preset_candidates()[:1], reference=preset_candidates()[0],
                      bootstrap=20).results
    assert row.coverage == 0.5 and math.isnan(row.utility)
    assert math.isnan(row.utility_interval.low)
    assert math.isnan(live_realized_utility_per_request([], [], [], []))


@pytest.mark.parametrize("bad", [
    dict(confidence=[1.5], answered=[True], correct=[1.0]),
    dict(confidence=[0.5], answered=[True], correct=[0.5]),
    dict(confidence=[0.5, 0.2], answered=[True], correct=[1.0]),
])
def test_bad_replay_data_is_refused(bad: dict[str, list[float]]) -> None:
    with pytest.raises(ValueError):
        ReplayData(np.asarray(bad["confidence"], dtype=float), np.asarray(bad["answered"]),
                   np.asarray(bad["correct"], dtype=float))


def test_presets_are_replayed_at_their_own_thresholds() -> None:
    assert [(c.name, c.threshold) for c in preset_candidates()] == [
        (name, profile.threshold) for name, profile in PRESETS.items()]


@pytest.mark.parametrize("step", [0.0, 1.0, -0.1])
def test_a_grid_step_outside_0_1_is_refused(step: float) -> None:
    with pytest.raises(ValueError, match="grid step"):
        threshold_grid(step)


def test_the_default_grid_runs_from_0_below_1() -> None:
    grid = threshold_grid()
    assert grid[0] == 0.0 and grid[-1] == pytest.approx(0.99) and grid.size == 100
