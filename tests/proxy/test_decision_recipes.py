"""Reading basguard's decision from each client, as docs/structured-outputs.md tells an app to
(#21 item 5): the openai SDK, LangChain (headers, a callback, structured output, its Responses
API), the OpenAI Agents SDK (raw responses, streamed raw events, an HTTP hook, a refused
structured output) and raw HTTP. Over loopback against the fake upstream.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import SDK, gateway_config, serve_gateway

agents = pytest.importorskip("agents")

CONFIDENT = [-0.01, -0.01, -0.01]
UNSURE = [-3.0, -3.0, -3.0]
MESSAGE = "I won't guess."
KEYS = {name: f"key-{name}-0123456789abcdef" for name in ("enforcer", "annotator")}


class City(BaseModel):
    city: str


@pytest.fixture(scope="module")
def base_url(
    fake_upstream: tuple[FakeUpstream, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    def tenant(name: str, **policy: Any) -> dict[str, Any]:
        return {"api_keys": [{"sha256": hashlib.sha256(KEYS[name].encode()).hexdigest()}],
                "risk": {"threshold": 0.5}, "abstention_message": MESSAGE, **policy}

    config = gateway_config(fake_upstream[1], tenants={
        "enforcer": tenant("enforcer"), "annotator": tenant("annotator", mode="annotate")})
    config["models"] = {"fake": config["models"]["fake"]}
    with serve_gateway(tmp_path_factory.mktemp("recipes"), config) as url:
        yield f"{url}/v1"


@pytest.fixture(autouse=True)
def fresh(upstream: FakeUpstream) -> FakeUpstream:
    return upstream


@pytest.fixture(autouse=True, scope="module")
def no_tracing() -> Iterator[None]:
    agents.set_tracing_disabled(True)  # the Agents SDK would export traces to OpenAI
    yield


def ask(**fake: Any) -> str:
    return json.dumps({"fake": fake}) + "\nWhere is the Louvre?"


# ------------------------------------------------------------------------------- openai SDK


def test_openai_chat_the_decision_object_headers_and_request_id(
    base_url: str, sdk_client: SDK
) -> None:
    client = sdk_client(base_url, KEYS["annotator"])
    raw = client.chat.completions.with_raw_response.create(
        model="fake", messages=[{"role": "user", "content": ask(content="Lyon", logprobs=UNSURE)}])
    completion = raw.parse()
    decision = completion.model_extra["basguard"]  # type: ignore[index]
    assert decision["decision"] == "abstain" and decision["mode"] == "annotate"
    assert completion.to_dict()["basguard"] == decision
    assert raw.headers["x-basguard-decision"] == "abstain"
    assert completion._request_id == decision["id"]  # the id to send feedback with
    # Streamed: on the chunk that carries the finish_reason.
    chunks = list(client.chat.completions.create(
        model="fake", stream=True,
        messages=[{"role": "user", "content": ask(content="Lyon", logprobs=UNSURE)}]))
    finishing = [c for c in chunks if any(choice.finish_reason for choice in c.choices)]
    assert finishing[-1].model_extra["basguard"]["decision"] == "abstain"  # type: ignore[index]


@pytest.mark.parametrize("stream", [False, True])
def test_openai_responses_the_decision_in_metadata(
    base_url: str, sdk_client: SDK, stream: bool
) -> None:
    client = sdk_client(base_url, KEYS["annotator"])
    if stream:
        with client.responses.stream(model="fake", input=ask(content="Lyon",
                                                              logprobs=UNSURE)) as events:
            for _ in events:
                pass
            response = events.get_final_response()
    else:
        response = client.responses.create(model="fake",
                                           input=ask(content="Lyon", logprobs=UNSURE))
    assert response.output_text == "Lyon"  # annotate: passed, flagged
    assert response.metadata is not None
    assert response.metadata["basguard_decision"] == "abstain"
    assert float(response.metadata["basguard_confidence"]) < 0.5
    assert response.metadata["basguard_id"] == response.model_extra["basguard"]["id"]  # type: ignore[index]


# --------------------------------------------------------------------------------- LangChain


def _chat(base_url: str, tenant: str, **options: Any) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model="fake", base_url=base_url, api_key=KEYS[tenant],  # type: ignore[arg-type]
                      max_retries=0, timeout=10, include_response_headers=True, **options)


def test_langchain_a_callback_reads_the_decision_of_every_call(base_url: str) -> None:
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.outputs import LLMResult

    decisions: list[str] = []

    class Decisions(BaseCallbackHandler):
        raise_error = True  # LangChain would otherwise swallow a failing handler

        def on_llm_end(self, response: LLMResult, **kwargs: Any) -> None:
            for generation in response.generations[0]:
                headers = (generation.generation_info or {})["headers"]
                decisions.append(headers["x-basguard-decision"])

    llm = _chat(base_url, "annotator", callbacks=[Decisions()])
    answered = llm.invoke(ask(content="Paris", logprobs=CONFIDENT))
    flagged = llm.invoke(ask(content="Lyon", logprobs=UNSURE))
    assert (answered.content, flagged.content) == ("Paris", "Lyon")
    assert decisions == ["answer", "abstain"]


@pytest.mark.parametrize("method", ["json_schema", "function_calling", "json_mode"])
def test_langchain_structured_output_withheld_is_a_refusal_it_reports(
    base_url: str, method: str
) -> None:
    from langchain_openai.chat_models.base import OpenAIRefusalError

    content = '{"city": "Lyon"}'
    question = (ask(tool_calls=[{"name": "City", "arguments": content}], logprobs=UNSURE)
                if method == "function_calling" else ask(content=content, logprobs=UNSURE))
    structured = _chat(base_url, "enforcer").with_structured_output(
        City, method=method, include_raw=True)
    result = structured.invoke(question)
    assert result["parsed"] is None
    assert isinstance(result["parsing_error"], OpenAIRefusalError)
    assert result["raw"].additional_kwargs["refusal"] == MESSAGE
    assert result["raw"].response_metadata["headers"]["x-basguard-decision"] == "abstain"
    # Without include_raw, LangChain raises its own refusal error: no schema validation error.
    with pytest.raises(OpenAIRefusalError):
        _chat(base_url, "enforcer").with_structured_output(City, method=method).invoke(question)


def test_langchain_on_the_responses_api_reads_an_annotated_stream(base_url: str) -> None:
    """On chat completions a LangChain stream drops basguard's fields (annotate mode sends
    the decision after the headers); on the Responses API its last chunk keeps the metadata."""
    llm = _chat(base_url, "annotator", use_responses_api=True)
    chunks = list(llm.stream(ask(content="Lyon", logprobs=UNSURE)))
    metadata = [c.response_metadata["metadata"] for c in chunks
                if "metadata" in c.response_metadata]
    assert metadata[-1]["basguard_decision"] == "abstain"
    message = llm.invoke(ask(content="Paris", logprobs=CONFIDENT))
    assert message.response_metadata["metadata"]["basguard_decision"] == "answer"


# ------------------------------------------------------------------------ OpenAI Agents SDK


def _agent(client: openai.AsyncOpenAI, **options: Any) -> Any:
    return agents.Agent(name="guide", instructions="Answer briefly.",
                        model=agents.OpenAIResponsesModel(model="fake", openai_client=client),
                        **options)


def test_agents_raw_responses_carry_the_decision_id_and_a_hook_the_decision(
    base_url: str
) -> None:
    """``Runner.run`` keeps no response headers or metadata, but each raw response's
    ``request_id`` is the decision's id; an httpx event hook on the client reads the decision
    itself (the same recipe serves every client built on the openai SDK)."""
    seen: list[dict[str, str]] = []

    async def remember(response: httpx.Response) -> None:
        if "x-basguard-decision" in response.headers:
            seen.append({"id": response.headers["x-basguard-id"],
                         "decision": response.headers["x-basguard-decision"]})

    async def run() -> Any:
        async with httpx.AsyncClient(event_hooks={"response": [remember]}) as http, \
                openai.AsyncOpenAI(base_url=base_url, api_key=KEYS["enforcer"], max_retries=0,
                                   http_client=http) as client:
            return await agents.Runner.run(_agent(client), ask(content="Lyon", logprobs=UNSURE))

    result = asyncio.run(run())
    assert result.final_output == MESSAGE
    assert seen == [{"id": result.raw_responses[-1].request_id, "decision": "abstain"}]


def test_agents_streamed_raw_events_carry_the_decision(base_url: str) -> None:
    async def run() -> list[Any]:
        async with openai.AsyncOpenAI(base_url=base_url, api_key=KEYS["annotator"],
                                      max_retries=0) as client:
            streamed = agents.Runner.run_streamed(_agent(client),
                                                  ask(content="Lyon", logprobs=UNSURE))
            return [event.data async for event in streamed.stream_events()
                    if event.type == "raw_response_event"]

    raw = asyncio.run(run())
    (completed,) = [event for event in raw if event.type == "response.completed"]
    assert completed.response.metadata["basguard_decision"] == "abstain"


@pytest.mark.parametrize("chat_model", [False, True], ids=["responses", "chat"])
def test_agents_a_withheld_structured_output_is_the_sdks_refusal(
    base_url: str, chat_model: bool
) -> None:
    """An agent with an ``output_type`` gets the refusal: ``ModelRefusalError`` (not a schema
    error), which a ``model_refusal`` error handler can turn into an output."""

    async def run(**options: Any) -> Any:
        async with openai.AsyncOpenAI(base_url=base_url, api_key=KEYS["enforcer"],
                                      max_retries=0) as client:
            model = (agents.OpenAIChatCompletionsModel(model="fake", openai_client=client)
                     if chat_model else
                     agents.OpenAIResponsesModel(model="fake", openai_client=client))
            agent = agents.Agent(name="guide", instructions="Answer.", output_type=City,
                                 model=model)
            return await agents.Runner.run(
                agent, ask(content='{"city": "Lyon"}', logprobs=UNSURE), **options)

    with pytest.raises(agents.exceptions.ModelRefusalError) as caught:
        asyncio.run(run())
    assert caught.value.refusal == MESSAGE

    def fallback(data: Any) -> Any:
        return agents.RunErrorHandlerResult(final_output=City(city="unknown"))

    handled = asyncio.run(run(error_handlers={"model_refusal": fallback}))
    assert handled.final_output == City(city="unknown")


# ----------------------------------------------------------------------------------- raw HTTP


def test_raw_http_headers_and_body(base_url: str) -> None:
    response = httpx.post(f"{base_url}/chat/completions", timeout=10,
                          headers={"authorization": f"Bearer {KEYS['enforcer']}"},
                          json={"model": "fake", "messages": [
                              {"role": "user", "content": ask(content="Lyon",
                                                              logprobs=UNSURE)}]})
    body = response.json()
    assert response.headers["x-basguard-decision"] == body["basguard"]["decision"] == "abstain"
    assert response.headers["x-basguard-id"] == response.headers["x-request-id"] \
        == body["basguard"]["id"]
    assert body["choices"][0]["message"]["content"] == MESSAGE

