"""What the guarded routes do not serve: any other ``/v1/...`` request, forwarded to the model's
upstream (see :mod:`proxy.services.passthrough`), and WebSockets: the Responses API's, guarded
(see :mod:`proxy.http.responses_socket`), or any other (the Realtime API) relayed (see
:mod:`proxy.services.realtime`)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from proxy.errors import GatewayError, error_response
from proxy.http.draining import ending_on_shutdown
from proxy.http.responses_socket import ResponsesSocket
from proxy.http.routes.context import authenticated, config_store, in_flight
from proxy.services.passthrough import ForwardedResponse, Passthrough
from proxy.services.realtime import WebSocketPassthrough, presented_key

__all__ = ["forward", "websocket"]


async def forward(request: Request) -> Response:
    """Any other ``/v1/...`` request, forwarded unguarded to the model's upstream."""
    service: Passthrough = request.app.services.passthrough
    path = request.path_params["path"]
    service.check_path(request.method, path)  # a guarded path's wrong method: 405, key or not
    state, tenant = authenticated(request)
    reply = await ending_on_shutdown(in_flight(request), service.forward(
        state=state, tenant=tenant, method=request.method, path=path,
        query=request.url.query, headers=request.headers, body=request.stream(),
        max_json_bytes=state.config.max_body_bytes,
    ))
    return ForwardedResponse(reply.body, status_code=reply.status, headers=reply.headers)


async def websocket(websocket: WebSocket) -> None:
    """A WebSocket to ``/v1/...``: the Responses API's WebSocket mode, guarded, or any other
    relayed unguarded to the model's upstream. A refused handshake gets the error envelope."""
    path = websocket.path_params["path"]
    subprotocols = websocket.scope.get("subprotocols", [])
    relay: WebSocketPassthrough = websocket.app.services.websockets
    config = config_store(websocket)
    try:
        if path == "responses":
            key = presented_key(websocket.headers, subprotocols)
            config.current.authenticate(key)
        else:
            opened = await relay.open(
                config.current, path=path, query=websocket.url.query,
                headers=websocket.headers, subprotocols=subprotocols)
    except GatewayError as exc:
        if "websocket.http.response" in websocket.scope.get("extensions", {}):
            await websocket.send_denial_response(error_response(exc, exc.headers))
        else:  # a server without denial responses: the close code says as much as it can
            await websocket.close(1008, exc.message[:123])
        return
    if path == "responses":
        guarded: ResponsesSocket = websocket.app.services.responses_socket
        await guarded.serve(websocket, key)
    else:
        await relay.relay(websocket, opened, lambda: config.current)
