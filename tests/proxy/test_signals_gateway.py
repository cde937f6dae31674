"""Confidence signals end to end: the openai SDK -> basguard -> the fake upstream, over loopback.

The gateway fronts a model that returns no logprobs (``omit_logprobs``), with the issue's
example config; the fake draws the consistency samples from a seeded RNG (``sample_answers``),
so the expected agreement is computed here from the same seed.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import SDK, serve_gateway
from tests.support.waiting import wait_until

CLAUDE_APP_KEY = "key-claude-app-0123456789abcdef"
KEYS = {
    "annotating": "key-annotating-0123456789abcdef",
    "quick": "key-quick-0123456789abcdef",
    "verbal": "key-verbal-0123456789abcdef",
    "judged": "key-judged-0123456789abcdef",
    "both": "key-both-0123456789abcdef",
}
QUESTION = "What is the capital of France?"
BALANCED_THRESHOLD = 0.6333


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _config(upstream_url: str) -> dict[str, Any]:
    def tenant(name: str, **policy: Any) -> dict[str, Any]:
        return {"api_keys": [{"sha256": _digest(KEYS[name])}], "risk": {"profile": "balanced"},
                **policy}

    return {
        "version": 1,
        "models": {"claude": {"base_url": f"{upstream_url}/v1", "model": "fake-model",
                              "timeout_seconds": 20}},
        "tenants": {
            # The issue's example, as written.
            "claude-app": {
                "api_keys": [{"env": "CLAUDE_APP_KEY"}],
                "risk": {"profile": "balanced"},
                "confidence": {"signals": ["consistency"],
                               "consistency": {"samples": 5, "temperature": 1.0}},
            },
            "annotating": tenant("annotating", mode="annotate", confidence={
                "signals": ["consistency"], "consistency": {"samples": 5, "temperature": 1.0}}),
            # Failure paths: short signal timeouts, and missing confidence answers.
            "quick": tenant("quick", on_missing_confidence="answer", confidence={
                "signals": ["consistency"], "consistency": {"samples": 3},
                "timeout_seconds": 1}),
            "verbal": tenant("verbal", on_missing_confidence="answer", confidence={
                "signals": ["verbalized"], "timeout_seconds": 1}),
            "judged": tenant("judged", on_missing_confidence="answer", confidence={
                "signals": ["judge"], "judge": {"model": "claude"}, "timeout_seconds": 1}),
            # A calibrator fitted on token_prob and agreement: both signals run.
            "both": tenant("both", on_missing_confidence="answer",
                           calibrators={"default": "both.json"},
                           confidence={"signals": ["logprobs", "consistency"]}),
        },
    }


@pytest.fixture(scope="module")
def gateway(
    fake_upstream: tuple[FakeUpstream, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """basguard with the signal tenants; yields its base URL and its store's directory."""
    directory = tmp_path_factory.mktemp("signals")
    _fit_both(directory)
    mp = pytest.MonkeyPatch()
    mp.setenv("CLAUDE_APP_KEY", CLAUDE_APP_KEY)
    try:
        with serve_gateway(directory, _config(fake_upstream[1])) as url:
            yield url, directory
    finally:
        mp.undo()


def _fit_both(directory: Path) -> None:
    """A logistic calibrator on token_prob and agreement, fitted on made-up records."""
    from proxy.cli.main import main

    rng = random.Random(0)
    records = directory / "both.jsonl"
    with records.open("w") as handle:
        for i in range(200):
            token_prob, agreement = rng.random(), rng.choice([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
            correct = rng.random() < (token_prob + agreement) / 2
            handle.write(json.dumps({"id": str(i), "token_prob": token_prob,
                                     "agreement": agreement, "correct": int(correct)}) + "\n")
    assert main(["calibrate", "fit", str(records), "--score", "token_prob", "--score",
                 "agreement", "--label", "correct", "--method", "logistic",
                 "-o", str(directory / "both.json")]) == 0


@pytest.fixture
def client(gateway: tuple[str, Path], sdk_client: SDK) -> Callable[[str], openai.OpenAI]:
    return lambda tenant: sdk_client(f"{gateway[0]}/v1", KEYS.get(tenant, CLAUDE_APP_KEY))


def messages(user: str = QUESTION, **fake: Any) -> list[dict[str, str]]:
    """The fake's script in a system message, so the question does not quote the answers."""
    return [{"role": "system", "content": json.dumps({"fake": fake})},
            {"role": "user", "content": user}]


def followup(**fake: Any) -> str:
    """A question whose follow-up calls (verbalized, judge) the fake serves with ``fake``."""
    return json.dumps({"fake": {"followup": fake}}) + "\n" + QUESTION


def seeded_agreement(answer: str, answers: list[str], seed: int, k: int) -> float:
    """The agreement the fake's seeded samples give (see fake_upstream's ``sample_answers``)."""
    drawn = [random.Random(f"{seed}:{i}").choice(answers) for i in range(k)]
    return drawn.count(answer) / k


def decision_of(response: Any) -> dict[str, Any]:
    return (response.model_extra or {})["basguard"]


def metric(base_url: str, name: str, labels: str = "") -> float:
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    found = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def stored_signal_calls(directory: Path, decision_id: str) -> dict[str, Any]:
    """The decision's signal_calls column, once the store's writer has committed it."""

    def row() -> tuple[str] | None:
        with sqlite3.connect(directory / "decisions.sqlite3") as db:
            found: tuple[str] | None = db.execute(
                "SELECT signal_calls FROM decisions WHERE id = ? AND choice = 0",
                (decision_id,)).fetchone()
        return found

    stored = wait_until(row, what=f"decision {decision_id} to reach the store")
    calls: dict[str, Any] = json.loads(stored[0])
    return calls


@pytest.mark.parametrize(("answers", "seed"), [(["Paris", "Paris", "Lyon"], 7),
                                               (["Paris", "Lyon", "Marseille"], 3)])
def test_the_issues_example_gives_a_confidence_without_logprobs(
    client: Callable[[str], openai.OpenAI], upstream: FakeUpstream,
    gateway: tuple[str, Path], answers: list[str], seed: int,
) -> None:
    base_url, directory = gateway
    calls_before = metric(base_url, "basguard_signal_calls_total",
                          '{result="ok",signal="consistency"}')
    tokens_before = metric(base_url, "basguard_signal_extra_tokens_count")
    seconds_before = metric(base_url, "basguard_signal_call_seconds_count",
                            '{signal="consistency"}')
    response = client("claude-app").chat.completions.create(
        model="claude", messages=messages(content="Paris", omit_logprobs=True,
                                          sample_answers=answers, sample_seed=seed))
    decision = decision_of(response)
    expected = seeded_agreement("Paris", answers, seed, 5)
    assert decision["confidence"] == pytest.approx(expected, abs=1e-5)
    assert decision["decision"] == ("answer" if expected >= BALANCED_THRESHOLD else "abstain")
    if decision["decision"] == "answer":
        assert response.choices[0].message.content == "Paris"
    # The costs, in the basguard object.
    signals = decision["signals"]
    assert signals["extra_calls"] == 5
    assert [c["signal"] for c in signals["calls"]] == ["consistency"] * 5
    assert {c["result"] for c in signals["calls"]} == {"ok"}
    assert {c["model"] for c in signals["calls"]} == {"claude"}
    assert signals["extra_tokens"] == sum(
        c["prompt_tokens"] + c["completion_tokens"] for c in signals["calls"]) > 0
    # The main request asked for no logprobs (the provider has none); five samples at T = 1.
    main = [r["body"] for r in upstream.received if "temperature" not in r["body"]]
    samples = [r["body"] for r in upstream.received if r["body"].get("temperature") == 1.0]
    assert len(main) == 1 and "logprobs" not in main[0]
    assert len(samples) == 5
    # ... in the store, and in the metrics.
    assert stored_signal_calls(directory, decision["id"]) == signals
    assert metric(base_url, "basguard_signal_calls_total",
                  '{result="ok",signal="consistency"}') == calls_before + 5
    assert metric(base_url, "basguard_signal_extra_tokens_count") == tokens_before + 1
    assert metric(base_url, "basguard_signal_call_seconds_count",
                  '{signal="consistency"}') == seconds_before + 5


def test_verbalized_and_judge_give_their_confidence(
    client: Callable[[str], openai.OpenAI], upstream: FakeUpstream,
) -> None:
    verbal = client("verbal").chat.completions.create(
        model="claude", messages=messages(followup(content="85%"), content="Paris",
                                          omit_logprobs=True))
    assert decision_of(verbal)["confidence"] == pytest.approx(0.85)
    assert decision_of(verbal)["signals"]["extra_calls"] == 1
    judged = client("judged").chat.completions.create(
        model="claude", messages=messages(followup(content="False"), content="Paris",
                                          omit_logprobs=True))
    # The judge is asked for logprobs and reads P(True) off its first token ("False" here).
    decision = decision_of(judged)
    assert decision["confidence"] is not None and decision["confidence"] < 0.5
    assert decision["decision"] == "abstain"
    assert decision["signals"]["calls"][0]["signal"] == "judge"


FAILURES = [
    ("quick", {"sample_delay": 3}, QUESTION, "consistency", "timeout"),
    ("quick", {"sample_status": 500}, QUESTION, "consistency", "error"),
    ("quick", {"sample_garbage": True}, QUESTION, "consistency", "garbage"),
    ("verbal", {}, followup(content="no idea at all"), "verbalized", "garbage"),
    ("verbal", {}, followup(status=500), "verbalized", "error"),
    ("verbal", {}, followup(delay=3), "verbalized", "timeout"),
    ("judged", {}, followup(status=503), "judge", "error"),
    ("judged", {}, followup(delay=3), "judge", "timeout"),
]


@pytest.mark.parametrize(("tenant", "fake", "user", "signal", "result"), FAILURES)
def test_a_failing_signal_leaves_confidence_missing_and_the_policy_decides(
    client: Callable[[str], openai.OpenAI], upstream: FakeUpstream, gateway: tuple[str, Path],
    tenant: str, fake: dict[str, Any], user: str, signal: str, result: str,
) -> None:
    before = metric(gateway[0], "basguard_signal_calls_total",
                    f'{{result="{result}",signal="{signal}"}}')
    response = client(tenant).chat.completions.create(
        model="claude", messages=messages(user, content="Paris", omit_logprobs=True, **fake))
    # Never a 5xx: on_missing_confidence (answer, for these tenants) decides.
    assert response.choices[0].message.content == "Paris"
    decision = decision_of(response)
    assert decision["confidence"] is None
    assert decision["decision"] == "answer"
    reason = decision["choices"][0]["reason"]
    assert reason.startswith("missing confidence features") and signal in reason
    assert result in {c["result"] for c in decision["signals"]["calls"]}
    assert metric(gateway[0], "basguard_signal_calls_total",
                  f'{{result="{result}",signal="{signal}"}}') > before


def test_a_failing_signal_abstains_under_the_default_policy(
    client: Callable[[str], openai.OpenAI], upstream: FakeUpstream,
) -> None:
    response = client("claude-app").chat.completions.create(
        model="claude", messages=messages(content="Paris", omit_logprobs=True, sample_status=500))
    decision = decision_of(response)
    assert decision["decision"] == "abstain" and decision["confidence"] is None
    assert response.choices[0].message.content != "Paris"
    assert decision["signals"]["extra_calls"] == 5


def test_samples_start_with_the_main_request(
    client: Callable[[str], openai.OpenAI], upstream: FakeUpstream,
) -> None:
    # Every request (main and samples) waits 1 s: run concurrently, they overlap.
    started = time.monotonic()
    client("claude-app").chat.completions.create(
        model="claude", messages=messages(content="Paris", omit_logprobs=True, delay=1,
                                          sample_answers=["Paris"]))
    assert upstream.most_delaying == 6, "the 5 samples and the main request were not in flight"
    assert time.monotonic() - started < 30


# Seed 8 draws Paris 4 times of 5 (answer), seed 2 once (abstain).
@pytest.mark.parametrize("seed", [8, 2])
@pytest.mark.parametrize("include_usage", [False, True])
@pytest.mark.parametrize("tenant", ["claude-app", "annotating"])
def test_streams_carry_the_consistency_decision_on_the_last_chunk(
    client: Callable[[str], openai.OpenAI], upstream: FakeUpstream, tenant: str,
    include_usage: bool, seed: int,
) -> None:
    answers = ["Paris", "Lyon"]
    stream = client(tenant).chat.completions.create(
        model="claude", stream=True,
        stream_options={"include_usage": True} if include_usage else None,
        messages=messages(content="Paris is the capital", omit_logprobs=True,
                          sample_answers=answers, sample_seed=seed))
    chunks = list(stream)
    carrying = [c for c in chunks if "basguard" in (c.model_extra or {})]
    # With usage, the decision also rides on the chunk with the finish_reason (clients that
    # drop the `choices: []` chunk still get it).
    assert carrying == ([chunks[-2], chunks[-1]] if include_usage else [chunks[-1]])
    last = chunks[-1]
    if include_usage:
        assert last.choices == [] and last.usage is not None
    else:
        assert last.choices[0].finish_reason is not None
    decision = decision_of(last)
    # "Paris is the capital" agrees with the "Paris" samples.
    expected = seeded_agreement("Paris", answers, seed, 5)
    assert decision["confidence"] == pytest.approx(expected, abs=1e-5)
    assert decision["signals"]["extra_calls"] == 5
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    answered = decision["decision"] == "answer"
    assert answered == (seed == 8)
    if tenant == "annotating" or answered:
        assert text == "Paris is the capital"
    else:
        assert text != "Paris is the capital"


def test_a_failed_main_request_cancels_the_samples_in_flight(
    client: Callable[[str], openai.OpenAI], upstream: FakeUpstream,
) -> None:
    # The samples would wait 30 s (the signal's own timeout is 10 s); the main request fails
    # after 1 s, when the samples are waiting at the upstream.
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        client("claude-app").chat.completions.create(
            model="claude", messages=messages(content="Paris", omit_logprobs=True, status=500,
                                              delay=1, sample_delay=30))
    assert caught.value.status_code == 502  # the upstream's failure, as without signals
    wait_until(lambda: len(upstream.disconnected) >= 5, what="the 5 samples dropped",
               output=lambda: repr(upstream.disconnected))
    # Dropped with the failed request, not when their own 10 s timeout ran out.
    assert time.monotonic() - started < 8


def test_legacy_completions_run_the_signals_too(
    client: Callable[[str], openai.OpenAI], upstream: FakeUpstream,
) -> None:
    answers, seed = ["Paris", "Lyon"], 8
    prompt = json.dumps({"fake": {"content": "Paris", "omit_logprobs": True,
                                  "sample_answers": answers, "sample_seed": seed}})
    response = client("claude-app").completions.create(model="claude", prompt=prompt)
    decision = decision_of(response)
    # The prompt quotes the answers, so their words are the question's: exact texts compare.
    assert decision["confidence"] == pytest.approx(
        seeded_agreement("Paris", answers, seed, 5), abs=1e-5)
    assert decision["signals"]["extra_calls"] == 5
    samples = [r["body"] for r in upstream.received if r["body"].get("temperature") == 1.0]
    assert len(samples) == 5 and all("prompt" in body for body in samples)


def test_a_calibrator_reading_logprobs_and_agreement_runs_both_signals(
    client: Callable[[str], openai.OpenAI], upstream: FakeUpstream,
) -> None:
    fake = {"content": "Paris", "logprobs": [-0.05], "sample_answers": ["Paris"]}
    decision = decision_of(client("both").chat.completions.create(
        model="claude", messages=messages(**fake)))
    assert decision["confidence"] is not None
    assert decision["signals"]["extra_calls"] == 5
    main = [r["body"] for r in upstream.received if "temperature" not in r["body"]]
    assert main[0]["logprobs"] is True  # asked for, since the calibrator reads token_prob
    # Without logprobs, the agreement alone is not enough: the reason names token_prob.
    decision = decision_of(client("both").chat.completions.create(
        model="claude", messages=messages(**fake, omit_logprobs=True)))
    assert decision["confidence"] is None
    reason = decision["choices"][0]["reason"]
    assert "token_prob (logprobs: the upstream returned no token logprobs)" in reason
    assert "agreement" not in reason
