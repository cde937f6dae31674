"""LlamaIndex's OpenAI LLMs through basguard, in their own environment
(tests/clients/llamaindex.txt): chat, streams, tools chosen and forced, structured output
(``structured_predict``, ``as_structured_llm``, streamed), ``OpenAIResponses`` plain and
streamed, answered and withheld, and the decision where a LlamaIndex app reads it (#21)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.clients.environments import HERE, python_of, run_client
from tests.clients.matrix import (
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
STRUCTURED = ("structured_predict", "as_structured_llm", "stream_structured_predict")

CASES = [
    *(case(f"{run}-{outcome}", run, "enforcer", answer(logprobs))
      for run in ("chat", "stream", "responses", "responses-stream")
      for outcome, logprobs in OUTCOMES.items()),
    *(case(f"{run}-annotated", run, "annotator", answer(UNSURE))
      for run in ("chat", "stream", "responses", "responses-stream")),
    case("tools-auto", "tools", "enforcer", city_call(UNSURE)),
    *(case(f"tools-forced-{outcome}", "tools", "enforcer", city_call(logprobs), forced=True)
      for outcome, logprobs in OUTCOMES.items()),
    case("tools-forced-error", "tools", "as-error", city_call(UNSURE), forced=True),
    *(case(f"{run}-{outcome}", run, "enforcer", json_answer(logprobs))
      for run in STRUCTURED for outcome, logprobs in OUTCOMES.items()),
    *(case(f"{run}-error", run, "as-error", json_answer(UNSURE)) for run in STRUCTURED),
]


@pytest.fixture(scope="module")
def results(base_url: str, fake_upstream: tuple[FakeUpstream, str]) -> dict[str, Any]:
    return run_client([str(python_of("llamaindex")), str(HERE / "llamaindex_client.py")],
                      base_url, CASES, fake_upstream[0])


def value(results: dict[str, Any], name: str) -> Any:
    result = results[name]
    assert "value" in result, result
    return result["value"]


RUNS = ("chat", "stream", "responses", "responses-stream")


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize(("outcome", "content", "decision"), [
    ("answered", "Paris", "answer"), ("withheld", MESSAGE, "abstain"),
    ("annotated", "Paris", "abstain")])
def test_chat_streams_and_responses_read_the_answer_and_the_decision(
    results: dict[str, Any], run: str, outcome: str, content: str, decision: str
) -> None:
    """A response's ``raw`` carries the decision, also at the end of an annotated stream; the
    instrumentation handler sees it too."""
    result = results[f"{run}-{outcome}"]
    assert result["value"] == {"content": content, "decision": decision}
    assert (result["decisions"], result["calls"]) == ([decision], 1)


def test_tool_calls_the_model_chose_pass_and_forced_ones_are_decided(
    results: dict[str, Any]
) -> None:
    paris = [{"city": "Paris"}]
    assert value(results, "tools-auto") == {
        "calls": paris, "content": None, "decision": "not_applicable"}
    assert value(results, "tools-forced-answered") == {
        "calls": paris, "content": None, "decision": "answer"}
    # Withheld as a refusal, which LlamaIndex does not surface: no call and no text; the
    # decision says why.
    assert value(results, "tools-forced-withheld") == {
        "calls": [], "content": None, "decision": "abstain"}


@pytest.mark.parametrize("run", STRUCTURED)
def test_structured_output_answered_and_its_decision(results: dict[str, Any], run: str) -> None:
    answered = results[f"{run}-answered"]
    assert answered["value"] == {"city": "Paris"}
    assert answered["decisions"][0] == "answer"  # the chat call under the structured one


@pytest.mark.parametrize("run", ["structured_predict", "as_structured_llm"])
def test_a_withheld_structured_answer_fails_validation_under_auto(
    results: dict[str, Any], run: str
) -> None:
    """LlamaIndex reads the content only: a refusal (null content) fails its schema. Hence
    withheld_shape: error for LlamaIndex apps (below). One call: it does not retry."""
    withheld = results[f"{run}-withheld"]
    assert withheld["error"]["type"] == "ValidationError"
    assert (withheld["decisions"], withheld["calls"]) == (["abstain"], 1)
    # Streamed, the partial object stays empty.
    assert value(results, "stream_structured_predict-withheld") == {"city": None}


@pytest.mark.parametrize("run", [*STRUCTURED, "tools-forced"])
def test_withheld_shape_error_is_the_sdks_422_not_retried(
    results: dict[str, Any], run: str
) -> None:
    error = results[f"{run}-error"]
    assert (error["error"]["type"], error["error"]["status"]) == (
        "UnprocessableEntityError", 422)
    assert error["error"]["header"] == "abstain" and "answer_withheld" in error["error"]["message"]
    assert error["calls"] == 1  # LlamaIndex's retries (max_retries=3) skip a 422
