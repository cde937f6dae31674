"""One access-log line per request, plain or JSON, on the ``basguard.access`` logger.

A pure ASGI middleware, outermost, so that it sees every request that reaches the app — a 401
for a wrong key, a 404, a 500 from the failure boundary, a stream — with its final status. The
line is written when the response ends (a stream's last byte, or the client going away), so its
duration covers the whole response. It names what an operator looks for first: the tenant, the
decision and its id (from the ``x-basguard-*`` headers the response carries), and for an error
the envelope's ``code`` (``invalid_api_key``). It never holds a key, a prompt or an answer: only
the path, never the query string.

Requests the connection layer refuses before the app sees them (431, 408, a full server's 503)
are counted in ``basguard_connections_refused_total`` instead. A WebSocket session is one line
when it ends: status 101 if it was accepted, else its refusal's status.
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import UTC, datetime
from typing import Literal

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ACCESS_LOGGER", "AccessLog", "AccessLogFormat", "show_access_log"]

ACCESS_LOGGER = "basguard.access"
AccessLogFormat = Literal["plain", "json"]

logger = logging.getLogger(ACCESS_LOGGER)

_DECISION_HEADERS = {
    b"x-basguard-tenant": "tenant",
    b"x-basguard-decision": "decision",
    b"x-basguard-id": "id",
}
_ERROR_BODY_BYTES = 4096
"""An error body longer than this is not read for its code (the envelope is far shorter)."""


def show_access_log() -> bool:
    """Write ``basguard.access`` lines, bare, to stdout; returns whether it set that up.

    Bare: a JSON line must be JSON, with no level or logger name in front. Left alone when the
    logger or the root logger already has a handler: whoever configured logging decides.
    """
    if logger.handlers or logging.getLogger().handlers:
        return False
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # not again through basguard's handler, with a prefix
    return True


class AccessLog:
    """Logs each HTTP request and WebSocket session once, when its response ends."""

    def __init__(self, app: ASGIApp, *, form: AccessLogFormat = "plain") -> None:
        self.app = app
        self._json = form == "json"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        started = time.time()
        clock = time.perf_counter()
        status: int | None = None
        sent = 0
        found: dict[str, str] = {}
        error_body: bytearray | None = None

        async def logging_send(message: Message) -> None:
            nonlocal status, sent, error_body
            message_type = message["type"]
            if message_type in ("http.response.start", "websocket.http.response.start"):
                status = message["status"]
                for name, value in message.get("headers", ()):
                    field = _DECISION_HEADERS.get(name)
                    if field is not None:
                        found[field] = value.decode("latin-1")
                if status >= 400:
                    error_body = bytearray()
            elif message_type in ("http.response.body", "websocket.http.response.body"):
                body = message.get("body", b"")
                sent += len(body)
                if error_body is not None and len(error_body) + len(body) <= _ERROR_BODY_BYTES:
                    error_body += body
            elif message_type == "websocket.accept":
                status = 101
            await send(message)

        try:
            await self.app(scope, receive, logging_send)
        finally:
            code = _error_code(error_body) if error_body else None
            logger.info(self._line(scope, started, time.perf_counter() - clock, status, sent,
                                   found, code))

    def _line(self, scope: Scope, started: float, seconds: float, status: int | None,
              sent: int, found: dict[str, str], code: str | None) -> str:
        client = scope.get("client")
        method = scope.get("method", "WS") if scope["type"] == "http" else "WS"
        when = datetime.fromtimestamp(started, UTC).isoformat(timespec="milliseconds")
        if self._json:
            return orjson.dumps({
                "time": when, "client": client[0] if client else None, "method": method,
                "path": scope.get("path", ""), "status": status,
                "duration_ms": round(seconds * 1000, 3), "bytes": sent,
                "tenant": found.get("tenant"), "decision": found.get("decision"),
                "id": found.get("id"), "error": code,
            }).decode()
        extra = "".join(f" {name}={found[name]}" for name in ("tenant", "decision", "id")
                        if name in found)
        if code is not None:
            extra += f" error={code}"
        return (f'{when} {client[0] if client else "-"} "{method} {scope.get("path", "")}" '
                f"{status if status is not None else '-'} {seconds * 1000:.1f}ms {sent}B{extra}")


def _error_code(body: bytearray) -> str | None:
    """The ``error.code`` of an OpenAI error envelope, or None."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    error = document.get("error") if isinstance(document, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None
