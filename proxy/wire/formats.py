"""Fast-path edits of OpenAI response JSON, per endpoint: what every format does.

Chat and legacy completions carry text and logprobs in different places; each format
(:mod:`proxy.wire.chat`, :mod:`proxy.wire.completions`) knows where, so the serving code is
written once. Every function edits plain dicts in place: this is
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
from proxy.wire.logprobs import TokenLogprob
from proxy.wire.schema import MAX_CHOICES, Endpoint
from proxy.wire.withheld import Asked, WithheldShape

__all__ = [
    "WireFormat", "answer_text", "calls_text", "invalid_reply", "is_index", "merged_calls",
    "optional_of",
]

Json = dict[str, Any]


def invalid_reply(model: str, what: str) -> UpstreamInvalidResponse:
    return UpstreamInvalidResponse(
        f"the upstream for model {model!r} sent an invalid response: {what}")


def is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def optional_of(value: Any, kind: type | tuple[type, ...]) -> bool:
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
            raise invalid_reply(model, "not a JSON object")
        choices = document.get("choices")
        if not isinstance(choices, list) or not choices:
            raise invalid_reply(model, "no list of choices")
        if len(choices) > MAX_CHOICES:
            raise invalid_reply(model, f"more than {MAX_CHOICES} choices")
        for position, choice in enumerate(choices):
            cls._check_choice(choice, cls.body_field, cls.body_kind, model)
            if choice.get(cls.body_field) is None:
                raise invalid_reply(model, f"a choice without its {cls.body_field}")
            cls._check_answer(choice[cls.body_field], model)
            choice.setdefault("index", position)
        if sorted(choice["index"] for choice in choices) != list(range(len(choices))):
            raise invalid_reply(model, "choice indices that are not 0 to the number of choices - 1")
        return choices

    @classmethod
    def check_chunk(cls, chunk: Any, model: str, *, choices: int = MAX_CHOICES) -> None:
        """Raise :class:`UpstreamInvalidResponse` unless ``chunk`` is a sound stream chunk of
        a request for ``choices`` choices (``n``)."""
        if not isinstance(chunk, dict):
            raise invalid_reply(model, "a stream chunk that is not a JSON object")
        listed = chunk.get("choices")
        if not isinstance(listed, list):
            raise invalid_reply(model, "a stream chunk without a list of choices")
        if not optional_of(chunk.get("usage"), dict):
            raise invalid_reply(model, "a stream chunk whose usage is not an object")
        for choice in listed:
            cls._check_choice(choice, cls.delta_field, cls.delta_kind, model)
            if choice.get("index", 0) >= choices:
                raise invalid_reply(model, f"a stream chunk for choice {choice.get('index')}, of a "
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
            raise invalid_reply(model, "a choice that is not an object")
        if not is_index(choice.get("index", 0)):
            raise invalid_reply(model, "a choice whose index is not a non-negative integer")
        if not optional_of(choice.get(field), kind):
            raise invalid_reply(model, f"a choice whose {field} is not a {kind.__name__}")
        if not optional_of(choice.get("finish_reason"), str):
            raise invalid_reply(model, "a choice whose finish_reason is not a string")
        if not optional_of(choice.get("logprobs"), dict):
            raise invalid_reply(model, "a choice whose logprobs are not an object")
        content = choice.get(field)
        if isinstance(content, dict) and not optional_of(content.get("content"), str):
            raise invalid_reply(model, f"a choice whose {field} content is not a string")

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
