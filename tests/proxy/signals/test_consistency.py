"""The consistency signal: agreement with k extra samples, sent concurrently, failing softly."""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.signals import Answer, CallResult, SignalRequest, SignalRun, measure_signals
from proxy.signals.answers import AnswerMatcher
from proxy.signals.consistency import ConsistencySignal, Sample, consistency_features, sample_body
from proxy.wire.chat import ChatFormat
from proxy.wire.completions import CompletionFormat
from tests.support.fake_caller import (
    FakeCaller,
    answer_tokens,
    chat_reply,
    completion_reply,
    failing,
    hanging,
    replies,
)
from tests.support.waiting import wait_until_async

QUESTION = {"model": "gpt", "messages": [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "What is the capital of Australia?"},
], "n": 1, "seed": 7, "stream": False, "temperature": 0.2, "max_tokens": 20}
FEATURES = frozenset({"agreement", "distinct_answers", "sample_similarity", "sample_token_prob"})


def request(body: dict[str, Any] = QUESTION, fmt: Any = ChatFormat,
            features: frozenset[str] = FEATURES) -> SignalRequest:
    return SignalRequest("gpt", fmt, body, features)


def test_features_of_known_samples() -> None:
    samples = [Sample("Canberra.", 0.9), Sample("The capital is Canberra", 0.7),
               Sample("Sydney", None), Sample("canberra", 0.5)]
    features = consistency_features("Canberra", samples)
    assert features["agreement"] == pytest.approx(3 / 4)
    assert features["distinct_answers"] == 2  # Canberra and Sydney
    jaccard = [1.0, 1 / 2, 0.0, 1.0]  # {canberra} vs {capital, canberra}: 1/2
    assert features["sample_similarity"] == pytest.approx(sum(jaccard) / 4)
    assert features["sample_token_prob"] == pytest.approx((0.9 + 0.7 + 0.5) / 3)


_answers = st.sampled_from(["Canberra", "canberra.", "Sydney", "The capital is Canberra", "",
                            "12", "twelve", "b) Sydney", "Melbourne, Victoria", "a"])


@settings(deadline=None)  # timing varies on a loaded machine
@given(_answers, st.lists(st.builds(Sample, _answers, st.none() | st.floats(0, 1)),
                          min_size=1, max_size=10))
def test_feature_bounds(answer: str, samples: list[Sample]) -> None:
    features = consistency_features(answer, samples)
    assert 0.0 <= features["agreement"] <= 1.0
    assert 1 <= features["distinct_answers"] <= len(samples) + 1
    assert 0.0 <= features["sample_similarity"] <= 1.0
    assert 0.0 <= features.get("sample_token_prob", 0.0) <= 1.0


def test_without_sample_logprobs_there_is_no_sample_token_prob() -> None:
    features = consistency_features("4", [Sample("The answer is 4."), Sample("four")])
    assert features["agreement"] == 1.0 and features["distinct_answers"] == 1
    assert "sample_token_prob" not in features


def test_no_samples_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one sample"):
        consistency_features("x", [])


def test_multiple_choice_samples_compare_by_option() -> None:
    matcher = AnswerMatcher("Capital of Australia?\na) Sydney\nb) Canberra\nc) Melbourne")
    samples = [Sample("b"), Sample("(b) Canberra"), Sample("a) Sydney"), Sample("no idea")]
    features = consistency_features("Canberra", samples, matcher)
    assert features["agreement"] == pytest.approx(2 / 4)
    assert features["distinct_answers"] == 3  # b, a, and one that picks nothing


def test_sentences_that_repeat_the_question_compare_by_their_own_words() -> None:
    # SmolLM2's replies to a TriviaQA question (from a run of the real model).
    matcher = AnswerMatcher("Ezzard Charles was a world champion in which sport?")
    answer = "Ezzard Charles was a world champion in the sport of boxing."
    samples = [Sample(text) for text in (
        "Ezzard Charles was a world champion in Formula One.",
        "Ezzard Charles was a world champion in the sport of boxing.",
        "Ezzard Charles was a world champion in the sport of cricket.",
        "Ezzard Charles was a world champion in which sport.",
    )]
    features = consistency_features(answer, samples, matcher)
    assert features["agreement"] == pytest.approx(1 / 4)
    assert features["distinct_answers"] == 4  # boxing, formula one, cricket, an echo
    assert features["sample_similarity"] == pytest.approx(1 / 4)


def test_sample_body_draws_a_fresh_sample_of_the_clients_request() -> None:
    body = sample_body({**QUESTION, "stream_options": {"include_usage": True}, "logprobs": True,
                        "top_logprobs": 3}, ChatFormat, temperature=1.0, logprobs=False)
    assert body["messages"] == QUESTION["messages"] and body["max_tokens"] == 20
    assert body["temperature"] == 1.0
    for dropped in ("n", "seed", "stream", "stream_options", "logprobs", "top_logprobs"):
        assert dropped not in body
    with_logprobs = sample_body(QUESTION, ChatFormat, temperature=0.7, logprobs=True)
    assert with_logprobs["logprobs"] is True and with_logprobs["top_logprobs"] == 1
    legacy = sample_body({"prompt": "Q: 2+2?\nA:", "echo": True, "best_of": 3}, CompletionFormat,
                         temperature=1.0, logprobs=True)
    assert legacy == {"prompt": "Q: 2+2?\nA:", "temperature": 1.0, "logprobs": 1}


def varying(*texts: str, logprob: float = -0.2) -> FakeCaller:
    """A caller whose samples answer ``texts`` in turn, with token logprobs."""
    queue = list(texts)

    def script(model: str, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        text = queue.pop(0)
        return chat_reply(text, answer_tokens(text, logprob) if body.get("logprobs") else None)

    return FakeCaller(script)


def test_measure_over_real_shaped_replies() -> None:
    caller = varying("Canberra", "Canberra.", "Sydney", "Canberra", "Melbourne")
    signal = ConsistencySignal(timeout_seconds=5, samples=5, temperature=0.9)
    answers = [Answer(0, "Canberra"), Answer(1, "Sydney")]
    outcome = asyncio.run(measure_signals([signal], request(), answers, caller))
    first, second = outcome.features
    assert first["agreement"] == pytest.approx(3 / 5)
    assert second["agreement"] == pytest.approx(1 / 5)
    assert first["distinct_answers"] == second["distinct_answers"] == 3
    assert first["sample_token_prob"] == pytest.approx(math.exp(-0.2))
    assert len(caller.received) == 5  # the same samples serve every choice
    for model, endpoint, body in caller.received:
        assert (model, endpoint) == ("gpt", "chat/completions")
        assert body["temperature"] == 0.9 and "seed" not in body
    assert outcome.extra_calls == 5 and outcome.extra_tokens == 5 * 35
    assert all(call.result is CallResult.OK for call in outcome.calls)


def test_logprobs_are_asked_of_the_samples_only_when_a_calibrator_reads_them() -> None:
    caller = varying(*["Canberra"] * 3)
    signal = ConsistencySignal(timeout_seconds=5, samples=3)
    outcome = asyncio.run(measure_signals(
        [signal], request(features=frozenset({"agreement"})), [Answer(0, "Canberra")], caller))
    assert all("logprobs" not in body for _, _, body in caller.received)
    assert "sample_token_prob" not in outcome.features[0]


def test_a_cheaper_model_can_draw_the_samples() -> None:
    caller = varying(*["Canberra"] * 2)
    signal = ConsistencySignal(timeout_seconds=5, samples=2, model="gpt-mini")
    asyncio.run(measure_signals([signal], request(), [Answer(0, "Canberra")], caller))
    assert {model for model, _, _ in caller.received} == {"gpt-mini"}


def test_legacy_completions_are_sampled_on_their_own_endpoint() -> None:
    caller = FakeCaller(replies(completion_reply(" 4", [-0.1])))
    signal = ConsistencySignal(timeout_seconds=5, samples=2)
    outcome = asyncio.run(measure_signals(
        [signal], request({"model": "gpt", "prompt": "Q: 2+2?\nA:"}, CompletionFormat),
        [Answer(0, " 4")], caller))
    assert {endpoint for _, endpoint, _ in caller.received} == {"completions"}
    assert outcome.features[0]["agreement"] == 1.0
    assert outcome.features[0]["sample_token_prob"] == pytest.approx(math.exp(-0.1))


def test_the_k_samples_are_in_flight_at_once() -> None:
    k = 6
    gate = asyncio.Event()

    async def script(model: str, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        if caller.in_flight >= k:
            gate.set()
        # Sequential calls would never open the gate; the bound keeps such a failure short.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(gate.wait(), 5)
        return chat_reply("Canberra")

    caller = FakeCaller(script)
    signal = ConsistencySignal(timeout_seconds=10, samples=k)
    outcome = asyncio.run(measure_signals([signal], request(), [Answer(0, "Canberra")], caller))
    assert caller.most_in_flight == k
    assert outcome.features[0]["agreement"] == 1.0


def test_samples_start_with_the_request_before_the_answer_is_complete() -> None:
    async def scenario() -> tuple[int, Any]:
        caller = FakeCaller(hanging(0.05))
        run = SignalRun.start([ConsistencySignal(timeout_seconds=5, samples=4)], request(), caller)
        # The main answer is still streaming; the samples hang only 0.05 s: look often.
        await wait_until_async(lambda: caller.in_flight == 4, what="4 samples in flight",
                               interval=0.001)
        in_flight = caller.in_flight
        return in_flight, await run.finish([Answer(0, "too late")])

    in_flight, outcome = asyncio.run(scenario())
    assert in_flight == 4
    assert outcome.features[0]["agreement"] == 1.0


def test_every_sample_failing_leaves_the_features_missing_and_records_each_call() -> None:
    caller = FakeCaller(failing())
    outcome = asyncio.run(measure_signals(
        [ConsistencySignal(timeout_seconds=5, samples=3)], request(), [Answer(0, "Canberra")],
        caller))
    assert outcome.features == ({},)
    assert [c.result for c in outcome.calls] == [CallResult.ERROR] * 3
    assert "none of the 3 samples" in outcome.unavailable["consistency"]
    reason = outcome.missing_reason(0, ["agreement"])
    assert reason is not None and "consistency" in reason


def test_timed_out_samples_are_recorded_as_timeouts() -> None:
    outcome = asyncio.run(measure_signals(
        [ConsistencySignal(timeout_seconds=0.2, samples=3)], request(), [Answer(0, "x")],
        FakeCaller(hanging(30))))
    assert outcome.features == ({},)
    assert [c.result for c in outcome.calls] == [CallResult.TIMEOUT] * 3


def test_garbage_samples_are_left_out_of_the_features() -> None:
    caller = FakeCaller(replies(chat_reply("Canberra"), {"choices": []}, chat_reply(""),
                                chat_reply("Sydney")))
    outcome = asyncio.run(measure_signals(
        [ConsistencySignal(timeout_seconds=5, samples=4)], request(), [Answer(0, "Canberra")],
        caller))
    assert outcome.features[0]["agreement"] == pytest.approx(1 / 2)
    results = sorted(c.result.value for c in outcome.calls)
    assert results == ["garbage", "garbage", "ok", "ok"]
