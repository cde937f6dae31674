"""litellm as a client SDK pointed at basguard: the cells of the client matrix that
tests/proxy/test_clients.py leaves open: tools chosen and forced, structured output
(``response_format`` a pydantic model), the Responses API (``aresponses``) plain and streamed,
answered and withheld, and ``withheld_shape: error`` (#21)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

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

T = TypeVar("T")


class City(BaseModel):
    city: str


TOOLS = [{"type": "function", "function": {"name": "City",
                                           "parameters": City.model_json_schema()}}]
FORCED = {"type": "function", "function": {"name": "City"}}


def with_litellm(work: Callable[[Any], Awaitable[T]]) -> T:
    """``work(litellm)`` on litellm's async API, closing the clients litellm caches."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    async def run() -> T:
        try:
            return await work(litellm)
        finally:
            await litellm.close_litellm_async_clients()

    return asyncio.run(run())


def options(base_url: str, tenant: str) -> dict[str, Any]:
    return {"model": f"openai/{MODEL}", "api_base": base_url, "api_key": KEYS[tenant]}


def complete(base_url: str, tenant: str, text: str, **extra: Any) -> Any:
    return with_litellm(lambda litellm: litellm.acompletion(
        messages=[{"role": "user", "content": text}], **options(base_url, tenant), **extra))


def test_a_tool_call_the_model_chose_passes(base_url: str, upstream: FakeUpstream) -> None:
    response = complete(base_url, "enforcer", city_call(UNSURE), tools=TOOLS)
    (call,) = response.choices[0].message.tool_calls
    assert call.function.name == "City"
    assert response.basguard["decision"] == "not_applicable"


@pytest.mark.parametrize(("logprobs", "decision"), [(CONFIDENT, "answer"), (UNSURE, "abstain")])
def test_a_forced_tool_call_and_structured_output_are_decided(
    base_url: str, upstream: FakeUpstream, logprobs: list[float], decision: str
) -> None:
    forced = complete(base_url, "enforcer", city_call(logprobs), tools=TOOLS, tool_choice=FORCED)
    structured = complete(base_url, "enforcer", json_answer(logprobs), response_format=City)
    for response in (forced, structured):
        assert response.basguard["decision"] == decision
        message = response.choices[0].message
        if decision == "abstain":  # litellm passes the refusal on; it validates nothing
            assert (message.refusal, message.content, message.tool_calls) == (
                MESSAGE, None, None)
    if decision == "answer":
        assert forced.choices[0].message.tool_calls[0].function.arguments == '{"city": "Paris"}'
        assert City.model_validate_json(structured.choices[0].message.content).city == "Paris"


def test_withheld_shape_error_is_a_422_retried_only_when_num_retries_says(
    base_url: str, upstream: FakeUpstream
) -> None:
    """litellm does not retry by default; given ``num_retries`` it retries every API error, a
    422 too: a litellm app that sets it gets each withheld answer asked 1 + num_retries times."""
    import litellm

    for retries, calls in ((None, 1), (2, 3)):
        text = json_answer(UNSURE)
        with pytest.raises(litellm.BadRequestError) as caught:  # litellm's class for a 422
            complete(base_url, "as-error", text, response_format=City,
                     **({"num_retries": retries} if retries else {}))
        assert caught.value.status_code == 422 and MESSAGE in caught.value.message
        assert upstream_calls(upstream, text) == calls


# litellm's own Responses types trip a pydantic serializer warning inside litellm.
@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")
@pytest.mark.parametrize(("logprobs", "text", "decision"), [
    (CONFIDENT, "Paris", "answer"), (UNSURE, MESSAGE, "abstain")])
def test_the_responses_api_plain_and_streamed(
    base_url: str, upstream: FakeUpstream, logprobs: list[float], text: str, decision: str
) -> None:
    response = with_litellm(lambda litellm: litellm.aresponses(
        input=answer(logprobs), **options(base_url, "enforcer")))
    assert response.output[0].content[0].text == text
    assert response.metadata["basguard_decision"] == decision

    async def stream(litellm: Any) -> list[Any]:
        events = await litellm.aresponses(input=answer(logprobs), stream=True,
                                          **options(base_url, "enforcer"))
        return [event async for event in events]

    events = with_litellm(stream)
    assert events[-1].type == "response.completed"
    assert events[-1].response.metadata["basguard_decision"] == decision
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == text
