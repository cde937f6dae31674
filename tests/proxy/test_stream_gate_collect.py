"""The prefix calibration workflow: collect prefix features, fit a prefix calibrator, serve it."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import yaml

from calibrators.artifact import load_artifact
from proxy.cli.main import main
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import SDK, gateway_config, serve_gateway

GATED_KEY = "key-gated-0123456789abcdef"


def question(qid: str, content: str, logprobs: list[float]) -> str:
    text = json.dumps({"fake": {"content": content, "logprobs": logprobs}})
    return json.dumps({"id": qid, "question": text, "answers": ["Paris"]})


@pytest.fixture
def config(fake_upstream: tuple[FakeUpstream, str], tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-x")
    path = tmp_path / "basguard.yaml"
    path.write_text(yaml.safe_dump(gateway_config(fake_upstream[1])))
    return path


def collect(config: Path, tmp_path: Path, *extra: str) -> list[dict[str, float]]:
    # Right answers start sure and wander; wrong ones start unsure: the first tokens tell.
    questions = tmp_path / "q.jsonl"
    questions.write_text("\n".join(
        question(f"q{i}", "Paris is it" if i % 2 else "Lyon is it",
                 [-0.05 - 0.01 * (i % 5), -0.1, -2.0, -2.0] if i % 2
                 else [-1.5 - 0.05 * (i % 7), -0.6, -0.1, -0.1])
        for i in range(60)) + "\n")
    out = tmp_path / "records.jsonl"
    assert main(["collect", "--config", str(config), "--questions", str(questions),
                 "--out", str(out), "--model", "fake", "--concurrency", "4", *extra]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_collect_records_prefix_features_next_to_the_full_answers(
    config: Path, tmp_path: Path, upstream: FakeUpstream, capsys: pytest.CaptureFixture[str]
) -> None:
    records = collect(config, tmp_path, "--prefix-tokens", "8,1,2")
    first = records[1]  # "Paris is it": 4 tokens
    assert first["token_prob@1"] == pytest.approx(math.exp(-0.06))
    assert first["token_prob@2"] == pytest.approx(math.exp((-0.06 - 0.1) / 2))
    assert first["token_count@2"] == 2.0
    # K past the answer's end: the whole answer, as the gate decides a short answer.
    assert {k: first[f"{k}@8"] for k in ("token_prob", "min_token_prob", "token_count")} == {
        k: first[k] for k in ("token_prob", "min_token_prob", "token_count")}
    assert "mean_topk_margin@2" in first and "token_prob@4" not in first
    # Asking for the answer's logprobs did not change the upstream request's alternatives.
    assert {r["body"]["top_logprobs"] for r in upstream.received} == {5}


def test_without_prefix_tokens_the_records_are_as_before(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = collect(config, tmp_path)
    assert not any("@" in name for name in records[0])


def test_fit_prefix_reads_the_prefix_features_and_the_gate_serves_them(
    config: Path, tmp_path: Path, fake_upstream: tuple[FakeUpstream, str], sdk_client: SDK,
    capsys: pytest.CaptureFixture[str],
) -> None:
    collect(config, tmp_path, "--prefix-tokens", "1,2")
    artifact = tmp_path / "prefix2.json"
    assert main(["calibrate", "fit", str(tmp_path / "records.jsonl"), "--prefix", "2",
                 "--score", "token_prob", "--score", "token_count", "--label", "correct",
                 "--group", "group", "--method", "platt", "-o", str(artifact)]) == 0
    fitted = load_artifact(artifact)
    assert fitted.feature_names == ("token_prob@2",)  # the better one, out of fold
    # Offered as the prefix features, with the registry's kind of each (a count is real).
    assert fitted.training is not None
    assert fitted.training.scores == ["token_prob@2:prob", "token_count@2:real"]

    gateway = gateway_config(fake_upstream[1])
    gateway["tenants"]["gated"] = {
        "api_keys": [{"sha256": hashlib.sha256(GATED_KEY.encode()).hexdigest()}],
        "risk": {"threshold": 0.5}, "abstention_message": "I won't guess.",
        "stream_gate": {"decide_after_tokens": 2, "calibrator": str(artifact)}}
    (tmp_path / "serve").mkdir()
    with serve_gateway(tmp_path / "serve", gateway) as url:
        client = sdk_client(f"{url}/v1", GATED_KEY)

        def streamed(content: str, logprobs: list[float]) -> str:
            message = json.dumps({"fake": {"content": content, "logprobs": logprobs,
                                           "pad_tokens": 5}})
            return "".join(chunk.choices[0].delta.content or "" for chunk in
                           client.chat.completions.create(
                               model="fake", stream=True,
                               messages=[{"role": "user", "content": message}])
                           if chunk.choices)

        assert streamed("Paris is it", [-0.05, -0.1, -2.0, -2.0]) == "Paris is it" + " x" * 5
        assert streamed("Lyon is it", [-1.6, -0.6, -0.1, -0.1]) == "I won't guess."


def test_prefix_of_a_prefix_feature_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text('{"token_prob@2": 0.5, "correct": 1}\n')
    status = main(["calibrate", "fit", str(data), "--prefix", "2", "--score", "token_prob@2",
                   "--label", "correct", "-o", str(tmp_path / "a.json")])
    assert status == 2
    assert "give the full-answer names (--score token_prob), not token_prob@2" in (
        capsys.readouterr().err)


@pytest.mark.parametrize(("command", "value"), [
    (["collect", "--config", "c", "--questions", "q", "--out", "o", "--prefix-tokens"], "0,4"),
    (["collect", "--config", "c", "--questions", "q", "--out", "o", "--prefix-tokens"], "a"),
    (["calibrate", "fit", "d", "--score", "token_prob", "--label", "c", "-o", "o", "--prefix"],
     "0"),
])
def test_token_counts_must_be_positive(
    command: list[str], value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as raised:
        main([*command, value])
    assert raised.value.code == 2
    assert "at least 1" in capsys.readouterr().err
