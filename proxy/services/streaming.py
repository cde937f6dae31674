"""How a guarded stream is streamed, one strategy each, for every API that streams.

A :class:`DecidedStream` is one upstream stream being guarded, in its API's terms (chat and
legacy completions: :mod:`proxy.services.chat_stream`; the Responses API:
:mod:`proxy.services.responses_stream`). The strategies here are what the tenant's mode asks:

- :func:`annotated` (``annotate``, ``shadow``): events pass as they come; those that end the
  stream are held back until it ends, so the decision can ride on them;
- :func:`buffered` (``enforce``): the whole stream first, then the decision, then the answer or
  the abstention is replayed (each API replays in its own shape);
- the stream gate (``enforce`` with a prefix calibrator) decides on each choice's first tokens:
  :func:`proxy.services.chat_stream.gated`, chat's only.

The contract every strategy keeps: after the headers, a failure becomes one error event; a
failure before them is raised (a real status); the upstream stream is closed whatever happens.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any, Protocol

from proxy.errors import ConfidenceUnavailable, GatewayError, UpstreamError, error_payload
from proxy.judging.decision import DecisionRecord, MissingConfidence, missing_confidence_error
from proxy.wire.events import EventBatch, StreamItem

__all__ = ["DecidedStream", "annotated", "buffered", "replayed"]

Json = dict[str, Any]


class DecidedStream(Protocol):
    """One upstream stream being guarded, in its API's terms."""

    on_missing_confidence: MissingConfidence

    def events(self) -> AsyncIterator[Json]:
        """The upstream's events, checked and taken into the answer as they arrive (events
        that carry nothing a client reads, such as a usage chunk, are taken in and not
        yielded)."""
        ...

    def holds(self, event: Json) -> bool:
        """Whether ``event`` ends the stream: held back so that the decision rides on it."""
        ...

    def restrict(self, event: Json) -> None:
        """Trim ``event``'s logprobs to what the client asked for."""
        ...

    async def decide(self) -> DecisionRecord:
        """Decide on the answer the events made, and report the decision."""
        ...

    def closing(self, held: list[Json], record: DecisionRecord) -> list[Json]:
        """The last events, the decision on them (``held``: the events :meth:`holds` kept)."""
        ...

    def failed(self, exc: BaseException) -> None:
        """Count ``exc`` as the upstream's failure, if it is one."""
        ...

    async def close(self) -> None:
        """Close the upstream stream (and cancel the signals still running)."""
        ...


async def annotated(stream: DecidedStream) -> AsyncIterator[Json]:
    """Events as they come, the decision on the last ones (``annotate`` and ``shadow``)."""
    held: list[Json] = []
    try:
        async for event in stream.events():
            stream.restrict(event)
            if stream.holds(event):
                held.append(event)  # the decision may have to ride on it
            else:
                yield event
        record = await stream.decide()
        reason = missing_confidence_error(record.outcomes, stream.on_missing_confidence)
        if reason is not None:
            raise ConfidenceUnavailable(reason)
        for event in stream.closing(held, record):
            yield event
    except GatewayError as exc:
        stream.failed(exc)
        for event in held:
            yield event
        yield error_payload(exc)
    finally:
        await stream.close()


async def buffered(stream: DecidedStream) -> tuple[list[Json], DecisionRecord]:
    """The whole stream and its decision (``enforce``: nothing can be sent before it). The
    events are kept as they came, so an answered choice is replayed with every field it had."""
    try:
        events = [event async for event in stream.events()]
        record = await stream.decide()
    except UpstreamError as exc:
        stream.failed(exc)
        raise
    finally:
        await stream.close()
    return events, record


async def replayed(events: Iterable[Json]) -> AsyncIterator[StreamItem]:
    """``events`` (already decided on) as a stream: one batch, since all are ready at once."""
    batch = EventBatch(events)
    if batch:
        yield batch
