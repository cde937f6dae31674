"""Chat completions and legacy completions, guarded: forward, measure confidence, decide,
answer or abstain.

Framework-free: it takes parsed request bodies and returns a
:class:`~proxy.services.guarded.GuardedResponse` or a
:class:`~proxy.services.guarded.GuardedStream`; the routes turn those into HTTP. The streaming
contract:

- the first upstream chunk (or its failure) arrives before any header is sent, so early failures
  get a real status;
- ``enforce`` buffers the upstream stream, decides, then streams the answer or the abstention
  (:func:`proxy.services.streaming.buffered`), or decides on each choice's first tokens with a
  stream gate (:func:`proxy.services.chat_stream.gated`);
- ``annotate`` and ``shadow`` pass chunks through as they come, holding back the chunks that
  carry a ``finish_reason`` until the stream ends, so the decision can ride on the last one
  (:func:`proxy.services.streaming.annotated`);
- after the headers, a failure becomes one ``{"error": ...}`` event; every stream ends with
  ``[DONE]`` (the route adds it);
- a stream is bounded by its model's ``timeout_seconds`` (in total) and ``max_response_bytes``
  (see :mod:`proxy.upstream.openai_compatible`);
- a client that goes away cancels the upstream request (closing the stream closes its
  connection).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from calibrators.artifact import FittedCalibrator
from policies.segments import OTHER_SEGMENT
from proxy.errors import UpstreamError, UpstreamInvalidResponse
from proxy.judging.decision import ChoiceOutcome, DecisionRecord, new_decision_id, static_headers
from proxy.judging.offload import with_member
from proxy.judging.replies import ReplyJudging
from proxy.observability.first_token import StreamMode, timed_first_token
from proxy.runtime.state import RuntimeState, TenantRuntime
from proxy.services import guarded
from proxy.services.chat_stream import ChatStream, gated
from proxy.services.guarded import GuardedResponse, GuardedService, GuardedStream
from proxy.services.streaming import annotated, buffered, replayed
from proxy.signals.base import Answer, SignalRequest
from proxy.signals.registry import SignalPlan
from proxy.signals.runner import SignalOutcome, SignalRun
from proxy.upstream.failures import parse_reply
from proxy.upstream.openai_compatible import HTTPUpstream
from proxy.upstream.target import UpstreamReply, UpstreamTarget
from proxy.wire.events import StreamItem
from proxy.wire.formats import WireFormat

__all__ = ["GuardedCompletions"]

Json = dict[str, Any]


@dataclass
class _Fetched:
    """A non-streamed reply as it came: parsed here (with its choices), or raw for the
    offload's process."""

    reply: UpstreamReply | bytes
    choices: list[Json]
    signals: SignalOutcome | None
    upstream_seconds: float


class GuardedCompletions(GuardedService):
    """Chat and legacy completions behind the tenant's abstention policy."""

    async def complete(
        self,
        state: RuntimeState,
        tenant: TenantRuntime,
        fmt: type[WireFormat],
        body: Json,
        *,
        min_top_logprobs: int = 0,
        segment: str = OTHER_SEGMENT,
    ) -> GuardedResponse:
        """A non-streamed completion with its decision.

        ``min_top_logprobs`` asks for alternatives even when the calibrator reads none (the
        collector records every feature).
        """
        target = self.target(state, body)
        name = target.public_name
        calibrator = tenant.calibrator_for(name)
        plan = tenant.signal_plan_for(name)
        terms = self.terms(tenant, name)
        request = SignalRequest(name, fmt, body, plan.wanted)
        fetched = await self._fetch(
            state, target, fmt, plan, request,
            self.upstream_body(fmt, body, target, plan, min_top_logprobs))
        wanted, top_k = fmt.requested_logprobs(body)
        judging = ReplyJudging(
            fmt, name, plan, request, calibrator, terms,
            tenant.on_missing_confidence, tenant.mode == "enforce", tenant.abstention_message,
            wanted, top_k, fetched.signals, tenant.drop_in, fmt.asked(body),
        )
        outcomes, abstained, encoded = await self._judge(fetched, judging)
        record = DecisionRecord(
            new_decision_id(), tenant, name, outcomes, calibrator.method,
            calibrator.version, abstained, fmt.prompt_text(body) if abstained else None,
            signals=fetched.signals, segment=segment, terms=terms,
        )
        self.observer.decided(record)
        self.raise_for_policy(tenant, record, asked=judging.asked)
        if encoded is not None:
            content = with_member(encoded, "basguard", record.as_json())
            return GuardedResponse(content, record.headers(), record, fetched.upstream_seconds)
        assert isinstance(fetched.reply, UpstreamReply)
        response: Json = fetched.reply.document
        response["basguard"] = record.as_json()
        return GuardedResponse(response, record.headers(), record, fetched.upstream_seconds)

    async def _fetch(
        self, state: RuntimeState, target: UpstreamTarget, fmt: type[WireFormat],
        plan: SignalPlan, request: SignalRequest, upstream_body: Json,
    ) -> _Fetched:
        """The upstream's reply, and what the signals that make calls found on it. A large
        reply from an OpenAI-compatible upstream stays unparsed, for the offload's process."""
        name = target.public_name
        upstream = self._upstreams[target.provider]
        offload = self._offload
        run = self.start_signals(state, plan, request)
        started = time.perf_counter()
        try:
            try:
                reply: UpstreamReply | bytes
                if offload is not None and isinstance(upstream, HTTPUpstream):
                    # Read unparsed: a large reply is parsed in the offload's process.
                    raw = await upstream.complete_raw(target, fmt.endpoint, upstream_body)
                    reply = raw if offload.takes(len(raw)) else parse_reply(target, raw)
                else:
                    reply = await upstream.complete(target, fmt.endpoint, upstream_body)
                choices: list[Json] = []
                answers: list[Answer] | None = None
                # Only signals that make calls need the answers before the judgement.
                if isinstance(reply, bytes):
                    assert offload is not None
                    answers = None if run is None else await offload.answers(reply, fmt, name)
                else:
                    choices = fmt.check_reply(reply.document, name)
                    answers = None if run is None else [
                        Answer.from_choice(choice, fmt, i) for i, choice in enumerate(choices)]
            except UpstreamError as exc:
                self.failed(name, exc)
                raise
            upstream_seconds = time.perf_counter() - started
            # Follow-up calls (verbalized, judge) start now that the answers are complete.
            signals = None if run is None or answers is None else await run.finish(answers)
        finally:
            # A failed request (or a client that left) drops the samples still in flight.
            if run is not None:
                await run.cancel()
        return _Fetched(reply, choices, signals, upstream_seconds)

    async def _judge(
        self, fetched: _Fetched, judging: ReplyJudging
    ) -> tuple[list[ChoiceOutcome], dict[int, str], bytes | None]:
        """Each choice's decision and each abstained one's text, judged where it is cheapest:
        in the offload's process (a raw reply, which comes back encoded), in a worker thread (a
        large parsed one), or here."""
        if isinstance(fetched.reply, bytes):
            assert self._offload is not None
            judged = await self.counting_failure(
                judging.model, self._offload.judge(fetched.reply, judging))
            return judged.outcomes, judged.abstained, judged.encoded
        if fetched.reply.size > guarded.OFFLOAD_BYTES:
            outcomes, abstained = await asyncio.to_thread(judging.judge, fetched.choices)
        else:
            outcomes, abstained = judging.judge(fetched.choices)
        return outcomes, abstained, None

    async def stream(
        self, state: RuntimeState, tenant: TenantRuntime, fmt: type[WireFormat], body: Json,
        *, segment: str = OTHER_SEGMENT,
    ) -> GuardedStream:
        """A streamed completion. Returns once the first upstream chunk has arrived."""
        opened = await self._open_stream(state, tenant, fmt, body, segment)

        def timed(chunks: AsyncIterator[StreamItem], mode: StreamMode
                  ) -> AsyncIterator[StreamItem]:
            return timed_first_token(chunks, fmt, opened.started, lambda seconds: (
                self.observer.first_token(opened.name, mode, seconds)))

        upstream_seconds = time.perf_counter() - opened.started
        if tenant.mode != "enforce":
            return GuardedStream(
                timed(annotated(opened), "passthrough"),
                static_headers(tenant, opened.calibrator.version, opened.terms),
                upstream_seconds)
        if tenant.stream_gate is not None:
            return await gated(opened, tenant.stream_gate, lambda c: timed(c, "gated"))
        chunks, record = await buffered(opened)
        upstream_seconds = time.perf_counter() - opened.started
        self.raise_for_policy(tenant, record, asked=opened.asked)
        return GuardedStream(timed(replayed(opened.replay(chunks, record)), "buffered"),
                             record.headers(), upstream_seconds)

    async def _open_stream(
        self, state: RuntimeState, tenant: TenantRuntime, fmt: type[WireFormat], body: Json,
        segment: str,
    ) -> ChatStream:
        """The upstream stream, open with its first chunk in (or its failure raised)."""
        target = self.target(state, body)
        name = target.public_name
        calibrator: FittedCalibrator = tenant.calibrator_for(name)
        plan = tenant.signal_plan_for(name)
        gate = tenant.stream_gate if tenant.mode == "enforce" else None
        upstream_body = self.upstream_body(fmt, body, target, plan,
                                           gate.top_logprobs if gate is not None else 0)
        n = body.get("n") or 1  # validated (1 to MAX_CHOICES) by the route
        request = SignalRequest(name, fmt, body, plan.wanted)
        # The upstream stream outlives this call (the chunks are sent later), so its context is
        # held open on a stack that the stream closes; the signals' run (samples started with
        # the stream) is cancelled with it, if it has not finished by then.
        upstream = AsyncExitStack()
        run: SignalRun | None = self.start_signals(state, plan, request)
        if run is not None:
            upstream.push_async_callback(run.cancel)
        started = time.perf_counter()
        try:
            chunks = await upstream.enter_async_context(
                self._upstreams[target.provider].stream(target, fmt.endpoint, upstream_body))
            first = await anext(chunks, None)
            if first is None:  # only [DONE], or only lines that are not data
                raise UpstreamInvalidResponse(
                    f"the upstream for model {name!r} sent an empty stream")
            fmt.check_chunk(first, name, choices=n)
        except BaseException as exc:
            await upstream.aclose()
            self.failed(name, exc)
            raise
        return ChatStream(self, tenant, fmt, body, segment, name, calibrator, plan, request, run,
                          upstream, first, chunks, started, n, self.terms(tenant, name))
