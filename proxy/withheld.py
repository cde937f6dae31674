"""What a choice is decided on, and what a withheld choice looks like to the app.

A choice that calls tools is an action the app takes, and structured output is data the app
parses; each tenant says whether basguard decides on them (``decide``) or passes them unchanged
(``pass``, recorded as ``not_applicable``). A withheld choice carries the abstention message in
the shape the tenant chose: plain content, an OpenAI refusal, ``finish_reason: content_filter``,
and under a JSON ``response_format`` a JSON object an app can parse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from policies.schema import DropInPolicy

__all__ = [
    "WITHHELD_JSON_KEY",
    "WithheldShape",
    "asks_for_json",
    "is_json_format",
    "not_decided_reason",
    "withheld_json",
    "withheld_shape",
]

WITHHELD_JSON_KEY = "basguard_withheld"
"""The key that marks the JSON object a withheld answer is under a JSON ``response_format``."""
_JSON_FORMATS = frozenset({"json_object", "json_schema"})


def is_json_format(response_format: Any) -> bool:
    """Whether a ``response_format`` (chat) or ``text.format`` (Responses) asks for JSON."""
    return isinstance(response_format, dict) and response_format.get("type") in _JSON_FORMATS


def asks_for_json(body: dict[str, Any]) -> bool:
    """Whether the request asks for structured output (a JSON ``response_format``)."""
    return is_json_format(body.get("response_format"))


def not_decided_reason(policy: DropInPolicy, *, calls_tools: bool, structured: bool) -> str | None:
    """Why a choice is passed without a decision under the tenant's policy (None: decide on it)."""
    if calls_tools and policy.tool_calls == "pass":
        return "the choice calls tools; passed unchanged (tool_calls: pass)"
    if structured and not calls_tools and policy.structured_output == "pass":
        return "structured output; passed unchanged (structured_output: pass)"
    return None


def withheld_json(message: str) -> str:
    """The JSON text of a withheld answer under a JSON ``response_format``:
    ``{"basguard_withheld": true, "message": "<the abstention message>"}``."""
    return orjson.dumps({WITHHELD_JSON_KEY: True, "message": message}).decode()


@dataclass(frozen=True, slots=True)
class WithheldShape:
    """What replaces a withheld choice's answer."""

    content: str | None
    """The message content (legacy completions: the text); None for a refusal."""
    refusal: str | None
    """The OpenAI ``refusal`` field of a chat message; None unless the tenant asks for it."""
    finish_reason: str

    @property
    def text(self) -> str:
        """The text, where an endpoint has no refusal field (legacy completions)."""
        return self.content if self.content is not None else self.refusal or ""


def withheld_shape(policy: DropInPolicy, message: str, *, structured: bool) -> WithheldShape:
    """The shape of a withheld choice for a tenant with ``policy`` and abstention ``message``."""
    if policy.withheld_refusal:
        # As OpenAI sends a refusal: no content, the reason in `refusal`.
        return WithheldShape(None, message, policy.withheld_finish_reason)
    content = withheld_json(message) if structured else message
    return WithheldShape(content, None, policy.withheld_finish_reason)
