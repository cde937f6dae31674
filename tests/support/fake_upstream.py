"""A fake OpenAI-compatible upstream that speaks the real wire format, scripted per request.

The last message (chat) or the prompt (completions) may hold a JSON directive
``{"fake": {...}}`` on its first line (what follows, such as a question's options, is ignored);
in chat, a system message may hold one too, whose keys the last message's override (so the
question, the last message, need not quote the answers). Keys:

``content``          the answer text (split into as many tokens as ``logprobs`` has entries)
``logprobs``         per-token logprobs
``top_logprobs``     per-token alternatives' logprobs (the first is the token's own)
``choices``          per-choice ``{"content", "logprobs"}`` for n > 1
``repeat``           repeat ``content``, ``logprobs`` and ``top_logprobs`` this many times: a
                     large, logprob-dense reply from a short request
``omit_logprobs``    never return logprobs (a provider without them)
``status``           answer with this HTTP error status and an OpenAI error body
``delay``            seconds to wait before answering
``stream_error_after``  drop the connection after this many streamed content chunks
``stream_delay``     seconds between streamed chunks
``endless``          stream content chunks forever (at ``stream_delay`` apart), until the caller
                     goes away: a runaway generation
``echo_key``         put the upstream Authorization header into the error message (leak test)
``pad_tokens``       append this many tokens (" x", logprob ``pad_logprob``, default -0.05) to
                     each choice's scripted ones: a long answer whose first tokens are scripted
``interleave``       stream the choices of n > 1 token by token in turn (as OpenAI does), not
                     one after the other

Every stream is logged in :attr:`FakeUpstream.streams` (:class:`StreamLog`): how many content
chunks it sent of how many, and whether the caller closed it before the end.

``retry_after``      with ``status``: send this ``Retry-After`` header
``always_usage``     stream a usage chunk even when the request did not ask for one
``malformed``        answer with one of the broken shapes of :data:`MALFORMED` (streams: after
                     one sound chunk, so a passthrough has already sent its headers)
``tool_calls``       call these tools: a list of ``{"name", "arguments"}`` (arguments a JSON
                     text, split into tokens as ``content`` is, logprobs included); the message's
                     content is null unless ``content`` is given too, finish_reason tool_calls;
                     streamed the way OpenAI streams them (id, type and name first, then
                     argument pieces)
``stream_error_event``  after this many streamed content chunks, send an SSE error event (as
                     vLLM and llama.cpp do) whose message holds a file path and a traceback
``extra_delta``      fields (refusal, audio, vendor extensions) added to the message; streamed
                     as a chunk of their own right after the role chunk

The rest of the OpenAI surface, for passthrough (requests in :attr:`FakeUpstream.passed`):
``POST /v1/embeddings`` (an ``input`` of ``"fail"`` answers 500 with internals in the body),
``POST /v1/moderations``, ``POST /v1/audio/transcriptions`` (multipart: echoes what arrived),
``GET /v1/files/{id}/content`` (streams a first piece, then holds the rest until
:meth:`FakeUpstream.release` or 60 s; the file ``broken`` drops the connection instead), ``POST /v1/uploads/{id}/parts`` (records the bytes it has
received so far in :attr:`FakeUpstream.upload_progress` while the body is still arriving), and
any other ``/v1/...`` path (echoes method, path, query and body).

The Realtime API's WebSocket (``/v1/realtime?model=...``, every connection recorded in
:attr:`FakeUpstream.realtime`): accepts the ``realtime`` subprotocol if offered, sends
``session.created``, then answers client events as OpenAI's GA Realtime API does:
``session.update`` with ``session.updated``; ``conversation.item.create`` with
``conversation.item.created``; ``response.create`` with ``response.created``, one
``response.output_text.delta`` per word of "You said: " and the last item's text,
``response.output_text.done`` and ``response.done``; binary messages are echoed. Test events:
``{"type": "fake.close", "code": N}`` closes with N, ``{"type": "fake.drop"}`` drops the
connection without a close frame, ``{"type": "fake.big", "bytes": N}`` sends a text message of
N bytes. A model named ``refuse-NNN`` refuses the handshake with status NNN and an error body
that quotes a file path and the key.

Confidence signals' extra calls:

``sample_answers``   answers a *sample* (a request with ``temperature`` > 0) draws from, with a
                     seeded RNG: the k-th sample of this same directive (since ``clear()``) gets
                     ``Random(f"{sample_seed}:{k}").choice(sample_answers)``, so a set of k
                     samples holds the same answers whatever order they arrive in; under
                     ``tool_calls`` (chat) or ``tool_call`` (Responses), the answer drawn is the
                     (first) call's arguments
``sample_seed``      the seed (default 0)
``sample_status``    samples fail with this HTTP error status
``sample_delay``     samples wait this many seconds (the main request does not)
``sample_garbage``   samples are answered with a reply without choices
``followup``         a directive for the follow-up calls that quote the question (verbalized,
                     judge): their prompt holds this directive after its first character, and
                     they are served by ``followup`` (e.g. ``{"content": "85"}``) instead

The Responses API (``POST /v1/responses``) reads the directive from the last user input item
(or the ``input`` string), merged over one in ``instructions``; ``content``, ``logprobs``,
``top_logprobs``, ``omit_logprobs``, ``status``, ``delay``, ``stream_delay``,
``stream_error_after`` (counting events), the ``sample_*`` keys and ``malformed`` (``not_json``, ``no_output``, ``output_string``, ``text_not_string``,
``truncated``, ``failed_event``) work as above, and:

``tool_call``        ``{"name", "arguments"}``: answer with this ``function_call`` item instead,
                     unless the input already holds a ``function_call_output`` (the tool's
                     result), which is then answered with ``content``: a one-tool agent's two
                     turns, deterministic
``repeat``           the ``content`` this many times over (a large reply from a small request;
                     with ``logprobs``, its tokens and their logprobs, as for chat)
``no_text_deltas``   stream no ``response.output_text.delta`` events (the output only in the
                     final response, as some servers do)

Transient failures (``collect --retries``):

``fail_first``       the first N requests carrying this same directive fail with ``fail_status``
``fail_status``      the status of those failures (default 503)
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

DEFAULT_CONTENT = "The answer is 42."
DEFAULT_LOGPROB = -0.05


@dataclass
class StreamLog:
    """What the fake sent on one stream, and whether the caller went away before its end."""

    ident: str
    tokens: int
    """Content chunks the stream would send in full."""
    sent: int = 0
    """Content chunks sent before the stream ended."""
    completed: bool = False
    client_closed: bool = False
    """The caller closed the connection (cancelled the generation) before the end."""


@dataclass
class RealtimeLog:
    """One Realtime WebSocket connection as the fake saw it."""

    model: str
    query: str
    headers: dict[str, str]
    subprotocols: list[str]
    events: list[dict[str, Any]] = field(default_factory=list)
    client_close_code: int | None = None


@dataclass
class FakeUpstream:
    """The fake's state: every request it received, and streams whose client went away."""

    received: list[dict[str, Any]] = field(default_factory=list)
    disconnected: list[str] = field(default_factory=list)
    record: bool = True
    """Keep every request (off for benchmarks, which send hundreds of thousands)."""
    delaying: int = 0
    """Requests waiting out a ``delay`` right now."""
    most_delaying: int = 0
    """The most requests that waited out a ``delay`` at once: how concurrent the caller was."""
    failed_first: dict[str, int] = field(default_factory=dict)
    """Per ``fail_first`` directive (by its text), how many requests it has failed so far."""
    samples_drawn: dict[str, int] = field(default_factory=dict)
    """Per directive with ``sample_answers`` (by its text), how many samples it has served."""
    streams: list[StreamLog] = field(default_factory=list)
    """Every stream served, in the order they started."""
    passed: list[dict[str, Any]] = field(default_factory=list)
    """Requests to the rest of the surface: method, path, query, headers, body."""
    upload_progress: int = 0
    """Bytes of the current ``/v1/uploads/{id}/parts`` body received so far."""
    realtime: list[RealtimeLog] = field(default_factory=list)
    """Every Realtime WebSocket connection, in the order they opened."""
    _released: threading.Event = field(default_factory=threading.Event)

    def release(self) -> None:
        """Let a held ``/v1/files/{id}/content`` stream send its rest."""
        self._released.set()

    def clear(self) -> None:
        self.received.clear()
        self.disconnected.clear()
        self.most_delaying = 0
        self.failed_first.clear()
        self.samples_drawn.clear()
        self.streams.clear()
        self.passed.clear()
        self.upload_progress = 0
        self.realtime.clear()
        self._released.clear()

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/v1/completions", self._completions, methods=["POST"]),
            Route("/v1/responses", self._responses, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/v1/embeddings", self._embeddings, methods=["POST"]),
            Route("/v1/moderations", self._moderations, methods=["POST"]),
            Route("/v1/audio/transcriptions", self._transcriptions, methods=["POST"]),
            Route("/v1/files/{file_id}/content", self._file_content, methods=["GET"]),
            Route("/v1/uploads/{upload_id}/parts", self._upload_part, methods=["POST"]),
            Route("/v1/{rest:path}", self._echo,
                  methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
            WebSocketRoute("/v1/realtime", self._realtime),
        ])

    async def _realtime(self, websocket: WebSocket) -> None:
        model = websocket.query_params.get("model", "")
        log = RealtimeLog(model, websocket.url.query, dict(websocket.headers),
                          list(websocket.scope.get("subprotocols", [])))
        self.realtime.append(log)
        if model.startswith("refuse-"):
            await websocket.send_denial_response(Response(orjson.dumps({"error": {
                "message": "refused at /srv/realtime/handshake.py with "
                           f"{websocket.headers.get('authorization')}",
                "type": "invalid_request_error"}}), status_code=int(model[7:]),
                media_type="application/json"))
            return
        await websocket.accept("realtime" if "realtime" in log.subprotocols else None)
        await websocket.send_json(_realtime_event("session.created", session={
            "id": f"sess_{uuid.uuid4().hex[:12]}", "object": "realtime.session",
            "type": "realtime", "model": model}))
        last_text = ""
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    log.client_close_code = message.get("code")
                    return
                if message.get("bytes") is not None:
                    await websocket.send_bytes(message["bytes"])
                    continue
                event = orjson.loads(message["text"])
                log.events.append(event)
                kind = event.get("type")
                if kind == "session.update":
                    await websocket.send_json(_realtime_event(
                        "session.updated", session={"type": "realtime", "model": model,
                                                    **event.get("session", {})}))
                elif kind == "conversation.item.create":
                    item = event["item"]
                    last_text = " ".join(part.get("text", "") for part in item.get("content", []))
                    await websocket.send_json(_realtime_event(
                        "conversation.item.created", item={"id": "item_1", **item}))
                elif kind == "response.create":
                    await _realtime_response(websocket, f"You said: {last_text}")
                elif kind == "fake.close":
                    await websocket.close(event["code"])
                    return
                elif kind == "fake.drop":
                    # No close frame: the TCP connection just ends. uvicorn's receive is a
                    # method of its protocol object, which holds the transport.
                    websocket._receive.__self__.transport.abort()  # type: ignore[attr-defined]
                    return
                elif kind == "fake.big":
                    await websocket.send_text("x" * event["bytes"])
        except WebSocketDisconnect as exc:
            log.client_close_code = exc.code

    def _note(self, request: Request, body: bytes) -> None:
        self.passed.append({"method": request.method, "path": request.url.path,
                            "query": request.url.query, "headers": dict(request.headers),
                            "body": body})

    async def _embeddings(self, request: Request) -> Response:
        raw = await request.body()
        self._note(request, raw)
        body = orjson.loads(raw)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        if inputs == ["fail"]:
            return _json({"error": {"message": "Traceback: /srv/fake/engine.py line 7: boom",
                                    "type": "server_error", "param": None, "code": None}}, 500)
        data = [{"object": "embedding", "index": i,
                 "embedding": [float(len(str(text))), 0.5, -0.25]}
                for i, text in enumerate(inputs)]
        return _json({"object": "list", "data": data, "model": body.get("model"),
                      "usage": {"prompt_tokens": len(inputs), "total_tokens": len(inputs)}})

    async def _moderations(self, request: Request) -> Response:
        raw = await request.body()
        self._note(request, raw)
        body = orjson.loads(raw)
        return _json({"id": "modr-fake", "model": body.get("model"), "results": [
            {"flagged": False, "categories": {}, "category_scores": {}}]})

    async def _transcriptions(self, request: Request) -> Response:
        raw = await request.body()
        self._note(request, raw)
        return _json({"text": f"{len(raw)} bytes of {request.headers.get('content-type')}"})

    async def _file_content(self, request: Request) -> Response:
        self._note(request, b"")

        broken = request.path_params["file_id"] == "broken"

        async def pieces() -> AsyncIterator[bytes]:
            yield b"first piece;"
            if broken:
                raise ConnectionAbortedError("scripted upstream failure mid-body")
            deadline = time.monotonic() + 60
            while not self._released.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            yield b"the rest"

        return StreamingResponse(pieces(), media_type="application/octet-stream")

    async def _upload_part(self, request: Request) -> Response:
        self.upload_progress = 0
        body = bytearray()
        async for piece in request.stream():
            body += piece
            self.upload_progress = len(body)
        self._note(request, bytes(body))
        return _json({"id": "part_fake", "object": "upload.part", "bytes": len(body)})

    async def _echo(self, request: Request) -> Response:
        raw = await request.body()
        self._note(request, raw)
        return _json({"object": "fake.echo", "method": request.method,
                      "path": request.url.path, "query": request.url.query,
                      "body": raw.decode("utf-8", "replace")})

    async def _models(self, request: Request) -> Response:
        return _json({"object": "list", "data": [{"id": "fake-model", "object": "model",
                                                  "created": 0, "owned_by": "fake"}]})

    async def _chat(self, request: Request) -> Response:
        return await self._serve(request, chat=True)

    async def _completions(self, request: Request) -> Response:
        return await self._serve(request, chat=False)

    async def _serve(self, request: Request, *, chat: bool) -> Response:
        body = orjson.loads(await request.body())
        if self.record:
            self.received.append(
                {"body": body, "authorization": request.headers.get("authorization")}
            )
        text = body["messages"][-1].get("content", "") if chat else body.get("prompt", "")
        text = text if isinstance(text, str) else ""
        own = _directive(text)
        if own and not text.startswith("{"):
            # A follow-up call (verbalized, judge) quoting the question: served by `followup`.
            followup = own.get("followup")
            directive = followup if isinstance(followup, dict) else {}
        else:
            directive = {**(_system_directive(body) if chat else {}), **own}
            if (body.get("temperature") or 0) > 0 and _samples_scripted(directive):
                directive = self._as_sample(directive)
        if directive.get("garbage_reply"):
            return _json({"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
                          "created": int(time.time()), "model": body.get("model"),
                          "choices": []})
        if directive.get("delay"):
            # Wait in small steps, noticing a caller that gives up (uvicorn does not cancel a
            # handler whose client left, so the fake has to look).
            deadline = time.monotonic() + float(directive["delay"])
            self.delaying += 1
            self.most_delaying = max(self.most_delaying, self.delaying)
            try:
                while time.monotonic() < deadline:
                    if await request.is_disconnected():
                        self.disconnected.append(f"waiting:{len(self.received)}")
                        return Response(status_code=499)
                    await asyncio.sleep(0.02)
            finally:
                self.delaying -= 1
        if directive.get("status"):
            return _error(int(directive["status"]), directive, request)
        if self._fails_this_time(directive):
            return _error(int(directive.get("fail_status", 503)), directive, request)
        choices = _scripted_choices(directive, int(body.get("n") or 1))
        if directive.get("malformed"):
            return _malformed(str(directive["malformed"]), body, directive, choices, chat=chat)
        if body.get("stream"):
            return StreamingResponse(
                self._stream(request, body, directive, choices, chat=chat),
                media_type="text/event-stream",
            )
        return _json(_response(body, directive, choices, chat=chat))

    async def _responses(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        if self.record:
            self.received.append(
                {"body": body, "authorization": request.headers.get("authorization")})
        directive = _responses_directive(body)
        if directive.get("repeat") and not directive.get("logprobs"):
            # (With scripted logprobs, the choice repeats its tokens itself.)
            directive["content"] = str(directive.get("content", DEFAULT_CONTENT)) * int(
                directive["repeat"])
        if (body.get("temperature") or 0) > 0 and _samples_scripted(directive):
            directive = self._as_sample(directive)
        if directive.get("delay"):
            await asyncio.sleep(float(directive["delay"]))
        if directive.get("status"):
            return _error(int(directive["status"]), directive, request)
        response = _responses_object(body, directive)
        if directive.get("malformed"):
            return _responses_malformed(str(directive["malformed"]), body, response)
        if body.get("stream"):
            return StreamingResponse(self._responses_stream(body, directive, response),
                                     media_type="text/event-stream")
        return _json(response)

    async def _responses_stream(
        self, body: dict[str, Any], directive: dict[str, Any], response: dict[str, Any]
    ) -> AsyncIterator[bytes]:
        try:
            for number, event in enumerate(_responses_events(response, directive)):
                if directive.get("stream_error_after") is not None and number >= int(
                        directive["stream_error_after"]):
                    raise ConnectionAbortedError("scripted upstream failure mid-stream")
                if directive.get("stream_delay"):
                    await asyncio.sleep(float(directive["stream_delay"]))
                yield _typed_sse({**event, "sequence_number": number})
            # No [DONE]: the Responses API ends a stream with its last event.
        except asyncio.CancelledError:
            self.disconnected.append(response["id"])
            raise

    def _as_sample(self, directive: dict[str, Any]) -> dict[str, Any]:
        """The directive a sample of the main request is served by (see the module doc)."""
        key = orjson.dumps(directive, option=orjson.OPT_SORT_KEYS).decode()
        drawn = self.samples_drawn.get(key, 0)
        self.samples_drawn[key] = drawn + 1
        sample = {k: v for k, v in directive.items() if not k.startswith("sample_")}
        answers = directive.get("sample_answers")
        if answers:
            rng = random.Random(f"{directive.get('sample_seed', 0)}:{drawn}")
            answer = rng.choice(answers)
            sample.pop("logprobs", None)
            sample.pop("choices", None)
            if directive.get("tool_calls"):
                first, *rest = directive["tool_calls"]
                sample["tool_calls"] = [{**first, "arguments": answer}, *rest]
            elif isinstance(directive.get("tool_call"), dict):
                sample["tool_call"] = {**directive["tool_call"], "arguments": answer}
            else:
                sample["content"] = answer
        if directive.get("sample_status"):
            sample["status"] = directive["sample_status"]
        if directive.get("sample_delay"):
            sample["delay"] = directive["sample_delay"]
        if directive.get("sample_garbage"):
            sample["garbage_reply"] = True
        return sample

    def _fails_this_time(self, directive: dict[str, Any]) -> bool:
        if not directive.get("fail_first"):
            return False
        key = orjson.dumps(directive, option=orjson.OPT_SORT_KEYS).decode()
        failed = self.failed_first.get(key, 0)
        if failed >= int(directive["fail_first"]):
            return False
        self.failed_first[key] = failed + 1
        return True

    async def _stream(
        self, request: Request, body: dict[str, Any], directive: dict[str, Any],
        choices: list[dict[str, Any]], *, chat: bool,
    ) -> AsyncIterator[bytes]:
        ident = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:12]
        base = {"id": ident, "object": "chat.completion.chunk" if chat else "text_completion",
                "created": int(time.time()), "model": body.get("model", "")}
        wants, top_k = _wants_logprobs(body, chat=chat)
        wants = wants and not directive.get("omit_logprobs")
        sent = 0
        log = StreamLog(ident, sum(len(c["tokens"]) for c in choices))
        self.streams.append(log)
        try:
            if directive.get("endless"):
                async for line in _endless(base, directive, chat=chat):
                    yield line
            calls = directive.get("tool_calls") if chat else None
            for choice, kind, entry_or_token in _stream_events(
                    choices, interleave=bool(directive.get("interleave"))):
                if kind == "role":
                    if chat:
                        first_delta: dict[str, Any] = {"role": "assistant", "content": ""}
                        if calls:
                            first_delta = {"role": "assistant", "content": None, "tool_calls": [
                                {"index": 0, "id": "call_0", "type": "function",
                                 "function": {"name": calls[0]["name"], "arguments": ""}}]}
                        yield _sse({**base, "choices": [{"index": choice["index"],
                                    "delta": first_delta, "logprobs": None,
                                    "finish_reason": None}]})
                        if directive.get("extra_delta"):
                            yield _sse({**base, "choices": [{"index": choice["index"],
                                        "delta": directive["extra_delta"], "logprobs": None,
                                        "finish_reason": None}]})
                    continue
                if kind == "finish":
                    last = ({"index": choice["index"], "delta": {}, "logprobs": None,
                             "finish_reason": "tool_calls" if calls else "stop"} if chat else
                            {"index": choice["index"], "text": "", "logprobs": None,
                             "finish_reason": "stop"})
                    yield _sse({**base, "choices": [last]})
                    continue
                token, entry = entry_or_token
                if directive.get("stream_error_after") is not None and sent >= int(
                        directive["stream_error_after"]):
                    raise ConnectionAbortedError("scripted upstream failure mid-stream")
                if directive.get("stream_error_event") is not None and sent >= int(
                        directive["stream_error_event"]):
                    yield _sse({"error": {"message": "Traceback: /srv/fake/engine.py line 9"
                                          ": CUDA out of memory", "type": "server_error"}})
                    return
                if directive.get("stream_delay"):
                    await asyncio.sleep(float(directive["stream_delay"]))
                logprobs = None
                if wants:
                    logprobs = (_chat_logprobs([entry], top_k) if chat
                                else _completion_logprobs([entry], top_k))
                delta: dict[str, Any] = (
                    {"tool_calls": [{"index": 0, "function": {"arguments": token}}]}
                    if calls else {"content": token})
                piece = ({"index": choice["index"], "delta": delta,
                          "logprobs": logprobs, "finish_reason": None} if chat else
                         {"index": choice["index"], "text": token, "logprobs": logprobs,
                          "finish_reason": None})
                yield _sse({**base, "choices": [piece]})
                sent += 1
                log.sent = sent
            if (body.get("stream_options") or {}).get("include_usage") or directive.get(
                    "always_usage"):
                yield _sse({**base, "choices": [], "usage": _usage(choices)})
            yield b"data: [DONE]\n\n"
            log.completed = True
        except asyncio.CancelledError:
            self.disconnected.append(ident)
            raise
        finally:
            # Cancelled, or closed by the server after a failed write: the caller went away.
            log.client_closed = not log.completed


def _stream_events(
    choices: list[dict[str, Any]], *, interleave: bool
) -> list[tuple[dict[str, Any], str, Any]]:
    """(choice, "role" | "token" | "finish", (token, entry) for a token) in streaming order."""
    per_choice = [
        [(c, "role", None),
         *((c, "token", pair) for pair in zip(c["tokens"], c["entries"], strict=True)),
         (c, "finish", None)]
        for c in choices
    ]
    if not interleave:
        return [event for events in per_choice for event in events]
    ordered = []
    for step in range(max(len(events) for events in per_choice)):
        ordered.extend(events[step] for events in per_choice if step < len(events))
    return ordered


def _responses_directive(body: dict[str, Any]) -> dict[str, Any]:
    instructions = body.get("instructions")
    directive = _directive(instructions) if isinstance(instructions, str) else {}
    value = body.get("input")
    if isinstance(value, str):
        return {**directive, **_directive(value)}
    for item in reversed(value if isinstance(value, list) else []):
        if isinstance(item, dict) and item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, list):
                content = next((part.get("text", "") for part in content
                                if isinstance(part, dict) and "text" in part), "")
            if isinstance(content, str):
                directive = {**directive, **_directive(content)}
            break
    return directive


def _has_tool_result(body: dict[str, Any]) -> bool:
    value = body.get("input")
    return isinstance(value, list) and any(
        isinstance(item, dict) and item.get("type") == "function_call_output" for item in value)


def _response_logprobs(entries: list[dict[str, Any]], top_k: int) -> list[dict[str, Any]]:
    return [
        {"token": e["token"], "logprob": e["logprob"], "bytes": list(e["token"].encode()),
         "top_logprobs": [
             {"token": e["token"] if j == 0 else f"alt{j}", "logprob": lp,
              "bytes": list((e["token"] if j == 0 else f"alt{j}").encode())}
             for j, lp in enumerate(e["alternatives"][:top_k])]}
        for e in entries
    ]


def _responses_object(body: dict[str, Any], directive: dict[str, Any]) -> dict[str, Any]:
    """A completed response object, with the entries each output text is streamed from."""
    include = body.get("include") or []
    wants = "message.output_text.logprobs" in include and not directive.get("omit_logprobs")
    top_k = int(body.get("top_logprobs") or 0)
    tool_call = directive.get("tool_call")
    output: list[dict[str, Any]]
    if isinstance(tool_call, dict) and not _has_tool_result(body):
        output = [{"id": f"fc_{uuid.uuid4().hex[:12]}", "type": "function_call",
                   "call_id": f"call_{uuid.uuid4().hex[:12]}", "name": tool_call["name"],
                   "arguments": tool_call.get("arguments", "{}"), "status": "completed"}]
        generated = 5
    else:
        choice = _scripted_choices(directive, 1)[0]
        part = {"type": "output_text", "text": choice["content"], "annotations": [],
                "logprobs": _response_logprobs(choice["entries"], top_k) if wants else []}
        output = [{"id": f"msg_{uuid.uuid4().hex[:12]}", "type": "message", "role": "assistant",
                   "status": "completed", "content": [part]}]
        generated = len(choice["tokens"])
    return {
        "id": f"resp_{uuid.uuid4().hex[:12]}", "object": "response",
        "created_at": int(time.time()), "status": "completed", "model": body.get("model", ""),
        "output": output, "error": None, "incomplete_details": None,
        "instructions": body.get("instructions"), "metadata": body.get("metadata") or {},
        "parallel_tool_calls": True,
        "temperature": 1.0, "top_p": 1.0, "tool_choice": "auto", "tools": body.get("tools", []),
        "text": {"format": {"type": "text"}}, "top_logprobs": top_k, "truncation": "disabled",
        "usage": {"input_tokens": 10,
                  "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                  "output_tokens": generated, "output_tokens_details": {"reasoning_tokens": 0},
                  "total_tokens": 10 + generated},
    }


def _responses_events(
    response: dict[str, Any], directive: dict[str, Any]
) -> list[dict[str, Any]]:
    """The typed events that stream ``response``, as OpenAI sends them (without numbers)."""
    started = {**response, "status": "in_progress", "output": [], "usage": None}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
    ]
    for index, item in enumerate(response["output"]):
        ident = item["id"]
        if item["type"] == "function_call":
            events += [
                {"type": "response.output_item.added", "output_index": index,
                 "item": {**item, "arguments": "", "status": "in_progress"}},
                {"type": "response.function_call_arguments.delta", "item_id": ident,
                 "output_index": index, "delta": item["arguments"]},
                {"type": "response.function_call_arguments.done", "item_id": ident,
                 "output_index": index, "arguments": item["arguments"], "name": item["name"]},
                {"type": "response.output_item.done", "output_index": index, "item": item},
            ]
            continue
        events.append({"type": "response.output_item.added", "output_index": index,
                       "item": {**item, "status": "in_progress", "content": []}})
        for content_index, part in enumerate(item["content"]):
            where = {"item_id": ident, "output_index": index, "content_index": content_index}
            events.append({"type": "response.content_part.added", **where,
                           "part": {**part, "text": "", "logprobs": []}})
            if not directive.get("no_text_deltas"):
                entries = part["logprobs"] or [None] * len(_tokens(part["text"], 0))
                tokens = ([e["token"] for e in part["logprobs"]] if part["logprobs"]
                          else _tokens(part["text"], 0))
                for token, entry in zip(tokens, entries, strict=True):
                    events.append({"type": "response.output_text.delta", **where,
                                   "delta": token, "logprobs": [entry] if entry else []})
            events += [
                {"type": "response.output_text.done", **where, "text": part["text"],
                 "logprobs": part["logprobs"]},
                {"type": "response.content_part.done", **where, "part": part},
            ]
        events.append({"type": "response.output_item.done", "output_index": index,
                       "item": item})
    events.append({"type": "response.completed", "response": response})
    return events


def _responses_malformed(name: str, body: dict[str, Any], response: dict[str, Any]) -> Response:
    if name == "failed_event" and body.get("stream"):
        failed = {**response, "status": "failed", "output": [],
                  "error": {"code": "server_error", "message": "scripted failure /srv/model"}}
        events = [{"type": "response.created", "response": {**response, "output": []}},
                  {"type": "response.failed", "response": failed}]
        return Response(b"".join(_typed_sse({**e, "sequence_number": i})
                                 for i, e in enumerate(events)),
                        media_type="text/event-stream")
    if name == "not_json":
        raw = b"{not json"
    elif name == "no_output":
        raw = orjson.dumps({k: v for k, v in response.items() if k != "output"})
    elif name == "output_string":
        raw = orjson.dumps({**response, "output": "Paris"})
    elif name == "text_not_string":
        response["output"][0]["content"][0]["text"] = 5
        raw = orjson.dumps(response)
    elif name == "truncated":  # not JSON, and as large as the reply would have been
        whole = orjson.dumps(response)
        raw = whole[:len(whole) // 2]
    else:
        raise ValueError(f"no malformed Responses shape {name!r}")
    if body.get("stream"):
        event = {"type": "response.completed", "sequence_number": 0,
                 "response": orjson.loads(raw) if raw.startswith(b"{\"") else raw.decode()}
        return Response(_typed_sse(event) if name != "not_json" else b"data: {not json\n\n",
                        media_type="text/event-stream")
    return Response(raw, media_type="application/json")


def _realtime_event(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "event_id": f"event_{uuid.uuid4().hex[:12]}", **fields}


async def _realtime_response(websocket: WebSocket, text: str) -> None:
    """A text response as the GA Realtime API streams it: created, deltas, done."""
    response_id = f"resp_{uuid.uuid4().hex[:12]}"
    base = {"id": response_id, "object": "realtime.response"}
    await websocket.send_json(_realtime_event(
        "response.created", response={**base, "status": "in_progress", "output": []}))
    words = text.split(" ")
    for i, word in enumerate(words):
        await websocket.send_json(_realtime_event(
            "response.output_text.delta", response_id=response_id, item_id="item_2",
            output_index=0, content_index=0, delta=word if i == 0 else f" {word}"))
    await websocket.send_json(_realtime_event(
        "response.output_text.done", response_id=response_id, item_id="item_2",
        output_index=0, content_index=0, text=text))
    await websocket.send_json(_realtime_event("response.done", response={
        **base, "status": "completed", "output": [{
            "id": "item_2", "type": "message", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text}]}]}))


def _typed_sse(document: dict[str, Any]) -> bytes:
    return (b"event: " + document["type"].encode() + b"\ndata: " + orjson.dumps(document)
            + b"\n\n")


def _system_directive(body: dict[str, Any]) -> dict[str, Any]:
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if message.get("role") == "system" and isinstance(content, str) \
                and content.startswith("{"):
            return _directive(content)
    return {}


def _samples_scripted(directive: dict[str, Any]) -> bool:
    return any(key.startswith("sample_") for key in directive)


async def _endless(
    base: dict[str, Any], directive: dict[str, Any], *, chat: bool
) -> AsyncIterator[bytes]:
    """Content chunks without end: only the caller's disconnect (a cancellation) stops it."""
    token = str(directive.get("content", DEFAULT_CONTENT))
    piece = ({"index": 0, "delta": {"content": token}, "logprobs": None,
              "finish_reason": None} if chat else
             {"index": 0, "text": token, "logprobs": None, "finish_reason": None})
    line = _sse({**base, "choices": [piece]})
    while True:
        yield line
        # Always yield to the loop, so a fast endless stream still notices cancellation.
        await asyncio.sleep(float(directive.get("stream_delay") or 0))


def _directive(text: str) -> dict[str, Any]:
    start = 0 if text.startswith("{") else text.find('{"fake"')
    if start < 0:
        return {}
    try:
        document = orjson.loads(text[start:].split("\n", 1)[0])
    except orjson.JSONDecodeError:
        return {}
    fake = document.get("fake") if isinstance(document, dict) else None
    return fake if isinstance(fake, dict) else {}


def _tokens(content: str, count: int) -> list[str]:
    words = content.split(" ")
    if count <= 0:
        return [w if i == 0 else " " + w for i, w in enumerate(words)]
    # Exactly `count` pieces that join back into the content.
    size = max(1, -(-len(content) // count))
    pieces = [content[i * size:(i + 1) * size] for i in range(count)]
    return pieces


def _scripted_choices(directive: dict[str, Any], n: int) -> list[dict[str, Any]]:
    scripts = directive.get("choices") or [directive] * n
    choices = []
    for index in range(n):
        script = scripts[index % len(scripts)]
        content = script.get("content", directive.get("content", DEFAULT_CONTENT))
        if directive.get("tool_calls"):
            # The tokens are the arguments' (what a model generates for a call).
            content = "".join(call["arguments"] for call in directive["tool_calls"])
        logprobs = script.get("logprobs", directive.get("logprobs"))
        tops = script.get("top_logprobs", directive.get("top_logprobs"))
        repeat = int(directive.get("repeat", 1))
        if repeat > 1 and logprobs:
            # Each repetition keeps its own tokens: the content splits back into them.
            pieces = _tokens(content, len(logprobs))
            content, logprobs = "".join(pieces * repeat), logprobs * repeat
            tops = tops * repeat if tops else None
            tokens = pieces * repeat
        else:
            tokens = _tokens(content, len(logprobs) if logprobs else 0)
        values = logprobs or [DEFAULT_LOGPROB] * len(tokens)
        pad = int(script.get("pad_tokens", directive.get("pad_tokens", 0)))
        if pad:
            tokens = [*tokens, *[" x"] * pad]
            values = [*values, *[float(directive.get("pad_logprob", DEFAULT_LOGPROB))] * pad]
            tops = [*tops, *[None] * pad] if tops else None
            content = "".join(tokens)
        entries = []
        for i, (token, value) in enumerate(zip(tokens, values, strict=True)):
            alternatives = (tops[i] if tops and tops[i] is not None
                            else [value, value - 3.0, value - 5.0])
            entries.append({"token": token, "logprob": value, "alternatives": alternatives})
        choices.append({"index": index, "content": content, "tokens": tokens, "entries": entries})
    return choices


def _wants_logprobs(body: dict[str, Any], *, chat: bool) -> tuple[bool, int]:
    if chat:
        return bool(body.get("logprobs")), int(body.get("top_logprobs") or 0)
    value = body.get("logprobs")
    return value is not None, int(value or 0)


def _chat_logprobs(entries: list[dict[str, Any]], top_k: int) -> dict[str, Any]:
    content = []
    for entry in entries:
        top = [{"token": entry["token"] if j == 0 else f"alt{j}", "logprob": lp, "bytes": None}
               for j, lp in enumerate(entry["alternatives"][:top_k])]
        content.append({"token": entry["token"], "logprob": entry["logprob"],
                        "bytes": list(entry["token"].encode()), "top_logprobs": top})
    return {"content": content, "refusal": None}


def _completion_logprobs(entries: list[dict[str, Any]], top_k: int) -> dict[str, Any]:
    return {
        "tokens": [e["token"] for e in entries],
        "token_logprobs": [e["logprob"] for e in entries],
        "top_logprobs": [
            {(e["token"] if j == 0 else f"alt{j}"): lp for j, lp in enumerate(e["alternatives"][:top_k])}
            for e in entries
        ],
        "text_offset": [],
    }


def _usage(choices: list[dict[str, Any]]) -> dict[str, int]:
    completion = sum(len(c["tokens"]) for c in choices)
    return {"prompt_tokens": 10, "completion_tokens": completion, "total_tokens": 10 + completion}


def _response(body: dict[str, Any], directive: dict[str, Any], choices: list[dict[str, Any]],
              *, chat: bool) -> dict[str, Any]:
    wants, top_k = _wants_logprobs(body, chat=chat)
    wants = wants and not directive.get("omit_logprobs")
    out = []
    for choice in choices:
        if chat:
            logprobs = _chat_logprobs(choice["entries"], top_k) if wants else None
            message = {"role": "assistant", "content": choice["content"], "refusal": None,
                       **(directive.get("extra_delta") or {})}
            finish = "stop"
            calls = directive.get("tool_calls")
            if calls:
                message["content"] = directive.get("content")
                message["tool_calls"] = [
                    {"id": f"call_{i}", "type": "function",
                     "function": {"name": call["name"], "arguments": call["arguments"]}}
                    for i, call in enumerate(calls)]
                finish = "tool_calls"
            out.append({"index": choice["index"], "message": message,
                        "logprobs": logprobs, "finish_reason": finish})
        else:
            logprobs = _completion_logprobs(choice["entries"], top_k) if wants else None
            out.append({"index": choice["index"], "text": choice["content"],
                        "logprobs": logprobs, "finish_reason": "stop"})
    return {
        "id": ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:12],
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": body.get("model", ""),
        "system_fingerprint": "fp_fake",
        "choices": out,
        "usage": _usage(choices),
    }


def _error(status: int, directive: dict[str, Any], request: Request) -> Response:
    kind = ("rate_limit_exceeded" if status == 429 else "server_error" if status >= 500
            else "invalid_request_error")
    message = directive.get("error_message", f"scripted failure {status}")
    if directive.get("echo_key"):
        message += f" (received {request.headers.get('authorization')})"
    response = _json({"error": {"message": message, "type": kind, "param": None, "code": None}},
                     status)
    if directive.get("retry_after"):
        response.headers["retry-after"] = str(directive["retry_after"])
    return response


def _broken(name: str, document: dict[str, Any], field: str) -> bytes:
    """``document`` (a reply or a chunk, ``field`` its choices' message/delta) broken as named."""
    choice = document["choices"][0]
    if name == "not_json":
        return b"{not json"
    if name == "not_object":
        return b"[1, 2]"
    if name == "truncated":  # not in MALFORMED: for replies large enough to be offloaded
        encoded = orjson.dumps(document)
        return encoded[: len(encoded) // 2]
    if name == "no_choices":
        del document["choices"]
    elif name == "choices_string":
        document["choices"] = "Paris"
    elif name == "choices_object":
        document["choices"] = {"0": choice}
    elif name == "choice_int":
        document["choices"] = [1]
    elif name == "message_not_object":
        choice[field] = "Paris"
    elif name == "content_not_string":
        choice[field] = {"role": "assistant", "content": 5}
    elif name == "index_not_int":
        choice["index"] = "0"
    elif name == "logprobs_not_object":
        choice["logprobs"] = [1, 2]
    elif name == "finish_reason_not_string":
        choice["finish_reason"] = 5
    elif name == "empty_choices":
        document["choices"] = []
    elif name == "no_message":
        del choice[field]
    elif name == "index_out_of_range":
        choice["index"] = 99
    elif name == "tool_calls_not_list" and isinstance(choice.get(field), dict):
        choice[field]["tool_calls"] = "garbage"
    elif name == "tool_call_not_function" and isinstance(choice.get(field), dict):
        choice[field]["tool_calls"] = [{"index": 0, "id": "call_1", "type": "function",
                                        "function": "get_weather"}]
    elif name == "long_line":
        return b"x" * (600 * 1024)
    else:
        raise ValueError(f"no malformed shape {name!r}")
    return orjson.dumps(document)


MALFORMED = (
    "not_json", "not_object", "no_choices", "choices_string", "choices_object", "choice_int",
    "message_not_object", "content_not_string", "index_not_int", "logprobs_not_object",
    "finish_reason_not_string", "empty_choices", "index_out_of_range", "tool_calls_not_list",
    "tool_call_not_function", "long_line",
)
"""Broken upstream shapes; ``long_line`` (a 600 KiB SSE line) applies to streams only."""
MALFORMED_REPLIES = ("no_message",)
"""Broken shapes of a non-streamed reply only (a chunk may carry no delta)."""
EMPTY_STREAMS = ("only_done", "no_data_lines")
"""Streams with no chunk at all: only ``data: [DONE]``, or only lines that are not data."""


def _malformed(name: str, body: dict[str, Any], directive: dict[str, Any],
               choices: list[dict[str, Any]], *, chat: bool) -> Response:
    if not body.get("stream"):
        return Response(_broken(name, _response(body, directive, choices, chat=chat),
                                "message" if chat else "text"), media_type="application/json")
    chunk = {"id": "chatcmpl-broken", "object": "chat.completion.chunk" if chat
             else "text_completion", "created": int(time.time()), "model": body.get("model", ""),
             "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Par"},
                          "logprobs": None, "finish_reason": None} if chat else
                         {"index": 0, "text": "Par", "logprobs": None, "finish_reason": None}]}
    if name in EMPTY_STREAMS:
        events = ([b"data: [DONE]\n\n"] if name == "only_done"
                  else [b": keep-alive\n\n", b"event: ping\n\n", b"id: 1\n\n", b"data: [DONE]\n\n"])
        return Response(b"".join(events), media_type="text/event-stream")
    sound = {**chunk, "choices": []} if name == "empty_choices" else chunk
    broken = _broken(name, orjson.loads(orjson.dumps(chunk)), "delta" if chat else "text")
    events = [_sse(sound), b"data: " + broken + b"\n\n", b"data: [DONE]\n\n"]
    return Response(b"".join(events), media_type="text/event-stream")


def _json(document: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(document), status_code=status, media_type="application/json")


def _sse(document: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(document) + b"\n\n"
