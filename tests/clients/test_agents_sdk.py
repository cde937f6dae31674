"""The OpenAI Agents SDK through basguard: the cells of the client matrix that
tests/proxy/test_clients.py, test_responses_agents.py and test_decision_recipes.py leave open:
a forced tool call (``ModelSettings(tool_choice="required")``), answered and withheld, on both
of its models, and ``withheld_shape: error`` (#21)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
import pytest

from tests.clients.matrix import (
    CITY_ARGUMENTS,
    CONFIDENT,
    KEYS,
    MESSAGE,
    UNSURE,
    city_call,
    question,
    upstream_calls,
)
from tests.support.fake_upstream import FakeUpstream

agents = pytest.importorskip("agents")


@pytest.fixture(autouse=True, scope="module")
def no_tracing() -> None:
    agents.set_tracing_disabled(True)  # the SDK would export traces to OpenAI


def run_forced(base_url: str, tenant: str, text: str, *, chat_model: bool
               ) -> tuple[Any, list[str]]:
    looked_up: list[str] = []

    @agents.function_tool
    def City(city: str) -> str:
        """Look a city up."""
        looked_up.append(city)
        return json.dumps({"fake": {"content": "It is in Paris.", "logprobs": CONFIDENT}})

    async def run() -> Any:
        async with openai.AsyncOpenAI(base_url=base_url, api_key=KEYS[tenant],
                                      timeout=30) as client:
            model = (agents.OpenAIChatCompletionsModel(model="fake", openai_client=client)
                     if chat_model else
                     agents.OpenAIResponsesModel(model="fake", openai_client=client))
            agent = agents.Agent(name="guide", instructions="Use the tool.", tools=[City],
                                 model=model,
                                 model_settings=agents.ModelSettings(tool_choice="required"))
            return await agents.Runner.run(agent, text)

    return asyncio.run(run()), looked_up


def forced_question(chat_model: bool) -> str:
    """An unsure forced call."""
    if chat_model:
        return city_call(UNSURE)
    # The Responses API gives a function call no logprobs: the enforcer, on logprobs alone,
    # has no confidence for it and withholds it (on_missing_confidence: abstain).
    return question(tool_call={"name": "City", "arguments": CITY_ARGUMENTS})


def test_a_confident_forced_tool_call_runs_the_tool(
    base_url: str, upstream: FakeUpstream
) -> None:
    result, looked_up = run_forced(base_url, "enforcer", city_call(CONFIDENT), chat_model=True)
    assert (looked_up, result.final_output) == (["Paris"], "It is in Paris.")


@pytest.mark.parametrize("chat_model", [True, False], ids=["chat", "responses"])
def test_a_withheld_forced_tool_call_is_a_refusal_and_the_tool_does_not_run(
    base_url: str, upstream: FakeUpstream, chat_model: bool
) -> None:
    with pytest.raises(agents.exceptions.ModelRefusalError) as caught:
        run_forced(base_url, "enforcer", forced_question(chat_model), chat_model=chat_model)
    assert caught.value.refusal == MESSAGE


@pytest.mark.parametrize("chat_model", [True, False], ids=["chat", "responses"])
def test_withheld_shape_error_is_the_sdks_422(
    base_url: str, upstream: FakeUpstream, chat_model: bool
) -> None:
    text = forced_question(chat_model)
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        run_forced(base_url, "as-error", text, chat_model=chat_model)
    assert caught.value.response.headers["x-basguard-decision"] == "abstain"
    assert upstream_calls(upstream, text) == 1  # not retried
