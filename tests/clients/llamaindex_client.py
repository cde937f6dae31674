"""LlamaIndex's OpenAI LLMs (``llama-index-llms-openai``) as an app uses them, pointed at
basguard; run in its own environment (.venv-clients-llamaindex: the package pins openai<3).
Reads the cases of tests/clients/test_llamaindex.py as JSON on stdin, prints one result per
case as JSON. LlamaIndex's defaults (``max_retries=3``) are kept: the tests count upstream calls.

The decision is read as docs/clients.md tells a LlamaIndex app to: a chat response's ``raw``
is the openai SDK's completion (its ``basguard`` object), a stream's last chunk's ``raw`` the
finish chunk, an ``OpenAIResponses`` answer's ``raw`` the response (its ``metadata``); where
LlamaIndex hands back only a model (structured output), an instrumentation event handler sees
the chat response underneath.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import LLMChatEndEvent
from llama_index.core.llms import ChatMessage
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool
from llama_index.llms.openai import OpenAI, OpenAIResponses
from pydantic import BaseModel


class City(BaseModel):
    """A city."""

    city: str


def city(city: str) -> str:
    """Look a city up."""
    return city


SEEN: list[str | None] = []


class Decisions(BaseEventHandler):
    """Every chat response's decision, as LlamaIndex's instrumentation reports it (in SEEN)."""

    @classmethod
    def class_name(cls) -> str:
        return "Decisions"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, LLMChatEndEvent) and event.response is not None:
            SEEN.append(decision_of(event.response.raw))


def decision_of(raw: Any) -> str | None:
    extra = getattr(raw, "model_extra", None) or {}
    if "basguard" in extra:  # chat completions: the completion, the finish chunk
        return str(extra["basguard"]["decision"])
    response = getattr(raw, "response", raw)  # the Responses API: the response or its event
    metadata = getattr(response, "metadata", None) or {}
    return metadata.get("basguard_decision")


def run(case: dict[str, Any], base_url: str) -> Any:
    options = {"model": case["model"], "api_base": base_url, "api_key": case["key"]}
    messages = [ChatMessage(role="user", content=case["input"])]
    if case["run"] == "responses":
        response = OpenAIResponses(**options).chat(messages)
        return {"content": response.message.content, "decision": decision_of(response.raw)}
    if case["run"] == "responses-stream":
        chunks = list(OpenAIResponses(**options).stream_chat(messages))
        return {"content": "".join(chunk.delta or "" for chunk in chunks),
                "decision": decision_of(chunks[-1].raw)}
    llm = OpenAI(**options)
    if case["run"] == "chat":
        response = llm.chat(messages)
        return {"content": response.message.content, "decision": decision_of(response.raw)}
    if case["run"] == "stream":
        chunks = list(llm.stream_chat(messages))
        return {"content": "".join(chunk.delta or "" for chunk in chunks),
                "decision": decision_of(chunks[-1].raw)}
    if case["run"] == "tools":
        tool = FunctionTool.from_defaults(fn=city, name="City")
        response = llm.chat_with_tools([tool], user_msg=case["input"],
                                       tool_required=case.get("forced", False))
        calls = llm.get_tool_calls_from_response(response, error_on_no_tool_call=False)
        return {"calls": [call.tool_kwargs for call in calls],
                "content": response.message.content, "decision": decision_of(response.raw)}
    prompt = PromptTemplate("{question}")
    if case["run"] == "structured_predict":
        return llm.structured_predict(City, prompt, question=case["input"]).model_dump()
    if case["run"] == "stream_structured_predict":
        partials = list(llm.stream_structured_predict(City, prompt, question=case["input"]))
        return partials[-1].model_dump() if partials else None
    if case["run"] == "as_structured_llm":
        response = llm.as_structured_llm(City).chat(messages)
        return response.raw.model_dump()
    raise ValueError(case["run"])


def main() -> None:
    spec = json.load(sys.stdin)
    get_dispatcher().add_event_handler(Decisions())
    results: dict[str, Any] = {}
    for case in spec["cases"]:
        SEEN.clear()
        try:
            results[case["name"]] = {"value": run(case, spec["base_url"])}
        except Exception as error:  # what the app would catch: reported, not raised
            response = getattr(error, "response", None)
            results[case["name"]] = {"error": {
                "type": type(error).__name__, "message": str(error)[:500],
                "status": getattr(error, "status_code", None),
                "header": response.headers.get("x-basguard-decision") if response else None}}
        results[case["name"]]["decisions"] = list(SEEN)
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
