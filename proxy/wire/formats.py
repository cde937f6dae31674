"""Fast-path edits of OpenAI response JSON, per endpoint.

Chat and legacy completions carry text and logprobs in different places; each format here knows
where, so the serving code is written once. Every function edits plain dicts in place: this is
the deliberate fast path that :mod:`proxy.wire.schema` mentions, and the tests validate its output
against those models and the openai SDK.

It is also the one place an upstream's reply is checked before anything reads it
(:meth:`WireFormat.check_reply`, :meth:`WireFormat.check_chunk`): a handful of ``isinstance``
tests per choice, which cost far less than validating the reply with pydantic, and after which
the rest of the gateway may index what it reads. A reply that fails them is a 502
``upstream_invalid_response``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import orjson

from proxy.errors import UpstreamInvalidResponse
from proxy.wire.logprobs import (
    TokenLogprob,
    tokens_from_chat_logprobs,
    tokens_from_completion_logprobs,
    trim_token_alternatives,
)
from proxy.wire.schema import MAX_CHOICES, Endpoint
from proxy.wire.withheld import Asked, WithheldShape, asked_of_chat

__all__ = [
    "ChatFormat", "CompletionFormat", "WireFormat", "answer_text", "calls_text", "merged_calls",
]

Json = dict[str, Any]


def _invalid(model: str, what: str) -> UpstreamInvalidResponse:
    return UpstreamInvalidResponse(
        f"the upstream for model {model!r} sent an invalid response: {what}")


def _is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _optional(value: Any, kind: type | tuple[type, ...]) -> bool:
    return value is None or isinstance(value, kind)


class WireFormat:
    """Where one endpoint keeps text and logprobs."""

    endpoint: ClassVar[Endpoint]
    chunk_object: ClassVar[str]
    body_field: ClassVar[str]
    """Where a reply's choice holds its answer (``message`` or ``text``)."""
    delta_field: ClassVar[str]
    """Where a chunk's choice holds its piece of the answer (``delta`` or ``text``)."""
    body_kind: ClassVar[type]
    delta_kind: ClassVar[type]

    @classmethod
    def check_reply(cls, document: Any, model: str) -> list[Json]:
        """The choices of a non-streamed reply, once its shape is known to be sound.

        Every choice has its answer (``message`` or ``text``) and an index; the indices are
        0 to len - 1, each once (a missing index is set to the choice's position), so no
        choice is answered without the others or sent twice.

        Raises
        ------
        UpstreamInvalidResponse
            Not an object, no non-empty ``choices`` list, a choice of the wrong shape or
            without its answer, or indices that are not 0 to len - 1.
        """
        if not isinstance(document, dict):
            raise _invalid(model, "not a JSON object")
        choices = document.get("choices")
        if not isinstance(choices, list) or not choices:
            raise _invalid(model, "no list of choices")
        if len(choices) > MAX_CHOICES:
            raise _invalid(model, f"more than {MAX_CHOICES} choices")
        for position, choice in enumerate(choices):
            cls._check_choice(choice, cls.body_field, cls.body_kind, model)
            if choice.get(cls.body_field) is None:
                raise _invalid(model, f"a choice without its {cls.body_field}")
            cls._check_answer(choice[cls.body_field], model)
            choice.setdefault("index", position)
        if sorted(choice["index"] for choice in choices) != list(range(len(choices))):
            raise _invalid(model, "choice indices that are not 0 to the number of choices - 1")
        return choices

    @classmethod
    def check_chunk(cls, chunk: Any, model: str, *, choices: int = MAX_CHOICES) -> None:
        """Raise :class:`UpstreamInvalidResponse` unless ``chunk`` is a sound stream chunk of
        a request for ``choices`` choices (``n``)."""
        if not isinstance(chunk, dict):
            raise _invalid(model, "a stream chunk that is not a JSON object")
        listed = chunk.get("choices")
        if not isinstance(listed, list):
            raise _invalid(model, "a stream chunk without a list of choices")
        if not _optional(chunk.get("usage"), dict):
            raise _invalid(model, "a stream chunk whose usage is not an object")
        for choice in listed:
            cls._check_choice(choice, cls.delta_field, cls.delta_kind, model)
            if choice.get("index", 0) >= choices:
                raise _invalid(model, f"a stream chunk for choice {choice.get('index')}, of a "
                               f"request for {choices}")
            delta = choice.get(cls.delta_field)
            if delta is not None:
                cls._check_answer(delta, model, streamed=True)

    @classmethod
    def _check_answer(cls, answer: Any, model: str, *, streamed: bool = False) -> None:
        """What an endpoint's answer (a message or delta) must hold beyond its content."""

    @staticmethod
    def sample_choice(document: Json) -> Json | None:
        """The choice an extra sample's reply (consistency's) is read from: its first, if any."""
        choices = document.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            return choices[0]
        return None

    @staticmethod
    def _check_choice(choice: Any, field: str, kind: type, model: str) -> None:
        if not isinstance(choice, dict):
            raise _invalid(model, "a choice that is not an object")
        if not _is_index(choice.get("index", 0)):
            raise _invalid(model, "a choice whose index is not a non-negative integer")
        if not _optional(choice.get(field), kind):
            raise _invalid(model, f"a choice whose {field} is not a {kind.__name__}")
        if not _optional(choice.get("finish_reason"), str):
            raise _invalid(model, "a choice whose finish_reason is not a string")
        if not _optional(choice.get("logprobs"), dict):
            raise _invalid(model, "a choice whose logprobs are not an object")
        content = choice.get(field)
        if isinstance(content, dict) and not _optional(content.get("content"), str):
            raise _invalid(model, f"a choice whose {field} content is not a string")

    @staticmethod
    def requested_logprobs(body: Json) -> tuple[bool, int]:
        """Whether the client asked for logprobs, and how many alternatives per token."""
        raise NotImplementedError

    @staticmethod
    def asked(body: Json) -> Asked:
        """The shape of answer the request asks for (:mod:`proxy.wire.withheld`): plain text unless
        the endpoint has structured output."""
        return "text"

    @staticmethod
    def ask_for_logprobs(body: Json, top_k: int) -> Json:
        """The upstream request: ``body`` asking for logprobs with ``top_k`` alternatives."""
        raise NotImplementedError

    @staticmethod
    def tokens(choice: Json) -> list[TokenLogprob] | None:
        raise NotImplementedError

    @staticmethod
    def prompt_text(body: Json) -> str:
        """What was asked, for a reviewer judging a withheld answer."""
        raise NotImplementedError

    @classmethod
    def restrict_logprobs(cls, choice: Json, wanted: bool, top_k: int) -> None:
        """Drop logprobs the client did not ask for (all of them, or extra alternatives)."""
        logprobs = choice.get("logprobs")
        if not logprobs:
            return
        if not wanted:
            choice["logprobs"] = None
        else:
            cls.trim_alternatives(logprobs, top_k)

    @staticmethod
    def trim_alternatives(logprobs: Json, top_k: int) -> None:
        """Keep at most ``top_k`` alternatives per token."""
        raise NotImplementedError

    @staticmethod
    def replace_text(choice: Json, text: str) -> None:
        raise NotImplementedError

    @staticmethod
    def delta_text(chunk_choice: Json) -> str:
        raise NotImplementedError

    @staticmethod
    def delta_logprob_entries(chunk_choice: Json) -> list[Any]:
        raise NotImplementedError

    @staticmethod
    def merged_logprobs(entries: list[Any]) -> Json:
        """Logprobs of a whole answer from the entries its chunks carried."""
        raise NotImplementedError

    @staticmethod
    def text_chunks(
        base: Json, index: int, text: str, finish_reason: str | None, logprobs: Json | None
    ) -> list[Json]:
        """Chunks that stream ``text`` as choice ``index``'s whole answer."""
        raise NotImplementedError

    @staticmethod
    def empty_choice(index: int) -> Json:
        """A chunk choice that adds nothing (to carry the decision when no chunk is left)."""
        raise NotImplementedError

    @staticmethod
    def calls_tools(choice: Json) -> bool:
        """Whether a reply's choice calls tools (an action for the app, not an answer)."""
        return False

    @staticmethod
    def delta_calls_tools(chunk_choice: Json) -> bool:
        """Whether a chunk's choice carries a piece of a tool call."""
        return False

    @staticmethod
    def tool_call_pieces(choice: Json) -> list[tuple[int, str, str]]:
        """(call index, name, arguments) of each tool call (or piece of one, in a chunk) of a
        choice: what a reviewer of a withheld call reads."""
        return []

    @staticmethod
    def withhold(choice: Json, shape: WithheldShape) -> None:
        """Replace a reply's withheld choice with ``shape``: its answer, tool calls and
        logprobs go; the rest of the choice stays."""
        raise NotImplementedError

    @staticmethod
    def withheld_delta(chunk_choice: Json) -> Json | None:
        """A withheld choice's chunk without its answer (text, tool calls, audio, reasoning,
        logprobs, finish_reason): what else it carried (the role, unknown fields) stays; None
        when nothing is left."""
        raise NotImplementedError

    @staticmethod
    def withheld_chunk_choices(index: int, shape: WithheldShape) -> list[Json]:
        """The chunk choices (one per chunk) that stream ``shape`` as choice ``index``'s end."""
        raise NotImplementedError


def _canonical_arguments(arguments: str) -> str:
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return arguments
    return orjson.dumps(parsed, option=orjson.OPT_SORT_KEYS).decode()


def calls_text(calls: Iterable[tuple[str, str]]) -> str:
    """Tool calls ``(name, arguments)`` as the confidence signals read them: ``name(arguments)``
    a line each, the arguments as canonical JSON (sorted keys, no spaces) when they parse, so
    two samples that make the same call read the same."""
    return "\n".join(f"{name}({_canonical_arguments(arguments)})" for name, arguments in calls)


def answer_text(text: str, calls: Iterable[tuple[str, str]]) -> str:
    """An answer as the confidence signals read it: its text, then its tool calls
    (:func:`calls_text`); a forced tool call's answer is its arguments."""
    rendered = calls_text(calls)
    return "\n".join(part for part in (text, rendered) if part)


def merged_calls(pieces: Iterable[tuple[int, str, str]]) -> list[tuple[str, str]]:
    """Whole tool calls ``(name, arguments)`` from the pieces of :meth:`WireFormat.tool_call_pieces`
    (a reply's calls, or the pieces a stream sent), joined by call index."""
    merged: dict[int, list[str]] = {}
    for index, name, arguments in pieces:
        parts = merged.setdefault(index, ["", ""])
        if name != parts[0]:  # llama.cpp repeats the whole name in every piece
            parts[0] += name
        parts[1] += arguments
    return [(name, arguments) for name, arguments in merged.values()]




# What of a chat message (or a delta) is the answer: withheld together. Content, refusal and the
# audio (which speaks the answer) are replaced; reasoning would give the answer away; tool calls
# go only when the tenant decides on them (under `tool_calls: pass` they are never withheld).
_ANSWER_FIELDS = frozenset({"content", "refusal", "tool_calls", "function_call", "audio",
                            "reasoning_content", "reasoning"})


def _check_function(function: Any, model: str, *, streamed: bool) -> None:
    """A tool call's ``function``: its name and arguments are text (in a stream's pieces,
    either may be missing)."""
    if not isinstance(function, dict):
        raise _invalid(model, "a tool call whose function is not an object")
    for field in ("name", "arguments"):
        value = function.get(field)
        if not (isinstance(value, str) or (streamed and value is None)):
            raise _invalid(model, f"a tool call whose function {field} is not a string")


def _check_tool_call(call: Any, model: str, *, streamed: bool) -> None:
    if not isinstance(call, dict):
        raise _invalid(model, "a tool call that is not an object")
    if call.get("type") == "custom":  # a custom tool's call: free-form input, no function
        custom = call.get("custom")
        if not isinstance(custom, dict) or not _optional(custom.get("input"), str):
            raise _invalid(model, "a custom tool call without a text input")
        return
    if streamed:
        if not _is_index(call.get("index", 0)):
            raise _invalid(model, "a tool call piece without a non-negative index")
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
                raise _invalid(model, "tool_calls that are not a list")
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


class CompletionFormat(WireFormat):
    endpoint = "completions"
    chunk_object = "text_completion"
    body_field = "text"
    delta_field = "text"
    body_kind = str
    delta_kind = str

    @staticmethod
    def prompt_text(body: Json) -> str:
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            return prompt
        if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
            return "\n".join(prompt)
        return ""  # token ids: nothing a reviewer can read

    @staticmethod
    def requested_logprobs(body: Json) -> tuple[bool, int]:
        value = body.get("logprobs")
        return value is not None, int(value or 0)

    @staticmethod
    def ask_for_logprobs(body: Json, top_k: int) -> Json:
        return {**body, "logprobs": max(top_k, int(body.get("logprobs") or 0))}

    @staticmethod
    def tokens(choice: Json) -> list[TokenLogprob] | None:
        return tokens_from_completion_logprobs(choice.get("logprobs"))

    @staticmethod
    def trim_alternatives(logprobs: Json, top_k: int) -> None:
        tops = logprobs.get("top_logprobs")
        if isinstance(tops, list):
            logprobs["top_logprobs"] = [
                dict(sorted(top.items(), key=lambda kv: -kv[1])[:top_k])
                if isinstance(top, dict) else top
                for top in tops
            ]

    @staticmethod
    def replace_text(choice: Json, text: str) -> None:
        choice["text"] = text
        choice["finish_reason"] = "stop"
        choice["logprobs"] = None

    @staticmethod
    def delta_text(chunk_choice: Json) -> str:
        return chunk_choice.get("text") or ""

    @staticmethod
    def delta_logprob_entries(chunk_choice: Json) -> list[Any]:
        logprobs = chunk_choice.get("logprobs") or {}
        tokens, values, tops = (
            logprobs.get("tokens"), logprobs.get("token_logprobs"), logprobs.get("top_logprobs"))
        # Parallel lists, or nothing usable: a malformed entry costs the confidence, not a 500.
        if not isinstance(tokens, list) or not isinstance(values, list):
            return []
        if not isinstance(tops, list):
            tops = [None] * len(values)
        return [
            {"token": t, "logprob": v, "top": top}
            for t, v, top in zip(tokens, values, tops, strict=False)
        ]

    @staticmethod
    def merged_logprobs(entries: list[Any]) -> Json:
        return {
            "tokens": [e["token"] for e in entries],
            "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [e["top"] for e in entries],
            "text_offset": [],
        }

    @staticmethod
    def text_chunks(
        base: Json, index: int, text: str, finish_reason: str | None, logprobs: Json | None
    ) -> list[Json]:
        return [
            {**base, "choices": [
                {"index": index, "text": text, "logprobs": logprobs, "finish_reason": None}]},
            {**base, "choices": [
                {"index": index, "text": "", "logprobs": None,
                 "finish_reason": finish_reason or "stop"}]},
        ]

    @staticmethod
    def empty_choice(index: int) -> Json:
        return {"index": index, "text": "", "logprobs": None, "finish_reason": None}

    @staticmethod
    def withhold(choice: Json, shape: WithheldShape) -> None:
        choice["text"] = shape.text
        choice["finish_reason"] = shape.finish_reason
        choice["logprobs"] = None

    @staticmethod
    def withheld_delta(chunk_choice: Json) -> Json | None:
        others = {key: value for key, value in chunk_choice.items()
                  if key not in ("index", "text", "logprobs", "finish_reason")}
        if not others:
            return None
        return {**others, "index": chunk_choice.get("index", 0), "text": "", "logprobs": None,
                "finish_reason": None}

    @staticmethod
    def withheld_chunk_choices(index: int, shape: WithheldShape) -> list[Json]:
        return [
            {"index": index, "text": shape.text, "logprobs": None, "finish_reason": None},
            {"index": index, "text": "", "logprobs": None, "finish_reason": shape.finish_reason},
        ]
