"""The guarded Responses API: ``POST /v1/responses``, answered or withheld like chat completions.

The decision machinery is chat's (:class:`~proxy.services.guarded.GuardedService`: the same model
targets, signal plans, calibrators, :class:`~proxy.judging.decision.DecisionRecord`, headers,
observers and policy errors) and so are the ways of streaming (:mod:`proxy.services.streaming`);
what differs is the wire shape (:mod:`proxy.wire.responses`, the stream:
:mod:`proxy.services.responses_stream`). The streaming contract, as for chat, with the Responses
API's typed events:

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
import time
from contextlib import AsyncExitStack
from typing import Any

from policies.segments import OTHER_SEGMENT
from proxy.errors import UpstreamError, UpstreamRejected
from proxy.judging.decision import DecisionTerms, new_decision_id, static_headers
from proxy.judging.offload import with_member
from proxy.judging.responses import ResponseJudging
from proxy.runtime.state import RuntimeState, TenantRuntime
from proxy.services import guarded
from proxy.services.guarded import GuardedResponse, GuardedService, GuardedStream
from proxy.services.responses_stream import ResponsesStream, StreamedResponse, record_response
from proxy.services.streaming import annotated, buffered, replayed
from proxy.signals.base import SignalRequest
from proxy.signals.registry import SignalPlan
from proxy.signals.runner import SignalRun
from proxy.upstream.failures import parse_reply
from proxy.upstream.openai_compatible import HTTPUpstream
from proxy.upstream.target import UpstreamReply, UpstreamTarget
from proxy.wire.responses import ResponseAnswer, ResponsesFormat, answer_of
from proxy.wire.withheld import withheld_shape

__all__ = ["GuardedResponses"]

Json = dict[str, Any]
FORMAT = ResponsesFormat


class GuardedResponses(GuardedService):
    """The Responses API behind the tenant's abstention policy."""

    @staticmethod
    def _judging(
        tenant: TenantRuntime, name: str, plan: SignalPlan, request: SignalRequest, body: Json,
        *, terms: DecisionTerms,
    ) -> ResponseJudging:
        """What deciding on this request's response reads (the same for every path), before
        the signals that make calls have found anything; with the id its decision will have."""
        wanted, top_k = FORMAT.requested_logprobs(body)
        asked = FORMAT.asked(body)
        return ResponseJudging(
            name, plan, request, tenant.calibrator_for(name), terms,
            tenant.on_missing_confidence, tenant.mode == "enforce",
            withheld_shape(tenant.drop_in, tenant.abstention_message, asked=asked),
            wanted, top_k, None, tenant.drop_in, asked, new_decision_id(),
        )

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
        judged and encoded in the offload's process (:mod:`proxy.judging.offload`); any other
        is handled here, with the same :class:`ResponseJudging`.
        """
        target = self.target(state, body)
        name = target.public_name
        plan = tenant.signal_plan_for(name)
        request = SignalRequest(name, FORMAT, body, plan.wanted)
        judging = self._judging(tenant, name, plan, request, body,
                                terms=self.terms(tenant, name))
        run = self.start_signals(state, plan, request)
        started = time.perf_counter()
        try:
            reply, document, answer = await self._read_reply(
                target, self.upstream_body(FORMAT, body, target, plan), run)
            upstream_seconds = time.perf_counter() - started
            judging = await judging.with_signals(run, answer)
        finally:
            if run is not None:
                await run.cancel()
        if isinstance(reply, bytes):
            assert self._offload is not None
            judged = await self.counting_failure(name, self._offload.judge_response(reply,
                                                                                     judging))
            outcome, abstained = judged.outcome, judged.abstained
        else:
            # A large reply is judged in a worker thread, as chat's are.
            outcome, abstained = (await asyncio.to_thread(judging.judge, document, answer)
                                  if reply.size > guarded.OFFLOAD_BYTES
                                  else judging.judge(document, answer))
        record = record_response(self, tenant, judging, outcome, abstained, body, segment)
        self.raise_for_policy(tenant, record, asked=judging.asked)
        if isinstance(reply, bytes):
            content = with_member(judged.encoded, "basguard", record.as_json())
            return GuardedResponse(content, record.headers(), record, upstream_seconds)
        document["basguard"] = record.as_json()
        return GuardedResponse(document, record.headers(), record, upstream_seconds)

    async def _read_reply(
        self, target: UpstreamTarget, upstream_body: Json, run: SignalRun | None
    ) -> tuple[UpstreamReply | bytes, Json, ResponseAnswer | None]:
        """The reply, its checked response object (none for a raw one) and its answer (read
        for a raw one only when the signals that make calls need it)."""
        name = target.public_name
        try:
            reply = await self._fetch(target, upstream_body)
            if isinstance(reply, bytes):
                assert self._offload is not None
                answer = (None if run is None
                          else await self._offload.response_answer(reply, name))
                return reply, {}, answer
            document = FORMAT.check_response(reply.document, name)
            # A large reply is read in a worker thread, as chat's are judged.
            large = reply.size > guarded.OFFLOAD_BYTES
            answer = await asyncio.to_thread(answer_of, document) if large else answer_of(document)
            return reply, document, answer
        except UpstreamError as exc:
            self.failed(name, exc)
            explained = _explained(exc, name)
            if explained is not exc:
                raise explained from exc
            raise

    async def respond_stream(
        self, state: RuntimeState, tenant: TenantRuntime, body: Json,
        *, segment: str = OTHER_SEGMENT,
    ) -> GuardedStream:
        """A streamed response. Returns once the first upstream event has arrived."""
        opened = await self._open_stream(state, tenant, body, segment)
        if tenant.mode != "enforce":
            return GuardedStream(
                annotated(opened),
                static_headers(tenant, opened.judging.calibrator.version,
                               opened.judging.terms),
                time.perf_counter() - opened.started)
        events, record = await buffered(opened)
        upstream_seconds = time.perf_counter() - opened.started
        self.raise_for_policy(tenant, record, asked=FORMAT.asked(body))
        return GuardedStream(replayed(opened.replay(events, record)), record.headers(),
                             upstream_seconds)

    async def _open_stream(
        self, state: RuntimeState, tenant: TenantRuntime, body: Json, segment: str
    ) -> ResponsesStream:
        """The upstream stream, open with its first event in (or its failure raised)."""
        target = self.target(state, body)
        name = target.public_name
        plan = tenant.signal_plan_for(name)
        upstream_body = self.upstream_body(FORMAT, body, target, plan)
        request = SignalRequest(name, FORMAT, body, plan.wanted)
        upstream = AsyncExitStack()
        run = self.start_signals(state, plan, request)
        if run is not None:
            upstream.push_async_callback(run.cancel)
        tracked = StreamedResponse(name)
        started = time.perf_counter()
        try:
            events = await upstream.enter_async_context(
                self._upstreams[target.provider].stream(target, FORMAT.endpoint, upstream_body))
            first = tracked.add(await anext(events, None))
        except BaseException as exc:
            await upstream.aclose()
            self.failed(name, exc)
            explained = _explained(exc, name)
            if explained is not exc:
                raise explained from exc
            raise
        judging = self._judging(tenant, name, plan, request, body,
                                terms=self.terms(tenant, name))
        return ResponsesStream(self, tenant, body, segment, name, tracked, first, events,
                               upstream, judging, run, started)


def _explained(exc: BaseException, model: str) -> BaseException:
    """``exc``, or for an upstream's 404 a message that says what it most likely means."""
    if isinstance(exc, UpstreamRejected) and exc.status_code == 404:
        return UpstreamRejected(
            f"the upstream for model {model!r} answered HTTP 404 on its Responses API endpoint: "
            "it may serve only chat completions (llama.cpp's server does); use "
            "/v1/chat/completions for this model", status_code=404)
    return exc
