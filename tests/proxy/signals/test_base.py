"""SignalCalls: every extra call bounded, recorded with its result and tokens, and never raising."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from proxy.errors import UpstreamTimeout
from proxy.signals import Answer, CallResult, SignalCall, SignalCalls
from proxy.signals.base import choice_text, reply_choice
from proxy.wire.chat import ChatFormat
from proxy.wire.completions import CompletionFormat
from tests.support.fake_caller import FakeCaller, chat_reply, failing, hanging, replies


def text_of(document: dict[str, Any]) -> str | None:
    choice = reply_choice(document)
    return choice_text(choice) or None if choice else None


def call_once(caller: FakeCaller, timeout: float = 5.0, read: Any = text_of) -> tuple[Any, list[SignalCall]]:
    log: list[SignalCall] = []
    calls = SignalCalls("verbalized", caller, timeout, log)
    value = asyncio.run(calls.call("gpt", "chat/completions", {"messages": []}, read))
    return value, log


def test_a_good_reply_is_read_and_recorded_with_its_tokens() -> None:
    value, log = call_once(FakeCaller(replies(chat_reply("85", usage=(41, 2)))))
    assert value == "85"
    [call] = log
    assert (call.signal, call.model, call.result) == ("verbalized", "gpt", CallResult.OK)
    assert (call.prompt_tokens, call.completion_tokens, call.tokens) == (41, 2, 43)
    assert call.seconds >= 0
    assert call.as_json()["result"] == "ok"


def test_a_timeout_returns_none_and_is_recorded_as_a_timeout() -> None:
    started = time.perf_counter()
    value, log = call_once(FakeCaller(hanging(30)), timeout=0.2)
    assert value is None
    assert time.perf_counter() - started < 5
    [call] = log
    assert call.result is CallResult.TIMEOUT and call.tokens == 0
    assert 0.2 <= call.seconds < 5


def test_the_upstreams_own_timeout_counts_as_a_timeout() -> None:
    def script(model: str, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        raise UpstreamTimeout("upstream for model 'gpt' did not answer in time")

    value, log = call_once(FakeCaller(script))
    assert value is None and log[0].result is CallResult.TIMEOUT


def test_an_upstream_error_returns_none_and_is_recorded_as_an_error() -> None:
    value, log = call_once(FakeCaller(failing()))
    assert value is None
    assert log[0].result is CallResult.ERROR
    assert "HTTP 500" in (log[0].detail or "")


@pytest.mark.parametrize("document", [
    {"choices": []},
    {"choices": "nope"},
    {"object": "chat.completion"},
    chat_reply(""),
])
def test_a_reply_with_nothing_readable_is_garbage(document: dict[str, Any]) -> None:
    value, log = call_once(FakeCaller(replies(document)))
    assert value is None and log[0].result is CallResult.GARBAGE


def test_a_reader_that_trips_on_the_reply_is_garbage_not_an_exception() -> None:
    def read(document: dict[str, Any]) -> str:
        return str(document["choices"][0]["message"]["tool_calls"][0])

    value, log = call_once(FakeCaller(replies(chat_reply("hi"))), read=read)
    assert value is None and log[0].result is CallResult.GARBAGE
    assert log[0].tokens == 35  # the tokens were spent all the same


def test_a_non_object_reply_is_garbage() -> None:
    value, log = call_once(FakeCaller(replies(["not", "a", "dict"])))  # type: ignore[arg-type]
    assert value is None and log[0].result is CallResult.GARBAGE


def test_an_unexpected_exception_in_the_caller_is_an_error() -> None:
    def script(model: str, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("connection pool closed")

    value, log = call_once(FakeCaller(script))
    assert value is None and log[0].result is CallResult.ERROR


def test_garbage_usage_counts_as_no_tokens() -> None:
    document = chat_reply("42")
    document["usage"] = {"prompt_tokens": "many", "completion_tokens": -3}
    value, log = call_once(FakeCaller(replies(document)))
    assert value == "42" and log[0].tokens == 0


def test_choice_text_of_each_shape() -> None:
    assert choice_text({"message": {"content": "Paris"}}) == "Paris"
    assert choice_text({"message": {"content": [{"type": "text", "text": "a"},
                                                {"type": "image_url"}, {"type": "text", "text": "b"}]}}) == "a\nb"
    assert choice_text({"message": {"content": None, "tool_calls": []}}) == ""
    assert choice_text({"text": "legacy"}) == "legacy"
    assert choice_text("nonsense") == ""


def test_answers_of_malformed_choices_have_no_text_and_no_tokens() -> None:
    assert Answer.from_choice(7, ChatFormat, 2) == Answer(2, "")
    odd = Answer.from_choice({"index": True, "message": {"content": "hi"}, "logprobs": "lots"},
                             ChatFormat, 1)
    assert odd == Answer(1, "hi", None)
    legacy = Answer.from_choice({"index": 3, "text": " 4", "logprobs": {"token_logprobs": [-0.1]}},
                                CompletionFormat)
    assert legacy.index == 3 and legacy.tokens is not None
