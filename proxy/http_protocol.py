"""uvicorn's httptools protocol with the connection limits a public endpoint needs.

uvicorn reads request heads without a size or time limit and answers malformed HTTP in plain
text. This protocol adds, per connection:

- a head size limit: a request line plus headers larger than ``max_header_bytes`` gets 431 and
  the connection is closed before the rest is read (the parser never buffers more);
- a head timeout: a connection that has not completed its request head within
  ``header_timeout_seconds`` of opening (or of its previous response) is closed, with 408 if it
  sent anything (slowloris);
- a connection limit: at ``max_connections``, a new connection pushes out the oldest one still
  waiting for its request head (a slowloris socket, or an idle keep-alive one); if every
  connection is busy with a request, the new one gets 503 and is closed. Idle sockets cannot use
  up the file descriptors, and cannot crowd out clients that send a request at once;

and answers malformed HTTP with the OpenAI error envelope instead of uvicorn's plain text.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from .errors import (
    GatewayError,
    HeadersTooLarge,
    MalformedHTTP,
    RequestHeadTimeout,
    ServerBusy,
    error_payload,
)

__all__ = [
    "ConnectionLimits",
    "GatewayHttpProtocol",
    "GatewayServerState",
    "ServerConfig",
    "envelope_bytes",
]

logger = logging.getLogger("uvicorn.error")


@dataclass(frozen=True)
class ConnectionLimits:
    """The per-connection limits, from :class:`proxy.config.ServerSettings`."""

    max_header_bytes: int
    header_timeout_seconds: float
    max_connections: int


class GatewayServerState(ServerState):
    """uvicorn's shared server state, plus the connections waiting for a request head.

    In the order they started waiting (a dict keeps insertion order), so the oldest is first.
    """

    def __init__(self) -> None:
        super().__init__()
        self.awaiting_head: dict[GatewayHttpProtocol, None] = {}


class ServerConfig(uvicorn.Config):
    """uvicorn's config plus the gateway's limits; pickled to every worker process with it."""

    def __init__(
        self, app: Any, *, limits: ConnectionLimits, shutdown_grace_seconds: float, **kwargs: Any
    ) -> None:
        super().__init__(app, http=GatewayHttpProtocol, **kwargs)
        self.connection_limits = limits
        self.shutdown_grace_seconds = shutdown_grace_seconds


def envelope_bytes(error: GatewayError) -> bytes:
    """A complete HTTP/1.1 response carrying ``error`` in the envelope, closing the connection."""
    body = orjson.dumps(error_payload(error))
    return b"".join([
        STATUS_LINE[error.status_code],
        b"content-type: application/json\r\n",
        b"content-length: %d\r\n" % len(body),
        b"connection: close\r\n\r\n",
        body,
    ])


class GatewayHttpProtocol(HttpToolsProtocol):
    """One client connection, with head size and time limits and enveloped protocol errors."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits: ConnectionLimits = config.connection_limits  # type: ignore[attr-defined]
        self._limits = limits
        self._reading_head = False
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._awaiting_head: dict[GatewayHttpProtocol, None] = (
            server_state.awaiting_head if isinstance(server_state, GatewayServerState) else {}
        )

    # The head phase runs from the connection's opening, or a response's end, to the end of
    # the next request's headers.
    def _await_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._reading_head = True
        self._head_bytes = 0
        self._awaiting_head[self] = None
        self._head_timer = self.loop.call_later(
            self._limits.header_timeout_seconds, self._head_timed_out
        )

    def _head_complete(self) -> None:
        self._reading_head = False
        self._awaiting_head.pop(self, None)
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        self._awaiting_head.pop(self, None)
        if self.transport.is_closing():
            return
        if self._head_bytes:
            logger.debug("request head not complete within %ss: 408",
                         self._limits.header_timeout_seconds)
            self._refuse(RequestHeadTimeout(
                f"the request head did not arrive within {self._limits.header_timeout_seconds:g} s"
            ))
        else:
            self._count("idle_closed")
            self.transport.close()  # an idle connection: nothing to answer

    def _count(self, reason: str) -> None:
        # The app's metrics, through the lifespan state (filled once the app has started).
        count = self.app_state.get("count_refused")
        if count is not None:
            count(reason)

    def _refuse(self, error: GatewayError) -> None:
        self._count(error.code or "other")
        # Once the app has started a response, writing another would corrupt it: just close.
        cycle = self.cycle
        if cycle is None or cycle.response_complete or not cycle.response_started:
            self.transport.write(envelope_bytes(error))
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self._limits.max_connections:
            if self._awaiting_head:
                oldest = next(iter(self._awaiting_head))
                oldest._head_complete()
                oldest._push_out()
            else:
                logger.warning("refused a connection: %d open, all busy; the limit is %d",
                               len(self.connections), self._limits.max_connections)
                self._refuse(ServerBusy("too many open connections; retry shortly"))
                return
        self._await_head()

    def _push_out(self) -> None:
        """Close this connection, which is waiting for a head, to make room for a new one."""
        if self._head_bytes:
            self._refuse(RequestHeadTimeout("the request head was too slow for a busy server"))
        else:
            self._count("idle_closed")
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_complete()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._reading_head:
            allowed = self._limits.max_header_bytes - self._head_bytes
            if len(data) > allowed:
                # Feed only what the limit allows: if the head ends in there, the rest is body
                # (or the next request) and goes on; if not, the head is too large.
                self._head_bytes += allowed
                super().data_received(data[:allowed])
                if self._reading_head and not self.transport.is_closing():
                    logger.debug("request head over %d bytes: 431", self._limits.max_header_bytes)
                    self._refuse(HeadersTooLarge(
                        f"the request line and headers exceed {self._limits.max_header_bytes} bytes"
                    ))
                    return
                data = data[allowed:]
                if not data or self.transport.is_closing():
                    return
            else:
                self._head_bytes += len(data)
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._head_complete()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # uvicorn arms its keep-alive timer when the connection waits for another request (no
        # pipelined one is queued): the next head is due from now.
        if self.timeout_keep_alive_task is not None and not self.transport.is_closing():
            self._await_head()

    def send_400_response(self, msg: str) -> None:
        self._refuse(MalformedHTTP("the request is not valid HTTP/1.1"))
