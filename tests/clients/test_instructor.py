"""instructor through basguard, in its own environment (tests/clients/instructor.txt): each mode
answered and withheld, the number of upstream calls a withheld request costs (#21: one), and
the decision read from instructor's hooks."""

from __future__ import annotations

from typing import Any

import pytest

from tests.clients.environments import HERE, python_of, run_client
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


def responses_call(samples_agree: bool) -> str:
    """A forced function call on the Responses API, which has no logprobs for it: the sampler
    tenants decide it on samples that agree with it or not."""
    drawn = CITY_ARGUMENTS if samples_agree else '{"city": "Lyon"}'
    return question(tool_call={"name": "City", "arguments": CITY_ARGUMENTS},
                    sample_answers=[drawn])


CASES = [
    case("chat-answered", "chat", "enforcer", answer(CONFIDENT)),
    case("chat-withheld", "chat", "enforcer", answer(UNSURE)),
    case("partial-answered", "partial", "enforcer", city_call(CONFIDENT)),
    case("partial-withheld", "partial", "enforcer", city_call(UNSURE)),
    case("partial-as-error-withheld", "partial", "as-error", city_call(UNSURE)),
    *(case(f"{mode}-{tenant}-{outcome}", "structured", tenant,
           (city_call if mode.startswith("tool") else json_answer)(logprobs), mode=mode)
      for mode in ("tool_call", "tools_strict", "json_mode", "json_schema_mode",
                   "markdown_json_mode")
      for tenant in ("enforcer", "as-error", "refuser")
      for outcome, logprobs in (("answered", CONFIDENT), ("withheld", UNSURE))),
    case("responses_tools-sampler-answered", "structured", "sampler", responses_call(True),
         mode="responses_tools"),
    *(case(f"responses_tools-{tenant}-withheld", "structured", tenant, responses_call(False),
           mode="responses_tools") for tenant in ("sampler", "sampler-as-error")),
]


@pytest.fixture(scope="module")
def results(base_url: str, fake_upstream: tuple[FakeUpstream, str]) -> dict[str, Any]:
    return run_client([str(python_of("instructor")), str(HERE / "instructor_client.py")],
                      base_url, CASES, fake_upstream[0])


def test_without_a_response_model_it_is_the_chat_completion(results: dict[str, Any]) -> None:
    assert results["chat-answered"]["value"] == {"content": "Paris", "decision": "answer"}
    assert results["chat-withheld"]["value"] == {"content": MESSAGE, "decision": "abstain"}


DEFAULT_MODES = ["tool_call", "tools_strict"]
JSON_MODES = ["json_mode", "json_schema_mode"]


@pytest.mark.parametrize("mode", [*DEFAULT_MODES, *JSON_MODES, "markdown_json_mode"])
@pytest.mark.parametrize("tenant", ["enforcer", "as-error", "refuser"])
def test_an_answer_is_the_model_and_its_decision_is_in_the_hook(
    results: dict[str, Any], mode: str, tenant: str
) -> None:
    answered = results[f"{mode}-{tenant}-answered"]
    assert answered["value"] == {"city": "Paris"}
    assert (answered["decisions"], answered["calls"]) == (["answer"], 1)


@pytest.mark.parametrize("mode", DEFAULT_MODES)
def test_a_withheld_tool_answer_is_the_refusal_in_one_call(
    results: dict[str, Any], mode: str
) -> None:
    """The default mode forces a tool call: withheld, it is a refusal, which instructor raises
    without asking again (InstructorRetryException from its AssertionError)."""
    withheld = results[f"{mode}-enforcer-withheld"]
    assert (withheld["error"]["type"], withheld["error"]["cause"]) == (
        "InstructorRetryException", "AssertionError")
    assert withheld["error"]["message"] == f"Unable to generate a response due to {MESSAGE}"
    assert (withheld["decisions"], withheld["calls"]) == (["abstain"], 1)


@pytest.mark.parametrize("mode", [*DEFAULT_MODES, *JSON_MODES])
@pytest.mark.parametrize("tenant", ["as-error", "refuser"])
def test_a_422_is_raised_at_once(results: dict[str, Any], mode: str, tenant: str) -> None:
    """withheld_shape: error (or abstain_action: error): the 422 is not retried, in any mode,
    and the error hook sees the decision in its headers."""
    withheld = results[f"{mode}-{tenant}-withheld"]
    assert (withheld["error"]["type"], withheld["error"]["cause"]) == (
        "InstructorRetryException", "UnprocessableEntityError")
    assert "answer_withheld" in withheld["error"]["cause_message"]
    assert (withheld["decisions"], withheld["calls"]) == (["abstain"], 1)


@pytest.mark.parametrize("mode", JSON_MODES)
def test_json_modes_retry_a_refusal_unless_the_tenant_says_error(
    results: dict[str, Any], mode: str
) -> None:
    """The JSON modes validate the content and ask again when it fails: a refusal (null
    content) costs 1 + max_retries calls. Hence withheld_shape: error for such apps."""
    withheld = results[f"{mode}-enforcer-withheld"]
    assert withheld["error"]["cause"] == "ValidationError"
    assert withheld["calls"] == 4


def test_markdown_json_mode_is_plain_text_to_basguard(results: dict[str, Any]) -> None:
    """MD_JSON sends no response_format: the withheld answer is the message as text, which
    instructor fails to validate and retries, whatever withheld_shape says; only
    abstain_action: error (a 422 for every withheld answer) makes it one call."""
    for tenant in ("enforcer", "as-error"):
        withheld = results[f"markdown_json_mode-{tenant}-withheld"]
        assert (withheld["error"]["cause"], withheld["calls"]) == ("ValidationError", 4)
    assert results["markdown_json_mode-refuser-withheld"]["calls"] == 1


def test_the_responses_mode_needs_withheld_shape_error(results: dict[str, Any]) -> None:
    """RESPONSES_TOOLS looks for a function call only: a refusal part reads as a reply without
    one (ResponseParsingError), which it retries; a 422 it raises at once."""
    answered = results["responses_tools-sampler-answered"]
    assert (answered["value"], answered["decisions"], answered["calls"]) == (
        {"city": "Paris"}, ["answer"], 1)
    retried = results["responses_tools-sampler-withheld"]
    assert (retried["error"]["cause"], retried["calls"]) == ("ResponseParsingError", 4)
    once = results["responses_tools-sampler-as-error-withheld"]
    assert (once["error"]["cause"], once["decisions"], once["calls"]) == (
        "UnprocessableEntityError", ["abstain"], 1)


def test_create_partial_streams_the_model_and_nothing_when_withheld(
    results: dict[str, Any]
) -> None:
    assert results["partial-answered"]["value"] == {"city": "Paris"}
    # The hook gets the stream, not a completion: no decision to read there.
    assert results["partial-answered"]["decisions"] == [None]
    # Withheld as a refusal, the stream has no arguments: no partial object, no error.
    assert (results["partial-withheld"]["value"], results["partial-withheld"]["calls"]) == (
        None, 1)
    error = results["partial-as-error-withheld"]
    assert (error["error"]["cause"] or error["error"]["type"], error["calls"]) == (
        "UnprocessableEntityError", 1)
