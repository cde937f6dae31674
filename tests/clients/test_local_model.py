"""The clients of the matrix through basguard to the real SmolLM2 (llama.cpp), where the model
can serve them: the demo's tenants ask its question, ``explorer`` gets the answer and
``clinic`` (a strict profile) its abstention; a forced ``City`` call, which SmolLM2 makes
unconfidently (decided on its arguments' logprobs), ``clinic`` withholds as a refusal.

Not here: the Responses API (llama.cpp's server has none), JSON schemas (llama-cpp-python
takes only ``json_object``: tests/proxy/test_clients_local_model.py), DSPy (SmolLM2 does not
write DSPy's ``[[ ## field ## ]]`` format) and LlamaIndex (it refuses a model name it does not
know, and the demo's is ``smollm2``). LangChain, litellm and the openai Python SDK are in
tests/proxy/test_clients_local_model.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from proxy.http.app import create_app
from proxy.runtime.settings import ServerSettings
from proxy.tools.demo import DEMO_KEYS, DEMO_QUESTION, write_demo_config
from proxy.tools.local_model import run_local_model
from tests.clients.environments import HERE, NODE, node, python_of, run_client
from tests.support.loopback import serve_in_thread

EXPECTED = {"explorer": ("answer", "Tokyo"), "clinic": ("abstain", "clinician")}
CITY = f"{DEMO_QUESTION} Answer in JSON."


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("matrix-llama")
    with run_local_model(threads=2, log=directory / "llama.log") as model_url:
        config = write_demo_config(Path(directory), model_url)
        app = create_app(ServerSettings(config=config, reload_interval_seconds=0,
                                        store=directory / "decisions.sqlite3"))
        with serve_in_thread(app) as url:
            yield f"{url}/v1"


def case(name: str, run: str, tenant: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "run": run, "key": DEMO_KEYS[tenant], "input": text,
            "model": "smollm2", **extra}


def value(results: dict[str, Any], name: str) -> Any:
    assert "value" in results[name], results[name]
    return results[name]["value"]


def test_the_openai_npm_sdk(base_url: str) -> None:
    greedy = {"temperature": 0, "max_tokens": 24}
    results = run_client([node(), str(NODE / "openai_client.mjs")], base_url, [
        *(case(f"{run}-{tenant}", run, tenant, DEMO_QUESTION, options=greedy)
          for run in ("chat", "stream") for tenant in EXPECTED),
        case("tools-clinic", "tools", "clinic", CITY, forced=True,
             options={"temperature": 0, "max_tokens": 30}),
    ], None)
    for tenant, (decision, words) in EXPECTED.items():
        chat = value(results, f"chat-{tenant}")
        assert words in chat["content"] and chat["header"] == chat["decision"] == decision
        stream = value(results, f"stream-{tenant}")
        assert words in stream["content"] and stream["decision"] == decision
    forced = value(results, "tools-clinic")
    assert (forced["calls"], forced["header"]) == ([], "abstain")
    assert "clinician" in forced["refusal"]


def test_the_vercel_ai_sdk(base_url: str) -> None:
    greedy = {"temperature": 0, "maxOutputTokens": 24}
    results = run_client([node(), str(NODE / "vercel_client.mjs")], base_url, [
        *(case(f"text-{tenant}", "text", tenant, DEMO_QUESTION, api="chat", options=greedy)
          for tenant in EXPECTED),
        case("tools-clinic", "tools", "clinic", CITY, api="chat", forced=True,
             options={"temperature": 0, "maxOutputTokens": 30}),
    ], None)
    for tenant, (decision, words) in EXPECTED.items():
        text = value(results, f"text-{tenant}")
        assert words in text["text"] and text["header"] == text["decision"] == decision
    assert results["tools-clinic"]["error"]["name"] == "AI_ToolChoiceViolationError"


def test_instructor_asks_once_when_the_forced_call_is_withheld(base_url: str) -> None:
    results = run_client([str(python_of("instructor")), str(HERE / "instructor_client.py")],
                         base_url, [case("tools-clinic", "structured", "clinic", CITY,
                                         options={"temperature": 0, "max_tokens": 30})], None)
    withheld = results["tools-clinic"]
    assert withheld["error"]["cause"] == "AssertionError"
    assert "clinician" in withheld["error"]["message"]
    assert withheld["decisions"] == ["abstain"]  # one completion: not asked again


@pytest.mark.parametrize("tenant", list(EXPECTED))
def test_pydantic_ai(base_url: str, tenant: str) -> None:
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider
    from pydantic_ai.settings import ModelSettings

    _, words = EXPECTED[tenant]

    async def run() -> Any:
        # Its own HTTP client, closed here: the provider's cached one would outlive the loop.
        async with httpx2.AsyncClient(timeout=120) as http:
            model = OpenAIChatModel("smollm2", provider=OpenAIProvider(
                base_url=base_url, api_key=DEMO_KEYS[tenant], http_client=http))
            return await Agent(model, model_settings=ModelSettings(
                temperature=0, max_tokens=24)).run(DEMO_QUESTION)

    assert words in asyncio.run(run()).output
