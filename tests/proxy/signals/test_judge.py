"""The judge signal: P(True) from the first answer token's logprobs, else the verdict."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.signals import Answer, CallResult, SignalRequest, measure_signals
from proxy.signals.judge import (
    JUDGE_PROMPT,
    JudgeSignal,
    judge_probability,
    p_true_from_logprobs,
    verdict_probability,
)
from proxy.wire.chat import ChatFormat
from tests.support.fake_caller import FakeCaller, chat_reply, failing, hanging, replies

QUESTION = {"model": "o3", "messages": [{"role": "user", "content": "What is 7 * 8?"}]}


def request() -> SignalRequest:
    return SignalRequest("o3", ChatFormat, QUESTION, frozenset({"judge_prob"}))


def logprobs_of(reply: dict[str, Any]) -> Any:
    return reply["choices"][0]["logprobs"]


def test_p_true_normalises_over_true_and_false() -> None:
    reply = chat_reply("True", [("True", math.log(0.7), [("True", math.log(0.7)),
                                                          ("False", math.log(0.2)),
                                                          ("Yes", math.log(0.05))])])
    assert p_true_from_logprobs(logprobs_of(reply)) == pytest.approx(0.75 / 0.95)


def test_the_first_answer_token_skips_whitespace_and_markdown() -> None:
    reply = chat_reply("**False**", [
        ("**", -0.01, [("**", -0.01), ("True", -5.0)]),
        ("False", math.log(0.6), [("False", math.log(0.6)), (" True", math.log(0.3)),
                                  ("true", math.log(0.05))]),
        ("**", -0.01, []),
    ])
    assert p_true_from_logprobs(logprobs_of(reply)) == pytest.approx(0.35 / 0.95)


def test_one_sided_alternatives() -> None:
    only_true = chat_reply("True", [("True", math.log(0.9), [("True", math.log(0.9)),
                                                              ("Maybe", math.log(0.05))])])
    assert p_true_from_logprobs(logprobs_of(only_true)) == pytest.approx(0.9)
    only_false = chat_reply("No", [("No", math.log(0.8), [])])
    assert p_true_from_logprobs(logprobs_of(only_false)) == pytest.approx(0.2)
    neither = chat_reply("Maybe", [("Maybe", -0.1, [("Maybe", -0.1), ("Perhaps", -3.0)])])
    assert p_true_from_logprobs(logprobs_of(neither)) is None


@pytest.mark.parametrize("logprobs", [None, {}, {"content": None}, {"content": "x"},
                                      {"content": [{"token": " ", "logprob": -0.1}]},
                                      {"content": [{"token": "True", "logprob": "high"}]},
                                      {"content": [{"token": "True", "logprob": float("nan")}]}])
def test_unusable_logprobs(logprobs: Any) -> None:
    assert p_true_from_logprobs(logprobs) is None


@pytest.mark.parametrize(("text", "expected"), [
    ("True", 1.0), ("true.", 1.0), ("Yes, it is.", 1.0), ("Correct", 1.0),
    ("False", 0.0), ("No.", 0.0), ("Incorrect: 7 * 8 = 56", 0.0),
    ("That is not correct.", 0.0), ("It's wrong", 0.0),
    ("I'd put it at 70%", 0.7), ("Hmm.", None), ("", None),
])
def test_the_verdict_without_logprobs(text: str, expected: float | None) -> None:
    assert verdict_probability(text) == expected


def test_without_logprobs_the_reply_falls_back_to_its_verdict() -> None:
    assert judge_probability(chat_reply("False")) == 0.0
    assert judge_probability({"choices": []}) is None


def test_each_choice_is_judged_with_logprobs_requested() -> None:
    def script(model: str, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        right = "Proposed answer: 56" in body["messages"][0]["content"]
        p = 0.9 if right else 0.15
        return chat_reply("True" if right else "False", [
            ("True" if right else "False", math.log(max(p, 1 - p)),
             [("True", math.log(p)), ("False", math.log(1 - p))])], usage=(60, 1))

    caller = FakeCaller(script)
    signal = JudgeSignal(timeout_seconds=5, model="smollm2")
    outcome = asyncio.run(measure_signals(
        [signal], request(), [Answer(0, "56"), Answer(1, "54")], caller))
    assert [f["judge_prob"] for f in outcome.features] == pytest.approx([0.9, 0.15])
    (model, endpoint, body), _ = caller.received
    assert (model, endpoint) == ("smollm2", "chat/completions")
    assert body["messages"][0]["content"] == JUDGE_PROMPT.format(question="What is 7 * 8?",
                                                                 answer="56")
    assert body["logprobs"] is True and body["top_logprobs"] == 5
    assert body["max_tokens"] == 8 and body["temperature"] == 0.0
    assert outcome.extra_tokens == 2 * 61


def test_a_judge_without_logprobs_is_not_asked_for_them() -> None:
    caller = FakeCaller(replies(chat_reply("True")))
    signal = JudgeSignal(timeout_seconds=5, model="claude-haiku", logprobs=False)
    outcome = asyncio.run(measure_signals([signal], request(), [Answer(0, "56")], caller))
    assert outcome.features == ({"judge_prob": 1.0},)
    assert "logprobs" not in caller.received[0][2]


@pytest.mark.parametrize(("caller", "result"), [
    (FakeCaller(failing()), CallResult.ERROR),
    (FakeCaller(hanging(30)), CallResult.TIMEOUT),
    (FakeCaller(replies(chat_reply("Let me think about multiplication."))), CallResult.GARBAGE),
    (FakeCaller(replies({"id": "x", "choices": [{"index": 0}]})), CallResult.GARBAGE),
])
def test_failed_judgements_leave_the_feature_missing(caller: FakeCaller, result: CallResult) -> None:
    outcome = asyncio.run(measure_signals(
        [JudgeSignal(timeout_seconds=0.2)], request(), [Answer(0, "56")], caller))
    assert outcome.features == ({},)
    assert [c.result for c in outcome.calls] == [result]


_tokens = st.sampled_from(["True", " true", "False", "no", "Yes", "**", " ", "Maybe", "", "x"])
_logprob_values = st.one_of(st.floats(max_value=0.0), st.floats(), st.none(), st.text(max_size=3))
_entries = st.fixed_dictionaries({
    "token": st.one_of(_tokens, st.none()),
    "logprob": _logprob_values,
    "top_logprobs": st.lists(st.fixed_dictionaries(
        {"token": st.one_of(_tokens, st.integers()), "logprob": _logprob_values}), max_size=6),
})


@settings(deadline=None)  # timing varies on a loaded machine
@given(st.one_of(st.none(), st.fixed_dictionaries({"content": st.lists(_entries, max_size=4)})))
def test_p_true_never_raises_and_is_a_probability_or_none(logprobs: Any) -> None:
    value = p_true_from_logprobs(logprobs)
    assert value is None or 0.0 <= value <= 1.0


@settings(deadline=None)  # timing varies on a loaded machine
@given(st.text(max_size=200))
def test_verdicts_never_raise(text: str) -> None:
    value = verdict_probability(text)
    assert value is None or 0.0 <= value <= 1.0
