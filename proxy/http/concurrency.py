"""A limit on requests in flight, as pure ASGI middleware answering in the OpenAI envelope."""

from __future__ import annotations

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from proxy.errors import ServerBusy, error_response

__all__ = ["EXEMPT_PATHS", "ConcurrencyLimit", "RequestSlots"]

#: Probes and scrapes stay answerable under overload: an orchestrator that cannot read them
#: would restart a worker that is merely busy.
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class RequestSlots:
    """At most ``limit`` HTTP requests in the app at once: one count, shared by the middleware
    and the guarded endpoints' fast path (:mod:`proxy.http.entry`)."""

    __slots__ = ("in_flight", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    def busy(self) -> Response:
        """The answer to a request over the limit: 503 ``server_busy``."""
        refusal = ServerBusy(f"more than {self.limit} requests in flight; retry shortly")
        return error_response(refusal, {"retry-after": "1"})


class ConcurrencyLimit:
    """Holds every HTTP request but the probes' to the ``slots``; the next gets 503.

    Pure ASGI (not ``BaseHTTPMiddleware``), so a streamed response keeps its slot until its
    last byte and the refusal costs no task.
    """

    def __init__(self, app: ASGIApp, *, slots: RequestSlots) -> None:
        self.app = app
        self.slots = slots

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        slots = self.slots
        if slots.in_flight >= slots.limit:
            await slots.busy()(scope, receive, send)
            return
        slots.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            slots.in_flight -= 1
