"""The one failure boundary of a request: nothing unexpected reaches the client raw.

A pure ASGI middleware (so it also sees what FastAPI's exception handlers do not): an exception
that escapes a route becomes a 500 in the OpenAI envelope, one ERROR log line with the traceback,
and a count in ``basguard_internal_errors_total{where="request"}``. Streams have their own
boundary in :func:`proxy.http.routes.sse.event_stream` (after the headers only an error event can
be sent). A client that disconnects mid-body is not an error: one INFO line. A WebSocket (the
Realtime passthrough) gets the same: a 500 envelope refusing its handshake, or, once accepted, a
close with 1011 (internal error), counted ``where="websocket"``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.errors import InternalError, error_response

__all__ = ["FailureBoundary", "client_disconnected", "failed_unexpectedly", "internal_error"]

logger = logging.getLogger("basguard")


def internal_error() -> InternalError:
    """What a client is told of an unexpected failure: nothing about its cause."""
    return InternalError("the gateway failed unexpectedly; the error is in its log")


def client_disconnected(scope: Scope) -> None:
    """A client that left mid-body: not an error, one INFO line."""
    logger.info("client disconnected before sending its whole request: %s %s",
                scope.get("method"), scope.get("path"))


def failed_unexpectedly(scope: Scope, on_error: Callable[[str], None]) -> None:
    """Log the exception being handled, with its traceback, and count it."""
    logger.exception("unexpected error in %s %s", scope.get("method"), scope.get("path"))
    on_error("request")


class FailureBoundary:
    """Turns any exception a request raises into a logged, counted 500 envelope."""

    def __init__(self, app: ASGIApp, on_error: Callable[[str], None]) -> None:
        self.app = app
        self._on_error = on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except ClientDisconnect:
            client_disconnected(scope)
        except Exception:
            failed_unexpectedly(scope, self._on_error)
            if not started:
                await error_response(internal_error())(scope, receive, send)
            # Not re-raised: the server would log the same traceback a second time.

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        sent: set[str] = set()

        async def tracking_send(message: Message) -> None:
            sent.add(message["type"])
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            logger.exception("unexpected error in WebSocket %s", scope.get("path"))
            self._on_error("websocket")
            if not sent and "websocket.http.response" in scope.get("extensions", {}):
                await error_response(internal_error())(scope, receive, send)
            elif not sent or ("websocket.accept" in sent and "websocket.close" not in sent):
                # Accepted and not closed (or a server without denial responses): 1011.
                with contextlib.suppress(OSError, RuntimeError):
                    await send({"type": "websocket.close", "code": 1011, "reason": ""})
