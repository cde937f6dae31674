"""Thin HTTP routes: parse, authenticate, call the service, map the result to a response."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from policies.segments import SEGMENT_HEADER, resolve_segment
from proxy.errors import (
    GatewayError,
    InvalidRequest,
    ModelNotFound,
    ServiceNotReady,
    ShuttingDown,
    error_payload,
    error_response,
)
from proxy.http.boundary import internal_error
from proxy.http.draining import InFlight, ending_on_shutdown
from proxy.http.responses_socket import ResponsesSocket
from proxy.observability.metrics import GatewayMetrics
from proxy.observability.metrics_key import MetricsKey
from proxy.runtime.reload import ConfigStore
from proxy.runtime.state import RuntimeState, TenantRuntime
from proxy.services.completions import GuardedCompletions, GuardedResponse, GuardedStream
from proxy.services.passthrough import ForwardedResponse, Passthrough
from proxy.services.realtime import WebSocketPassthrough, presented_key
from proxy.services.responses import GuardedResponses
from proxy.store import DecisionStore
from proxy.wire.formats import ChatFormat, CompletionFormat, WireFormat
from proxy.wire.request_body import check_size, json_object, validated
from proxy.wire.responses import EventEncoder
from proxy.wire.schema import (
    MAX_CHOICES,
    AbstainedAnswer,
    AbstainedList,
    ChatCompletionRequest,
    CompletionRequest,
    FeedbackReceipt,
    FeedbackRequest,
    ModelCard,
    ModelList,
    ResponsesRequest,
)

__all__ = ["routes"]

logger = logging.getLogger("basguard")

_DONE = b"data: [DONE]\n\n"
_SMALL_BODY = 4096  # a feedback label is a few dozen bytes
WITHHELD_PAGE_BYTES = 1_048_576
"""A page of withheld answers stops before this size (unless one response alone is larger)."""
_LIST_ENVELOPE_BYTES = 64  # {"object":"list","data":[...],"has_more":false}
T = TypeVar("T")


class ClientGone(Exception):
    """The client disconnected before the answer was ready."""


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``, cancelling it (and so its upstream request) if the client goes away.

    Starlette cancels a streamed response when its client leaves, but not a handler that is
    still waiting for the upstream; this does, so an abandoned request stops using the model.
    """
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


def _config(request: HTTPConnection) -> ConfigStore:
    config: ConfigStore = request.app.state.config
    return config


def _decisions(request: Request) -> DecisionStore:
    decisions: DecisionStore = request.app.state.decisions
    return decisions


async def _read_json(request: Request, limit: int) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared is not None and _is_ascii_digits(declared):
        check_size(int(declared), limit)
    body = bytearray()
    async for piece in request.stream():
        body += piece
        check_size(len(body), limit)
    return json_object(body, limit)


def _event(document: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(document) + b"\n\n"


async def _sse(
    chunks: AsyncIterator[dict[str, Any]], on_first: Callable[[], None],
    on_internal_error: Callable[[str], None], in_flight: InFlight, *,
    encode: Callable[[dict[str, Any]], bytes] = _event, done: bytes = _DONE,
) -> AsyncIterator[bytes]:
    """The events of a stream; the stream's failure boundary (see proxy.http.boundary).

    Whatever goes wrong after the headers becomes one error event, and ``[DONE]`` always ends
    the stream. A draining server ends a stream still open at its deadline the same way
    (one ``shutting_down`` event), instead of cutting the connection.
    """
    with in_flight.tracking() as ended_by_shutdown:
        first = True
        try:
            async for chunk in chunks:
                event = encode(chunk)
                if first:
                    on_first()
                    first = False
                yield event
        except asyncio.CancelledError:
            # Any cancellation but the drain's goes on (a client that left, a stopping task).
            task = asyncio.current_task()
            if not ended_by_shutdown() or task is None:
                raise
            task.uncancel()
            stopping = ShuttingDown("the server is shutting down; retry the request")
            yield encode(error_payload(stopping))
        except GatewayError as exc:
            yield encode(error_payload(exc))
        except Exception:
            logger.exception("unexpected error in a stream")
            on_internal_error("stream")
            yield encode(error_payload(internal_error()))
    if done:
        yield done


Call = Callable[[RuntimeState, TenantRuntime, dict[str, Any], str], Awaitable[Any]]
"""A guarded service's plain or streamed call: (config state, tenant, body, segment)."""


async def _guarded(
    request: Request, schema: type[BaseModel], complete: Call, stream: Call, *,
    encode: Callable[[dict[str, Any]], bytes] = _event, done: bytes = _DONE,
) -> Response:
    """A guarded endpoint: authenticate, validate, then the service's plain or streamed call
    (``encode`` and ``done`` shape the stream's events: chat's ``data:`` lines and ``[DONE]``,
    or the Responses API's typed events)."""
    started = time.perf_counter()
    state = _config(request).current  # read once: the request finishes on this config
    tenant = state.authenticate(request.headers.get("authorization"))
    body = await _read_json(request, state.config.max_body_bytes)
    validated(schema, body)
    segment = _segment(request, state, tenant.name, body)
    try:
        if body.get("stream"):
            streamed: GuardedStream = await _unless_disconnected(
                request, stream(state, tenant, body, segment))
            _observe_overhead(request, body, started, streamed.upstream_seconds)
            metrics: GatewayMetrics = request.app.state.metrics
            return StreamingResponse(
                _sse(streamed.chunks, lambda: _observe_first_byte(request, body, started),
                     metrics.internal_error, request.app.state.in_flight,
                     encode=encode, done=done),
                media_type="text/event-stream", headers=streamed.headers,
            )
        result: GuardedResponse = await _unless_disconnected(
            request, complete(state, tenant, body, segment))
    except ClientGone:
        # Nobody is listening; 499 is what proxies log for a request the client abandoned.
        return Response(status_code=499)
    response = Response(result.content(), media_type="application/json",
                        headers=result.headers)
    _observe_overhead(request, body, started, result.upstream_seconds)
    _observe_first_byte(request, body, started)
    return response


def _completions(
    request: Request, fmt: type[WireFormat], schema: type[BaseModel]
) -> Awaitable[Response]:
    service: GuardedCompletions = request.app.state.completions
    return _guarded(
        request, schema,
        lambda state, tenant, body, segment: service.complete(
            state, tenant, fmt, body, segment=segment),
        lambda state, tenant, body, segment: service.stream(
            state, tenant, fmt, body, segment=segment),
    )


def _segment(request: Request, state: RuntimeState, tenant: str, body: dict[str, Any]) -> str:
    """The tenant's segment the request names (header, then ``metadata``, then ``user``)."""
    return resolve_segment(state.config.tenants[tenant].segments,
                           header=request.headers.get(SEGMENT_HEADER),
                           metadata=body.get("metadata"), user=body.get("user"))


def _observe_overhead(
    request: Request, body: dict[str, Any], started: float, upstream_seconds: float
) -> None:
    metrics: GatewayMetrics = request.app.state.metrics
    metrics.observe_overhead(body.get("model"), started, upstream_seconds)


def _observe_first_byte(request: Request, body: dict[str, Any], started: float) -> None:
    metrics: GatewayMetrics = request.app.state.metrics
    metrics.observe_first_byte(body.get("model"), started)


async def chat_completions(request: Request) -> Response:
    """OpenAI chat completions, answered or withheld per the tenant's policy."""
    return await ending_on_shutdown(request.app.state.in_flight,
                                    _completions(request, ChatFormat, ChatCompletionRequest))


async def completions(request: Request) -> Response:
    """Legacy OpenAI completions, answered or withheld per the tenant's policy."""
    return await ending_on_shutdown(request.app.state.in_flight,
                                    _completions(request, CompletionFormat, CompletionRequest))


async def responses(request: Request) -> Response:
    """The OpenAI Responses API, answered or withheld per the tenant's policy."""
    service: GuardedResponses = request.app.state.responses
    return await ending_on_shutdown(request.app.state.in_flight, _guarded(
        request, ResponsesRequest,
        lambda state, tenant, body, segment: service.respond(
            state, tenant, body, segment=segment),
        lambda state, tenant, body, segment: service.respond_stream(
            state, tenant, body, segment=segment),
        # No [DONE]: a Responses stream ends with its last event (see proxy.services.responses).
        encode=EventEncoder(), done=b"",
    ))


async def feedback(request: Request) -> Response:
    """Label one of the tenant's responses correct or wrong; the last label wins."""
    state = _config(request).current
    tenant = state.authenticate(request.headers.get("authorization"))
    label_request = validated(FeedbackRequest, await _read_json(request, _SMALL_BODY))
    label = await _decisions(request).label(
        tenant.name, label_request.id, label_request.choice, label_request.correct
    )
    decision = label.decision
    receipt = FeedbackReceipt(
        id=decision.id, choice=decision.choice, correct=label_request.correct,
        decision="answer" if decision.answered else "abstain", confidence=decision.confidence,
        outcome=label.outcome, previous=label.previous,
    )
    return Response(receipt.model_dump_json(), media_type="application/json")


async def withheld_answers(request: Request) -> Response:
    """The tenant's abstained answers, newest first, for reviewers to label.

    Query: ``limit`` (1-500, default 50), ``include_labelled`` (default false), ``before``
    (a ``created`` time: the next page). A page also stops before 1 MiB, and always ends
    between responses.
    """
    state = _config(request).current
    tenant = state.authenticate(request.headers.get("authorization"))
    query = request.query_params
    limit = _int_param(query.get("limit"), "limit", default=50, low=1, high=500)
    before = _float_param(query.get("before"), "before")
    include_labelled = query.get("include_labelled", "false").lower() in {"1", "true", "yes"}
    decisions = _decisions(request)
    await decisions.settled()  # include decisions made a moment ago
    # The choices of one response share its `created`, which is the page cursor: a page ends
    # only between responses, or the next one (`before=created`) would skip the rest.
    rows, has_more = await run_in_threadpool(
        decisions.withheld_page, tenant.name, limit=limit,
        max_bytes=WITHHELD_PAGE_BYTES - _LIST_ENVELOPE_BYTES, max_choices=MAX_CHOICES,
        unlabelled_only=not include_labelled, before=before,
    )
    listing = AbstainedList(
        data=[AbstainedAnswer.model_validate(row.as_json()) for row in rows], has_more=has_more,
    )
    return Response(listing.model_dump_json(), media_type="application/json")


# Query parameters are parsed strictly, in ASCII: str.isdigit and float() also accept other
# scripts' digits ("²", "١٢"), underscores and surrounding spaces.
_DECIMAL = re.compile(r"[0-9]{1,18}(?:\.[0-9]{1,18})?(?:[eE][-+]?[0-9]{1,3})?")


def _is_ascii_digits(value: str) -> bool:
    return value.isascii() and value.isdigit()


def _int_param(value: str | None, name: str, *, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    if not (_is_ascii_digits(value) and len(value) <= 18 and low <= int(value) <= high):
        raise InvalidRequest(f"{name} must be an integer from {low} to {high}", param=name)
    return int(value)


def _float_param(value: str | None, name: str) -> float | None:
    if value is None:
        return None
    if _DECIMAL.fullmatch(value) is None or float(value) == float("inf"):
        raise InvalidRequest(f"{name} must be a number (a `created` time)", param=name)
    return float(value)


async def list_models(request: Request) -> Response:
    """The models the tenant may use: every public model name of the config."""
    state = _config(request).current
    state.authenticate(request.headers.get("authorization"))
    listing = ModelList(data=[ModelCard(id=name) for name in state.models])
    return Response(listing.model_dump_json(), media_type="application/json")


async def retrieve_model(request: Request) -> Response:
    """One model the tenant may use (404 ``model_not_found`` otherwise)."""
    state = _config(request).current
    state.authenticate(request.headers.get("authorization"))
    name = request.path_params["model"]
    if name not in state.models:
        raise ModelNotFound(f"the model {name!r} does not exist", param="model")
    return Response(ModelCard(id=name).model_dump_json(), media_type="application/json")


async def passthrough(request: Request) -> Response:
    """Any other ``/v1/...`` request, forwarded unguarded to the model's upstream (see
    :mod:`proxy.services.passthrough`)."""
    service: Passthrough = request.app.state.passthrough
    path = request.path_params["path"]
    service.check_path(request.method, path)  # a guarded path's wrong method: 405, key or not
    state = _config(request).current
    tenant = state.authenticate(request.headers.get("authorization"))
    reply = await ending_on_shutdown(request.app.state.in_flight, service.forward(
        state=state, tenant=tenant, method=request.method, path=path,
        query=request.url.query, headers=request.headers, body=request.stream(),
        max_json_bytes=state.config.max_body_bytes,
    ))
    return ForwardedResponse(reply.body, status_code=reply.status, headers=reply.headers)


async def websockets(websocket: WebSocket) -> None:
    """A WebSocket to ``/v1/...``: the Responses API's WebSocket mode, guarded (see
    :mod:`proxy.http.responses_socket`), or any other (the Realtime API) relayed unguarded to the
    model's upstream (see :mod:`proxy.services.realtime`). A refused handshake gets the
    error envelope."""
    path = websocket.path_params["path"]
    subprotocols = websocket.scope.get("subprotocols", [])
    relay: WebSocketPassthrough = websocket.app.state.websockets
    try:
        if path == "responses":
            key = presented_key(websocket.headers, subprotocols)
            _config(websocket).current.authenticate(key)
        else:
            opened = await relay.open(
                _config(websocket).current, path=path, query=websocket.url.query,
                headers=websocket.headers, subprotocols=subprotocols)
    except GatewayError as exc:
        if "websocket.http.response" in websocket.scope.get("extensions", {}):
            await websocket.send_denial_response(error_response(exc, exc.headers))
        else:  # a server without denial responses: the close code says as much as it can
            await websocket.close(1008, exc.message[:123])
        return
    if path == "responses":
        guarded: ResponsesSocket = websocket.app.state.responses_socket
        await guarded.serve(websocket, key)
    else:
        await relay.relay(websocket, opened, lambda: _config(websocket).current)


async def prometheus_metrics(request: Request) -> Response:
    """Prometheus exposition of the gateway's metrics (needs the metrics key, if one is set)."""
    _metrics_key(request).require(request.headers.get("authorization"))
    metrics: GatewayMetrics = request.app.state.metrics
    # Scraping reads the decision store's totals: off the event loop, like any disk read.
    exposition = await run_in_threadpool(generate_latest, metrics.registry)
    return Response(exposition, media_type=CONTENT_TYPE_LATEST)


async def healthz(request: Request) -> Response:
    """Liveness: the process serves HTTP."""
    return Response(b'{"status":"ok"}', media_type="application/json")


async def readyz(request: Request) -> Response:
    """Readiness: a config is loaded with its calibrators, and upstreams are configured.

    The status is open (probes carry no key); the detail (tenants, models, calibrator
    versions) is shown only to the metrics key.
    """
    state = _config(request).current
    if not state.models or not state.tenants:
        raise ServiceNotReady("no upstream models or tenants are configured")
    decisions = _decisions(request)
    if not decisions.writer_alive:
        raise ServiceNotReady("the decision store's writer has stopped: decisions are not "
                              "stored (see the log)", code="store_unavailable")
    if not decisions.connected:
        # Not ready, so that a rollout with a wrong database URL stalls instead of replacing
        # working pods; the process keeps serving the traffic it gets and queues decisions.
        raise ServiceNotReady("the decision store is unreachable: decisions are queued, "
                              "labels get 503 (see the log)", code="store_unavailable")
    document: dict[str, Any] = {"status": "ready", "store": "ok"}
    if _metrics_key(request).presented(request.headers.get("authorization")):
        document |= {
            "tenants": sorted(state.tenants),
            "models": sorted(state.models),
            "calibrators": {
                name: {
                    "default": tenant.default_calibrator.version,
                    **{model: c.version for model, c in tenant.model_calibrators.items()},
                }
                for name, tenant in state.tenants.items()
            },
        }
    return Response(orjson.dumps(document), media_type="application/json")


def _metrics_key(request: Request) -> MetricsKey:
    key: MetricsKey = request.app.state.metrics_key
    return key


routes = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/responses", responses, methods=["POST"]),
    Route("/v1/feedback", feedback, methods=["POST"]),
    Route("/v1/feedback/withheld", withheld_answers, methods=["GET"]),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model:path}", retrieve_model, methods=["GET"]),
    Route("/metrics", prometheus_metrics, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    # Last: what no route above serves goes to the model's upstream, if the tenant allows it.
    Route("/v1/{path:path}", passthrough, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
    WebSocketRoute("/v1/{path:path}", websockets),
]
