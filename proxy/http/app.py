"""The gateway application factory.

A plain Starlette application rather than FastAPI's: the routes read and validate their bodies
themselves (the OpenAI schema lives in :mod:`proxy.wire.schema`) and the API is OpenAI's, so
FastAPI's dependency injection and OpenAPI generation would only add per-request work — measured
with ``benchmarks/bench_gateway.py``, dropping it cut the gateway's CPU per request by about 17 %.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from proxy.admin import ADMIN_PATH, create_admin_app
from proxy.errors import (
    EndpointNotFound,
    GatewayError,
    MethodNotAllowed,
    error_response,
)
from proxy.http.access_log import AccessLog, access_log_sink
from proxy.http.boundary import FailureBoundary
from proxy.http.concurrency import ConcurrencyLimit, RequestSlots
from proxy.http.draining import InFlight
from proxy.http.entry import GatewayApp
from proxy.http.request_path import CanonicalPath
from proxy.http.responses_socket import ResponsesSocket
from proxy.http.routes import gateway_routes, guarded_routes
from proxy.http.services import GatewayServices
from proxy.judging.offload import ReplyOffload
from proxy.observability.logging import show_basguard_logs
from proxy.observability.metrics import GatewayMetrics, gateway_registry
from proxy.observability.metrics_key import MetricsKey
from proxy.runtime.reload import ConfigStore, ReloadResult
from proxy.runtime.settings import ServerSettings
from proxy.services.completions import GuardedCompletions
from proxy.services.passthrough import Passthrough
from proxy.services.realtime import WebSocketPassthrough
from proxy.services.responses import GuardedResponses
from proxy.services.risk_watch import RiskWatch
from proxy.store import DecisionStore, TextLimits
from proxy.upstream.registry import UpstreamPool

__all__ = ["create_app", "create_app_from_environment"]


def create_app(settings: ServerSettings) -> Starlette:
    """Build the gateway. Loads and validates the config now, so a bad one fails the start."""
    show_basguard_logs()  # reloads and warnings reach the server's output, not only errors
    parts = _build_parts(settings)
    # No OpenAPI schema or docs: the API is OpenAI's, documented by OpenAI; an open schema would
    # only map the surface for strangers.
    slots = RequestSlots(settings.max_concurrent_requests)
    app = GatewayApp(
        routes=gateway_routes(_console(parts, settings), ADMIN_PATH),
        lifespan=_lifespan(parts, settings),
        exception_handlers={GatewayError: _gateway_error, StarletteHTTPException: _http_error},
        # The guarded endpoints skip the stack below, doing what it does (proxy.http.entry).
        fast_routes=guarded_routes, slots=slots, on_error=parts.metrics.internal_error,
        services=_services(parts, settings),
    )
    # Starlette answers a path that matches only with a slash added or removed (``/v1``) with
    # a 307 whose location it builds from the Host header: an open redirect. A wrong path is a
    # wrong path: 404 in the envelope, like any other.
    app.router.redirect_slashes = False
    # Outermost first: the failure boundary, then the one canonical path (a refused spelling
    # takes no request slot), then the concurrency limit.
    app.add_middleware(ConcurrencyLimit, slots=slots)
    app.add_middleware(CanonicalPath)
    app.add_middleware(FailureBoundary, on_error=parts.metrics.internal_error)
    if settings.access_log != "off":  # outermost: it logs the 500s the boundary makes too
        app.add_outermost(AccessLog, form=settings.access_log, sink=access_log_sink())
    return app


@dataclass(frozen=True)
class _Parts:
    """What the gateway builds once at its start and closes at its stop."""

    config: ConfigStore
    decisions: DecisionStore
    metrics: GatewayMetrics
    in_flight: InFlight
    upstreams: UpstreamPool
    passthrough: Passthrough
    offload: ReplyOffload | None
    risk_watch: RiskWatch


def _build_parts(settings: ServerSettings) -> _Parts:
    def reloaded(result: ReloadResult) -> None:
        metrics.server.reloaded(result)
        if result.applied:  # a provider the new config names first: its client made now
            upstreams.prepare(target.provider for target in config.current.models.values())

    # The config and the store report to the metrics, which read both: the callbacks find
    # ``metrics`` (and the upstreams) when they are called, after they are built.
    config = ConfigStore(settings.config, on_reload=reloaded)
    decisions = DecisionStore(
        settings.store_location, retention_seconds=settings.retention_days * 86400,
        max_queued_bytes=settings.store_max_queued_bytes,
        text_limits=TextLimits(settings.store_max_prompt_chars, settings.store_max_answer_chars),
        journal=settings.journal_directory(),
        # A database that is down at start: serve, queue decisions, /readyz not ready.
        require_store=False,
        on_lost=lambda reason, count: metrics.store.decisions_lost(reason, count),
        on_writer_error=lambda: metrics.store.writer_failed(),
        on_recovered=lambda count: metrics.store.decisions_recovered(count),
    )
    metrics = GatewayMetrics(gateway_registry(), lambda: config.current, decisions,
                             drift_window=settings.drift_window)
    offload = (ReplyOffload(processes=settings.offload_processes,
                            min_bytes=settings.offload_reply_bytes)
               if settings.offload_processes else None)
    upstreams = UpstreamPool()
    upstreams.prepare(target.provider for target in config.current.models.values())
    passthrough = Passthrough(on_forwarded=lambda *labels: metrics.passthrough.forwarded(*labels))
    return _Parts(config=config, decisions=decisions, metrics=metrics, in_flight=InFlight(),
                  upstreams=upstreams, passthrough=passthrough, offload=offload,
                  risk_watch=RiskWatch(decisions, lambda: config.current))


def _console(parts: _Parts, settings: ServerSettings) -> Any:
    """The ops console over the gateway's config and store. Its session secret comes from the
    settings (shared by workers and replicas), else one made for this process."""
    secret = settings.admin_session_secret
    return create_admin_app(
        parts.config, parts.decisions,
        session_secret=secret.get_secret_value().encode() if secret is not None
        else secrets.token_bytes(32))


def _services(parts: _Parts, settings: ServerSettings) -> GatewayServices:
    """The services the routes call (see :mod:`proxy.http.routes.context`)."""
    metrics = parts.metrics
    metrics_key = MetricsKey(settings.metrics_key)
    metrics_key.warn_if_open()
    responses = GuardedResponses(parts.upstreams, observers=(metrics, parts.decisions),
                                 offload=parts.offload, risk_watch=parts.risk_watch)
    return GatewayServices(
        config=parts.config,
        decisions=parts.decisions,
        metrics=metrics,
        metrics_key=metrics_key,
        in_flight=parts.in_flight,
        completions=GuardedCompletions(parts.upstreams, observers=(metrics, parts.decisions),
                                       offload=parts.offload, risk_watch=parts.risk_watch),
        responses=responses,
        responses_socket=ResponsesSocket(responses, parts.config, metrics),
        passthrough=parts.passthrough,
        websockets=WebSocketPassthrough(
            parts.passthrough, max_message_bytes=settings.websocket_max_message_bytes,
            on_forwarded=lambda *labels: metrics.passthrough.forwarded(*labels),
            on_open=metrics.passthrough.websocket_opened,
        ),
    )


def _lifespan(
    parts: _Parts, settings: ServerSettings
) -> Callable[[Starlette], contextlib.AbstractAsyncContextManager[dict[str, Any]]]:
    reload_interval_seconds = settings.reload_interval_seconds
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        # What exists now (modules, config, calibrators) lives as long as the process. Frozen,
        # the cyclic collector no longer walks it on every full collection: measured under load,
        # one such collection stalled every request in flight for up to 200 ms.
        gc.collect()
        gc.freeze()
        parts.config.install_sighup(asyncio.get_running_loop())
        watcher = (
            asyncio.create_task(parts.config.watch(reload_interval_seconds))
            if reload_interval_seconds > 0 else None
        )
        risk_watch = asyncio.create_task(
            parts.risk_watch.watch(settings.risk_watch_interval_seconds))
        try:
            # Lifespan state reaches the server (``proxy.http.server``), which ends these streams
            # when a stop's grace period runs out, and its protocol, which counts refusals.
            yield {"in_flight": parts.in_flight,
                   "count_refused": parts.metrics.server.connection_refused}
        finally:
            for task in (watcher, risk_watch):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            await _close(parts)

    return lifespan


async def _close(parts: _Parts) -> None:
    await parts.upstreams.aclose()
    await parts.passthrough.aclose()
    if parts.offload is not None:
        await parts.offload.aclose()
    # After the server has drained its requests: every decision made gets written.
    await asyncio.to_thread(parts.decisions.close)


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return error_response(exc, exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    # Unknown paths and wrong methods get the OpenAI envelope too.
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405:
        return error_response(
            MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
        )
    return error_response(EndpointNotFound(f"no such endpoint: {request.url.path}"))


def create_app_from_environment() -> Starlette:
    """The app from ``BASGUARD_*`` settings: what each worker process runs (uvicorn factory)."""
    return create_app(ServerSettings())  # type: ignore[call-arg]  # config comes from the env
