"""The logprobs signal: today's token features, as one signal among others."""

from __future__ import annotations

import asyncio
import math

import pytest

from proxy.signals import Answer, SignalRequest, measure_signals
from proxy.signals.features import FEATURE_KINDS, confidence_features
from proxy.signals.logprobs import LogprobsSignal
from proxy.wire.chat import ChatFormat
from proxy.wire.completions import CompletionFormat
from tests.support.fake_caller import FakeCaller, chat_reply, completion_reply, failing

BODY = {"model": "gpt", "messages": [{"role": "user", "content": "Capital of Peru?"}]}


def test_the_main_request_asks_for_logprobs_and_alternatives_only_when_read() -> None:
    signal = LogprobsSignal(timeout_seconds=5)
    plain = signal.upstream_body(BODY, ChatFormat, frozenset({"token_prob"}))
    assert plain["logprobs"] is True and plain["top_logprobs"] == 1
    topk = signal.upstream_body(BODY, ChatFormat, frozenset({"token_prob", "mean_topk_margin"}))
    assert topk["top_logprobs"] == 5
    client = signal.upstream_body({**BODY, "logprobs": True, "top_logprobs": 8}, ChatFormat,
                                  frozenset({"mean_topk_margin"}))
    assert client["top_logprobs"] == 8
    assert "logprobs" not in BODY  # a new body; the client's is untouched
    legacy = signal.upstream_body({"prompt": "x"}, CompletionFormat, frozenset({"token_prob"}))
    assert legacy["logprobs"] == 0  # legacy logprobs=0: each token's own logprob


def test_features_are_todays_for_each_choice() -> None:
    reply = chat_reply("Lima", [("Lima", -0.05, [("Lima", -0.05), ("Cusco", -3.2)])])
    choice = reply["choices"][0]
    answers = [Answer.from_choice(choice, ChatFormat), Answer(1, "no logprobs here")]
    signal = LogprobsSignal(timeout_seconds=5)
    outcome = asyncio.run(measure_signals(
        [signal], SignalRequest("gpt", ChatFormat, BODY, frozenset(FEATURE_KINDS)), answers,
        FakeCaller(failing())))
    assert outcome.features[0] == confidence_features(ChatFormat.tokens(choice) or [])
    assert outcome.features[0]["token_prob"] == pytest.approx(math.exp(-0.05))
    assert outcome.features[1] == {}
    assert outcome.calls == () and signal.extra_calls(3) == 0


def test_legacy_completion_choices() -> None:
    choice = completion_reply(" Lima", [-0.2])["choices"][0]
    answer = Answer.from_choice(choice, CompletionFormat)
    assert answer.text == " Lima" and answer.tokens is not None
    outcome = asyncio.run(measure_signals(
        [LogprobsSignal(timeout_seconds=5)],
        SignalRequest("gpt", CompletionFormat, {"prompt": "Capital of Peru?"},
                      frozenset({"token_prob"})), [answer], FakeCaller(failing())))
    assert outcome.features[0]["token_prob"] == pytest.approx(math.exp(-0.2))


def test_an_upstream_without_logprobs_leaves_the_features_missing() -> None:
    reply = chat_reply("Lima")
    outcome = asyncio.run(measure_signals(
        [LogprobsSignal(timeout_seconds=5)],
        SignalRequest("claude", ChatFormat, BODY, frozenset({"token_prob"})),
        [Answer.from_choice(reply["choices"][0], ChatFormat)], FakeCaller(failing())))
    assert outcome.features == ({},)
    assert outcome.unavailable == {"logprobs": "the upstream returned no token logprobs"}
    assert outcome.calls == ()  # no call was made, so none is counted
    assert outcome.missing_reason(0, ["token_prob"]) == (
        "missing confidence features: token_prob (logprobs: the upstream returned no token "
        "logprobs)")

