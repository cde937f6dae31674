"""Real clients through basguard to the real SmolLM2 (llama.cpp), where the model can do it.

SmolLM2-135M answers short questions; it cannot call tools reliably, so tool calls are covered
against the fake upstream (test_clients.py, test_tool_calls.py). The demo tenants ask the same
question: ``explorer`` gets the answer, ``clinic`` (a strict profile) gets its abstention.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel

from proxy.http.app import create_app
from proxy.runtime.settings import ServerSettings
from proxy.tools.demo import DEMO_KEYS, DEMO_QUESTION, write_demo_config
from proxy.tools.local_model import run_local_model
from tests.support.loopback import serve_in_thread

# The real model (SmolLM2 under llama.cpp): seconds per answer on a 2-core machine.
pytestmark = pytest.mark.slow

EXPECTED = {"explorer": ("answer", "Tokyo"), "clinic": ("abstain", "clinician")}


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("clients-llama")
    with run_local_model(threads=2, log=directory / "llama.log") as model_url:
        config = write_demo_config(Path(directory), model_url)
        app = create_app(ServerSettings(config=config, reload_interval_seconds=0,
                                        store=directory / "decisions.sqlite3"))
        with serve_in_thread(app) as url:
            yield f"{url}/v1"


@pytest.mark.parametrize("tenant", ["explorer", "clinic"])
def test_langchain_invoke_and_stream_on_the_real_model(base_url: str, tenant: str) -> None:
    from langchain_openai import ChatOpenAI

    decision, words = EXPECTED[tenant]
    llm = ChatOpenAI(model="smollm2", base_url=base_url,
                     api_key=DEMO_KEYS[tenant],  # type: ignore[arg-type]
                     temperature=0, max_tokens=24, max_retries=0, timeout=120,  # type: ignore[call-arg]
                     include_response_headers=True)
    message = llm.invoke(DEMO_QUESTION)
    assert words in str(message.content)
    assert message.response_metadata["headers"]["x-basguard-decision"] == decision
    chunks = list(llm.stream(DEMO_QUESTION))
    assert words in "".join(str(chunk.content) for chunk in chunks)


@pytest.mark.parametrize("tenant", ["explorer", "clinic"])
def test_litellm_and_the_sdk_stream_helper_on_the_real_model(
    base_url: str, tenant: str
) -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    decision, words = EXPECTED[tenant]
    messages = [{"role": "user", "content": DEMO_QUESTION}]

    async def call() -> Any:
        try:
            return await litellm.acompletion(
                model="openai/smollm2", api_base=base_url, api_key=DEMO_KEYS[tenant],
                temperature=0, max_tokens=24, num_retries=0, messages=messages)
        finally:
            await litellm.close_litellm_async_clients()

    response = asyncio.run(call())
    assert words in response.choices[0].message.content
    assert response.basguard["decision"] == decision
    with openai.OpenAI(base_url=base_url, api_key=DEMO_KEYS[tenant], max_retries=0,
                       timeout=120) as client, client.chat.completions.stream(
            model="smollm2", temperature=0, max_tokens=24, messages=messages) as events:
        decisions = [(event.chunk.model_extra or {})["basguard"]["decision"]
                     for event in events
                     if event.type == "chunk" and "basguard" in (event.chunk.model_extra or {})]
        final = events.get_final_completion()
    assert decisions == [decision]
    assert words in (final.choices[0].message.content or "")


class City(BaseModel):
    city: str


def test_a_forced_tool_call_is_decided_on_its_logprobs_and_withheld_as_a_refusal(
    base_url: str,
) -> None:
    """llama.cpp returns logprobs for a forced call's arguments: the call is decided on them.
    SmolLM2 calls ``City`` with a city that is not Tokyo, unconfidently: withheld."""
    with openai.OpenAI(base_url=base_url, api_key=DEMO_KEYS["clinic"], max_retries=0,
                       timeout=120) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="smollm2", temperature=0, max_tokens=30,
            messages=[{"role": "user", "content": f"{DEMO_QUESTION} Answer in JSON."}],
            tools=[openai.pydantic_function_tool(City)],
            tool_choice={"type": "function", "function": {"name": "City"}})
    completion = raw.parse()
    message = completion.choices[0].message
    assert message.tool_calls is None and message.refusal is not None
    assert "clinician" in message.refusal
    decision = (completion.model_extra or {})["basguard"]
    assert decision["decision"] == "abstain"
    assert decision["confidence"] is not None  # from the arguments' logprobs


def test_parse_against_llama_cpp_is_a_400_with_the_reason_and_no_retry(base_url: str) -> None:
    """llama-cpp-python refuses ``response_format: json_schema`` (what ``parse()`` sends) with
    HTTP 500: basguard answers 400 with the reason, which the SDK does not retry."""
    answered: list[int] = []

    def count(response: httpx.Response) -> None:
        answered.append(response.status_code)

    with httpx.Client(event_hooks={"response": [count]}, timeout=120) as http, openai.OpenAI(
            base_url=base_url, api_key=DEMO_KEYS["explorer"], max_retries=2,
            http_client=http) as client, pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.parse(
            model="smollm2", max_tokens=30, response_format=City,
            messages=[{"role": "user", "content": DEMO_QUESTION}])
    assert answered == [400]
    assert caught.value.code == "upstream_rejected"
    assert "response_format.type: Input should be 'text' or 'json_object'" in caught.value.message
    assert "/" not in caught.value.message.split("(HTTP 500)")[1]  # no path of the server's
