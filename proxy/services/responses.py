"""The guarded Responses API: ``POST /v1/responses``, answered or withheld like chat completions.

The decision machinery is chat's (:class:`~proxy.services.completions.GuardedCompletions`: the
same model targets, signal plans, calibrators, :class:`~proxy.judging.decision.DecisionRecord`,
headers, observers and policy errors); what differs is the wire shape
(:mod:`proxy.wire.responses`). The streaming contract, as for chat, with the Responses API's
typed events:

- the first upstream event (or its failure) arrives before any header is sent;
- ``enforce`` buffers the upstream stream, decides, then replays it, or streams the abstention
  as a whole new response (nothing of the withheld answer: not its deltas, not its logprobs,
  not the output of the ``response.completed`` event's response);
- ``annotate`` and ``shadow`` pass events through as they come, holding back the terminal
  ``response.completed`` (or ``response.incomplete``) until the decision is made;
- the terminal event's ``response`` carries the decision: the ``basguard`` object, and its
  strings in ``metadata`` (``basguard_id``, ``basguard_decision``, ``basguard_confidence``);
  no event of basguard's own is sent (the openai npm SDK's stream helper throws on an event
  type it does not know), so every event is one of the Responses API's;
- after the headers, a failure becomes one ``error`` event; a Responses stream has no
  ``[DONE]`` line (OpenAI sends none; the stream ends when the connection's response ends);
- a client that goes away cancels the upstream request.

A response that calls a tool (a ``function_call`` output item) the model chose to call is an
action, not an answer: it is passed through unchanged and its decision is ``not_applicable``
(``tool_calls: pass``). A call the request forced (``tool_choice``) is structured output, as is
a JSON ``text.format``: decided, and withheld in the shape the request asked for
(:mod:`proxy.wire.withheld`).

Every path decides with one :class:`~proxy.judging.responses.ResponseJudging`: a stream, a small
non-streamed reply (here), and a large one from an OpenAI-compatible upstream, parsed, judged
and encoded in the reply offload's process as chat's are (:mod:`proxy.judging.offload`).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import replace
from typing import Any

from policies.segments import OTHER_SEGMENT
from proxy.errors import (
    ConfidenceUnavailable,
    GatewayError,
    UpstreamError,
    UpstreamRejected,
    error_payload,
    sanitize,
)
from proxy.judging.decision import (
    ChoiceOutcome,
    DecisionRecord,
    missing_confidence_error,
    new_decision_id,
    static_headers,
)
from proxy.judging.offload import with_member
from proxy.judging.responses import ResponseJudging, as_answer
from proxy.runtime.state import RuntimeState, TenantRuntime
from proxy.services.completions import (
    OFFLOAD_BYTES,
    GuardedCompletions,
    GuardedResponse,
    GuardedStream,
)
from proxy.signals.base import SignalRequest
from proxy.signals.registry import SignalPlan
from proxy.signals.runner import SignalRun
from proxy.upstream.failures import parse_reply
from proxy.upstream.openai_compatible import HTTPUpstream
from proxy.upstream.target import UpstreamReply, UpstreamTarget
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
from proxy.wire.withheld import WithheldShape, withheld_shape

__all__ = ["GuardedResponses"]

logger = logging.getLogger("basguard")

Json = dict[str, Any]
FORMAT = ResponsesFormat


def _withheld(tenant: TenantRuntime, body: Json) -> WithheldShape:
    """What a withheld answer to ``body`` becomes, as on chat (:mod:`proxy.wire.withheld`)."""
    return withheld_shape(tenant.drop_in, tenant.abstention_message, asked=FORMAT.asked(body))


class GuardedResponses(GuardedCompletions):
    """The Responses API behind the tenant's abstention policy."""

    @staticmethod
    def _judging(
        tenant: TenantRuntime, name: str, plan: SignalPlan, request: SignalRequest, body: Json
    ) -> ResponseJudging:
        """What deciding on this request's response reads (the same for every path), before
        the signals that make calls have found anything; with the id its decision will have."""
        wanted, top_k = FORMAT.requested_logprobs(body)
        return ResponseJudging(
            name, plan, request, tenant.calibrator_for(name), tenant.threshold,
            tenant.on_missing_confidence, tenant.mode == "enforce", _withheld(tenant, body),
            wanted, top_k, None, tenant.drop_in, FORMAT.asked(body), new_decision_id(),
        )

    def _record(
        self, tenant: TenantRuntime, judging: ResponseJudging, outcome: ChoiceOutcome,
        abstained: dict[int, str], body: Json, segment: str,
    ) -> DecisionRecord:
        """The record of ``outcome``, told to the observers (the metrics, the store)."""
        name = judging.model
        calibrator = tenant.calibrator_for(name)
        signals = judging.signals
        record = DecisionRecord(
            judging.decision_id, tenant, name, [outcome], calibrator.method, calibrator.version,
            abstained, FORMAT.prompt_text(body) if abstained else None, signals=signals,
            segment=segment,
        )
        self._observer.decided(record)
        return record

    def _withheld(self, tenant: TenantRuntime, record: DecisionRecord) -> bool:
        return tenant.mode == "enforce" and any(not o.answer for o in record.outcomes)

    @staticmethod
    async def _with_signals(
        judging: ResponseJudging, run: SignalRun | None, answer: ResponseAnswer | None
    ) -> ResponseJudging:
        """``judging`` with what the signals that make calls found on ``answer``, once their
        follow-up calls are done."""
        # What is passed undecided (a tool call, structured output under `pass`) needs no
        # follow-up calls: they would judge nothing.
        if run is None or answer is None or judging.not_decided(answer) is not None:
            return judging
        return replace(judging, signals=await run.finish([as_answer(answer)]))

    async def _fetch(
        self, target: UpstreamTarget, upstream_body: Json
    ) -> UpstreamReply | bytes:
        """The upstream's reply, parsed here, or unparsed when it goes to the offload's
        process (a large one from an OpenAI-compatible upstream)."""
        upstream = self._upstreams[target.provider]
        offload = self._offload
        if offload is None or not isinstance(upstream, HTTPUpstream):
            return await upstream.complete(target, FORMAT.endpoint, upstream_body)
        raw = await upstream.complete_raw(target, FORMAT.endpoint, upstream_body)
        return raw if offload.takes(len(raw)) else parse_reply(target, raw)

    async def respond(
        self, state: RuntimeState, tenant: TenantRuntime, body: Json,
        *, segment: str = OTHER_SEGMENT,
    ) -> GuardedResponse:
        """A non-streamed response with its decision.

        From an OpenAI-compatible upstream, a reply above ``offload_reply_bytes`` is parsed,
        judged and encoded in the offload's process (:mod:`proxy.judging.offload`); any other is
        handled here, with the same :class:`ResponseJudging`.
        """
        target = self._target(state, body)
        name = target.public_name
        plan = tenant.signal_plan_for(name)
        upstream_body = self._upstream_body(FORMAT, body, target, plan)
        offload = self._offload
        request = SignalRequest(name, FORMAT, body, plan.wanted)
        judging = self._judging(tenant, name, plan, request, body)
        run = self._start_signals(state, plan, request)
        started = time.perf_counter()
        document: Json = {}
        answer: ResponseAnswer | None = None
        large = False
        try:
            try:
                reply = await self._fetch(target, upstream_body)
                if isinstance(reply, bytes):
                    assert offload is not None
                    # Only signals that make calls need the answer before the judgement.
                    if run is not None:
                        answer = await offload.response_answer(reply, name)
                else:
                    document = FORMAT.check_response(reply.document, name)
                    # A large reply is read in a worker thread, as chat's are judged.
                    large = reply.size > OFFLOAD_BYTES
                    answer = (await asyncio.to_thread(answer_of, document) if large
                              else answer_of(document))
            except UpstreamError as exc:
                self._failed(name, exc)
                explained = _explained(exc, name)
                if explained is not exc:
                    raise explained from exc
                raise
            upstream_seconds = time.perf_counter() - started
            judging = await self._with_signals(judging, run, answer)
        finally:
            if run is not None:
                await run.cancel()
        if isinstance(reply, bytes):
            assert offload is not None
            judged = await self._counting_failure(name, offload.judge_response(reply, judging))
            outcome, abstained = judged.outcome, judged.abstained
        else:
            outcome, abstained = (await asyncio.to_thread(judging.judge, document, answer)
                                  if large else judging.judge(document, answer))
        record = self._record(tenant, judging, outcome, abstained, body, segment)
        self._raise_for_policy(tenant, record, asked=judging.asked)
        if isinstance(reply, bytes):
            content = with_member(judged.encoded, "basguard", record.as_json())
            return GuardedResponse(content, record.headers(), record, upstream_seconds)
        document["basguard"] = record.as_json()
        return GuardedResponse(document, record.headers(), record, upstream_seconds)

    async def respond_stream(
        self, state: RuntimeState, tenant: TenantRuntime, body: Json,
        *, segment: str = OTHER_SEGMENT,
    ) -> GuardedStream:
        """A streamed response. Returns once the first upstream event has arrived."""
        target = self._target(state, body)
        name = target.public_name
        calibrator = tenant.calibrator_for(name)
        plan = tenant.signal_plan_for(name)
        upstream_body = self._upstream_body(FORMAT, body, target, plan)
        wanted, top_k = FORMAT.requested_logprobs(body)
        request = SignalRequest(name, FORMAT, body, plan.wanted)
        upstream_stream = AsyncExitStack()
        run = self._start_signals(state, plan, request)
        if run is not None:
            upstream_stream.push_async_callback(run.cancel)
        tracked = _StreamedResponse(name)
        started = time.perf_counter()
        try:
            events = await upstream_stream.enter_async_context(
                self._upstreams[target.provider].stream(target, FORMAT.endpoint, upstream_body))
            first = tracked.add(await anext(events, None))
        except BaseException as exc:
            await upstream_stream.aclose()
            self._failed(name, exc)
            explained = _explained(exc, name)
            if explained is not exc:
                raise explained from exc
            raise
        upstream_seconds = time.perf_counter() - started

        async def upstream_events() -> AsyncIterator[Json]:
            yield first
            async for event in events:
                yield tracked.add(event)
            tracked.ended()

        async def decide() -> DecisionRecord:
            answer = tracked.answer()
            judging = await self._with_signals(
                self._judging(tenant, name, plan, request, body), run, answer)
            outcome, abstained = judging.decide(answer)
            return self._record(tenant, judging, outcome, abstained, body, segment)

        async def passthrough() -> AsyncIterator[Json]:
            held: Json | None = None
            try:
                async for event in upstream_events():
                    restrict_event(event, wanted, top_k)
                    if event["type"] in TERMINAL_EVENTS:
                        held = event  # the decision rides on it
                    else:
                        yield event
                record = await decide()
                reason = missing_confidence_error(record.outcomes, tenant.on_missing_confidence)
                if reason is not None:
                    raise ConfidenceUnavailable(reason)
                for event in _closing(held, record):
                    yield event
            except GatewayError as exc:
                self._failed(name, exc)
                if held is not None:
                    yield held
                yield error_payload(exc)
            finally:
                await upstream_stream.aclose()

        if tenant.mode != "enforce":
            return GuardedStream(
                passthrough(), static_headers(tenant, calibrator.version), upstream_seconds)

        # enforce: the whole answer is needed before anything can be sent.
        try:
            buffered = [event async for event in upstream_events()]
            record = await decide()
        except UpstreamError as exc:
            self._failed(name, exc)
            raise
        finally:
            await upstream_stream.aclose()
        upstream_seconds = time.perf_counter() - started
        self._raise_for_policy(tenant, record, asked=FORMAT.asked(body))

        def replay() -> list[Json]:
            if self._withheld(tenant, record):
                final = copy.deepcopy(tracked.final) if tracked.final else placeholder_response(
                    name)
                # A new response, numbered from 0, the decision on its terminal event.
                events = withheld_events(final, _withheld(tenant, body))
                return [*events[:-1], *_closing(events[-1], record)]
            for event in buffered:
                restrict_event(event, wanted, top_k)
            terminal = [e for e in buffered if e["type"] in TERMINAL_EVENTS][-1:]
            rest = [e for e in buffered if e["type"] not in TERMINAL_EVENTS]
            return [*rest, *_closing(terminal[0] if terminal else None, record)]

        async def replayed() -> AsyncIterator[Json]:
            for event in replay():
                yield event

        return GuardedStream(replayed(), record.headers(), upstream_seconds)


def _explained(exc: BaseException, model: str) -> BaseException:
    """``exc``, or for an upstream's 404 a message that says what it most likely means."""
    if isinstance(exc, UpstreamRejected) and exc.status_code == 404:
        return UpstreamRejected(
            f"the upstream for model {model!r} answered HTTP 404 on its Responses API endpoint: "
            "it may serve only chat completions (llama.cpp's server does); use "
            "/v1/chat/completions for this model", status_code=404)
    return exc


def _closing(terminal: Json | None, record: DecisionRecord) -> list[Json]:
    """The terminal event with the decision on its response (none: the upstream's stream
    ended without one, which :meth:`_StreamedResponse.ended` has refused already)."""
    if terminal is None:
        return []
    response = terminal.get("response")
    if isinstance(response, dict):
        with_decision(response, record.as_json(), record.metadata())
    return [terminal]


class _StreamedResponse:
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
