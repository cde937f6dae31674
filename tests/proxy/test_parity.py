"""``basguard parity`` on decisions made and labelled through a real gateway."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import numpy as np
import pytest
from scipy.stats import binomtest

from policies.parity import parity, wilson_interval
from proxy.cli.main import main
from tests.support.fake_upstream import FakeUpstream
from tests.support.policy_traffic import Sent, Traffic, labelled_traffic


@pytest.fixture(scope="module")
def traffic(fake_upstream: tuple[FakeUpstream, str],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traffic]:
    with labelled_traffic(tmp_path_factory.mktemp("parity"), fake_upstream[1],
                          requests=180) as sent:
        yield sent


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:  # type: ignore[type-arg]
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def rates_of(sent: list[Sent]) -> dict[str, tuple[int, int]]:
    """(count, out of) of each rate, counted here from what was sent."""
    labelled = [s for s in sent if s.correct is not None]
    return {
        "abstention": (sum(not s.answered for s in sent), len(sent)),
        "over_abstention": (sum(not s.answered and bool(s.correct) for s in labelled),
                            len(labelled)),
        "under_abstention": (sum(s.answered and not s.correct for s in labelled),
                             len(labelled)),
    }


def test_parity_reports_each_segments_rates_with_wilson_intervals(
    traffic: Traffic, capsys: pytest.CaptureFixture[str]
) -> None:
    report = run_json(capsys, "parity", "--store", str(traffic.store_path), "--tenant", "ops",
                      "--config", str(traffic.config_path), "--json")
    assert report["min_labels"] == 10  # the tenant's segments.min_labels
    by_segment = {row["segment"]: row for row in report["segments"]}
    assert set(by_segment) == {"free", "pro", "other"}
    for segment, row in by_segment.items():
        sent = [s for s in traffic.sent if s.segment == segment]
        assert row["decisions"] == len(sent)
        assert row["labelled"] == sum(s.correct is not None for s in sent)
        for rate, (k, n) in rates_of(sent).items():
            assert row[rate]["rate"] == pytest.approx(k / n)
            # SciPy's Wilson interval, computed independently of basguard's.
            ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
            assert row[rate]["interval"] == pytest.approx([ci.low, ci.high], abs=1e-9)


def test_the_largest_gap_is_found_and_tested_against_chance(
    traffic: Traffic, capsys: pytest.CaptureFixture[str]
) -> None:
    report = run_json(capsys, "parity", "--store", str(traffic.store_path), "--tenant", "ops",
                      "--min-labels", "10", "--json", "--permutations", "999")
    rates = {segment: rates_of([s for s in traffic.sent if s.segment == segment])
             for segment in ("free", "pro", "other")}
    abstention = {seg: k / n for seg, r in rates.items() for k, n in [r["abstention"]]}
    gap = report["gaps"]["abstention"]
    assert gap["highest"] == max(abstention, key=abstention.__getitem__) == "free"
    assert gap["lowest"] == min(abstention, key=abstention.__getitem__)
    assert gap["gap"] == pytest.approx(max(abstention.values()) - min(abstention.values()))
    # The free segment's answers are scripted to be less confident: far beyond chance.
    assert gap["p_value"] < 0.01 and gap["beyond_chance"] is True
    assert report["test"]["permutations"] == 999


def test_the_table_names_the_gap_and_the_test(traffic: Traffic,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["parity", "--store", str(traffic.store_path), "--tenant", "ops",
                 "--min-labels", "10"]) == 0
    out = capsys.readouterr().out
    assert "abstention rate: largest gap" in out and "LARGER than chance" in out
    assert "permutation test: segments shuffled across requests 2000 times" in out


def test_a_segment_with_too_few_labels_is_said_and_left_out_of_the_gap(
    traffic: Traffic, capsys: pytest.CaptureFixture[str]
) -> None:
    labelled = {seg: sum(s.correct is not None for s in traffic.sent if s.segment == seg)
                for seg in ("free", "pro", "other")}
    cutoff = sorted(labelled.values())[1]  # the smallest segment falls below it
    report = run_json(capsys, "parity", "--store", str(traffic.store_path), "--tenant", "ops",
                      "--min-labels", str(cutoff), "--json", "--permutations", "0")
    enough = {row["segment"]: row["enough_labels"] for row in report["segments"]}
    assert enough == {seg: n >= cutoff for seg, n in labelled.items()}
    assert report["gaps"]["over_abstention"]["compared"] == sum(enough.values())
    assert report["gaps"]["over_abstention"]["p_value"] is None  # no test was asked for


def test_no_gap_beyond_chance_when_segments_are_alike() -> None:
    rng = np.random.default_rng(3)
    n = 2000
    segments = [str(s) for s in rng.choice(["a", "b", "c"], n)]
    answered = (rng.uniform(size=n) < 0.7).tolist()
    correct = (rng.uniform(size=n) < 0.6).astype(float).tolist()
    report = parity(segments, answered, correct, [str(i) for i in range(n)], seed=1,
                    permutations=500)
    assert report.gaps["abstention"].p_value > 0.05


def test_choices_of_one_request_move_together_in_the_permutations() -> None:
    # Two requests of 50 choices each: every shuffle has a gap of 0 or the same full gap.
    segments = ["a"] * 50 + ["b"] * 50
    answered = [True] * 50 + [False] * 50
    groups = ["r1"] * 50 + ["r2"] * 50
    report = parity(segments, answered, [None] * 100, groups, min_labels=1, permutations=200)
    assert report.gaps["abstention"].gap == 1.0
    assert report.gaps["abstention"].p_value == 1.0  # a swap gives the same gap


def test_wilson_interval_edges() -> None:
    assert all(math.isnan(end) for end in wilson_interval(0, 0))
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and 0.2 < high < 0.35
    low, high = wilson_interval(10, 10)
    assert high == 1.0 and 0.65 < low < 0.8


def test_parity_of_an_unknown_tenant_is_a_clear_error(
    traffic: Traffic, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["parity", "--store", str(traffic.store_path), "--tenant", "nobody"]) == 2
    assert "no decisions of tenant 'nobody'" in capsys.readouterr().err


def test_one_segment_has_no_gap_to_test() -> None:
    from policies.parity import RATES
    from proxy.analysis.parity import verdict

    report = parity(["a"] * 40, [True, False] * 20, [1.0] * 40, [str(i) for i in range(40)],
                    permutations=10)
    for rate in RATES:
        gap = report.gaps[rate]
        assert gap.highest is None and math.isnan(gap.gap) and math.isnan(gap.p_value)
        assert "fewer than two segments" in verdict(report, rate)
    with pytest.raises(ValueError, match="unknown rate"):
        report.segments[0].rate("refusal")


def test_parity_refuses_misaligned_inputs() -> None:
    with pytest.raises(ValueError, match="one length"):
        parity(["a", "b"], [True], [None, None], ["1", "2"])


def test_without_permutations_the_gap_is_reported_untested() -> None:
    from proxy.analysis.parity import verdict

    segments = ["a"] * 40 + ["b"] * 40
    report = parity(segments, [True] * 40 + [False] * 40, [None] * 80,
                    [str(i) for i in range(80)], permutations=0)
    assert report.gaps["abstention"].gap == 1.0
    assert verdict(report, "abstention").endswith("not tested")
