"""The Responses API's wire shape: where a response keeps its text and logprobs, and its events.

A Responses reply has no ``choices``: it is one ``response`` object whose ``output`` list holds
items (``message`` items with ``output_text`` parts, ``function_call`` items, reasoning, ...).
basguard reads it as one answer (choice 0): the text of every ``output_text`` part, in order,
with their token logprobs. A reply with a ``function_call`` item is an action the app takes, not
an answer a user reads, so it is passed through undecided (``not_applicable``), unless the
request forced it (``tool_choice``): then it is structured output, decided on its arguments.

Streams are typed server-sent events (``response.created`` ... ``response.completed``), each
with a ``sequence_number``; basguard adds none of its own (the openai npm SDK's stream helper
throws on an event type it does not know): the decision rides on the terminal event's response
(:func:`with_decision`). Like :mod:`proxy.wire.formats`, every function here edits plain dicts in
place (the gateway's fast path), after a cheap shape check; the tests validate what comes out
against the openai SDK's types.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson

from proxy.errors import UpstreamInvalidResponse
from proxy.wire.formats import WireFormat, answer_text
from proxy.wire.logprobs import TokenLogprob, tokens_from_chat_logprobs, trim_token_alternatives
from proxy.wire.withheld import Asked, WithheldShape, asked_of_responses

__all__ = [
    "FAILED_EVENTS",
    "LOGPROBS_INCLUDE",
    "TERMINAL_EVENTS",
    "EventEncoder",
    "EventSequence",
    "ResponseAnswer",
    "ResponsesFormat",
    "answer_of",
    "encode_event",
    "error_event",
    "placeholder_response",
    "restrict_event",
    "restrict_response",
    "with_decision",
    "withheld_events",
    "withhold",
]

Json = dict[str, Any]

LOGPROBS_INCLUDE = "message.output_text.logprobs"
"""The ``include`` value that asks the Responses API for output-text logprobs."""
TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete"})
"""Events that end a response with its output (``response.failed`` ends it with an error)."""
FAILED_EVENTS = frozenset({"response.failed", "error"})


def _invalid(model: str, what: str) -> UpstreamInvalidResponse:
    return UpstreamInvalidResponse(
        f"the upstream for model {model!r} sent an invalid response: {what}")


class ResponseAnswer:
    """What a response (or a stream so far) says: its text, tokens, and whether it calls tools.

    Logprobs are read as they are added (into immutable :class:`TokenLogprob`), so trimming
    what the client sees afterwards cannot change what the decision reads.
    """

    __slots__ = ("_tokens", "_unreadable", "calls", "calls_tools", "parts")

    def __init__(self) -> None:
        self.parts: dict[tuple[int, int], list[str]] = {}
        self._tokens: dict[tuple[int, int], list[TokenLogprob]] = {}
        self._unreadable = False
        self.calls_tools = False
        self.calls: list[tuple[str, str]] = []
        """The function calls (name, arguments) of a complete response."""

    def add_text(self, output_index: int, content_index: int, text: str,
                 logprobs: Any) -> None:
        key = (output_index, content_index)
        self.parts.setdefault(key, []).append(text)
        if isinstance(logprobs, list) and logprobs:
            tokens = tokens_from_chat_logprobs({"content": logprobs})
            if tokens is None:  # a malformed entry costs the confidence, as for chat
                self._unreadable = True
            else:
                self._tokens.setdefault(key, []).extend(tokens)

    @property
    def text(self) -> str:
        return "".join("".join(self.parts[key]) for key in sorted(self.parts))

    @property
    def answer_text(self) -> str:
        """The text and the function calls, as the confidence signals read them."""
        return answer_text(self.text, self.calls)

    def tokens(self) -> list[TokenLogprob] | None:
        if self._unreadable:
            return None
        tokens = [token for key in sorted(self._tokens) for token in self._tokens[key]]
        return tokens or None


def answer_of(document: Json) -> ResponseAnswer:
    """The answer of a complete (shape-checked) response object."""
    answer = ResponseAnswer()
    for position, item in enumerate(document["output"]):
        if item.get("type") == "function_call":
            answer.calls_tools = True
            answer.calls.append(_call_of(item))
        for part_index, part in enumerate(_text_parts(item)):
            answer.add_text(position, part_index, part["text"], part.get("logprobs"))
    return answer


def _call_of(item: Json) -> tuple[str, str]:
    return str(item.get("name") or ""), str(item.get("arguments") or "")


def _text_parts(item: Json) -> Iterator[Json]:
    if item.get("type") != "message":
        return
    content = item.get("content")
    for part in content if isinstance(content, list) else []:
        if isinstance(part, dict) and part.get("type") == "output_text":
            yield part


def _user_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text", "")) for part in content
            if isinstance(part, dict) and part.get("type") in ("input_text", "text")
        )
    return ""


class ResponsesFormat(WireFormat):
    """``POST /v1/responses``, for the confidence signals (they read requests through this).

    Only what the signals use is defined: a Responses reply is read by :func:`answer_of`, not as
    choices; a sample of the request (consistency's) is read through :meth:`sample_choice`.
    """

    endpoint = "responses"
    chunk_object = "response"
    body_field = "output"
    delta_field = "delta"
    body_kind = list
    delta_kind = str

    @staticmethod
    def prompt_text(body: Json) -> str:
        value = body.get("input")
        if isinstance(value, str):
            return value
        if isinstance(value, list):
            for item in reversed(value):
                if isinstance(item, dict) and item.get("role") == "user":
                    return _user_text(item.get("content"))
        return ""

    @staticmethod
    def asked(body: Json) -> Asked:
        return asked_of_responses(body)

    @staticmethod
    def requested_logprobs(body: Json) -> tuple[bool, int]:
        include = body.get("include")
        wanted = isinstance(include, list) and LOGPROBS_INCLUDE in include
        return wanted, int(body.get("top_logprobs") or 0) if wanted else 0

    @staticmethod
    def ask_for_logprobs(body: Json, top_k: int) -> Json:
        include = body.get("include")
        include = list(include) if isinstance(include, list) else []
        if LOGPROBS_INCLUDE not in include:
            include.append(LOGPROBS_INCLUDE)
        # At least one alternative, as for chat: the top-k features need them, and a server
        # that sends none without top_logprobs still sends the token's own logprob.
        return {**body, "include": include,
                "top_logprobs": max(top_k, 1, int(body.get("top_logprobs") or 0))}

    @staticmethod
    def sample_choice(document: Json) -> Json | None:
        """A sampled response (consistency's) as a chat choice: its text and its logprobs."""
        output = document.get("output")
        if not isinstance(output, list) or not all(
                isinstance(item, dict) and isinstance(item.get("type"), str) for item in output):
            return None
        parts = [part for item in output for part in _text_parts(item)]
        text = answer_text("".join(str(part.get("text") or "") for part in parts),
                           [_call_of(item) for item in output if item["type"] == "function_call"])
        entries = [entry for part in parts if isinstance(part.get("logprobs"), list)
                   for entry in part["logprobs"]]
        return {"index": 0, "message": {"role": "assistant", "content": text},
                "logprobs": {"content": entries} if entries else None}

    @staticmethod
    def tokens(choice: Json) -> list[TokenLogprob] | None:
        """The tokens of a choice made by :meth:`sample_choice`."""
        return tokens_from_chat_logprobs(choice.get("logprobs"))

    @staticmethod
    def check_response(document: Any, model: str) -> Json:
        """``document`` once it is known to be a sound response object.

        Raises
        ------
        UpstreamInvalidResponse
            Not an object, no ``output`` list, or an item or part of the wrong shape.
        """
        if not isinstance(document, dict):
            raise _invalid(model, "not a JSON object")
        output = document.get("output")
        if not isinstance(output, list):
            raise _invalid(model, "no list of output items")
        for item in output:
            _check_item(item, model)
        return document

    @staticmethod
    def check_event(event: Any, model: str) -> Json:
        """``event`` once it is known to be a sound stream event (the fields basguard reads)."""
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise _invalid(model, "a stream event that is not an object with a type")
        kind = event["type"]
        if kind in TERMINAL_EVENTS or kind == "response.created":
            ResponsesFormat.check_response(event.get("response"), model)
        elif kind == "response.output_text.delta":
            if not isinstance(event.get("delta"), str):
                raise _invalid(model, "a text delta that is not a string")
            if not _is_index(event.get("output_index")) or not _is_index(
                    event.get("content_index", 0)):
                raise _invalid(model, "a text delta without output and content indices")
            if not isinstance(event.get("logprobs", []), list | None):
                raise _invalid(model, "a text delta whose logprobs are not a list")
        elif kind in ("response.output_item.added", "response.output_item.done"):
            _check_item(event.get("item"), model)
        return event


def _is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_item(item: Any, model: str) -> None:
    if not isinstance(item, dict) or not isinstance(item.get("type"), str):
        raise _invalid(model, "an output item that is not an object with a type")
    if item["type"] != "message":
        return
    content = item.get("content", [])
    if not isinstance(content, list):
        raise _invalid(model, "a message item whose content is not a list")
    for part in content:
        if not isinstance(part, dict):
            raise _invalid(model, "a content part that is not an object")
        if part.get("type") == "output_text":
            if not isinstance(part.get("text"), str):
                raise _invalid(model, "an output_text part whose text is not a string")
            if not isinstance(part.get("logprobs", []), list | None):
                raise _invalid(model, "an output_text part whose logprobs are not a list")


def _restrict(logprobs: Any, wanted: bool, top_k: int) -> list[Any]:
    """Logprobs as the client asked for them: none (an empty list, as OpenAI sends them
    unasked), or at most ``top_k`` alternatives per token."""
    if not wanted or not isinstance(logprobs, list):
        return []
    trim_token_alternatives(logprobs, top_k)
    return logprobs


def _restrict_item(item: Any, wanted: bool, top_k: int) -> None:
    if isinstance(item, dict):
        for part in _text_parts(item):
            if "logprobs" in part:
                part["logprobs"] = _restrict(part["logprobs"], wanted, top_k)


def restrict_response(document: Json, wanted: bool, top_k: int) -> None:
    """Drop the logprobs the client did not ask for from a response object."""
    for item in document.get("output") or []:
        _restrict_item(item, wanted, top_k)


def restrict_event(event: Json, wanted: bool, top_k: int) -> None:
    """Drop the logprobs the client did not ask for from one stream event, wherever it has them."""
    if "logprobs" in event:  # output_text.delta and .done
        event["logprobs"] = _restrict(event["logprobs"], wanted, top_k)
    part = event.get("part")
    if isinstance(part, dict) and "logprobs" in part:  # content_part.added and .done
        part["logprobs"] = _restrict(part["logprobs"], wanted, top_k)
    _restrict_item(event.get("item"), wanted, top_k)  # output_item.added and .done
    response = event.get("response")
    if isinstance(response, dict):  # the lifecycle events
        restrict_response(response, wanted, top_k)


def _abstention_parts(shape: WithheldShape) -> list[Json]:
    """The content parts of a withheld answer: its text, its refusal, or both."""
    parts: list[Json] = []
    if shape.content is not None:
        parts.append({"type": "output_text", "text": shape.content, "annotations": [],
                      "logprobs": []})
    if shape.refusal is not None:
        parts.append({"type": "refusal", "refusal": shape.refusal})
    return parts


def withhold(document: Json, shape: WithheldShape) -> None:
    """Replace a response's output with the abstention (enforce mode): one message item whose
    content parts are ``shape``'s text (``output_text``) and refusal (``refusal``).

    The whole output goes: besides the answer's text and logprobs, function calls, reasoning
    items and refusals can hold what was withheld. The response and its output item get new
    ids: the upstream stored the response (``store`` is on by default), and its id would let
    the app fetch the withheld answer (``GET /v1/responses/{id}``) or continue from it
    (``previous_response_id``).
    """
    document["id"] = f"resp_bg{uuid.uuid4().hex}"
    document["output"] = [{"id": f"msg_bg{uuid.uuid4().hex}", "type": "message",
                           "role": "assistant", "status": "completed",
                           "content": _abstention_parts(shape)}]
    document.pop("output_text", None)  # a convenience some servers add
    document["status"] = "completed"
    document["incomplete_details"] = None


def _part_events(where: Json, part: Json) -> list[Json]:
    """The events that stream one content part whole, from its ``content_part.added``."""
    if part["type"] == "refusal":
        text = part["refusal"]
        empty = {**part, "refusal": ""}
        deltas: list[Json] = [{"type": "response.refusal.delta", **where, "delta": text},
                              {"type": "response.refusal.done", **where, "refusal": text}]
    else:
        text = part["text"]
        empty = {**part, "text": ""}
        deltas = [
            {"type": "response.output_text.delta", **where, "delta": text, "logprobs": []},
            {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
        ]
    return [{"type": "response.content_part.added", **where, "part": empty}, *deltas,
            {"type": "response.content_part.done", **where, "part": part}]


def withheld_events(final: Json, shape: WithheldShape, first_sequence: int = 0) -> list[Json]:
    """The events that stream a withheld response (``final`` with its output withheld) whole,
    as OpenAI streams a message: its text as ``response.output_text`` events, its refusal as
    ``response.refusal`` ones."""
    withhold(final, shape)
    item = final["output"][0]
    started = {**final, "status": "in_progress", "output": []}
    events: list[Json] = [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
        {"type": "response.output_item.added", "output_index": 0,
         "item": {**item, "status": "in_progress", "content": []}},
    ]
    for content_index, part in enumerate(item["content"]):
        events += _part_events(
            {"item_id": item["id"], "output_index": 0, "content_index": content_index}, part)
    events += [
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.completed", "response": final},
    ]
    for number, event in enumerate(events, start=first_sequence):
        event["sequence_number"] = number
    return events


def with_decision(response: Json, decision: Json, metadata: dict[str, str]) -> None:
    """Put the decision on a response object: the ``basguard`` object, and its strings in the
    response's ``metadata`` (beside the app's own), which every typed client keeps."""
    response["basguard"] = decision
    given = response.get("metadata")
    response["metadata"] = {**(given if isinstance(given, dict) else {}), **metadata}


def placeholder_response(model: str) -> Json:
    """A response object for a stream whose upstream never sent one (to carry an abstention)."""
    return {"id": f"resp_bg{uuid.uuid4().hex}", "object": "response",
            "created_at": int(time.time()), "model": model, "status": "completed", "output": []}


class EventSequence:
    """The events of one Responses stream as a client gets them, in order.

    An error after the stream started becomes one ``error`` event (the Responses API's own type,
    with ``code``, ``message`` and ``param``) that also holds the OpenAI envelope under
    ``error``, so the openai SDK raises it as an ``APIError`` instead of ending the stream
    quietly; it is numbered after the last event.
    """

    def __init__(self) -> None:
        self._last_sequence = -1

    def event(self, document: Json) -> Json:
        if "type" not in document and isinstance(document.get("error"), dict):
            document = error_event(document["error"], self._last_sequence + 1)
        number = document.get("sequence_number")
        if isinstance(number, int):
            self._last_sequence = number
        return document


class EventEncoder(EventSequence):
    """Server-sent events of one Responses stream: ``event: <type>`` and ``data: <json>``."""

    def __call__(self, document: Json) -> bytes:
        return encode_event(self.event(document))


def error_event(error: Json, sequence_number: int) -> Json:
    """The Responses API's ``error`` event for an OpenAI error object."""
    return {"type": "error", "code": error.get("code"), "message": error.get("message"),
            "param": error.get("param"), "sequence_number": sequence_number, "error": error}


def encode_event(document: Json) -> bytes:
    return (b"event: " + str(document.get("type", "message")).encode() + b"\ndata: "
            + orjson.dumps(document) + b"\n\n")
