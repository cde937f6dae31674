"""Time to first token of a guarded stream, for each way of streaming (``stream_mode``).

``gated`` (enforce with a stream gate), ``buffered`` (enforce without: the whole answer first)
and ``passthrough`` (annotate, shadow). Measured from the start of the upstream request to the
first chunk handed on with answer text (or abstention text): what a client waits before it has
something to show.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Literal

from proxy.wire.events import StreamItem, events_of
from proxy.wire.formats import WireFormat

__all__ = ["STREAM_MODES", "StreamMode", "timed_first_token"]

StreamMode = Literal["gated", "buffered", "passthrough"]
STREAM_MODES: tuple[StreamMode, ...] = ("gated", "buffered", "passthrough")


async def timed_first_token(
    chunks: AsyncIterator[StreamItem], fmt: type[WireFormat], started: float,
    report: Callable[[float], None],
) -> AsyncIterator[StreamItem]:
    """``chunks`` unchanged; ``report`` told the seconds since ``started`` at the first text."""
    waiting = True
    try:
        async for chunk in chunks:
            if waiting and any(fmt.delta_text(c) for event in events_of(chunk)
                               for c in event.get("choices") or []):
                report(time.perf_counter() - started)
                waiting = False
            yield chunk
    finally:
        # Closed with this wrapper (a client that left), so the upstream closes now, not when
        # the collector finds the inner generator.
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
