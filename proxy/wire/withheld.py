"""What a request asks for, what of its answer is decided on, and what a withheld answer becomes.

A request asks for one of three shapes of answer (:data:`Asked`):

- ``text``: plain text, the default;
- ``json``: structured output as JSON text (``response_format`` / ``text.format``
  ``json_object`` or ``json_schema``; what the openai SDK's ``parse()`` sends);
- ``tool``: structured output as a forced tool call (``tool_choice`` ``required`` or naming a
  tool: how instructor, Pydantic AI and LangChain's ``function_calling`` method ask for it).

Structured output is an answer: it is decided unless the tenant passes it
(``structured_output: pass``). A tool call the model chose to make (``tool_choice`` ``auto``) is
an action the app takes: it is passed unless the tenant decides on it (``tool_calls: decide``).

A withheld answer takes the shape the request asked for (``withheld_shape: auto``): plain text
gets the abstention message as its content; structured output gets OpenAI's refusal (``refusal``
set, ``content`` null, no tool call), which typed clients read as a refusal instead of failing to
validate a schema. A tenant may fix one shape for every request instead (:func:`withheld_shape`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from policies.schema import DropInPolicy

__all__ = [
    "WITHHELD_JSON_KEY",
    "Asked",
    "WithheldShape",
    "asked_of_chat",
    "asked_of_responses",
    "forces_tool_call",
    "is_json_format",
    "not_decided_reason",
    "withheld_as_error",
    "withheld_json",
    "withheld_shape",
]

Asked = Literal["text", "json", "tool"]
"""The shape of answer a request asks for (see the module docstring)."""

WITHHELD_JSON_KEY = "basguard_withheld"
"""The key that marks the JSON object a withheld answer is under ``withheld_shape: content``."""
_JSON_FORMATS = frozenset({"json_object", "json_schema"})
_FORCED_KINDS = frozenset({"function", "custom"})


def is_json_format(response_format: Any) -> bool:
    """Whether a ``response_format`` (chat) or ``text.format`` (Responses) asks for JSON."""
    return isinstance(response_format, dict) and response_format.get("type") in _JSON_FORMATS


def forces_tool_call(tool_choice: Any) -> bool:
    """Whether a ``tool_choice`` (chat or Responses) makes the model call a tool.

    ``required``, a named function or custom tool (chat ``{"type": "function", "function":
    {"name": ...}}``, Responses ``{"type": "function", "name": ...}``), or ``allowed_tools`` in
    ``required`` mode (chat nests the mode under ``allowed_tools``). A hosted tool (web search,
    file search) is run by the provider, and the answer that follows is text: not forced here.
    """
    if tool_choice == "required":
        return True
    if not isinstance(tool_choice, dict):
        return False
    kind = tool_choice.get("type")
    if kind in _FORCED_KINDS:
        return True
    if kind == "allowed_tools":
        nested = tool_choice.get("allowed_tools")
        mode = nested.get("mode") if isinstance(nested, dict) else tool_choice.get("mode")
        return mode == "required"
    return False


def asked_of_chat(body: dict[str, Any]) -> Asked:
    """What a chat completions request asks for; a forced tool call wins over a JSON format
    (the answer is the call). The legacy ``function_call: {"name": ...}`` forces one too."""
    if forces_tool_call(body.get("tool_choice")) or isinstance(body.get("function_call"), dict):
        return "tool"
    return "json" if is_json_format(body.get("response_format")) else "text"


def asked_of_responses(body: dict[str, Any]) -> Asked:
    """What a Responses API request asks for (``tool_choice``, ``text.format``)."""
    if forces_tool_call(body.get("tool_choice")):
        return "tool"
    text = body.get("text")
    return "json" if is_json_format(text.get("format") if isinstance(text, dict) else None) \
        else "text"


def not_decided_reason(policy: DropInPolicy, *, calls_tools: bool, asked: Asked) -> str | None:
    """Why a choice is passed without a decision under the tenant's policy (None: decide on it).

    A forced tool call is structured output; a call the model chose is an action.
    """
    if asked == "tool":
        if policy.structured_output == "pass":
            return "a forced tool call (structured output); passed unchanged " \
                "(structured_output: pass)"
        return None
    if calls_tools and policy.tool_calls == "pass":
        return "the choice calls tools the model chose to call (tool_choice auto); passed " \
            "unchanged (tool_calls: pass)"
    if asked == "json" and not calls_tools and policy.structured_output == "pass":
        return "structured output; passed unchanged (structured_output: pass)"
    return None


def withheld_json(message: str) -> str:
    """The JSON text of a withheld answer under a JSON format and ``withheld_shape: content``:
    ``{"basguard_withheld": true, "message": "<the abstention message>"}``."""
    return orjson.dumps({WITHHELD_JSON_KEY: True, "message": message}).decode()


@dataclass(frozen=True, slots=True)
class WithheldShape:
    """What replaces a withheld choice's answer (its tool calls go in every shape)."""

    content: str | None
    """The message content (legacy completions: the text); None for a structured refusal."""
    refusal: str | None
    """The OpenAI ``refusal`` of a chat message (a ``refusal`` content part on the Responses
    API); None when the answer is withheld as content only."""
    finish_reason: str

    @property
    def text(self) -> str:
        """The text, where an endpoint has no refusal field (legacy completions)."""
        return self.content if self.content is not None else self.refusal or ""


def withheld_shape(policy: DropInPolicy, message: str, *, asked: Asked) -> WithheldShape:
    """The shape of a withheld choice for a tenant with ``policy`` and abstention ``message``,
    when the request asked for ``asked``.

    ==============  =======================  ==============================================
    withheld_shape  plain text               structured output (JSON, a forced tool call)
    ==============  =======================  ==============================================
    auto            content                  refusal (content null)
    content         content                  content (under JSON: :func:`withheld_json`)
    refusal         content and refusal      refusal (content null)
    error           content                  HTTP 422 (:func:`withheld_as_error`); a choice
                                             withheld beside an answered one: refusal
    ==============  =======================  ==============================================

    Plain text always keeps the message as content: an app that reads only the content never
    gets an empty answer.
    """
    setting = policy.withheld_shape
    finish = policy.withheld_finish_reason
    if asked == "text":
        return WithheldShape(message, message if setting == "refusal" else None, finish)
    if setting == "content":
        return WithheldShape(withheld_json(message) if asked == "json" else message, None, finish)
    return WithheldShape(None, message, finish)


def withheld_as_error(policy: DropInPolicy, asked: Asked) -> bool:
    """Whether a response whose every choice is withheld is an HTTP 422 rather than a shape."""
    return policy.withheld_shape == "error" and asked != "text"
