"""A Responses API stream being guarded: its typed events, its decision, its end.

:class:`ResponsesStream` is the :class:`~proxy.services.streaming.DecidedStream` of
``/v1/responses``: the decision rides on the terminal event's response (``response.completed``
and the like), as the ``basguard`` object and as ``metadata`` strings; a withheld response is
replayed as a new response, numbered from 0, whose answer is the abstention.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from proxy.errors import UpstreamError, sanitize
from proxy.judging.decision import ChoiceOutcome, DecisionRecord, MissingConfidence
from proxy.judging.responses import ResponseJudging
from proxy.runtime.state import TenantRuntime
from proxy.services.guarded import GuardedService
from proxy.signals.runner import SignalRun
from proxy.wire.responses import (
    FAILED_EVENTS,
    TERMINAL_EVENTS,
    ResponseAnswer,
    ResponsesFormat,
    answer_of,
    placeholder_response,
    restrict_event,
    with_decision,
    withheld_events,
)

__all__ = ["ResponsesStream", "StreamedResponse", "closing_events", "record_response"]

logger = logging.getLogger("basguard")

Json = dict[str, Any]
FORMAT = ResponsesFormat


class StreamedResponse:
    """What a Responses stream has said so far: its answer and its final response."""

    def __init__(self, model: str) -> None:
        self._model = model
        self._answer = ResponseAnswer()
        self._whole: ResponseAnswer | None = None
        """The answer of the final response, read when it arrived (before any trimming)."""
        self.final: Json | None = None

    def add(self, event: Any) -> Json:
        """``event``, checked and taken into account (raises on a failure the upstream sent)."""
        if event is None:
            self.ended()
        checked = FORMAT.check_event(event, self._model)
        kind = checked["type"]
        if kind in FAILED_EVENTS:
            logger.warning("upstream for model %r failed mid-stream: %s", self._model,
                           sanitize(str(checked.get("message") or checked.get("response"))))
            raise UpstreamError(f"the upstream for model {self._model!r} failed mid-stream")
        if kind == "response.output_text.delta":
            self._answer.add_text(checked["output_index"], checked.get("content_index", 0),
                                  checked["delta"], checked.get("logprobs"))
        elif kind == "response.output_item.added" and checked["item"]["type"] == "function_call":
            self._answer.calls_tools = True
        elif kind in TERMINAL_EVENTS:
            self.final = checked["response"]
            self._whole = answer_of(checked["response"])
        return checked

    def ended(self) -> None:
        """The upstream's stream is over: it must have ended its response."""
        if self.final is None:
            raise UpstreamError(
                f"the upstream for model {self._model!r} ended the stream early")

    def answer(self) -> ResponseAnswer:
        whole = self._whole
        if whole is not None:
            # A server that sends the output, or its logprobs, only in the final response and
            # not in the deltas (litellm drops the deltas' logprobs).
            if not self._answer.parts or (self._answer.tokens() is None
                                          and whole.tokens() is not None):
                return whole
            self._answer.calls_tools = self._answer.calls_tools or whole.calls_tools
            self._answer.calls = whole.calls
        return self._answer


def record_response(
    service: GuardedService, tenant: TenantRuntime, judging: ResponseJudging,
    outcome: ChoiceOutcome, abstained: dict[int, str], body: Json, segment: str,
) -> DecisionRecord:
    """The record of the decision on a response, reported (the metrics, the store)."""
    name = judging.model
    calibrator = tenant.calibrator_for(name)
    record = DecisionRecord(
        judging.decision_id, tenant, name, [outcome], calibrator.method, calibrator.version,
        abstained, FORMAT.prompt_text(body) if abstained else None, signals=judging.signals,
        segment=segment, terms=judging.terms,
    )
    service.observer.decided(record)
    return record


def closing_events(terminal: Json | None, record: DecisionRecord) -> list[Json]:
    """The terminal event with the decision on its response (none: the upstream's stream
    ended without one, which :meth:`StreamedResponse.ended` has refused already)."""
    if terminal is None:
        return []
    response = terminal.get("response")
    if isinstance(response, dict):
        with_decision(response, record.as_json(), record.metadata())
    return [terminal]


@dataclass
class ResponsesStream:
    """One guarded Responses stream, opened (its first event arrived) and not yet streamed."""

    service: GuardedService
    tenant: TenantRuntime
    body: Json
    segment: str
    name: str
    """The public model name."""
    tracked: StreamedResponse
    first: Json
    upstream_events: AsyncIterator[Any]
    upstream: AsyncExitStack
    """Holds the upstream stream open; closing it closes the connection (and the run)."""
    judging: ResponseJudging
    """What deciding reads, before the signals that make calls have found anything."""
    run: SignalRun | None
    started: float

    def __post_init__(self) -> None:
        self.on_missing_confidence: MissingConfidence = self.tenant.on_missing_confidence

    async def events(self) -> AsyncIterator[Json]:
        yield self.first
        async for event in self.upstream_events:
            yield self.tracked.add(event)
        self.tracked.ended()

    def holds(self, event: Json) -> bool:
        return event["type"] in TERMINAL_EVENTS

    def restrict(self, event: Json) -> None:
        restrict_event(event, self.judging.wanted, self.judging.top_k)

    async def decide(self) -> DecisionRecord:
        answer = self.tracked.answer()
        judging = await self.judging.with_signals(self.run, answer)
        outcome, abstained = judging.decide(answer)
        return record_response(self.service, self.tenant, judging, outcome, abstained,
                               self.body, self.segment)

    def closing(self, held: list[Json], record: DecisionRecord) -> list[Json]:
        return closing_events(held[-1] if held else None, record)

    def replay(self, events: list[Json], record: DecisionRecord) -> list[Json]:
        """The buffered events again, or, when the answer is withheld, a new response whose
        answer is the abstention; the decision on the terminal event."""
        if self.tenant.mode == "enforce" and any(not o.answer for o in record.outcomes):
            final = (copy.deepcopy(self.tracked.final) if self.tracked.final
                     else placeholder_response(self.name))
            # A new response, numbered from 0, the decision on its terminal event.
            replaced = withheld_events(final, self.judging.withheld)
            return [*replaced[:-1], *closing_events(replaced[-1], record)]
        for event in events:
            self.restrict(event)
        terminal = [e for e in events if e["type"] in TERMINAL_EVENTS][-1:]
        rest = [e for e in events if e["type"] not in TERMINAL_EVENTS]
        return [*rest, *closing_events(terminal[0] if terminal else None, record)]

    def failed(self, exc: BaseException) -> None:
        self.service.failed(self.name, exc)

    async def close(self) -> None:
        await self.upstream.aclose()
