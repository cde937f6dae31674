"""The gateway's ASGI entry: the guarded endpoints' fast path in front of Starlette's stack.

A request to a guarded endpoint would otherwise pass ten ASGI layers before its route runs:
Starlette's error middleware, the failure boundary, the canonical-path check, the concurrency
limit, Starlette's exception middleware, the router's walk over the routes, the route's method
check and the endpoint wrapper's exception handler, most of them a coroutine frame and a closure
around ``send``. Written by hand for speed: on the requests that matter most, measured with
``benchmarks/instructions_gateway.py`` (see docs/benchmarks.md), one frame does what they do:

- the path: only the endpoint's canonical spelling, compared byte for byte with the raw path
  as it arrived, takes the fast path; any other spelling, method or scope goes through
  Starlette's stack, where :class:`~proxy.http.request_path.CanonicalPath` judges it;
- the concurrency limit: the same :class:`~proxy.http.concurrency.RequestSlots` as the
  middleware's, so both paths count against one limit;
- the exception handler: a :class:`~proxy.errors.GatewayError` becomes its OpenAI envelope;
- the failure boundary: anything else is logged, counted and answered 500 in the envelope, as
  :class:`~proxy.http.boundary.FailureBoundary` does.

Everything else (other paths and methods, WebSockets, the lifespan) is Starlette's, unchanged.
A middleware that must see every request (the access log) is added with
:meth:`GatewayApp.add_outermost`, which puts it in front of both paths.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from proxy.errors import GatewayError, error_response
from proxy.http.boundary import client_disconnected, failed_unexpectedly, internal_error
from proxy.http.concurrency import RequestSlots
from proxy.http.services import GatewayServices
from proxy.wire.paths import canonical_path

__all__ = ["Endpoint", "GatewayApp"]

Endpoint = Callable[[Request], Awaitable[Response]]


class GatewayApp(Starlette):
    """Starlette, with ``fast_routes`` (canonical path to POST endpoint) served directly, and
    the ``services`` its routes call."""

    def __init__(self, *, fast_routes: Mapping[str, Endpoint], slots: RequestSlots,
                 on_error: Callable[[str], None], services: GatewayServices,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.services = services
        fast: dict[bytes, Endpoint] = {}
        for path, endpoint in fast_routes.items():
            raw = path.encode("ascii")
            if canonical_path(raw) != path:
                raise ValueError(f"a fast route needs a canonical path, not {path!r}")
            fast[raw] = endpoint
        self._fast = fast
        self._slots = slots
        self._on_error = on_error
        self._fast_entry: ASGIApp = self._guarded

    def add_outermost(self, middleware: Callable[..., ASGIApp], **options: Any) -> None:
        """Add ``middleware`` outside everything, so that it sees every request: the fast
        path's too (an access log). Other middleware sits below the fast path's fork."""
        self.add_middleware(middleware, **options)
        self._fast_entry = middleware(self._fast_entry, **options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path")
                and scope.get("raw_path") in self._fast):
            scope["app"] = self
            await self._fast_entry(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self._fast[scope["raw_path"]]
        slots = self._slots
        if slots.in_flight >= slots.limit:
            await slots.busy()(scope, receive, send)
            return
        slots.in_flight += 1
        try:
            try:
                response = await endpoint(Request(scope, receive, send))
            except GatewayError as exc:
                response = error_response(exc, exc.headers)
            except ClientDisconnect:
                client_disconnected(scope)
                return
            except Exception:
                failed_unexpectedly(scope, self._on_error)
                response = error_response(internal_error())
            try:
                await response(scope, receive, send)
            except ClientDisconnect:
                client_disconnected(scope)
            except Exception:
                # The response may have started: nothing more can be sent. uvicorn closes the
                # connection of a response left unfinished. Not re-raised: the server would log
                # the same traceback a second time.
                failed_unexpectedly(scope, self._on_error)
        finally:
            slots.in_flight -= 1
