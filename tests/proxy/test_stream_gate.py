"""A tenant's stream gate, over real sockets: decide on the first K tokens, then stream or stop.

The prefix calibrator here is the identity on ``token_prob@4`` (the geometric-mean probability
of the first 4 tokens), so the fake upstream's scripted logprobs decide: -0.05 answers
(p = 0.95), -3 abstains (p = 0.05), at the tenants' threshold of 0.5.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from calibrators.artifact import FittedCalibrator, save_artifact
from calibrators.methods import IdentityCalibrator
from calibrators.signals import ScoreKind, ScoreSpec
from tests.support.fake_upstream import FakeUpstream, StreamLog
from tests.support.gateway import SDK, TENANT_KEYS, gateway_config, serve_gateway
from tests.support.metrics import scrape, value
from tests.support.waiting import wait_until

K = 4
HIGH, LOW = -0.05, -3.0
GATED_KEYS = {
    "gated": "key-gated-0123456789abcdef",
    "gated-refuser": "key-gated-refuser-0123456789ab",
    "gated-topk": "key-gated-topk-0123456789abcdef",
    "gated-refusal": "key-gated-refusal-0123456789ab",
}


def prefix_calibrator(path: Path, feature: str = f"token_prob@{K}") -> Path:
    spec = ScoreSpec(feature, ScoreKind.PROBABILITY)
    save_artifact(FittedCalibrator(IdentityCalibrator(), (spec,)), path)
    return path


def gated_config(upstream_url: str, directory: Path) -> dict[str, Any]:
    prefix_calibrator(directory / "prefix4.json")
    prefix_calibrator(directory / "margin4.json", f"mean_topk_margin@{K}")
    config = gateway_config(upstream_url)
    # A model that allows the long, slow streams these tests send.
    config["models"]["slow"] = {"base_url": f"{upstream_url}/v1", "model": "fake-model",
                                "timeout_seconds": 60}
    gate = {"decide_after_tokens": K, "calibrator": "prefix4.json"}
    for name, extra in (
        ("gated", {}), ("gated-refuser", {"abstain_action": "error"}),
        ("gated-topk", {"stream_gate": {**gate, "calibrator": "margin4.json"}}),
        ("gated-refusal", {"withheld_shape": "refusal",
                           "withheld_finish_reason": "content_filter"}),
    ):
        config["tenants"][name] = {
            "api_keys": [{"sha256": hashlib.sha256(GATED_KEYS[name].encode()).hexdigest()}],
            "risk": {"threshold": 0.5}, "abstention_message": "I won't guess.",
            "stream_gate": gate, **extra}
    return config


@pytest.fixture(scope="module")
def gated_gateway(
    fake_upstream: tuple[FakeUpstream, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("gated")
    mp = pytest.MonkeyPatch()
    mp.setenv("FAKE_UPSTREAM_KEY", "sk-upstream-secret-0123456789")
    try:
        with serve_gateway(directory, gated_config(fake_upstream[1], directory)) as url:
            yield url
    finally:
        mp.undo()


@pytest.fixture
def gated(gated_gateway: str, sdk_client: SDK) -> Callable[[str], openai.OpenAI]:
    keys = {**TENANT_KEYS, **GATED_KEYS}
    return lambda tenant: sdk_client(f"{gated_gateway}/v1", keys[tenant])


def messages(**fake: Any) -> list[dict[str, str]]:
    return [{"role": "user", "content": json.dumps({"fake": fake})}]


def upstream_text(content: str, pad: int = 0) -> str:
    """What the fake streams for ``content`` (in tokens that join back into it), padded."""
    return content + " x" * pad


def read_stream(client: openai.OpenAI, **create: Any) -> tuple[dict[int, str], dict[str, Any]]:
    """Each choice's streamed text, and the ``basguard`` object of the last chunk."""
    texts: dict[int, str] = {}
    decision: dict[str, Any] = {}
    stream = client.chat.completions.create(model="slow", stream=True, **create)
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
        extra = chunk.model_extra or {}
        if "basguard" in extra:
            decision = extra["basguard"]
    return texts, decision


def wait_for_end(upstream: FakeUpstream, count: int = 1) -> list[StreamLog]:
    """The fake's stream logs once ``count`` streams have ended (completed or closed)."""
    wait_until(lambda: len([log for log in upstream.streams
                            if log.completed or log.client_closed]) >= count,
               what=f"{count} upstream stream(s) to end", output=lambda: repr(upstream.streams))
    return upstream.streams


def test_an_answered_gate_streams_the_upstreams_text_unchanged(
    gated: Callable[[str], openai.OpenAI], upstream: FakeUpstream
) -> None:
    logprobs = [HIGH] * 6
    texts, decision = read_stream(gated("gated"), messages=messages(
        content="Paris is the capital", logprobs=logprobs, pad_tokens=30, stream_delay=0.005))
    assert texts == {0: upstream_text("Paris is the capital", 30)}
    assert decision["decided_after_tokens"] == K
    assert decision["prefix_tokens"] == [K]
    assert decision["decision"] == "answer"
    assert decision["confidence"] == pytest.approx(0.951, abs=1e-3)
    [log] = wait_for_end(upstream)
    assert log.completed and log.sent == 36


def test_an_abstaining_gate_sends_nothing_withheld_and_closes_the_upstream(
    gated: Callable[[str], openai.OpenAI], upstream: FakeUpstream
) -> None:
    texts, decision = read_stream(gated("gated"), messages=messages(
        content="Lyon Lyon Lyon Lyon", logprobs=[LOW] * 4, pad_tokens=400, stream_delay=0.01))
    assert texts == {0: "I won't guess."}
    assert decision["decision"] == "abstain" and decision["decided_after_tokens"] == K
    [log] = wait_for_end(upstream)
    assert log.client_closed and not log.completed
    # Closed right after the decision: far from the 404 tokens it would have streamed.
    assert log.sent < log.tokens / 2, log


def test_an_abstaining_gate_with_abstain_action_error_is_a_422_and_closes_the_upstream(
    gated: Callable[[str], openai.OpenAI], upstream: FakeUpstream
) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as raised:
        read_stream(gated("gated-refuser"), messages=messages(
            content="Lyon Lyon Lyon Lyon", logprobs=[LOW] * 4, pad_tokens=400,
            stream_delay=0.01))
    assert raised.value.code == "answer_withheld"
    [log] = wait_for_end(upstream)
    assert log.client_closed and log.sent < log.tokens / 2


def test_a_gated_abstention_takes_the_tenants_withheld_shape(
    gated: Callable[[str], openai.OpenAI], upstream: FakeUpstream
) -> None:
    stream = gated("gated-refusal").chat.completions.create(
        model="slow", stream=True, messages=messages(
            content="Lyon Lyon Lyon Lyon", logprobs=[LOW] * 4, pad_tokens=40))
    chunks = list(stream)
    deltas = [choice.delta for chunk in chunks for choice in chunk.choices]
    assert "".join(d.refusal or "" for d in deltas) == "I won't guess."
    # Nothing of "Lyon": plain text keeps the abstention as its content beside the refusal.
    assert "".join(d.content or "" for d in deltas) == "I won't guess."
    assert [c.finish_reason for chunk in chunks for c in chunk.choices if c.finish_reason] == [
        "content_filter"]
    wait_for_end(upstream)


def test_a_gated_json_abstention_is_a_refusal(
    gated: Callable[[str], openai.OpenAI], upstream: FakeUpstream
) -> None:
    chunks = list(gated("gated").chat.completions.create(
        model="slow", stream=True, response_format={"type": "json_object"},
        messages=messages(content='{"city": "Lyon"}', logprobs=[LOW] * 4, pad_tokens=40)))
    deltas = [choice.delta for chunk in chunks for choice in chunk.choices]
    assert "".join(d.refusal or "" for d in deltas) == "I won't guess."
    assert not any(d.content for d in deltas)  # structured output: no content at all
    assert (chunks[-1].model_extra or {})["basguard"]["decision"] == "abstain"
    wait_for_end(upstream)


def test_a_gated_tool_call_passes_unchanged_under_tool_calls_pass(
    gated: Callable[[str], openai.OpenAI], upstream: FakeUpstream
) -> None:
    """Unsure argument tokens do not withhold a tool call: it is an action, not an answer."""
    arguments = '{"city": "Paris"}'
    stream = gated("gated").chat.completions.create(
        model="slow", stream=True, messages=messages(
            tool_calls=[{"name": "get_weather", "arguments": arguments}],
            content=arguments, logprobs=[LOW] * 6))
    chunks = list(stream)
    calls = [call for chunk in chunks for choice in chunk.choices
             for call in choice.delta.tool_calls or []]
    assert calls[0].function.name == "get_weather"
    assert "".join(call.function.arguments or "" for call in calls) == arguments
    assert [c.finish_reason for chunk in chunks for c in chunk.choices if c.finish_reason] == [
        "tool_calls"]
    (decision,) = [extra["basguard"] for chunk in chunks
                   if "basguard" in (extra := chunk.model_extra or {})]
    assert decision["choices"][0]["decision"] == "not_applicable"
    wait_for_end(upstream)


@pytest.mark.parametrize(("logprob", "expected"), [(HIGH, "Paris"), (LOW, "I won't guess.")])
def test_an_answer_shorter_than_k_is_decided_when_it_ends(
    gated: Callable[[str], openai.OpenAI], upstream: FakeUpstream, logprob: float, expected: str
) -> None:
    texts, decision = read_stream(gated("gated"), messages=messages(
        content="Paris", logprobs=[logprob, logprob]))
    assert texts == {0: expected}
    assert decision["decided_after_tokens"] == K
    assert decision["prefix_tokens"] == [2]


def test_a_client_that_leaves_during_the_buffer_closes_the_upstream(
    gated_gateway: str, upstream: FakeUpstream
) -> None:
    # K tokens take 4 x 0.4 s to arrive: the client gives up at 0.5 s, before any header.
    body = {"model": "slow", "stream": True, "messages": messages(
        content="a b c d", logprobs=[HIGH] * 4, pad_tokens=50, stream_delay=0.4)}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{gated_gateway}/v1/chat/completions", json=body, timeout=0.5,
                   headers={"authorization": f"Bearer {GATED_KEYS['gated']}"})
    [log] = wait_for_end(upstream)
    assert log.client_closed and log.sent < K + 2, log


def test_n_choices_are_each_decided_on_their_own_prefix(
    gated: Callable[[str], openai.OpenAI], upstream: FakeUpstream
) -> None:
    texts, decision = read_stream(gated("gated"), n=2, messages=messages(
        interleave=True, pad_tokens=20, stream_delay=0.002,
        choices=[{"content": "Paris Paris", "logprobs": [HIGH] * 4},
                 {"content": "Lyon Lyon!", "logprobs": [LOW] * 4}]))
    assert texts == {0: upstream_text("Paris Paris", 20), 1: "I won't guess."}
    assert [c["decision"] for c in decision["choices"]] == ["answer", "abstain"]
    assert decision["prefix_tokens"] == [K, K]
    # One choice answered: the request runs to its end (its other choice's tokens unsent).
    [log] = wait_for_end(upstream)
    assert log.completed


def test_n_choices_that_all_abstain_close_the_upstream(
    gated: Callable[[str], openai.OpenAI], upstream: FakeUpstream
) -> None:
    texts, decision = read_stream(gated("gated"), n=2, messages=messages(
        interleave=True, content="Lyon Lyon", logprobs=[LOW] * 4, pad_tokens=600,
        stream_delay=0.005))
    assert texts == {0: "I won't guess.", 1: "I won't guess."}
    assert [c["decision"] for c in decision["choices"]] == ["abstain", "abstain"]
    [log] = wait_for_end(upstream)
    assert log.client_closed and log.sent < log.tokens / 2


def test_legacy_completions_are_gated_too(
    gated: Callable[[str], openai.OpenAI], upstream: FakeUpstream
) -> None:
    client = gated("gated")
    for logprob, expected in ((HIGH, upstream_text("Paris Paris", 10)),
                              (LOW, "I won't guess.")):
        prompt = json.dumps({"fake": {"content": "Paris Paris", "logprobs": [logprob] * 4,
                                      "pad_tokens": 10}})
        text = "".join(chunk.choices[0].text for chunk in client.completions.create(
            model="slow", prompt=prompt, stream=True, max_tokens=64) if chunk.choices)
        assert text == expected


def test_the_client_gets_only_the_logprobs_it_asked_for(
    gated: Callable[[str], openai.OpenAI], upstream: FakeUpstream
) -> None:
    stream = gated("gated").chat.completions.create(
        model="slow", stream=True, messages=messages(content="a b c d e f",
                                                     logprobs=[HIGH] * 6))
    assert all(choice.logprobs is None for chunk in stream for choice in chunk.choices)
    stream = gated("gated").chat.completions.create(
        model="slow", stream=True, logprobs=True, top_logprobs=1,
        messages=messages(content="a b c d e f", logprobs=[HIGH] * 6))
    entries = [entry for chunk in stream for choice in chunk.choices if choice.logprobs
               for entry in choice.logprobs.content or []]
    assert len(entries) == 6 and all(len(entry.top_logprobs) == 1 for entry in entries)


def test_time_to_first_token_and_tokens_saved_are_measured(
    gated_gateway: str, gated: Callable[[str], openai.OpenAI], upstream: FakeUpstream
) -> None:
    before = scrape(gated_gateway)
    read_stream(gated("gated"), messages=messages(content="a b c d", logprobs=[HIGH] * 4))
    read_stream(gated("enforcer"), messages=messages(content="a b c d", logprobs=[HIGH] * 4))
    read_stream(gated("annotator"), messages=messages(content="a b c d", logprobs=[HIGH] * 4))
    read_stream(gated("gated"), max_tokens=100, messages=messages(
        content="a b c d", logprobs=[LOW] * 4, pad_tokens=200, stream_delay=0.01))
    after = scrape(gated_gateway)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    for mode, count in (("gated", 2), ("buffered", 1), ("passthrough", 1)):
        assert grew("basguard_time_to_first_token_seconds_count", model="slow",
                    stream_mode=mode) == count
    assert grew("basguard_stream_gate_cancellations_total", model="slow") == 1
    # max_tokens 100 minus the tokens received before the decision (4, or a few more).
    saved = grew("basguard_stream_gate_tokens_saved_total", model="slow")
    assert 90 <= saved <= 96


def test_a_prefix_calibrator_reading_top_k_features_gets_alternatives(
    gated: Callable[[str], openai.OpenAI], upstream: FakeUpstream
) -> None:
    texts, decision = read_stream(gated("gated-topk"), messages=messages(
        content="a b c d e f", logprobs=[HIGH] * 6))
    assert upstream.received[-1]["body"]["top_logprobs"] == 5
    # The margin between the two likeliest of [-0.05, -3.05, -5.05]: 0.951 - 0.047.
    assert decision["confidence"] == pytest.approx(0.904, abs=1e-3)
    assert texts == {0: "a b c d e f"}


def test_a_gate_without_top_k_features_asks_only_for_the_tokens_logprobs(
    gated: Callable[[str], openai.OpenAI], upstream: FakeUpstream
) -> None:
    read_stream(gated("gated"), messages=messages(content="a b c d e f", logprobs=[HIGH] * 6))
    sent = upstream.received[-1]["body"]
    assert sent["logprobs"] is True and sent["top_logprobs"] == 1
