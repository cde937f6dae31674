"""``basguard collect`` against the fake upstream, then ``calibrate fit`` on what it wrote."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
import yaml

from policies.loader import PolicyError
from proxy.cli.main import main
from proxy.runtime.state import build_runtime
from proxy.tools.collect import CHOICE_PROMPT, read_questions
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import gateway_config


def question(qid: str, content: str, answers: list[str], **fake: object) -> str:
    text = json.dumps({"fake": {"content": content, "logprobs": [-0.2, -0.4], **fake}})
    return json.dumps({"id": qid, "question": text, "answers": answers})


@pytest.fixture
def config(fake_upstream: tuple[FakeUpstream, str], tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-x")
    path = tmp_path / "basguard.yaml"
    path.write_text(yaml.safe_dump(gateway_config(fake_upstream[1])))
    return path


def test_collect_writes_graded_records_with_gateway_features(
    config: Path, tmp_path: Path, upstream: FakeUpstream, capsys: pytest.CaptureFixture[str]
) -> None:
    questions = tmp_path / "q.jsonl"
    lines = [question(f"q{i}", "Paris" if i % 2 else "Lyon", ["Paris"],
                      logprobs=[-0.2 - 0.01 * i, -0.4]) for i in range(40)]
    lines.append(question("silent", "Paris", ["Paris"], omit_logprobs=True))
    questions.write_text("\n".join(lines) + "\n")
    out = tmp_path / "records.jsonl"
    assert main(["collect", "--config", str(config), "--questions", str(questions),
                 "--out", str(out), "--model", "fake", "--concurrency", "4"]) == 0
    assert capsys.readouterr().out == (
        f"wrote 40 records to {out}, 50.0% correct (1 answer without confidence features skipped)\n")
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["correct"] for r in records] == [i % 2 for i in range(40)]
    assert {"token_prob", "min_token_prob", "mean_topk_margin", "token_count"} <= set(records[0])
    assert records[0]["group"] == "q0"
    assert not list(tmp_path.glob("*.partial"))
    # Alternatives were requested for the top-k features though no calibrator reads them.
    assert upstream.received[0]["body"]["top_logprobs"] == 5

    artifact = tmp_path / "cal.json"
    assert main(["calibrate", "fit", str(out), "--score", "token_prob", "--label", "correct",
                 "--group", "group", "--method", "platt", "-o", str(artifact)]) == 0
    assert artifact.exists()


def test_the_readme_fit_on_twenty_records_is_refused(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Collect 20 answers, fit on four scores: too little data, exit 2, no calibrator."""
    questions = tmp_path / "q.jsonl"
    questions.write_text("\n".join(
        question(f"q{i}", "Paris" if i % 5 == 0 else "Lyon", ["Paris"],
                 logprobs=[-0.1 * (i % 7 + 1), -0.3]) for i in range(20)) + "\n")
    out = tmp_path / "records.jsonl"
    assert main(["collect", "--config", str(config), "--questions", str(questions),
                 "--out", str(out), "--model", "fake"]) == 0
    capsys.readouterr()
    artifact = tmp_path / "cal.json"
    status = main(["calibrate", "fit", str(out), "--score", "token_prob", "--score",
                   "min_token_prob", "--score", "mean_topk_margin", "--score", "token_count:real",
                   "--label", "correct", "--group", "group", "-o", str(artifact)])
    captured = capsys.readouterr()
    assert status == 2
    assert captured.err == (
        f"basguard: error: {out}: too little labelled data to fit a calibrator: 20 labelled "
        "rows (at least 30 needed); 4 groups with a correct answer (at least 5 needed). Needed: "
        "10 more labelled rows, 1 more groups (questions) with a correct answer. Collect or "
        "label more answers and fit again\n")
    assert not artifact.exists()


def test_bad_question_file_names_the_line(config: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"question": "What?", "answers": ["x"]}\n{"question": "Who?"}\n')
    status = main(["collect", "--config", str(config), "--questions", str(questions),
                   "--out", str(tmp_path / "r.jsonl")])
    assert status == 2
    assert f"{questions}:2: 'answers' must be a non-empty list" in capsys.readouterr().err
    assert not (tmp_path / "r.jsonl").exists()


QUESTION_SETS = Path(__file__).resolve().parents[2] / "data" / "questions"


@pytest.mark.parametrize(
    ("name", "rows", "multiple_choice"),
    [("triviaqa", 10_000, False), ("clinical-knowledge", 265, True),
     ("college-biology", 144, True), ("college-cs", 100, True)],
)
def test_the_shipped_question_sets_read_whole(name: str, rows: int,
                                              multiple_choice: bool) -> None:
    questions = list(read_questions(QUESTION_SETS / f"{name}.csv"))
    assert len(questions) == rows
    assert len({q.id for q in questions}) == rows
    if multiple_choice:
        # Every MMLU question lists options a) to d) and its answer is one of their letters.
        assert all(sorted(q.options) == ["a", "b", "c", "d"] and q.answers[0] in q.options
                   for q in questions)
    else:
        assert not any(q.options for q in questions)
        assert questions[1].answers == ("william shatner",)
        assert questions[1].is_correct("It was William Shatner.")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("id,text,answer\n1,What?,x\n", ":1: the header needs a 'question' (or 'prompt')"),
        ("ID,prompt,Answer\n1,What?,x\n2,Who?,\n", ":3: empty question or answer"),
        ('ID,prompt,Answer\n1,"What is\nthis?",x\n2,Who?,y,extra\n', ":4: 4 fields, the header"),
        ('ID,prompt,Answer\n1,"never closed,x\n', ":2: malformed CSV"),
    ],
    ids=["no-question-column", "empty-answer", "extra-field", "unclosed-quote"],
)
def test_bad_csv_question_files_name_the_line(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, error: str
) -> None:
    questions = tmp_path / "q.csv"
    questions.write_text(text)
    status = main(["collect", "--config", str(config), "--questions", str(questions),
                   "--out", str(tmp_path / "r.jsonl")])
    assert status == 2
    assert f"{questions}{error}" in capsys.readouterr().err
    assert not (tmp_path / "r.jsonl").exists()


def test_collect_grades_multiple_choice_by_letter_and_honours_limit(
    config: Path, tmp_path: Path, upstream: FakeUpstream
) -> None:
    def row(qid: int, reply: str, answer: str) -> list[object]:
        directive = json.dumps({"fake": {"content": reply, "logprobs": [-0.3, -0.1]}})
        return [qid, f"{directive}\na) 18 gauge\nb) 20 gauge\nc) 22 gauge", answer]

    questions = tmp_path / "mmlu.csv"
    with questions.open("w", newline="") as handle:
        csv.writer(handle).writerows([
            ["ID", "prompt", "Answer"], row(1, "b) 20 gauge", "b"), row(2, "22 gauge", "c"),
            row(3, "a", "b"), row(4, "never asked", "a"),
        ])
    out = tmp_path / "records.jsonl"
    assert main(["collect", "--config", str(config), "--questions", str(questions),
                 "--out", str(out), "--model", "fake", "--limit", "3"]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["id"], r["correct"]) for r in records] == [("1", 1), ("2", 1), ("3", 0)]
    assert len(upstream.received) == 3
    system = upstream.received[0]["body"]["messages"][0]
    assert system == {"role": "system", "content": CHOICE_PROMPT}


def test_collect_limit_must_be_positive(config: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["collect", "--config", str(config), "--questions", "q.csv", "--out", "r.jsonl",
              "--limit", "0"])
    assert exit_info.value.code == 2
    assert "--limit: must be at least 1, not 0" in capsys.readouterr().err


def test_collect_keeps_the_questions_order_with_several_in_flight(
    config: Path, tmp_path: Path, upstream: FakeUpstream
) -> None:
    questions = tmp_path / "q.jsonl"
    # Earlier questions take longer, so they finish after later ones.
    questions.write_text("\n".join(
        question(f"q{i}", "Paris" if i % 3 else "Lyon", ["Paris"], delay=0.4 - 0.04 * i)
        for i in range(9)) + "\n")
    out = tmp_path / "records.jsonl"
    assert main(["collect", "--config", str(config), "--questions", str(questions),
                 "--out", str(out), "--model", "fake", "--concurrency", "3"]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == [f"q{i}" for i in range(9)]
    assert [r["correct"] for r in records] == [int(bool(i % 3)) for i in range(9)]
    assert upstream.most_delaying == 3  # never more than asked for, and that many at once


def collect(config: Path, tmp_path: Path, lines: list[str], *options: str) -> tuple[int, Path]:
    questions = tmp_path / "q.jsonl"
    questions.write_text("\n".join(lines) + "\n")
    out = tmp_path / "records.jsonl"
    status = main(["collect", "--config", str(config), "--questions", str(questions),
                   "--out", str(out), "--model", "fake", *options])
    return status, out


def test_a_failed_or_timed_out_question_is_counted_and_the_run_goes_on(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The fake model's timeout_seconds is 2: q2 times out, q1 fails outright.
    status, out = collect(config, tmp_path, [
        question("q0", "Paris", ["Paris"], delay=0.2),
        question("q1", "Paris", ["Paris"], status=500),
        question("q2", "Paris", ["Paris"], delay=5),
        question("q3", "Lyon", ["Paris"]),
    ], "--concurrency", "2")
    captured = capsys.readouterr()
    assert status == 0, captured.err
    failed = out.with_name("records.jsonl.failed.jsonl")
    assert captured.out == (
        f"wrote 2 records to {out}, 50.0% correct\n"
        f"2 questions failed (listed in {failed}; retry them with --questions {failed})\n")
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["q0", "q3"]
    listed = [json.loads(line) for line in failed.read_text().splitlines()]
    assert [item["id"] for item in listed] == ["q1", "q2"]
    assert "500" in listed[0]["error"] and "did not answer within 2 s" in listed[1]["error"], listed
    # The list is a questions file: the same questions, graded the same way.
    assert [(q.id, q.answers) for q in read_questions(failed)] == [
        ("q1", ("Paris",)), ("q2", ("Paris",))]
    assert not list(tmp_path.glob("*.partial"))


def test_retries_recover_a_transient_failure(
    config: Path, tmp_path: Path, upstream: FakeUpstream, capsys: pytest.CaptureFixture[str]
) -> None:
    flaky = question("q0", "Paris", ["Paris"], fail_first=2, fail_status=503)
    status, out = collect(config, tmp_path, [flaky], "--retries", "2")
    assert status == 0
    assert capsys.readouterr().out == f"wrote 1 records to {out}, 100.0% correct\n"
    assert len(upstream.received) == 3
    assert not out.with_name("records.jsonl.failed.jsonl").exists()


def test_a_client_error_is_not_retried(
    config: Path, tmp_path: Path, upstream: FakeUpstream, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _ = collect(config, tmp_path, [question("q0", "Paris", ["Paris"], status=400),
                                           question("q1", "Paris", ["Paris"])],
                        "--retries", "3")
    assert status == 0
    assert "1 question failed" in capsys.readouterr().out
    assert len(upstream.received) == 2  # one try for the 400, one for q1


def test_every_question_failing_still_writes_the_records_file_and_exits_1(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out = collect(config, tmp_path, [question("q0", "Paris", ["Paris"], status=502)])
    assert status == 1
    assert capsys.readouterr().out.startswith(f"wrote 0 records to {out}\n1 question failed")
    assert out.read_text() == ""


def test_collect_needs_no_tenant_keys(
    fake_upstream: tuple[FakeUpstream, str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("BASGUARD_TEST_UNSET_TENANT_KEY", raising=False)
    settings = gateway_config(fake_upstream[1])
    settings["tenants"]["enforcer"]["api_keys"] = [{"env": "BASGUARD_TEST_UNSET_TENANT_KEY"}]
    del settings["models"]["keyed"], settings["models"]["via-litellm"]  # they need a model key
    config = tmp_path / "basguard.yaml"
    config.write_text(yaml.safe_dump(settings))
    status, out = collect(config, tmp_path, [question("q0", "Paris", ["Paris"])])
    assert status == 0, capsys.readouterr().err
    assert out.read_text().count("\n") == 1
    # serve still insists on it.
    with pytest.raises(PolicyError, match="BASGUARD_TEST_UNSET_TENANT_KEY is not set"):
        build_runtime(config)


def test_collect_records_every_enabled_signals_features_and_fit_reads_their_kinds(
    fake_upstream: tuple[FakeUpstream, str], tmp_path: Path, upstream: FakeUpstream,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-x")
    config = gateway_config(fake_upstream[1])
    config["tenants"]["sampler"] = {
        "api_keys": [{"env": "SAMPLER_KEY_NOT_SET"}], "risk": {"threshold": 0.5},
        "confidence": {"signals": ["consistency"], "consistency": {"samples": 3},
                       "timeout_seconds": 1}}
    path = tmp_path / "basguard.yaml"
    path.write_text(yaml.safe_dump(config))
    questions = tmp_path / "q.jsonl"
    # A provider without logprobs; the samples answer Paris or Lyon, seeded per question.
    lines = [question(f"q{i}", "Paris" if i % 2 else "Lyon", ["Paris"], omit_logprobs=True,
                      sample_answers=["Paris", "Lyon"], sample_seed=i) for i in range(30)]
    questions.write_text("\n".join(lines) + "\n")
    out = tmp_path / "records.jsonl"
    assert main(["collect", "--config", str(path), "--questions", str(questions),
                 "--out", str(out), "--model", "fake", "--tenant", "sampler"]) == 0
    assert capsys.readouterr().out.startswith(f"wrote 30 records to {out}")
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert {"agreement", "distinct_answers", "sample_similarity"} <= set(records[0])
    assert "token_prob" not in records[0]
    # The main requests asked for no logprobs (only the samples do, for sample_token_prob,
    # which collect records when the provider gives them).
    mains = [r["body"] for r in upstream.received if not r["body"].get("temperature")]
    assert len(mains) == 30 and not any("logprobs" in body for body in mains)
    assert len(upstream.received) == 30 * 4
    for i, record in enumerate(records):
        answer = "Paris" if i % 2 else "Lyon"
        drawn = [random.Random(f"{i}:{k}").choice(["Paris", "Lyon"]) for k in range(3)]
        assert record["agreement"] == pytest.approx(drawn.count(answer) / 3)
        assert record["distinct_answers"] == len({answer, *drawn})
        # What the signals cost is recorded with the features: the three samples, each timed.
        costs = record["signal_costs"]
        assert costs["extra_calls"] == 3 and costs["seconds"] >= 0
        assert [c["signal"] for c in costs["calls"]] == ["consistency"] * 3
        assert all(c["result"] == "ok" and c["seconds"] > 0 for c in costs["calls"])

    # distinct_answers is a count: the registry's kind, not the probability a bare name means.
    artifact = tmp_path / "cal.json"
    assert main(["calibrate", "fit", str(out), "--score", "agreement",
                 "--score", "distinct_answers", "--label", "correct", "--group", "group",
                 "--method", "logistic", "-o", str(artifact)]) == 0, capsys.readouterr().err
    fitted = json.loads(artifact.read_text())
    assert "distinct_answers" in json.dumps(fitted) and '"real"' in json.dumps(fitted)


def test_collect_offset_takes_a_multiline_csv_in_parts(
    config: Path, tmp_path: Path, upstream: FakeUpstream
) -> None:
    """``--offset`` counts questions, not lines: each prompt here spans four lines."""
    import subprocess
    import sys

    questions = tmp_path / "mmlu.csv"
    with questions.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ID", "prompt", "Answer"])
        for qid in range(1, 6):
            directive = json.dumps({"fake": {"content": "b", "logprobs": [-0.1 * qid]}})
            writer.writerow([qid, f"{directive}\na) one\nb) two\nc) three", "b"])

    def collect(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "proxy.cli", "collect", "--config", str(config),
             "--questions", str(questions), "--out", str(out), "--model", "fake", *extra],
            capture_output=True, text=True, timeout=120, check=False)

    parts = []
    for offset in (0, 2, 4):
        out = tmp_path / f"part{offset}.jsonl"
        done = collect(out, "--offset", str(offset), "--limit", "2")
        assert done.returncode == 0, done.stderr
        parts.append([json.loads(line)["id"] for line in out.read_text().splitlines()])
    assert parts == [["1", "2"], ["3", "4"], ["5"]]
    assert len(upstream.received) == 5
    beyond = collect(tmp_path / "none.jsonl", "--offset", "5")
    assert beyond.returncode == 2
    assert beyond.stderr == (f"basguard: error: --offset 5 skips every question of {questions} "
                             "(it has 5)\n")
    assert not (tmp_path / "none.jsonl").exists()
