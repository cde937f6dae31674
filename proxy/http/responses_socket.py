"""The Responses API's WebSocket mode (a WebSocket to ``/v1/responses``), guarded.

OpenAI's Agents SDK (its websocket transport) and ``client.responses.connect()`` keep one
WebSocket open and start each turn with a ``response.create`` event: the body of ``POST
/v1/responses`` with a ``type`` and without ``stream``. Its events come back as messages. basguard
serves each such event exactly as a streamed ``POST /v1/responses``
(:meth:`~proxy.services.responses.GuardedResponses.respond_stream`): the same tenants,
decisions, modes, withheld shapes, signals, store and metrics. It calls the upstream over HTTP,
so any upstream with a Responses API works behind it.

The decision rides on the response of the turn's terminal event (``response.completed`` or
``response.incomplete``), as on HTTP: its ``basguard`` object and ``metadata`` strings. What
differs from the HTTP stream, for the socket's clients:

- an error before a response starts (an unknown model, an invalid event, an upstream's refusal,
  a withheld answer under ``abstain_action: error``) is one ``error`` event carrying the HTTP
  ``status`` the request would have had; the socket stays open for the next turn, as OpenAI's
  does;
- one response at a time: a ``response.create`` while one is streaming gets the error
  ``response_already_in_flight``;
- ``generate: false`` (a warm-up that generates nothing) is refused: basguard calls the upstream
  over HTTP, which would generate; so is any event type but ``response.create``;
- a continuation (``previous_response_id``) reaches the upstream as on HTTP, so the previous
  response must be stored there (``store`` true, OpenAI's default); the in-connection cache
  OpenAI keeps for ``store: false`` lives in its own socket, which basguard's calls do not share.

The handshake is checked as the Realtime relay's is (:mod:`proxy.services.realtime`): the
tenant's key in ``Authorization`` or in the browser subprotocol. A client that leaves cancels
the response in flight, and its upstream request; a server stop closes the socket with 1012.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

from policies.segments import SEGMENT_HEADER, resolve_segment
from proxy.errors import GatewayError, InvalidRequest, error_payload
from proxy.http.boundary import internal_error
from proxy.observability.metrics import GatewayMetrics
from proxy.runtime.reload import ConfigStore
from proxy.services.responses import GuardedResponses
from proxy.wire.events import events_of
from proxy.wire.request_body import json_object, validated
from proxy.wire.responses import EventSequence, error_event
from proxy.wire.schema import ResponsesRequest

__all__ = ["ResponsesSocket"]

logger = logging.getLogger("basguard")

Json = dict[str, Any]
_CREATE = "response.create"


class _Turns:
    """The turns of one client's socket: one response at a time."""

    def __init__(self, socket: ResponsesSocket, websocket: WebSocket, key: str | None,
                 segment_header: str | None) -> None:
        self._socket = socket
        self._websocket = websocket
        self._key = key
        self._segment_header = segment_header
        self._in_flight: asyncio.Task[None] | None = None

    async def serve(self) -> None:
        try:
            while True:
                message = await self._websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if self._in_flight is not None and not self._in_flight.done():
                    with contextlib.suppress(*_GONE):
                        await self._refuse(InvalidRequest(
                            "a response is already in flight on this socket; send the next "
                            "response.create after its last event",
                            code="response_already_in_flight"))
                    continue
                text = message.get("text")
                if text is None:
                    text = (message.get("bytes") or b"").decode(errors="replace")
                self._in_flight = asyncio.create_task(self._turn(text))
        finally:
            if self._in_flight is not None:
                # A client that left: its response, and the upstream request, stop.
                self._in_flight.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._in_flight

    async def _send(self, event: Json) -> None:
        await self._websocket.send_text(orjson.dumps(event).decode())

    async def _refuse(self, error: GatewayError, sequence_number: int = 0) -> None:
        envelope = error_event(error_payload(error)["error"], sequence_number)
        await self._send({**envelope, "status": error.status_code})

    async def _turn(self, text: str) -> None:
        self._socket.on_turn(text)
        try:
            await self._respond(text)
        except GatewayError as exc:
            with contextlib.suppress(*_GONE):
                await self._refuse(exc)
        except _GONE:
            pass  # the client left mid-turn: nothing to tell
        except Exception:
            logger.exception("unexpected error in a Responses WebSocket turn")
            self._socket.metrics.internal_error("websocket")
            with contextlib.suppress(*_GONE):
                await self._refuse(internal_error())

    async def _respond(self, text: str) -> None:
        started = time.perf_counter()
        state = self._socket.config.current  # read once: the turn finishes on this config
        # Each turn, as each HTTP request: a key a reload revoked stops working on open sockets.
        tenant = state.authenticate(self._key)
        event = json_object(text, state.config.max_body_bytes)
        kind = event.pop("type", None)
        if kind != _CREATE:
            raise InvalidRequest(f"unsupported event type {kind!r}: basguard serves "
                                 f"{_CREATE!r} on this socket", param="type")
        if event.pop("generate", True) is False:
            raise InvalidRequest(
                "generate: false (a warm-up) is not supported through basguard, which calls "
                "the upstream over HTTP; send the turn with its input", param="generate")
        event.pop("stream", None)
        body = {**event, "stream": True}
        validated(ResponsesRequest, body)
        segment = resolve_segment(state.config.tenants[tenant.name].segments,
                                  header=self._segment_header, metadata=body.get("metadata"),
                                  user=body.get("user"))
        streamed = await self._socket.responses.respond_stream(state, tenant, body,
                                                               segment=segment)
        # The same latency metrics as an HTTP request's, the turn standing for the request.
        metrics = self._socket.metrics
        metrics.observe_overhead(body.get("model"), started, streamed.upstream_seconds)
        sent_any = False

        async def send(event: Json) -> None:
            nonlocal sent_any
            await self._send(event)
            if not sent_any:
                sent_any = True
                metrics.observe_first_byte(body.get("model"), started)

        numbering = EventSequence()
        async for produced in streamed.chunks:
            for event in events_of(produced):  # a WebSocket message per event
                await send(numbering.event(event))


_GONE = (WebSocketDisconnect, OSError, RuntimeError)
"""What sending to a socket whose client left raises (starlette raises RuntimeError for a send
after the close)."""


class ResponsesSocket:
    """Serves the Responses API's WebSocket mode for authenticated clients."""

    def __init__(self, responses: GuardedResponses, config: ConfigStore,
                 metrics: GatewayMetrics, *,
                 on_turn: Callable[[str], object] | None = None) -> None:
        self.responses = responses
        self.config = config
        self.metrics = metrics
        self.on_turn = on_turn or (lambda event: None)
        """Told each turn's event (its text) as the turn starts: a hook for a log or a test."""

    async def serve(self, websocket: WebSocket, key: str | None) -> None:
        """Accept a handshake whose ``key`` (the ``Authorization`` value) was checked, and serve
        its turns until the client leaves."""
        await websocket.accept()
        await _Turns(self, websocket, key, websocket.headers.get(SEGMENT_HEADER)).serve()
