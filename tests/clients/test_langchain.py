"""LangChain (``langchain-openai``) through basguard: the cells of the client matrix that
tests/proxy/test_clients.py and test_decision_recipes.py leave open: tools chosen and forced
(``bind_tools``), the Responses API answered and withheld, plain and streamed, and
``withheld_shape: error`` for structured output (#21)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from tests.clients.matrix import (
    CONFIDENT,
    KEYS,
    MESSAGE,
    MODEL,
    UNSURE,
    answer,
    city_call,
    json_answer,
    upstream_calls,
)
from tests.support.fake_upstream import FakeUpstream

langchain_openai = pytest.importorskip("langchain_openai")


class City(BaseModel):
    """A city."""

    city: str


def chat(base_url: str, tenant: str, **options: Any) -> Any:
    return langchain_openai.ChatOpenAI(
        model=MODEL, base_url=base_url, api_key=KEYS[tenant], timeout=30,
        include_response_headers=True, **options)


def test_a_tool_call_the_model_chose_passes(base_url: str, upstream: FakeUpstream) -> None:
    message = chat(base_url, "enforcer").bind_tools([City]).invoke(city_call(UNSURE))
    assert [call["args"] for call in message.tool_calls] == [{"city": "Paris"}]
    assert message.response_metadata["headers"]["x-basguard-decision"] == "not_applicable"


@pytest.mark.parametrize("tool_choice", ["City", "required"])
def test_a_forced_tool_call_is_decided(
    base_url: str, upstream: FakeUpstream, tool_choice: str
) -> None:
    forced = chat(base_url, "enforcer").bind_tools([City], tool_choice=tool_choice)
    answered = forced.invoke(city_call(CONFIDENT))
    assert [call["args"] for call in answered.tool_calls] == [{"city": "Paris"}]
    assert answered.response_metadata["headers"]["x-basguard-decision"] == "answer"
    withheld = forced.invoke(city_call(UNSURE))
    # No call; the refusal where LangChain keeps it, and the decision in the headers.
    assert (withheld.tool_calls, withheld.additional_kwargs["refusal"]) == ([], MESSAGE)
    assert withheld.response_metadata["headers"]["x-basguard-decision"] == "abstain"


@pytest.mark.parametrize(("logprobs", "content", "decision"), [
    (CONFIDENT, "Paris", "answer"), (UNSURE, MESSAGE, "abstain")])
def test_the_responses_api_plain_and_streamed(
    base_url: str, upstream: FakeUpstream, logprobs: list[float], content: str, decision: str
) -> None:
    llm = chat(base_url, "enforcer", use_responses_api=True)
    message = llm.invoke(answer(logprobs))
    assert message.text == content
    assert message.response_metadata["metadata"]["basguard_decision"] == decision
    chunks = list(llm.stream(answer(logprobs)))
    assert "".join(chunk.text for chunk in chunks) == content
    metadata = [c.response_metadata["metadata"] for c in chunks if "metadata" in c.response_metadata]
    assert metadata[-1]["basguard_decision"] == decision


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_withheld_shape_error_is_the_sdks_422_not_retried(
    base_url: str, upstream: FakeUpstream, method: str
) -> None:
    """The openai SDK under LangChain raises the 422 at once (LangChain's default retries, 2,
    skip it)."""
    import openai

    question = city_call(UNSURE) if method == "function_calling" else json_answer(UNSURE)
    structured = chat(base_url, "as-error").with_structured_output(City, method=method)
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        structured.invoke(question)
    assert caught.value.code == "answer_withheld"
    assert caught.value.response.headers["x-basguard-decision"] == "abstain"
    assert upstream_calls(upstream, question) == 1
