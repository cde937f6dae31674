"""A limit on requests in flight, as pure ASGI middleware answering in the OpenAI envelope."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from proxy.errors import ServerBusy, error_response

__all__ = ["ConcurrencyLimit"]

#: Probes and scrapes stay answerable under overload: an orchestrator that cannot read them
#: would restart a worker that is merely busy.
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class ConcurrencyLimit:
    """At most ``limit`` HTTP requests in the app at once; the next gets 503 ``server_busy``.

    Pure ASGI (not ``BaseHTTPMiddleware``), so a streamed response keeps its slot until its
    last byte and the refusal costs no task.
    """

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            busy = ServerBusy(f"more than {self.limit} requests in flight; retry shortly")
            await error_response(busy, {"retry-after": "1"})(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
