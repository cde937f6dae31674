"""``basguard collect`` against the fake upstream, then ``calibrate fit`` on what it wrote."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from proxy.cli import main
from proxy.collect import CHOICE_PROMPT, read_questions
from tests.proxy.conftest import gateway_config
from tests.proxy.fake_upstream import FakeUpstream


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
    lines = [question(f"q{i}", "Paris" if i % 2 else "Lyon", ["Paris"]) for i in range(6)]
    lines.append(question("silent", "Paris", ["Paris"], omit_logprobs=True))
    questions.write_text("\n".join(lines) + "\n")
    out = tmp_path / "records.jsonl"
    assert main(["collect", "--config", str(config), "--questions", str(questions),
                 "--out", str(out), "--model", "fake"]) == 0
    assert capsys.readouterr().out.startswith(
        f"wrote 6 records to {out}, 50.0% correct (1 answer without logprobs skipped)")
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["correct"] for r in records] == [0, 1, 0, 1, 0, 1]
    assert {"token_prob", "min_token_prob", "mean_topk_margin", "token_count"} <= set(records[0])
    assert records[0]["group"] == "q0"
    assert not list(tmp_path.glob("*.partial"))
    # Alternatives were requested for the top-k features though no calibrator reads them.
    assert upstream.received[0]["body"]["top_logprobs"] == 5

    artifact = tmp_path / "cal.json"
    assert main(["calibrate", "fit", str(out), "--score", "token_prob", "--label", "correct",
                 "--group", "group", "--method", "platt", "--folds", "2",
                 "-o", str(artifact)]) == 0
    assert artifact.exists()


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


def test_a_failed_collect_leaves_no_file(config: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    questions = tmp_path / "q.jsonl"
    questions.write_text("\n".join([question("q0", "Paris", ["Paris"], delay=0.2),
                                    question("q1", "Paris", ["Paris"], status=500),
                                    question("q2", "Paris", ["Paris"], delay=0.2)]) + "\n")
    out = tmp_path / "records.jsonl"
    status = main(["collect", "--config", str(config), "--questions", str(questions),
                   "--out", str(out), "--model", "fake", "--concurrency", "2"])
    assert status == 2
    error = capsys.readouterr().err
    assert error.startswith("basguard: error: the upstream") and "500" in error, error
    assert list(tmp_path.glob("records.jsonl*")) == []
