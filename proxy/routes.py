"""Thin HTTP routes: parse, authenticate, call the service, map the result to a response."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from .draining import InFlight, ending_on_shutdown
from .errors import (
    InvalidRequest,
    PayloadTooLarge,
    ServiceNotReady,
    ShuttingDown,
    error_payload,
)
from .formats import ChatFormat, CompletionFormat, WireFormat
from .metrics import GatewayMetrics
from .protocol import (
    MAX_CHOICES,
    AbstainedAnswer,
    AbstainedList,
    ChatCompletionRequest,
    CompletionRequest,
    FeedbackReceipt,
    FeedbackRequest,
    ModelCard,
    ModelList,
)
from .reload import ConfigStore
from .serving import GuardedCompletions
from .store import DecisionStore

__all__ = ["router"]

router = APIRouter()

_DONE = b"data: [DONE]\n\n"
_SMALL_BODY = 4096  # a feedback label is a few dozen bytes
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


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


def _config(request: Request) -> ConfigStore:
    config: ConfigStore = request.app.state.config
    return config


def _decisions(request: Request) -> DecisionStore:
    decisions: DecisionStore = request.app.state.decisions
    return decisions


async def _read_json(request: Request, limit: int) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return document


def _validate(model: type[M], document: dict[str, Any]) -> M:
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        raise InvalidRequest(f"{param}: {first['msg']}" if param else first["msg"],
                             param=param) from None


async def _sse(
    chunks: AsyncIterator[dict[str, Any]], on_first: Callable[[], None], in_flight: InFlight
) -> AsyncIterator[bytes]:
    with in_flight.tracking() as ended_by_shutdown:
        first = True
        try:
            async for chunk in chunks:
                event = b"data: " + orjson.dumps(chunk) + b"\n\n"
                if first:
                    on_first()
                    first = False
                yield event
        except asyncio.CancelledError:
            # A draining server ends a stream still open at its deadline: one error event and
            # [DONE], instead of a cut connection. Any other cancellation goes on.
            task = asyncio.current_task()
            if not ended_by_shutdown() or task is None:
                raise
            task.uncancel()
            stopping = ShuttingDown("the server is shutting down; retry the request")
            yield b"data: " + orjson.dumps(error_payload(stopping)) + b"\n\n"
    yield _DONE


async def _guarded(
    request: Request, fmt: type[WireFormat], schema: type[BaseModel]
) -> Response:
    started = time.perf_counter()
    state = _config(request).current  # read once: the request finishes on this config
    tenant = state.authenticate(request.headers.get("authorization"))
    body = await _read_json(request, state.config.max_body_bytes)
    _validate(schema, body)
    service: GuardedCompletions = request.app.state.completions
    try:
        if body.get("stream"):
            stream = await _unless_disconnected(request, service.stream(state, tenant, fmt, body))
            _observe_overhead(request, body, started, stream.upstream_seconds)
            return StreamingResponse(
                _sse(stream.chunks, lambda: _observe_first_byte(request, body, started),
                     request.app.state.in_flight),
                media_type="text/event-stream", headers=stream.headers,
            )
        result = await _unless_disconnected(request, service.complete(state, tenant, fmt, body))
    except ClientGone:
        # Nobody is listening; 499 is what proxies log for a request the client abandoned.
        return Response(status_code=499)
    response = Response(orjson.dumps(result.body), media_type="application/json",
                        headers=result.headers)
    _observe_overhead(request, body, started, result.upstream_seconds)
    _observe_first_byte(request, body, started)
    return response


def _observe_overhead(
    request: Request, body: dict[str, Any], started: float, upstream_seconds: float
) -> None:
    metrics: GatewayMetrics = request.app.state.metrics
    model = metrics.model_label(body.get("model"))
    metrics.upstream_latency.labels(model).observe(upstream_seconds)
    metrics.overhead.labels(model).observe(time.perf_counter() - started - upstream_seconds)


def _observe_first_byte(request: Request, body: dict[str, Any], started: float) -> None:
    metrics: GatewayMetrics = request.app.state.metrics
    metrics.time_to_first_byte.labels(metrics.model_label(body.get("model"))).observe(
        time.perf_counter() - started)


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    """OpenAI chat completions, answered or withheld per the tenant's policy."""
    return await ending_on_shutdown(request.app.state.in_flight,
                                    _guarded(request, ChatFormat, ChatCompletionRequest))


@router.post("/v1/completions")
async def completions(request: Request) -> Response:
    """Legacy OpenAI completions, answered or withheld per the tenant's policy."""
    return await ending_on_shutdown(request.app.state.in_flight,
                                    _guarded(request, CompletionFormat, CompletionRequest))


@router.post("/v1/feedback")
async def feedback(request: Request) -> Response:
    """Label one of the tenant's responses correct or wrong; the last label wins."""
    state = _config(request).current
    tenant = state.authenticate(request.headers.get("authorization"))
    label_request = _validate(FeedbackRequest, await _read_json(request, _SMALL_BODY))
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


@router.get("/v1/feedback/withheld")
async def withheld_answers(request: Request) -> Response:
    """The tenant's abstained answers, newest first, for reviewers to label.

    Query: ``limit`` (1-500, default 50), ``include_labelled`` (default false), ``before``
    (a ``created`` time: the next page).
    """
    state = _config(request).current
    tenant = state.authenticate(request.headers.get("authorization"))
    query = request.query_params
    limit = _int_param(query.get("limit"), "limit", default=50, low=1, high=500)
    before = _float_param(query.get("before"), "before")
    include_labelled = query.get("include_labelled", "false").lower() in {"1", "true", "yes"}
    decisions = _decisions(request)
    await decisions.settled()  # include decisions made a moment ago
    rows = await run_in_threadpool(
        decisions.abstained, tenant.name, limit=limit + MAX_CHOICES,
        unlabelled_only=not include_labelled, before=before,
    )
    # The choices of one response share its `created`, which is the page cursor: a page ends
    # only between responses, or the next one (`before=created`) would skip the rest.
    end = min(limit, len(rows))
    while 0 < end < len(rows) and rows[end].id == rows[end - 1].id:
        end += 1
    listing = AbstainedList(
        data=[AbstainedAnswer.model_validate(row.as_json()) for row in rows[:end]],
        has_more=len(rows) > end,
    )
    return Response(listing.model_dump_json(), media_type="application/json")


def _int_param(value: str | None, name: str, *, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    if not value.isdigit() or not low <= int(value) <= high:
        raise InvalidRequest(f"{name} must be an integer from {low} to {high}", param=name)
    return int(value)


def _float_param(value: str | None, name: str) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not math.isfinite(number):
        raise InvalidRequest(f"{name} must be a number (a `created` time)", param=name)
    return number


@router.get("/v1/models")
async def list_models(request: Request) -> Response:
    """The public model names of the config."""
    state = _config(request).current
    state.authenticate(request.headers.get("authorization"))
    listing = ModelList(data=[ModelCard(id=name) for name in state.models])
    return Response(listing.model_dump_json(), media_type="application/json")


@router.get("/metrics")
async def prometheus_metrics(request: Request) -> Response:
    """Prometheus exposition of the gateway's metrics."""
    metrics: GatewayMetrics = request.app.state.metrics
    # Scraping reads the decision store's totals: off the event loop, like any disk read.
    exposition = await run_in_threadpool(generate_latest, metrics.exposition_registry())
    return Response(exposition, media_type=CONTENT_TYPE_LATEST)


@router.get("/healthz")
async def healthz() -> Response:
    """Liveness: the process serves HTTP."""
    return Response(b'{"status":"ok"}', media_type="application/json")


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    """Readiness: a config is loaded with its calibrators, and upstreams are configured."""
    state = _config(request).current
    if not state.models or not state.tenants:
        raise ServiceNotReady("no upstream models or tenants are configured")
    document = {
        "status": "ready",
        "config": str(state.path),
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
