"""uvicorn's httptools protocol with the connection limits a public endpoint needs.

uvicorn reads request heads without a size or time limit and answers malformed HTTP in plain
text. This protocol adds, per connection:

- a head size limit: a request line plus headers larger than ``max_header_bytes`` gets 431 and
  the connection is closed before the rest is read (the parser never buffers more);
- a head timeout: a connection that has not completed its request head within
  ``header_timeout_seconds`` of opening (or of its previous response) is closed, with 408 if it
  sent anything (slowloris);
- a body deadline: a request body must arrive within ``body_timeout_seconds`` and at least
  ``body_min_rate_bytes_per_second`` fast (:class:`~proxy.http.body_deadline.BodyDeadline`), else
  408 and the connection is closed;
- no request slot while a body is awaited: a request reaches the app (and its concurrency limit)
  once its body is complete, or once its first 64 KiB have arrived (then the app streams the
  rest, as a passthrough upload does); a body that stops half-way costs a socket, not a slot;
- a connection limit: at ``max_connections``, a new connection pushes out the oldest one still
  waiting for its request head (a slowloris socket, or an idle keep-alive one), else the oldest
  waiting for its body (408); if every connection is busy with a request, the new one gets 503
  and is closed. Idle sockets cannot use up the file descriptors, and cannot crowd out clients
  that send a request at once;
- no keep-alive after an early answer: a response that starts before its request's body has
  arrived whole says ``connection: close``, and the connection closes after it with a lingering
  close (:mod:`proxy.http.lingering_close`), since the unread rest of the body cannot be told apart
  from the next request;

- a response's head written with its body, in one write (:mod:`proxy.http.cycle`);
- a disconnect signal in each request's scope (:mod:`proxy.http.disconnect`), fired when the
  connection is lost (or the body refused) before the response is complete, so the app learns
  of a departed client without a task of its own that waits to hear it;

and answers malformed HTTP with the OpenAI error envelope instead of uvicorn's plain text.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson
import uvicorn
from uvicorn._types import ASGI3Application
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT, FlowControl
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import ServerState

from proxy.errors import (
    GatewayError,
    HeadersTooLarge,
    MalformedHTTP,
    RequestBodyTimeout,
    RequestHeadTimeout,
    ServerBusy,
    ShuttingDown,
    error_payload,
)
from proxy.http.body_deadline import BodyDeadline
from proxy.http.cycle import GatewayCycle
from proxy.http.disconnect import EXTENSION, DisconnectSignal, disconnect_signal
from proxy.http.lingering_close import close_lingering

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
    """The per-connection limits, from :class:`proxy.runtime.settings.ServerSettings`."""

    max_header_bytes: int
    header_timeout_seconds: float
    max_connections: int
    body_timeout_seconds: float
    body_min_rate_bytes_per_second: int
    body_rate_window_seconds: float

    def body_deadline(self) -> BodyDeadline:
        return BodyDeadline(total_seconds=self.body_timeout_seconds,
                            min_rate=self.body_min_rate_bytes_per_second,
                            window_seconds=self.body_rate_window_seconds)


class GatewayServerState(ServerState):
    """uvicorn's shared server state, plus the connections waiting for a request head and
    those waiting for a request body: the ones a new connection may push out.

    In the order they started waiting (a dict keeps insertion order), so the oldest is first.
    """

    def __init__(self) -> None:
        super().__init__()
        self.awaiting_head: dict[GatewayHttpProtocol, None] = {}
        self.awaiting_body: dict[GatewayHttpProtocol, None] = {}


class PauseTimingFlowControl(FlowControl):
    """uvicorn's flow control, adding up the seconds reading was paused: time in which the
    server, not the client, held up a request body."""

    def __init__(self, transport: asyncio.Transport) -> None:
        super().__init__(transport)
        self._paused_since = 0.0
        self._paused_total = 0.0

    def pause_reading(self) -> None:
        if not self.read_paused:
            self._paused_since = time.monotonic()
        super().pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused:
            self._paused_total += time.monotonic() - self._paused_since
        super().resume_reading()

    def paused_seconds(self) -> float:
        """Seconds reading has been paused so far, the current pause included."""
        ongoing = time.monotonic() - self._paused_since if self.read_paused else 0.0
        return self._paused_total + ongoing


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
    """One client connection, with head and body limits and enveloped protocol errors."""

    flow: PauseTimingFlowControl

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
        gateway_state = server_state if isinstance(server_state, GatewayServerState) else None
        self._awaiting_head: dict[GatewayHttpProtocol, None] = (
            gateway_state.awaiting_head if gateway_state else {})
        self._awaiting_body: dict[GatewayHttpProtocol, None] = (
            gateway_state.awaiting_body if gateway_state else {})
        # The body phase: from the end of a request's head to the end of its body.
        self._body_pending = False
        self._body_deadline: BodyDeadline | None = None
        self._body_started = 0.0
        self._body_paused_before = 0.0
        self._body_timer: asyncio.TimerHandle | None = None
        self._deferred: tuple[RequestResponseCycle, ASGI3Application] | None = None
        """A request held back from the app until its body is complete (or flowing)."""
        self._closes_for_body: RequestResponseCycle | None = None
        """A request that reached the app before its body was whole: it closes the connection
        unless the body is whole before its response starts."""

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

    # The body phase. Its clock is started only once a feed of data leaves a body incomplete:
    # a request that arrives whole (nearly all of them) never sets a timer.
    def _start_body_clock(self) -> None:
        self._body_deadline = self._limits.body_deadline()
        self._body_started = time.monotonic()
        self._body_paused_before = self.flow.paused_seconds()
        self._awaiting_body[self] = None
        _, wait = self._body_deadline.check(0.0)
        self._body_timer = self.loop.call_later(wait, self._check_body)

    def _waited_on_client(self) -> float:
        paused = self.flow.paused_seconds() - self._body_paused_before
        return time.monotonic() - self._body_started - paused

    def _check_body(self) -> None:
        self._body_timer = None
        if self._body_deadline is None or self.transport.is_closing():
            return
        waited = self._waited_on_client()
        late, wait = self._body_deadline.check(waited)
        if late is not None:
            logger.debug("%s: 408", late)
            self._refuse_body(RequestBodyTimeout(late))
            return
        self._body_timer = self.loop.call_later(wait, self._check_body)

    def _stop_body_clock(self) -> None:
        self._body_deadline = None
        self._awaiting_body.pop(self, None)
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _refuse_body(self, error: GatewayError) -> None:
        """Answer a body that came too slowly, and end its request: a deferred one never
        reaches the app; one in the app sees its client gone (no response it sends is
        written after this one)."""
        self._stop_body_clock()
        self._deferred = None
        cycle = self.cycle
        self._refuse(error)
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()
            _fire(cycle)

    def _start_deferred(self) -> None:
        assert self._deferred is not None
        cycle, app = self._deferred
        self._deferred = None
        self._start_asgi_task(cycle, app)

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
        self.flow = PauseTimingFlowControl(transport)
        if len(self.connections) > self._limits.max_connections:
            waiting = self._awaiting_head or self._awaiting_body
            if waiting:
                next(iter(waiting))._push_out()
            else:
                logger.warning("refused a connection: %d open, all busy; the limit is %d",
                               len(self.connections), self._limits.max_connections)
                self._refuse(ServerBusy("too many open connections; retry shortly"))
                return
        self._await_head()

    def _push_out(self) -> None:
        """Close this connection, which is waiting for a head or a body, to make room."""
        if self._body_deadline is not None:
            self._refuse_body(RequestBodyTimeout("the request body was too slow for a busy server"))
            return
        self._head_complete()
        if self._head_bytes:
            self._refuse(RequestHeadTimeout("the request head was too slow for a busy server"))
        else:
            self._count("idle_closed")
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_complete()
        self._stop_body_clock()
        self._deferred = None
        cycle = self.cycle
        if exc is None and self._body_pending and cycle is not None and cycle.response_complete:
            # Answered before its body was read, and closed for it: the client may still be
            # sending, and a plain close would reset the connection under the answer.
            close_lingering(self.loop, self.transport)
        super().connection_lost(exc)
        if cycle is not None and not cycle.response_complete:
            _fire(cycle)

    def data_received(self, data: bytes) -> None:
        self._feed(data)
        if (self._body_pending and self._body_deadline is None
                and not self.transport.is_closing()):
            self._start_body_clock()

    def _feed(self, data: bytes) -> None:
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
        # Every request has a body phase, if only until on_message_complete right after.
        upgrading = self.parser.should_upgrade() and self._should_upgrade()
        self._body_pending = not upgrading
        # The request's disconnect signal (proxy.http.disconnect), fired by connection_lost.
        self.scope["extensions"] = {EXTENSION: DisconnectSignal()}  # type: ignore[dict-item]
        super().on_headers_complete()
        cycle = self.cycle
        if type(cycle) is RequestResponseCycle:
            # uvicorn builds its own cycle class by name; ours differs only in how it writes a
            # response (proxy.http.cycle), and its task has not run yet: it sends through ours.
            cycle.__class__ = GatewayCycle

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        if cycle is self.cycle and self._body_pending:
            if not cycle.waiting_for_100_continue and len(cycle.body) <= HIGH_WATER_LIMIT:
                # Waiting for its body, a request holds no slot: the app sees it once the body
                # is whole or flowing. (A client that expects 100 Continue waits for the app.)
                self._deferred = (cycle, app)
                return
            if cycle.keep_alive:
                cycle.keep_alive = False
                self._closes_for_body = cycle
        super()._start_asgi_task(cycle, app)

    def on_body(self, body: bytes) -> None:
        if self._body_deadline is not None:
            self._body_deadline.received(len(body))
        super().on_body(body)
        if self._deferred is not None and len(self._deferred[0].body) > HIGH_WATER_LIMIT:
            self._start_deferred()

    def on_message_complete(self) -> None:
        self._body_pending = False
        self._stop_body_clock()
        cycle = self._closes_for_body
        if cycle is not None:
            self._closes_for_body = None
            if not cycle.response_started:
                cycle.keep_alive = True  # the body is whole before the answer: keep-alive is safe
        super().on_message_complete()
        if self._deferred is not None:
            self._start_deferred()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # uvicorn arms its keep-alive timer when the connection waits for another request (no
        # pipelined one is queued): the next head is due from now.
        if self.timeout_keep_alive_task is not None and not self.transport.is_closing():
            self._await_head()

    def shutdown(self) -> None:
        self._closes_for_body = None  # a stop closes the connection after its response, body or not
        if self._deferred is not None:
            # Its app never started: nothing to wait for. Answered, so the client may retry.
            self._stop_body_clock()
            self._deferred = None
            self.transport.write(envelope_bytes(ShuttingDown("the server is stopping; retry")))
            self.transport.close()
            return
        super().shutdown()

    def send_400_response(self, msg: str) -> None:
        self._refuse(MalformedHTTP("the request is not valid HTTP/1.1"))


def _fire(cycle: RequestResponseCycle) -> None:
    signal = disconnect_signal(cycle.scope)
    if signal is not None:
        signal.fire()
