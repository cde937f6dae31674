"""Pydantic AI through basguard, in the main test environment: an agent's text and streams on
its Chat Completions and Responses models, a tool the model chose, structured output (its
default tool output, which forces a tool call, and ``NativeOutput``: a JSON schema), answered
and withheld, and the one place the app can read the decision (#21).

Pydantic AI keeps no response headers or unknown fields: the decision is read with an httpx2
event hook on the HTTP client the provider is given (the recipe of docs/clients.md). An
annotated stream's decision comes after the headers, inside the body Pydantic AI consumes:
hidden from the app.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx2
import pytest
from pydantic import BaseModel

from tests.clients.matrix import (
    CITY_ARGUMENTS,
    CONFIDENT,
    KEYS,
    MESSAGE,
    MODEL,
    UNSURE,
    answer,
    json_answer,
    question,
    upstream_calls,
)
from tests.support.fake_upstream import FakeUpstream

pydantic_ai = pytest.importorskip("pydantic_ai")
from pydantic_ai import Agent, NativeOutput  # noqa: E402
from pydantic_ai.exceptions import ContentFilterError, ModelHTTPError  # noqa: E402
from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel  # noqa: E402
from pydantic_ai.providers.openai import OpenAIProvider  # noqa: E402

T = TypeVar("T")
MODELS = {"chat": OpenAIChatModel, "responses": OpenAIResponsesModel}


class City(BaseModel):
    city: str


def run_agent(base_url: str, tenant: str, api: str,
              work: Callable[[Any], Awaitable[T]]) -> tuple[T, list[str | None]]:
    """``work(model)`` on a model whose HTTP client records each response's decision header
    (None where a response has none)."""
    decisions: list[str | None] = []

    async def remember(response: httpx2.Response) -> None:
        decisions.append(response.headers.get("x-basguard-decision"))

    async def run() -> T:
        async with httpx2.AsyncClient(event_hooks={"response": [remember]}, timeout=30) as http:
            provider = OpenAIProvider(base_url=base_url, api_key=KEYS[tenant], http_client=http)
            return await work(MODELS[api](MODEL, provider=provider))

    return asyncio.run(run()), decisions


def failure(call: Callable[[], Any]) -> BaseException:
    with pytest.raises(Exception) as caught:
        call()
    return caught.value


@pytest.mark.parametrize("api", list(MODELS))
@pytest.mark.parametrize(("logprobs", "output", "decision"), [
    (CONFIDENT, "Paris", "answer"), (UNSURE, MESSAGE, "abstain")])
def test_an_agents_text_and_stream_and_the_decision_in_the_http_hook(
    base_url: str, upstream: FakeUpstream, api: str, logprobs: list[float], output: str,
    decision: str,
) -> None:
    result, decisions = run_agent(base_url, "enforcer", api,
                                  lambda model: Agent(model).run(answer(logprobs)))
    assert (result.output, decisions) == (output, [decision])

    async def stream(model: Any) -> str:
        async with Agent(model).run_stream(answer(logprobs)) as streamed:
            return "".join([text async for text in streamed.stream_text(delta=True)])

    streamed, decisions = run_agent(base_url, "enforcer", api, stream)
    # enforce decides before the stream starts: its headers have the decision.
    assert (streamed, decisions) == (output, [decision])


@pytest.mark.parametrize("api", list(MODELS))
def test_an_annotated_answer_passes_and_its_streams_decision_is_hidden(
    base_url: str, upstream: FakeUpstream, api: str
) -> None:
    result, decisions = run_agent(base_url, "annotator", api,
                                  lambda model: Agent(model).run(answer(UNSURE)))
    assert (result.output, decisions) == ("Paris", ["abstain"])

    async def stream(model: Any) -> str:
        async with Agent(model).run_stream(answer(UNSURE)) as streamed:
            return await streamed.get_output()

    streamed, decisions = run_agent(base_url, "annotator", api, stream)
    assert (streamed, decisions) == ("Paris", [None])  # the decision rode in the body


@pytest.mark.parametrize(("logprobs", "output"), [
    (CONFIDENT, "Sunny in Paris."), (UNSURE, MESSAGE)])
def test_a_tool_the_model_chose_runs_and_the_final_answer_is_decided(
    base_url: str, upstream: FakeUpstream, logprobs: list[float], output: str
) -> None:
    looked_up: list[str] = []

    def weather(city: str) -> str:
        """The weather in a city."""
        looked_up.append(city)
        # The fake scripts its next reply from the last message: this tool result.
        return json.dumps({"fake": {"content": "Sunny in Paris.", "logprobs": logprobs}})

    text = question(tool_calls=[{"name": "weather", "arguments": CITY_ARGUMENTS}],
                    logprobs=UNSURE)
    result, decisions = run_agent(base_url, "enforcer", "chat",
                                  lambda model: Agent(model, tools=[weather]).run(text))
    assert looked_up == ["Paris"]  # the unsure call passed (tool_calls: pass)
    assert result.output == output
    assert decisions == ["not_applicable", "answer" if output != MESSAGE else "abstain"]


def structured_question(kind: str, logprobs: list[float]) -> str:
    if kind == "tool":  # Pydantic AI's default output: a forced call of its final_result tool
        return question(tool_calls=[{"name": "final_result", "arguments": CITY_ARGUMENTS}],
                        logprobs=logprobs)
    return json_answer(logprobs)


def agent_for(kind: str, model: Any) -> Agent[None, City]:
    return Agent(model, output_type=City if kind == "tool" else NativeOutput(City))


@pytest.mark.parametrize(("api", "kind"), [
    ("chat", "tool"), ("chat", "native"), ("responses", "native")])
def test_structured_output_answered_withheld_and_as_error(
    base_url: str, upstream: FakeUpstream, api: str, kind: str
) -> None:
    answered, decisions = run_agent(
        base_url, "enforcer", api,
        lambda model: agent_for(kind, model).run(structured_question(kind, CONFIDENT)))
    assert (answered.output, decisions) == (City(city="Paris"), ["answer"])

    # Withheld as a refusal: Pydantic AI's ContentFilterError with the message, one call (no
    # output validation retry).
    text = structured_question(kind, UNSURE)
    refused = failure(lambda: run_agent(base_url, "enforcer", api,
                                        lambda model: agent_for(kind, model).run(text)))
    assert isinstance(refused, ContentFilterError)
    assert MESSAGE in str(refused)
    assert upstream_calls(upstream, text) == 1

    text = structured_question(kind, UNSURE)
    rejected = failure(lambda: run_agent(base_url, "as-error", api,
                                         lambda model: agent_for(kind, model).run(text)))
    assert isinstance(rejected, ModelHTTPError) and rejected.status_code == 422
    assert upstream_calls(upstream, text) == 1
