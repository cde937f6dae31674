"""Chat completions' wire format: text in ``message.content`` (``delta.content`` in a stream),
logprobs in ``logprobs.content``, tool calls beside the text; a withheld answer as content or an
OpenAI refusal (:mod:`proxy.wire.withheld`)."""

from __future__ import annotations

from typing import Any

from proxy.wire.formats import (
    WireFormat,
    invalid_reply,
    is_index,
    optional_of,
)
from proxy.wire.logprobs import TokenLogprob, tokens_from_chat_logprobs, trim_token_alternatives
from proxy.wire.withheld import Asked, WithheldShape, asked_of_chat

__all__ = ["ChatFormat"]

Json = dict[str, Any]

# What of a chat message (or a delta) is the answer: withheld together. Content, refusal and the
# audio (which speaks the answer) are replaced; reasoning would give the answer away; tool calls
# go only when the tenant decides on them (under `tool_calls: pass` they are never withheld).
_ANSWER_FIELDS = frozenset({"content", "refusal", "tool_calls", "function_call", "audio",
                            "reasoning_content", "reasoning"})


def _check_function(function: Any, model: str, *, streamed: bool) -> None:
    """A tool call's ``function``: its name and arguments are text (in a stream's pieces,
    either may be missing)."""
    if not isinstance(function, dict):
        raise invalid_reply(model, "a tool call whose function is not an object")
    for field in ("name", "arguments"):
        value = function.get(field)
        if not (isinstance(value, str) or (streamed and value is None)):
            raise invalid_reply(model, f"a tool call whose function {field} is not a string")


def _check_tool_call(call: Any, model: str, *, streamed: bool) -> None:
    if not isinstance(call, dict):
        raise invalid_reply(model, "a tool call that is not an object")
    if call.get("type") == "custom":  # a custom tool's call: free-form input, no function
        custom = call.get("custom")
        if not isinstance(custom, dict) or not optional_of(custom.get("input"), str):
            raise invalid_reply(model, "a custom tool call without a text input")
        return
    if streamed:
        if not is_index(call.get("index", 0)):
            raise invalid_reply(model, "a tool call piece without a non-negative index")
        if call.get("function") is not None:
            _check_function(call["function"], model, streamed=True)
        return
    _check_function(call.get("function"), model, streamed=False)


def _message_text(content: Any) -> str:
    """A chat message's text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text", "")) for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


class ChatFormat(WireFormat):
    endpoint = "chat/completions"
    chunk_object = "chat.completion.chunk"
    body_field = "message"
    delta_field = "delta"
    body_kind = dict
    delta_kind = dict

    @classmethod
    def _check_answer(cls, answer: Any, model: str, *, streamed: bool = False) -> None:
        # Tool calls decide whether a choice is decided at all (tool_calls: pass), so a
        # malformed one must not slip through as "not an answer".
        calls = answer.get("tool_calls")
        if calls is not None:
            if not isinstance(calls, list):
                raise invalid_reply(model, "tool_calls that are not a list")
            for call in calls:
                _check_tool_call(call, model, streamed=streamed)
        function_call = answer.get("function_call")
        if function_call is not None:
            _check_function(function_call, model, streamed=streamed)

    @staticmethod
    def prompt_text(body: Json) -> str:
        # The last user turn is the question; earlier turns are context a reviewer can ask for.
        for message in reversed(body.get("messages") or []):
            if isinstance(message, dict) and message.get("role") == "user":
                return _message_text(message.get("content"))
        return ""

    @staticmethod
    def asked(body: Json) -> Asked:
        return asked_of_chat(body)

    @staticmethod
    def requested_logprobs(body: Json) -> tuple[bool, int]:
        wanted = bool(body.get("logprobs"))
        return wanted, int(body.get("top_logprobs") or 0) if wanted else 0

    @staticmethod
    def ask_for_logprobs(body: Json, top_k: int) -> Json:
        # At least one alternative: llama.cpp's server returns no logprobs at all without
        # top_logprobs, and for other servers the extra alternative is trimmed off again.
        return {**body, "logprobs": True, "top_logprobs": max(top_k, 1)}

    @staticmethod
    def tokens(choice: Json) -> list[TokenLogprob] | None:
        return tokens_from_chat_logprobs(choice.get("logprobs"))

    @staticmethod
    def trim_alternatives(logprobs: Json, top_k: int) -> None:
        if isinstance(logprobs.get("content"), list):
            trim_token_alternatives(logprobs["content"], top_k)

    @staticmethod
    def replace_text(choice: Json, text: str) -> None:
        choice["message"] = {"role": "assistant", "content": text}
        choice["finish_reason"] = "stop"
        choice["logprobs"] = None

    @staticmethod
    def delta_text(chunk_choice: Json) -> str:
        delta = chunk_choice.get("delta") or {}
        return delta.get("content") or ""

    @staticmethod
    def delta_logprob_entries(chunk_choice: Json) -> list[Any]:
        logprobs = chunk_choice.get("logprobs") or {}
        content = logprobs.get("content")
        return content if isinstance(content, list) else []

    @staticmethod
    def merged_logprobs(entries: list[Any]) -> Json:
        return {"content": entries, "refusal": None}

    @staticmethod
    def text_chunks(
        base: Json, index: int, text: str, finish_reason: str | None, logprobs: Json | None
    ) -> list[Json]:
        def chunk(delta: Json, finish: str | None, lp: Json | None = None) -> Json:
            choice = {"index": index, "delta": delta, "logprobs": lp, "finish_reason": finish}
            return {**base, "choices": [choice]}

        return [
            chunk({"role": "assistant", "content": ""}, None),
            chunk({"content": text}, None, logprobs),
            chunk({}, finish_reason or "stop"),
        ]

    @staticmethod
    def empty_choice(index: int) -> Json:
        return {"index": index, "delta": {}, "logprobs": None, "finish_reason": None}

    @staticmethod
    def calls_tools(choice: Json) -> bool:
        message = choice.get("message") or {}
        return bool(message.get("tool_calls") or message.get("function_call"))

    @staticmethod
    def delta_calls_tools(chunk_choice: Json) -> bool:
        delta = chunk_choice.get("delta") or {}
        return bool(delta.get("tool_calls") or delta.get("function_call"))

    @staticmethod
    def tool_call_pieces(choice: Json) -> list[tuple[int, str, str]]:
        message = choice.get("message") or choice.get("delta") or {}
        calls = message.get("tool_calls")
        pieces = []
        for position, call in enumerate(calls if isinstance(calls, list) else []):
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                index = call.get("index", position)
                pieces.append((index if isinstance(index, int) else position,
                               str(function.get("name") or ""),
                               str(function.get("arguments") or "")))
        legacy = message.get("function_call")
        if not pieces and isinstance(legacy, dict):  # the deprecated functions API
            pieces.append((0, str(legacy.get("name") or ""), str(legacy.get("arguments") or "")))
        return pieces

    @staticmethod
    def withhold(choice: Json, shape: WithheldShape) -> None:
        message = choice.get("message") or {}
        kept = {key: value for key, value in message.items() if key not in _ANSWER_FIELDS}
        choice["message"] = {**kept, "role": "assistant", "content": shape.content,
                             "refusal": shape.refusal}
        choice["finish_reason"] = shape.finish_reason
        choice["logprobs"] = None

    @staticmethod
    def withheld_delta(chunk_choice: Json) -> Json | None:
        delta = chunk_choice.get("delta") or {}
        kept = {key: value for key, value in delta.items() if key not in _ANSWER_FIELDS}
        others = {key: value for key, value in chunk_choice.items()
                  if key not in ("index", "delta", "logprobs", "finish_reason")}
        if not kept and not others:
            return None
        return {**others, "index": chunk_choice.get("index", 0), "delta": kept,
                "logprobs": None, "finish_reason": None}

    @staticmethod
    def withheld_chunk_choices(index: int, shape: WithheldShape) -> list[Json]:
        # Content and refusal in chunks of their own: a client that reads one field per chunk
        # (or only the content) still gets the whole of it.
        deltas = [{field: value} for field, value in (
            ("content", shape.content), ("refusal", shape.refusal)) if value is not None]
        return [
            *({"index": index, "delta": delta, "logprobs": None, "finish_reason": None}
              for delta in deltas),
            {"index": index, "delta": {}, "logprobs": None, "finish_reason": shape.finish_reason},
        ]
