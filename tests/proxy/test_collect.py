"""``basguard collect`` against the fake upstream, then ``calibrate fit`` on what it wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from proxy.cli import main
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
    assert "wrote 6 records" in capsys.readouterr().out
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
