"""The Vercel AI SDK (node: ``ai`` with ``@ai-sdk/openai``, tests/clients/node) through basguard,
on both of its OpenAI APIs (chat completions and the Responses API): ``generateText``,
``streamText``, tools chosen and forced, ``generateObject``, answered and withheld, and the
decision where the app reads it (#21)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.clients.environments import NODE, node, run_client
from tests.clients.matrix import (
    CITY_ARGUMENTS,
    CONFIDENT,
    MESSAGE,
    UNSURE,
    answer,
    case,
    city_call,
    json_answer,
    question,
)
from tests.support.fake_upstream import FakeUpstream

APIS = ("chat", "responses")
OUTCOMES = {"answered": CONFIDENT, "withheld": UNSURE}


def called(api: str, logprobs: list[float]) -> str:
    if api == "chat":
        return city_call(logprobs)
    # The Responses API gives a function call no logprobs: a forced one has no confidence.
    return question(tool_call={"name": "City", "arguments": CITY_ARGUMENTS})


CASES = [
    *(case(f"{api}-{run}-{outcome}", run, "enforcer", answer(logprobs), api=api)
      for api in APIS for run in ("text", "stream") for outcome, logprobs in OUTCOMES.items()),
    *(case(f"{api}-{run}-annotated", run, "annotator", answer(UNSURE), api=api)
      for api in APIS for run in ("text", "stream")),
    *(case(f"{api}-object-{outcome}", "object", "enforcer", json_answer(logprobs), api=api)
      for api in APIS for outcome, logprobs in OUTCOMES.items()),
    *(case(f"{api}-object-error", "object", "as-error", json_answer(UNSURE), api=api)
      for api in APIS),
    *(case(f"{api}-tools-auto", "tools", "enforcer", called(api, UNSURE), api=api)
      for api in APIS),
    *(case(f"chat-tools-forced-{outcome}", "tools", "enforcer", city_call(logprobs), api="chat",
           forced=True) for outcome, logprobs in OUTCOMES.items()),
    case("responses-tools-forced-withheld", "tools", "enforcer", called("responses", UNSURE),
         api="responses", forced=True),
    *(case(f"{api}-tools-forced-error", "tools", "as-error", called(api, UNSURE), api=api,
           forced=True) for api in APIS),
]


@pytest.fixture(scope="module")
def results(base_url: str, fake_upstream: tuple[FakeUpstream, str]) -> dict[str, Any]:
    return run_client([node(), str(NODE / "vercel_client.mjs")], base_url, CASES,
                      fake_upstream[0])


def value(results: dict[str, Any], name: str) -> Any:
    result = results[name]
    assert "value" in result, result
    return result["value"]


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize(("outcome", "text", "decision"), [
    ("answered", "Paris", "answer"), ("withheld", MESSAGE, "abstain")])
def test_text_and_streams_read_the_answer_or_the_message_and_the_decision(
    results: dict[str, Any], api: str, outcome: str, text: str, decision: str
) -> None:
    generated = value(results, f"{api}-text-{outcome}")
    assert generated == {"text": text, "header": decision, "decision": decision}
    streamed = value(results, f"{api}-stream-{outcome}")
    assert (streamed["text"], streamed["header"]) == (text, decision)  # enforce: in the headers
    assert set(streamed["decisions"]) == {decision}


@pytest.mark.parametrize("api", APIS)
def test_an_annotated_streams_decision_is_in_its_raw_chunks(
    results: dict[str, Any], api: str
) -> None:
    assert value(results, f"{api}-text-annotated") == {
        "text": "Paris", "header": "abstain", "decision": "abstain"}
    streamed = value(results, f"{api}-stream-annotated")
    # Annotate sends the headers before deciding: the decision rides at the end of the stream.
    assert (streamed["text"], streamed["header"]) == ("Paris", None)
    assert set(streamed["decisions"]) == {"abstain"}


@pytest.mark.parametrize("api", APIS)
def test_generate_object_withheld_is_no_object_with_the_message_and_the_decision(
    results: dict[str, Any], api: str
) -> None:
    assert value(results, f"{api}-object-answered") == {
        "object": {"city": "Paris"}, "header": "answer"}
    withheld = results[f"{api}-object-withheld"]
    # The SDK's own error for an answer without an object, not a schema error: its `text` is
    # the message, its response's headers the decision. One call: it is not retried.
    assert withheld["error"]["name"] == "AI_NoObjectGeneratedError"
    assert (withheld["error"]["text"], withheld["error"]["header"]) == (MESSAGE, "abstain")
    assert withheld["calls"] == 1


@pytest.mark.parametrize("run", ["object", "tools-forced"])
@pytest.mark.parametrize("api", APIS)
def test_withheld_shape_error_is_an_api_call_error_not_retried(
    results: dict[str, Any], api: str, run: str
) -> None:
    result = results[f"{api}-{run}-error"]
    assert result["error"]["name"] == "AI_APICallError"
    assert (result["error"]["status"], result["error"]["retryable"]) == (422, False)
    assert (result["error"]["message"], result["error"]["header"]) == (MESSAGE, "abstain")
    assert result["calls"] == 1  # the SDK retries only what it deems retryable


@pytest.mark.parametrize("api", APIS)
def test_a_tool_call_the_model_chose_passes(results: dict[str, Any], api: str) -> None:
    assert value(results, f"{api}-tools-auto") == {
        "calls": [{"city": "Paris"}], "text": "", "header": "not_applicable"}


def test_a_forced_tool_call_is_decided(results: dict[str, Any]) -> None:
    assert value(results, "chat-tools-forced-answered") == {
        "calls": [{"city": "Paris"}], "text": "", "header": "answer"}
    # Withheld (as a refusal): the SDK reports that the required tool was not called, once.
    for name in ("chat-tools-forced-withheld", "responses-tools-forced-withheld"):
        assert results[name]["error"]["name"] == "AI_ToolChoiceViolationError"
        assert results[name]["calls"] == 1
