"""Server-sent events: a guarded stream's events, and its failure boundary (see
:mod:`proxy.http.boundary` for the request's)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from proxy.errors import GatewayError, ShuttingDown, error_payload
from proxy.http.boundary import internal_error
from proxy.http.draining import InFlight

__all__ = ["DONE", "event_stream", "sse_event"]

logger = logging.getLogger("basguard")

DONE = b"data: [DONE]\n\n"
"""The last event of a chat or completions stream."""


def sse_event(document: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(document) + b"\n\n"


async def event_stream(
    chunks: AsyncIterator[dict[str, Any]], on_first: Callable[[], None],
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
                event = encode(chunk)
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
