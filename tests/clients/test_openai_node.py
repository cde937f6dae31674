"""The openai npm SDK (node, tests/clients/node) through basguard: chat, streams, tool calls,
``parse()`` and its stream helper, the Responses API and its ``stream()`` and ``parse()``
helpers, answered and withheld, and the decision where the app reads it (#21)."""

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
)
from tests.support.fake_upstream import FakeUpstream

OUTCOMES = {"answered": CONFIDENT, "withheld": UNSURE}

CASES = [
    *(case(f"{run}-{outcome}", run, "enforcer", answer(logprobs))
      for run in ("chat", "stream", "responses") for outcome, logprobs in OUTCOMES.items()),
    *(case(f"{run}-annotated", run, "annotator", answer(UNSURE))
      for run in ("chat", "stream", "responses", "responsesStream")),
    *(case(f"{run}-{outcome}", run, "enforcer", json_answer(logprobs))
      for run in ("parse", "streamHelper", "responsesParse")
      for outcome, logprobs in OUTCOMES.items()),
    *(case(f"{run}-error", run, "as-error", json_answer(UNSURE))
      for run in ("parse", "responsesParse")),
    *(case(f"responsesStream-{outcome}", "responsesStream", "enforcer", answer(logprobs))
      for outcome, logprobs in OUTCOMES.items()),
    *(case(f"responsesStream-schema-{outcome}", "responsesStream", "enforcer",
           json_answer(logprobs), schema=True) for outcome, logprobs in OUTCOMES.items()),
    case("tools-auto", "tools", "enforcer", city_call(UNSURE)),
    *(case(f"tools-forced-{outcome}", "tools", "enforcer", city_call(logprobs), forced=True)
      for outcome, logprobs in OUTCOMES.items()),
]


@pytest.fixture(scope="module")
def results(base_url: str, fake_upstream: tuple[FakeUpstream, str]) -> dict[str, Any]:
    return run_client([node(), str(NODE / "openai_client.mjs")], base_url, CASES,
                      fake_upstream[0])


def value(results: dict[str, Any], name: str) -> Any:
    result = results[name]
    assert "value" in result, result
    return result["value"]


@pytest.mark.parametrize(("outcome", "content", "decision"), [
    ("answered", "Paris", "answer"), ("withheld", MESSAGE, "abstain")])
def test_chat_reads_the_answer_or_the_message_and_the_decision(
    results: dict[str, Any], outcome: str, content: str, decision: str
) -> None:
    chat = value(results, f"chat-{outcome}")
    assert (chat["content"], chat["refusal"]) == (content, None)
    assert chat["header"] == chat["decision"] == decision
    assert chat["requestId"] == chat["id"]  # `_request_id`: the decision's id, for feedback
    stream = value(results, f"stream-{outcome}")
    assert (stream["content"], stream["decision"]) == (content, decision)


def test_an_annotated_answer_passes_with_its_decision(results: dict[str, Any]) -> None:
    chat = value(results, "chat-annotated")
    assert (chat["content"], chat["header"], chat["decision"]) == ("Paris", "abstain", "abstain")
    # Streamed, the decision comes after the headers: on the chunk with the finish_reason.
    assert value(results, "stream-annotated") == {"content": "Paris", "decision": "abstain"}
    for run in ("responses", "responsesStream"):
        response = value(results, f"{run}-annotated")
        assert (response["text"], response["metadata"]["basguard_decision"]) == (
            "Paris", "abstain")


@pytest.mark.parametrize("run", ["parse", "streamHelper"])
def test_parse_gives_parsed_or_null_and_the_refusal(results: dict[str, Any], run: str) -> None:
    answered = value(results, f"{run}-answered")
    assert (answered["parsed"], answered["refusal"]) == ({"city": "Paris"}, None)
    withheld = value(results, f"{run}-withheld")
    assert (withheld["parsed"], withheld["refusal"]) == (None, MESSAGE)  # no ZodError
    if run == "streamHelper":
        assert "refusal.done" in withheld["events"] and "content.delta" not in withheld["events"]


@pytest.mark.parametrize("run", ["parse", "responsesParse"])
def test_withheld_shape_error_is_a_422_not_retried(results: dict[str, Any], run: str) -> None:
    error = results[f"{run}-error"]["error"]
    assert (error["type"], error["status"], error["code"]) == (
        "UnprocessableEntityError", 422, "answer_withheld")
    assert error["header"] == "abstain"
    assert results[f"{run}-error"]["calls"] == 1


def test_tool_calls_the_model_chose_pass_and_forced_ones_are_decided(
    results: dict[str, Any]
) -> None:
    assert value(results, "tools-auto") == {
        "calls": [CITY_ARGUMENTS], "refusal": None, "content": None, "header": "not_applicable"}
    assert value(results, "tools-forced-answered") == {
        "calls": [CITY_ARGUMENTS], "refusal": None, "content": None, "header": "answer"}
    assert value(results, "tools-forced-withheld") == {
        "calls": [], "refusal": MESSAGE, "content": None, "header": "abstain"}


@pytest.mark.parametrize(("outcome", "text", "decision"), [
    ("answered", "Paris", "answer"), ("withheld", MESSAGE, "abstain")])
def test_responses_and_the_stream_helper_complete(
    results: dict[str, Any], outcome: str, text: str, decision: str
) -> None:
    plain = value(results, f"responses-{outcome}")
    assert (plain["text"], plain["metadata"]["basguard_decision"]) == (text, decision)
    streamed = value(results, f"responsesStream-{outcome}")
    assert streamed["last"] == "response.completed"
    assert (streamed["text"], streamed["metadata"]["basguard_decision"]) == (text, decision)


@pytest.mark.parametrize("run", ["responsesParse", "responsesStream-schema"])
def test_responses_with_a_schema_give_parsed_or_a_refusal_part(
    results: dict[str, Any], run: str
) -> None:
    answered = value(results, f"{run}-answered")
    assert answered["parsed"] == {"city": "Paris"}
    assert answered["metadata"]["basguard_decision"] == "answer"
    withheld = value(results, f"{run}-withheld")
    assert (withheld["parsed"], withheld["parts"]) == (None, ["refusal"])
    assert withheld["metadata"]["basguard_decision"] == "abstain"
    if run == "responsesStream-schema":
        assert withheld["last"] == "response.completed"
