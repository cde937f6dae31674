"""The guarded endpoints: chat completions, legacy completions and the Responses API, each
answered or withheld per the tenant's policy (see :mod:`proxy.services.completions` and
:mod:`proxy.services.responses`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from policies.segments import SEGMENT_HEADER, resolve_segment
from proxy.http.disconnect import ClientGone, disconnect_signal, unless_gone
from proxy.http.draining import ending_on_shutdown
from proxy.http.encoded import EncodedJSONResponse
from proxy.http.routes.context import (
    authenticated,
    gateway_metrics,
    header,
    in_flight,
    read_json,
)
from proxy.http.routes.sse import DONE, EventStreamResponse, event_stream, sse_event
from proxy.runtime.state import RuntimeState, TenantRuntime
from proxy.services.completions import GuardedCompletions
from proxy.services.guarded import GuardedResponse, GuardedStream
from proxy.services.responses import GuardedResponses
from proxy.wire.chat import ChatFormat
from proxy.wire.completions import CompletionFormat
from proxy.wire.formats import WireFormat
from proxy.wire.request_body import validated
from proxy.wire.responses import EventEncoder
from proxy.wire.schema import ChatCompletionRequest, CompletionRequest, ResponsesRequest

__all__ = ["chat_completions", "completions", "responses"]

T = TypeVar("T")

_SEGMENT_HEADER = SEGMENT_HEADER.lower().encode("latin-1")

Call = Callable[[RuntimeState, TenantRuntime, dict[str, Any], str], Awaitable[Any]]
"""A guarded service's plain or streamed call: (config state, tenant, body, segment)."""


async def chat_completions(request: Request) -> Response:
    """OpenAI chat completions, answered or withheld per the tenant's policy."""
    return await ending_on_shutdown(in_flight(request),
                                    _completions(request, ChatFormat, ChatCompletionRequest))


async def completions(request: Request) -> Response:
    """Legacy OpenAI completions, answered or withheld per the tenant's policy."""
    return await ending_on_shutdown(in_flight(request),
                                    _completions(request, CompletionFormat, CompletionRequest))


async def responses(request: Request) -> Response:
    """The OpenAI Responses API, answered or withheld per the tenant's policy."""
    service: GuardedResponses = request.app.services.responses
    return await ending_on_shutdown(in_flight(request), _guarded(
        request, ResponsesRequest,
        lambda state, tenant, body, segment: service.respond(
            state, tenant, body, segment=segment),
        lambda state, tenant, body, segment: service.respond_stream(
            state, tenant, body, segment=segment),
        # No [DONE]: a Responses stream ends with its last event (see proxy.services.responses).
        encode=EventEncoder(), done=b"",
    ))


def _completions(
    request: Request, fmt: type[WireFormat], schema: type[BaseModel]
) -> Awaitable[Response]:
    service: GuardedCompletions = request.app.services.completions
    return _guarded(
        request, schema,
        lambda state, tenant, body, segment: service.complete(
            state, tenant, fmt, body, segment=segment),
        lambda state, tenant, body, segment: service.stream(
            state, tenant, fmt, body, segment=segment),
    )


async def _guarded(
    request: Request, schema: type[BaseModel], complete: Call, stream: Call, *,
    encode: Callable[[dict[str, Any]], bytes] = sse_event, done: bytes = DONE,
) -> Response:
    """A guarded endpoint: authenticate, validate, then the service's plain or streamed call
    (``encode`` and ``done`` shape the stream's events: chat's ``data:`` lines and ``[DONE]``,
    or the Responses API's typed events)."""
    started = time.perf_counter()
    state, tenant = authenticated(request)
    body = await read_json(request, state.config.max_body_bytes)
    validated(schema, body)
    segment = _segment(request, state, tenant.name, body)
    streamed = bool(body.get("stream"))
    call = stream if streamed else complete
    try:
        result = await _unless_disconnected(request, call(state, tenant, body, segment))
    except ClientGone:
        # Nobody is listening; 499 is what proxies log for a request the client abandoned.
        return Response(status_code=499)
    if streamed:
        return _stream_response(request, body, started, result, encode=encode, done=done)
    return _plain_response(request, body, started, result)


def _stream_response(
    request: Request, body: dict[str, Any], started: float, streamed: GuardedStream, *,
    encode: Callable[[dict[str, Any]], bytes], done: bytes,
) -> Response:
    metrics = gateway_metrics(request)
    metrics.observe_overhead(body.get("model"), started, streamed.upstream_seconds)
    return EventStreamResponse(
        event_stream(streamed.chunks,
                     lambda: metrics.observe_first_byte(body.get("model"), started),
                     metrics.internal_error, in_flight(request), encode=encode, done=done),
        media_type="text/event-stream", headers=streamed.headers,
    )


def _plain_response(
    request: Request, body: dict[str, Any], started: float, result: GuardedResponse
) -> Response:
    response = EncodedJSONResponse(result.content(), result.headers)
    gateway_metrics(request).observe_answer(body.get("model"), started, result.upstream_seconds)
    return response


def _segment(request: Request, state: RuntimeState, tenant: str, body: dict[str, Any]) -> str:
    """The tenant's segment the request names (header, then ``metadata``, then ``user``)."""
    return resolve_segment(state.config.tenants[tenant].segments,
                           header=header(request, _SEGMENT_HEADER),
                           metadata=body.get("metadata"), user=body.get("user"))


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``, cancelling it (and so its upstream request) if the client goes away.

    Starlette cancels a streamed response when its client leaves, but not a handler that is
    still waiting for the upstream; this does, so an abandoned request stops using the model.
    The gateway's protocol says at once when a client leaves (:mod:`proxy.http.disconnect`);
    under another server, a second task watches ``receive()``.
    """
    signal = disconnect_signal(request.scope)
    if signal is not None:
        return await unless_gone(signal, work)
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        # The body has been read, so the next ASGI message can only be the disconnect.
        while (await request.receive())["type"] != "http.disconnect":
            pass
        task.cancel()

    watcher = asyncio.create_task(watch())
    try:
        return await task
    except asyncio.CancelledError:
        if watcher.done() and not watcher.cancelled():
            raise ClientGone from None
        raise
    finally:
        watcher.cancel()
