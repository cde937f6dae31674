"""``basguard policy simulate`` on decisions made and labelled through a real gateway."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy.cli.main import main
from tests.support.fake_upstream import FakeUpstream
from tests.support.metrics import scrape
from tests.support.policy_traffic import (
    ABSTAIN_COST,
    THRESHOLD,
    WRONG_ANSWER_COST,
    Sent,
    Traffic,
    labelled_traffic,
)


@pytest.fixture(scope="module")
def traffic(fake_upstream: tuple[FakeUpstream, str],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traffic]:
    with labelled_traffic(tmp_path_factory.mktemp("simulate"), fake_upstream[1],
                          requests=90, seed=5) as sent:
        yield sent


def simulate_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert main(["policy", "simulate", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def expected(sent: list[Sent], threshold: float, wrong: float, withhold: float
             ) -> dict[str, float | None]:
    """Each figure replayed here at ``threshold``, from what the test sent and labelled."""
    answers = [s.confidence >= threshold for s in sent]
    labelled = [(a, s.correct) for a, s in zip(answers, sent, strict=True)
                if s.correct is not None]
    answered_labelled = [c for a, c in labelled if a]
    utility = sum((1.0 if c else -wrong) if a else -withhold for a, c in labelled)
    return {
        "coverage": sum(answers) / len(sent),
        "accuracy_answered": (sum(answered_labelled) / len(answered_labelled)
                              if answered_labelled else None),
        "over_abstention": sum(1 for a, c in labelled if not a and c) / len(labelled),
        "under_abstention": sum(1 for a, c in labelled if a and not c) / len(labelled),
        "utility_per_request": utility / len(labelled),
    }


def test_the_configured_policy_replays_to_the_live_metric(
    traffic: Traffic, capsys: pytest.CaptureFixture[str]
) -> None:
    report = simulate_json(capsys, "--store", str(traffic.store_path), "--tenant", "ops",
                           "--bootstrap", "200")
    samples = scrape(traffic.url)
    pair = (("model", "fake"), ("tenant", "ops"))
    labelled = sum(value for (name, labels), value in samples.items()
                   if name == "basguard_feedback_decisions" and dict(labels)["tenant"] == "ops")
    live = samples[("basguard_feedback_realized_utility_sum", pair)] / labelled
    assert report["configured_live"]["labelled"] == labelled == sum(
        s.correct is not None for s in traffic.sent)
    assert report["configured_live"]["realized_utility_per_request"] == pytest.approx(
        live, rel=1e-12, abs=1e-12)
    assert report["configured_live"]["decided_differently_at_configured_threshold"] == 0
    configured = report["candidates"][0]
    assert configured["kind"] == "configured"
    assert configured["threshold"] == pytest.approx(THRESHOLD)
    # The configured policy, replayed, decides as the gateway did: the same utility.
    assert configured["utility_per_request"] == pytest.approx(live)
    figures = expected(traffic.sent, THRESHOLD, WRONG_ANSWER_COST, ABSTAIN_COST)
    for name, value in figures.items():
        assert configured[name] == (value if value is None else pytest.approx(value)), name
    low, high = configured["utility_interval"]
    assert low < configured["utility_per_request"] < high
    assert report["reference"]["source"] == "the latest stored decision"


def test_candidate_thresholds_and_costs_are_replayed(
    traffic: Traffic, capsys: pytest.CaptureFixture[str]
) -> None:
    report = simulate_json(capsys, "--store", str(traffic.store_path), "--tenant", "ops",
                           "--config", str(traffic.config_path), "--thresholds", "0.5,0.9",
                           "--costs", "9/0.05", "--bootstrap", "0")
    rows = {row["name"]: row for row in report["candidates"]}
    assert list(rows)[:6] == ["configured", "casual", "balanced", "cautious", "high_stakes",
                              "critical"]
    for name, threshold in (("t=0.5", 0.5), ("t=0.9", 0.9)):
        figures = expected(traffic.sent, threshold, WRONG_ANSWER_COST, ABSTAIN_COST)
        for key, value in figures.items():
            assert rows[name][key] == (value if value is None else pytest.approx(value)), key
    costs = rows["costs 9/0.05"]
    assert costs["threshold"] == pytest.approx((9 - 0.05) / 10)
    own = expected(traffic.sent, costs["threshold"], 9.0, 0.05)
    assert costs["utility_per_request"] == pytest.approx(own["utility_per_request"])
    at_reference = expected(traffic.sent, costs["threshold"], WRONG_ANSWER_COST, ABSTAIN_COST)
    assert costs["reference_utility_per_request"] == pytest.approx(
        at_reference["utility_per_request"])
    # The optimum: no grid threshold earns more on these labels.
    best = max(expected(traffic.sent, t, WRONG_ANSWER_COST, ABSTAIN_COST)["utility_per_request"]
               or 0.0 for t in [i / 100 for i in range(100)] + [THRESHOLD])
    assert report["optimum"]["utility_per_request"] == pytest.approx(best)
    assert report["reference"]["source"].endswith("tenant 'ops' (custom)")


def test_a_records_file_replays_like_the_store(
    traffic: Traffic, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    records = tmp_path / "records.jsonl"
    records.write_text("".join(
        json.dumps({"id": s.id, "confidence": s.confidence,
                    "correct": None if s.correct is None else int(s.correct)}) + "\n"
        for s in traffic.sent))
    from_file = simulate_json(capsys, "--records", str(records), "--config",
                              str(traffic.config_path), "--tenant", "ops", "--bootstrap", "100")
    from_store = simulate_json(capsys, "--store", str(traffic.store_path), "--tenant", "ops",
                               "--config", str(traffic.config_path), "--bootstrap", "100")
    for file_row, store_row in zip(from_file["candidates"], from_store["candidates"],
                                   strict=True):
        for key in ("coverage", "over_abstention", "under_abstention", "utility_per_request"):
            assert file_row[key] == pytest.approx(store_row[key]), key


def test_the_figure_is_written(traffic: Traffic, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    figure = tmp_path / "simulate.png"
    assert main(["policy", "simulate", "--store", str(traffic.store_path), "--tenant", "ops",
                 "--bootstrap", "50", "--plot", str(figure)]) == 0
    out = capsys.readouterr().out
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "utility-optimal threshold on these labels" in out and f"figure: {figure}" in out


@pytest.mark.parametrize(("line", "message"), [
    ("{not json", "malformed JSON"),
    ('{"confidence": 1.5, "correct": 1}', "outside [0, 1]"),
    ('{"confidence": "high", "correct": 1}', "'confidence' must be a finite number"),
    # NaN and Infinity (which Python's json writes) are read, then refused by field name.
    ('{"confidence": NaN, "correct": 1}', "'confidence' must be a finite number"),
    ('{"confidence": -Infinity, "correct": 1}', "'confidence' must be a finite number"),
    ('{"confidence": 0.5, "correct": NaN}', "'correct' must be 0/1"),
    ('{"confidence": 0.5, "correct": "maybe"}', "'correct' must be 0/1"),
    ('{"correct": 1}', "no 'confidence' field"),
    ("[1, 2]", "each line must be a JSON object"),
])
def test_a_bad_records_file_fails_at_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              line: str, message: str) -> None:
    records = tmp_path / "records.jsonl"
    records.write_text('{"confidence": 0.5, "correct": 1}\n\n' + line + "\n")
    assert main(["policy", "simulate", "--records", str(records)]) == 2
    err = capsys.readouterr().err
    assert f"{records}:3" in err and message in err, err


def test_an_empty_window_is_a_clear_error(traffic: Traffic,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "simulate", "--store", str(traffic.store_path), "--tenant", "ops",
                 "--model", "no-such-model"]) == 2
    assert "no decisions to replay" in capsys.readouterr().err
    assert main(["policy", "simulate", "--store", str(traffic.store_path), "--tenant", "ops",
                 "--since", "yesterday"]) == 2
    assert "give a duration such as 30m" in capsys.readouterr().err


@pytest.mark.parametrize(("option", "message"), [
    (["--costs", "abc"], "give LAMBDA or LAMBDA/A"),
    (["--costs=-1/0"], "give LAMBDA or LAMBDA/A"),
    (["--thresholds", "0.5,1.5"], "thresholds are in [0, 1]"),
    (["--thresholds", "0.9:0.5:0.1"], "START:STOP:STEP"),
])
def test_bad_candidate_options_are_usage_errors(
    option: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["policy", "simulate", "--records", "r.jsonl", *option])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_thresholds_may_be_a_range() -> None:
    from proxy.analysis.policy_simulate import parse_thresholds

    assert parse_thresholds("0.5:0.7:0.1") == [0.5, 0.6, 0.7]
    assert parse_thresholds("0.2,0.4") == [0.2, 0.4]
