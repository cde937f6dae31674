"""A batch of a stream's events that are ready at once.

A buffered enforce stream holds the whole answer until its decision, then hands every event on
together. Handed on one by one, each would be its own ASGI message, pass the access log and the
protocol's send on its own and be framed alone: about 2 µs of CPU an event, measured with
``benchmarks/bench_long_stream.py`` (docs/benchmarks.md). As one batch the events
are encoded into one body message (:func:`proxy.http.routes.sse.event_stream`); a consumer that
needs them one by one (a WebSocket sends a message per event) iterates the batch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EventBatch", "StreamItem", "events_of"]


class EventBatch(list[dict[str, Any]]):
    """Events (parsed chunks) handed on as one item of a stream: the same events, in order."""


StreamItem = dict[str, Any] | EventBatch
"""What a guarded stream hands on: one event, or a batch of them."""


def events_of(item: StreamItem) -> list[dict[str, Any]]:
    """The events an item of a stream stands for: a batch's, or the item itself."""
    return item if isinstance(item, EventBatch) else [item]
