"""The one canonical request path, enforced before routing (the rules: :mod:`proxy.wire.paths`)."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from proxy.errors import InvalidPath, error_response
from proxy.wire.paths import canonical_path

__all__ = ["CanonicalPath"]


class CanonicalPath:
    """Refuses non-canonical paths (HTTP and WebSocket) before routing, in the OpenAI envelope.

    Pure ASGI, outside the concurrency limit: a refused path takes no request slot.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" or kind == "websocket":
            raw = scope.get("raw_path") or scope["path"].encode("utf-8")
            try:
                path = canonical_path(raw)
            except InvalidPath as exc:
                if kind == "http":
                    await error_response(exc)(scope, receive, send)
                else:
                    await _deny_websocket(WebSocket(scope, receive, send), exc)
                return
            if path != scope["path"]:
                scope = {**scope, "path": path}
        await self.app(scope, receive, send)


async def _deny_websocket(websocket: WebSocket, error: InvalidPath) -> None:
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(error_response(error))
    else:  # a server without denial responses: the close code says what it can
        await websocket.close(1008, error.message[:123])
