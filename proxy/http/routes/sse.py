"""Server-sent events: a guarded stream's events, and its failure boundary (see
:mod:`proxy.http.boundary` for the request's)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from proxy.errors import GatewayError, ShuttingDown, error_payload
from proxy.http.boundary import internal_error
from proxy.http.disconnect import ClientGone, disconnect_signal, unless_gone
from proxy.http.draining import InFlight
from proxy.wire.events import EventBatch, StreamItem

__all__ = ["DONE", "EventStreamResponse", "event_stream", "sse_event"]

logger = logging.getLogger("basguard")

DONE = b"data: [DONE]\n\n"
"""The last event of a chat or completions stream."""


def sse_event(document: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(document) + b"\n\n"


async def event_stream(
    chunks: AsyncIterator[StreamItem], on_first: Callable[[], None],
    on_internal_error: Callable[[str], None], in_flight: InFlight, *,
    encode: Callable[[dict[str, Any]], bytes] = sse_event, done: bytes = DONE,
) -> AsyncIterator[bytes]:
    """The events of a stream; the stream's failure boundary.

    Whatever goes wrong after the headers becomes one error event, and ``done`` always ends
    the stream. A draining server ends a stream still open at its deadline the same way
    (one ``shutting_down`` event), instead of cutting the connection.
    """
    with in_flight.tracking() as ended_by_shutdown:
        first = True
        try:
            async for chunk in chunks:
                # A batch (a buffered answer replayed) leaves as one body message.
                event = (b"".join([encode(one) for one in chunk])
                         if isinstance(chunk, EventBatch) else encode(chunk))
                if first:
                    on_first()
                    first = False
                yield event
        except asyncio.CancelledError:
            # Any cancellation but the drain's goes on (a client that left, a stopping task).
            task = asyncio.current_task()
            if not ended_by_shutdown() or task is None:
                raise
            task.uncancel()
            stopping = ShuttingDown("the server is shutting down; retry the request")
            yield encode(error_payload(stopping))
        except GatewayError as exc:
            yield encode(error_payload(exc))
        except Exception:
            logger.exception("unexpected error in a stream")
            on_internal_error("stream")
            yield encode(error_payload(internal_error()))
    if done:
        yield done


class EventStreamResponse(StreamingResponse):
    """A stream of server-sent events that ends when its client goes away.

    Starlette's streamed response learns of a disconnect from a second task that awaits
    ``receive()``, started in a task group for every stream. Under the gateway's protocol the
    request's disconnect signal (:mod:`proxy.http.disconnect`) cancels the sending instead, and
    the events' iterator is closed at once (closing the upstream's stream); elsewhere this is
    Starlette's response unchanged.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        signal = disconnect_signal(scope) if scope["type"] == "http" else None
        if signal is None:
            await super().__call__(scope, receive, send)
            return
        try:
            await unless_gone(signal, self.stream_response(send))
        except ClientGone:
            pass
        finally:
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                await close()
