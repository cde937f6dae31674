"""The OpenAI Agents SDK running a one-tool agent through basguard on its Responses model.

The fake upstream answers the agent's first turn with a ``function_call`` (passed through
undecided: an action, not an answer) and, once the tool's result is in the input, with the
scripted message, which basguard answers or withholds.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import TENANT_KEYS

agents = pytest.importorskip("agents")

CONFIDENT = [-0.01, -0.01, -0.01, -0.01]
UNSURE = [-2.0, -2.0, -2.0, -2.0]
ANSWER = "It is sunny in Paris."


@pytest.fixture(autouse=True, scope="module")
def no_tracing() -> Iterator[None]:
    # The SDK exports traces to OpenAI by default; a test must not call out.
    agents.set_tracing_disabled(True)
    yield


def weather_agent(gateway: str, tenant: str, calls: list[str], logprobs: list[float]
                  ) -> tuple[Any, openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=gateway, api_key=TENANT_KEYS[tenant], max_retries=0,
                                timeout=30)

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return f"Sunny in {city}"

    directive = {"tool_call": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                 "content": ANSWER, "logprobs": logprobs}
    agent = agents.Agent(
        name="weather", instructions=json.dumps({"fake": directive}), tools=[get_weather],
        model=agents.OpenAIResponsesModel(model="fake", openai_client=client),
    )
    return agent, client


async def run(gateway: str, tenant: str, logprobs: list[float], *, streamed: bool
              ) -> tuple[Any, list[str], list[Any]]:
    calls: list[str] = []
    agent, client = weather_agent(gateway, tenant, calls, logprobs)
    raw: list[Any] = []
    async with client:
        if streamed:
            result = agents.Runner.run_streamed(agent, "What is the weather in Paris?")
            async for event in result.stream_events():
                if event.type == "raw_response_event":
                    raw.append(event.data)
        else:
            result = await agents.Runner.run(agent, "What is the weather in Paris?")
    return result, calls, raw


@pytest.mark.parametrize("streamed", [False, True], ids=["run", "run_streamed"])
@pytest.mark.parametrize(("tenant", "logprobs", "output", "decision"), [
    ("enforcer", CONFIDENT, ANSWER, "answer"),
    ("enforcer", UNSURE, "I won't guess.", "abstain"),
    ("annotator", UNSURE, ANSWER, "abstain"),
])
def test_a_one_tool_agent_runs_through_basguard(
    gateway: str, upstream: FakeUpstream, streamed: bool, tenant: str,
    logprobs: list[float], output: str, decision: str,
) -> None:
    result, calls, raw = asyncio.run(run(gateway, tenant, logprobs, streamed=streamed))
    assert calls == ["Paris"]  # the tool call passed through and the agent ran the tool
    assert result.final_output == output
    # Two model turns: the tool call, then the answer after the tool's result.
    bodies = [r["body"] for r in upstream.received]
    assert len(bodies) == 2
    assert any(item.get("type") == "function_call_output" for item in bodies[1]["input"])
    if streamed:
        # The decision of each model turn, on its raw `response.completed` event.
        decisions = [e.response.metadata["basguard_decision"] for e in raw
                     if e.type == "response.completed"]
        assert decisions == ["not_applicable", decision]
        completed = [e for e in raw if e.type == "response.completed"][-1]
        assert (completed.response.model_extra or {})["basguard"]["decision"] == decision
    if decision == "abstain" and tenant == "enforcer":
        assert ANSWER not in json.dumps([item.to_input_item() for item in result.new_items],
                                        default=str)


def test_an_agent_whose_answer_is_withheld_as_an_error_raises(gateway: str) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        asyncio.run(run(gateway, "refuser", UNSURE, streamed=False))
    assert caught.value.code == "answer_withheld"
