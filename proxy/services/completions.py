"""The guarded completion service: forward, measure confidence, decide, answer or abstain.

Framework-free: it takes parsed request bodies and returns a :class:`GuardedResponse` or a
:class:`GuardedStream`; the routes turn those into HTTP. The streaming contract:

- the first upstream chunk (or its failure) arrives before any header is sent, so early failures
  get a real status;
- ``enforce`` buffers the upstream stream, decides, then streams the answer or the abstention;
- ``annotate`` and ``shadow`` pass chunks through as they come, holding back the chunks that
  carry a ``finish_reason`` until the stream ends, so the decision can ride on the last one;
- the ``basguard`` decision rides on the last chunk that carries choices, so the common
  ``chunk.choices[0]`` loop never meets an empty ``choices``; only a client that asked for
  ``stream_options.include_usage`` gets the final ``choices: []`` chunk, with ``usage`` and the
  decision (as OpenAI sends it); an upstream usage chunk is never sent unasked;
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
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

import orjson

from policies.segments import OTHER_SEGMENT
from proxy.errors import (
    AnswerWithheld,
    ConfidenceUnavailable,
    GatewayError,
    ModelNotFound,
    UpstreamError,
    UpstreamInvalidResponse,
    error_payload,
)
from proxy.judging.decision import (
    DecisionRecord,
    missing_confidence_error,
    new_decision_id,
    not_applicable,
    signals_json,
    static_headers,
)
from proxy.judging.offload import with_member
from proxy.judging.replies import (
    ReplyJudging,
    decide_or_pass,
    features_now,
    missing_feature_reason,
    review_text,
)
from proxy.judging.stream_gate import (
    PrefixBuffer,
    decide_prefixes,
    gated_chunks,
    read_prefix,
    tokens_saved,
)
from proxy.observability.first_token import StreamMode, timed_first_token
from proxy.runtime.state import RuntimeState, TenantRuntime
from proxy.signals.base import Answer, SignalRequest
from proxy.signals.caller import UpstreamModelCaller
from proxy.signals.logprobs import TOPK_FEATURES
from proxy.signals.registry import SignalPlan
from proxy.signals.runner import SignalRun
from proxy.upstream.failures import parse_reply
from proxy.upstream.openai_compatible import HTTPUpstream
from proxy.upstream.target import Upstream, UpstreamReply, UpstreamTarget
from proxy.wire.formats import WireFormat, answer_text, merged_calls
from proxy.wire.withheld import Asked, not_decided_reason, withheld_as_error, withheld_shape

if TYPE_CHECKING:
    from proxy.judging.offload import ReplyOffload

__all__ = [
    "DecisionObserver",
    "DecisionRecord",
    "GuardedCompletions",
    "GuardedResponse",
    "GuardedStream",
    "StreamObserver",
    "signals_json",
    "static_headers",
]

Json = dict[str, Any]
T = TypeVar("T")
TOP_LOGPROBS_FOR_CALIBRATORS = 5
OFFLOAD_BYTES = 1_048_576
"""Replies larger than this are judged (features, decisions, edits) in a worker thread, so the
Python loops over their tokens do not hold up other requests' event loop turns (unless the
offload's process takes them, parsing and encoding included: :mod:`proxy.judging.offload`)."""


class GuardedResponse:
    """A non-streamed answer; its body is a document, or bytes already encoded (a large reply
    judged in another process, :mod:`proxy.judging.offload`), each made from the other on demand."""

    __slots__ = ("_body", "headers", "record", "upstream_seconds")

    def __init__(self, body: Json | bytes, headers: dict[str, str], record: DecisionRecord,
                 upstream_seconds: float) -> None:
        self._body = body
        self.headers = headers
        self.record = record
        self.upstream_seconds = upstream_seconds

    @property
    def body(self) -> Json:
        body = self._body
        if isinstance(body, bytes):
            body = self._body = orjson.loads(body)
        return body

    def content(self) -> bytes:
        """The body as sent: encoded here unless it came encoded."""
        return self._body if isinstance(self._body, bytes) else orjson.dumps(self._body)


@dataclass(frozen=True)
class GuardedStream:
    """Chunks to send as server-sent events."""

    chunks: AsyncIterator[Json]
    headers: dict[str, str]
    upstream_seconds: float
    """Until the first chunk (annotate, shadow) or the whole buffered answer (enforce)."""


class DecisionObserver(Protocol):
    """Told of every decision and upstream failure: the metrics and the decision store.

    Called on the request path, so an observer must return at once.
    """

    def decided(self, record: DecisionRecord) -> None: ...

    def upstream_failed(self, model: str, kind: str) -> None: ...


@runtime_checkable
class StreamObserver(Protocol):
    """Optionally also told how streams went (the metrics): time to first token per stream
    mode, and the tokens a stream gate saved by cancelling an upstream stream."""

    def first_token(self, model: str, mode: StreamMode, seconds: float) -> None: ...

    def stream_cancelled(self, model: str, tokens_saved: int) -> None: ...


class _Observers:
    """Fans each report out to every observer."""

    def __init__(self, observers: Sequence[DecisionObserver]) -> None:
        self._observers = tuple(observers)
        self._stream_observers = tuple(o for o in observers if isinstance(o, StreamObserver))

    def first_token(self, model: str, mode: StreamMode, seconds: float) -> None:
        for observer in self._stream_observers:
            observer.first_token(model, mode, seconds)

    def stream_cancelled(self, model: str, tokens_saved: int) -> None:
        for observer in self._stream_observers:
            observer.stream_cancelled(model, tokens_saved)

    def decided(self, record: DecisionRecord) -> None:
        for observer in self._observers:
            observer.decided(record)

    def upstream_failed(self, model: str, kind: str) -> None:
        for observer in self._observers:
            observer.upstream_failed(model, kind)


class GuardedCompletions:
    """Chat and legacy completions behind the tenant's abstention policy."""

    def __init__(
        self, upstreams: Mapping[str, Upstream], observers: Sequence[DecisionObserver] = (),
        offload: ReplyOffload | None = None,
    ) -> None:
        self._upstreams = upstreams
        self._observer = _Observers(observers)
        self._offload = offload
        """Where large non-streamed replies from an HTTP upstream are parsed, judged and
        encoded (None: parsed here, judged in a thread)."""

    def _target(self, state: RuntimeState, body: Json) -> UpstreamTarget:
        name = body.get("model")
        target = state.models.get(name) if isinstance(name, str) else None
        if target is None:
            raise ModelNotFound(
                f"the model {name!r} does not exist; available: {', '.join(sorted(state.models))}",
                param="model",
            )
        return target

    def _upstream_body(
        self, fmt: type[WireFormat], body: Json, target: UpstreamTarget, plan: SignalPlan,
        min_top_logprobs: int = 0,
    ) -> Json:
        """The main request with what the signals need of it (logprobs only if one reads them,
        so a provider without logprobs is never asked for them)."""
        upstream_body = plan.upstream_body(body, fmt)
        if min_top_logprobs or any(signal.name == "logprobs" for signal in plan.to_run):
            _, client_top_k = fmt.requested_logprobs(body)
            needs_top_k = bool(TOPK_FEATURES & plan.wanted)
            wanted_top_k = (max(target.top_logprobs, TOP_LOGPROBS_FOR_CALIBRATORS)
                            if needs_top_k else 0)
            upstream_body = fmt.ask_for_logprobs(
                upstream_body, max(client_top_k, wanted_top_k, min_top_logprobs))
        return upstream_body

    def _start_signals(
        self, state: RuntimeState, plan: SignalPlan, request: SignalRequest
    ) -> SignalRun | None:
        """The run of the signals that make calls, started now (consistency's samples go out
        with the main request); None when none does. Immediate signals (logprobs) are never
        part of it: :func:`_immediate` computes them without a task, in the worker thread for
        a large reply."""
        calling = [signal for signal in plan.to_run if not signal.immediate]
        if not calling:
            return None
        return SignalRun.start(
            calling, request, UpstreamModelCaller(self._upstreams, state.models))

    def _failed(self, model: str, exc: BaseException) -> None:
        if isinstance(exc, UpstreamError):
            self._observer.upstream_failed(model, exc.code or "upstream_error")

    async def _counting_failure(self, model: str, work: Awaitable[T]) -> T:
        """``work`` (a reply judged in the offload's process), with an upstream's malformed
        reply counted as the upstream's failure, as when it is parsed here."""
        try:
            return await work
        except UpstreamError as exc:
            self._failed(model, exc)
            raise

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
        target = self._target(state, body)
        name = target.public_name
        calibrator = tenant.calibrator_for(name)
        plan = tenant.signal_plan_for(name)
        upstream_body = self._upstream_body(fmt, body, target, plan, min_top_logprobs)
        upstream = self._upstreams[target.provider]
        request = SignalRequest(name, fmt, body, plan.wanted)
        offload = self._offload
        run = self._start_signals(state, plan, request)
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
                # Only signals that make calls need the answers before the judgement.
                if isinstance(reply, bytes):
                    assert offload is not None
                    answers = None if run is None else await offload.answers(reply, fmt, name)
                else:
                    choices = fmt.check_reply(reply.document, name)
                    answers = None if run is None else [
                        Answer.from_choice(choice, fmt, i) for i, choice in enumerate(choices)]
            except UpstreamError as exc:
                self._failed(name, exc)
                raise
            upstream_seconds = time.perf_counter() - started
            # Follow-up calls (verbalized, judge) start now that the answers are complete.
            signals = None if run is None or answers is None else await run.finish(answers)
        finally:
            # A failed request (or a client that left) drops the samples still in flight.
            if run is not None:
                await run.cancel()
        wanted, top_k = fmt.requested_logprobs(body)
        judging = ReplyJudging(
            fmt, name, plan, request, calibrator, tenant.threshold,
            tenant.on_missing_confidence, tenant.mode == "enforce", tenant.abstention_message,
            wanted, top_k, signals, tenant.drop_in, fmt.asked(body),
        )
        if isinstance(reply, bytes):
            assert offload is not None
            judged = await self._counting_failure(name, offload.judge(reply, judging))
            outcomes, abstained = judged.outcomes, judged.abstained
        else:
            outcomes, abstained = (
                await asyncio.to_thread(judging.judge, choices) if reply.size > OFFLOAD_BYTES
                else judging.judge(choices)
            )
        record = DecisionRecord(
            new_decision_id(), tenant, name, outcomes, calibrator.method,
            calibrator.version, abstained, fmt.prompt_text(body) if abstained else None,
            signals=signals, segment=segment,
        )
        self._observer.decided(record)
        self._raise_for_policy(tenant, record, asked=judging.asked)
        if isinstance(reply, bytes):
            content = with_member(judged.encoded, "basguard", record.as_json())
            return GuardedResponse(content, record.headers(), record, upstream_seconds)
        response: Json = reply.document
        response["basguard"] = record.as_json()
        return GuardedResponse(response, record.headers(), record, upstream_seconds)

    @staticmethod
    def _raise_for_policy(
        tenant: TenantRuntime, record: DecisionRecord, *, asked: Asked = "text"
    ) -> None:
        """The errors a tenant's policy makes of a recorded decision (before any header)."""
        reason = missing_confidence_error(record.outcomes, tenant.on_missing_confidence)
        if reason is not None:
            raise ConfidenceUnavailable(reason, headers=record.headers())
        as_error = tenant.abstain_action == "error" or withheld_as_error(tenant.drop_in, asked)
        if tenant.mode == "enforce" and as_error and record.outcomes \
                and not any(o.answer for o in record.outcomes):
            raise AnswerWithheld(tenant.abstention_message, headers=record.headers())

    async def stream(
        self, state: RuntimeState, tenant: TenantRuntime, fmt: type[WireFormat], body: Json,
        *, segment: str = OTHER_SEGMENT,
    ) -> GuardedStream:
        """A streamed completion. Returns once the first upstream chunk has arrived."""
        target = self._target(state, body)
        name = target.public_name
        calibrator = tenant.calibrator_for(name)
        plan = tenant.signal_plan_for(name)
        gate = tenant.stream_gate if tenant.mode == "enforce" else None
        upstream_body = self._upstream_body(fmt, body, target, plan,
                                            gate.top_logprobs if gate is not None else 0)
        upstream = self._upstreams[target.provider]
        wanted, top_k = fmt.requested_logprobs(body)
        include_usage = _wants_usage(body)
        asked = fmt.asked(body)
        n = body.get("n") or 1  # validated (1 to MAX_CHOICES) by the route
        request = SignalRequest(name, fmt, body, plan.wanted)
        # The upstream stream outlives this call (the chunks are sent later), so its context is
        # held open on a stack that the chunk generators close; the signals' run (samples
        # started with the stream) is cancelled with it, if it has not finished by then.
        upstream_stream = AsyncExitStack()
        run = self._start_signals(state, plan, request)
        if run is not None:
            upstream_stream.push_async_callback(run.cancel)
        started = time.perf_counter()
        try:
            chunks = await upstream_stream.enter_async_context(
                upstream.stream(target, fmt.endpoint, upstream_body)
            )
            first = await anext(chunks, None)
            if first is None:  # only [DONE], or only lines that are not data
                raise UpstreamInvalidResponse(
                    f"the upstream for model {name!r} sent an empty stream")
            fmt.check_chunk(first, name, choices=n)
        except BaseException as exc:
            await upstream_stream.aclose()
            self._failed(name, exc)
            raise
        upstream_seconds = time.perf_counter() - started

        answers = _AnswerAccumulator(fmt)

        async def decide() -> DecisionRecord:
            if not answers.indices():
                raise UpstreamInvalidResponse(
                    f"the upstream for model {name!r} sent a stream without any choice")
            given = [Answer(i, answers.answer_text(i), answers.tokens(i))
                     for i in answers.indices()]
            # Follow-up calls (verbalized, judge) start now that the answers are complete.
            signals = None if run is None else await run.finish(given)
            found = features_now(plan, request, signals, given)
            outcomes = [
                decide_or_pass(tenant.threshold, tenant.on_missing_confidence, answer.index,
                        found.features[pos],
                        missing_feature_reason(found, pos, calibrator.feature_names), calibrator,
                        not_decided_reason(tenant.drop_in,
                                           calls_tools=answers.calls_tools(answer.index),
                                           asked=asked))
                for pos, answer in enumerate(given)
            ]
            abstained = {o.index: answers.review_text(o.index) for o in outcomes if not o.answer}
            record = DecisionRecord(
                new_decision_id(), tenant, name, outcomes, calibrator.method,
                calibrator.version, abstained, fmt.prompt_text(body) if abstained else None,
                signals=signals, segment=segment,
            )
            self._observer.decided(record)
            return record

        def closing(base: Json, held: list[Json], record: DecisionRecord) -> list[Json]:
            """The last chunks, the decision riding on the last (see the module docstring)."""
            decision = record.as_json()
            if not held:
                held = [{**base, "choices": [fmt.empty_choice(answers.indices()[-1])]}]
            # The decision rides on the chunk with the finish_reason, which every client reads
            # (litellm, LangChain and the SDK's stream helper drop a `choices: []` chunk) ...
            closed = [*held[:-1], {**held[-1], "basguard": decision}]
            if include_usage:
                # ... and on the usage chunk, as OpenAI ends a stream that asked for usage.
                closed.append({**base, "choices": [], "usage": answers.usage,
                               "basguard": decision})
            return closed

        async def upstream_chunks() -> AsyncGenerator[Json, None]:
            yield first
            async for chunk in chunks:
                fmt.check_chunk(chunk, name, choices=n)
                yield chunk

        async def passthrough() -> AsyncIterator[Json]:
            base: Json = {}
            held: list[Json] = []
            try:
                async for chunk in upstream_chunks():
                    answers.add(chunk)
                    base = base or _chunk_base(chunk, fmt)
                    choices = chunk["choices"]
                    if not choices:
                        continue  # usage: sent at the end, and only if asked for
                    for choice in choices:
                        fmt.restrict_logprobs(choice, wanted, top_k)
                    if any(choice.get("finish_reason") for choice in choices):
                        held.append(chunk)  # the decision may have to ride on it
                    else:
                        yield chunk
                record = await decide()
                reason = missing_confidence_error(record.outcomes, tenant.on_missing_confidence)
                if reason is not None:
                    raise ConfidenceUnavailable(reason)
                for chunk in closing(base, held, record):
                    yield chunk
            except GatewayError as exc:
                self._failed(name, exc)
                for chunk in held:
                    yield chunk
                yield error_payload(exc)
            finally:
                await upstream_stream.aclose()

        def timed(chunks: AsyncIterator[Json], mode: StreamMode) -> AsyncIterator[Json]:
            return timed_first_token(chunks, fmt, started, lambda seconds: (
                self._observer.first_token(name, mode, seconds)))

        if tenant.mode != "enforce":
            return GuardedStream(
                timed(passthrough(), "passthrough"), static_headers(tenant, calibrator.version),
                upstream_seconds,
            )

        if gate is not None:
            # Decide on each choice's first K tokens, then stream or stop
            # (proxy.judging.stream_gate).
            source = upstream_chunks()

            async def tracked() -> AsyncGenerator[Json, None]:
                async for chunk in source:
                    answers.add(chunk)
                    yield chunk

            rest = tracked()

            async def close_upstream() -> None:
                await rest.aclose()
                await source.aclose()
                await upstream_stream.aclose()

            prefix = PrefixBuffer(fmt, gate.decide_after_tokens, _choices_asked(body))
            try:
                await read_prefix(prefix, rest)
                if not prefix.indices():
                    raise UpstreamInvalidResponse(
                        f"the upstream for model {name!r} sent a stream without any choice")
                outcomes = [
                    outcome if (reason := not_decided_reason(
                        tenant.drop_in, calls_tools=prefix.calls_tools(outcome.index),
                        asked=asked)) is None
                    else not_applicable(outcome.index, reason)
                    for outcome in decide_prefixes(
                        prefix, gate, threshold=tenant.threshold,
                        on_missing_confidence=tenant.on_missing_confidence)
                ]
                abstained = {o.index: prefix.text(o.index) for o in outcomes if not o.answer}
                record = DecisionRecord(
                    new_decision_id(), tenant, name, outcomes, gate.calibrator.method,
                    gate.calibrator.version, abstained,
                    fmt.prompt_text(body) if abstained else None,
                    segment=segment, decided_after_tokens=gate.decide_after_tokens,
                    prefix_tokens=tuple(prefix.received(o.index) for o in outcomes),
                )
                self._observer.decided(record)
                if not any(o.answer for o in outcomes):
                    # Nothing will be sent of it: stop the generation now.
                    saved = tokens_saved(body, prefix)
                    await close_upstream()
                    self._observer.stream_cancelled(name, saved)
                self._raise_for_policy(tenant, record, asked=asked)
            except BaseException as exc:
                await close_upstream()
                self._failed(name, exc)
                raise
            gate_base = _chunk_base(first, fmt)
            chunks_out = gated_chunks(
                buffer=prefix, rest=rest, outcomes=outcomes, fmt=fmt, base=gate_base,
                withheld=withheld_shape(tenant.drop_in, tenant.abstention_message, asked=asked),
                restrict=lambda choice: fmt.restrict_logprobs(choice, wanted, top_k),
                closing=lambda held: closing(gate_base, held, record),
                failed=lambda exc: self._failed(name, exc), close=close_upstream)
            return GuardedStream(timed(chunks_out, "gated"), record.headers(),
                                 time.perf_counter() - started)

        # enforce: the whole answer is needed before anything can be sent. The chunks are
        # kept as they came, so an answered choice is replayed with every field it had.
        buffered_chunks: list[Json] = []
        try:
            base: Json = {}
            async for chunk in upstream_chunks():
                answers.add(chunk)
                base = base or _chunk_base(chunk, fmt)
                if chunk["choices"]:
                    buffered_chunks.append(chunk)
            record = await decide()
        except UpstreamError as exc:
            self._failed(name, exc)
            raise
        finally:
            await upstream_stream.aclose()
        upstream_seconds = time.perf_counter() - started
        self._raise_for_policy(tenant, record, asked=asked)
        shape = withheld_shape(tenant.drop_in, tenant.abstention_message, asked=asked)

        def replay() -> list[Json]:
            """The upstream's chunks again: answered choices as they came (logprobs trimmed to
            what the client asked for), withheld ones without their answer, which the
            abstention replaces where their finish_reason was."""
            withheld = {o.index for o in record.outcomes if not o.answer}
            replaced: set[int] = set()
            replayed: list[Json] = []
            for chunk in buffered_chunks:
                kept: list[Json] = []
                endings: list[Json] = []
                for choice in chunk["choices"]:
                    index = choice.get("index", 0)
                    if index not in withheld:
                        fmt.restrict_logprobs(choice, wanted, top_k)
                        kept.append(choice)
                        continue
                    stripped = fmt.withheld_delta(choice)
                    if stripped is not None:
                        kept.append(stripped)
                    if choice.get("finish_reason") and index not in replaced:
                        replaced.add(index)
                        endings.extend(fmt.withheld_chunk_choices(index, shape))
                if kept:
                    replayed.append({**chunk, "choices": kept})
                replayed.extend({**base, "choices": [ending]} for ending in endings)
            for index in sorted(withheld - replaced):  # a choice the upstream never finished
                replayed.extend({**base, "choices": [ending]}
                                for ending in fmt.withheld_chunk_choices(index, shape))
            last = replayed.pop()
            return [*replayed, *closing(base, [last], record)]

        async def buffered() -> AsyncIterator[Json]:
            for chunk in replay():
                yield chunk

        return GuardedStream(timed(buffered(), "buffered"), record.headers(), upstream_seconds)


def _choices_asked(body: Json) -> int:
    n = body.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1


def _wants_usage(body: Json) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _chunk_base(chunk: Json, fmt: type[WireFormat]) -> Json:
    return {
        "id": chunk.get("id") or new_decision_id(),
        "object": fmt.chunk_object,
        "created": chunk.get("created") or int(time.time()),
        "model": chunk.get("model") or "",
    }


class _AnswerAccumulator:
    """Text, logprob entries and finish reason of each choice of a stream, as chunks arrive."""

    def __init__(self, fmt: type[WireFormat]) -> None:
        self._fmt = fmt
        self._text: dict[int, list[str]] = {}
        self._entries: dict[int, list[Any]] = {}
        self._finish: dict[int, str | None] = {}
        self._calls_tools: set[int] = set()
        self._tool_pieces: dict[int, list[tuple[int, str, str]]] = {}
        self.usage: Json | None = None

    def add(self, chunk: Json) -> None:
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            index = int(choice.get("index", 0))
            self._text.setdefault(index, []).append(self._fmt.delta_text(choice))
            self._entries.setdefault(index, []).extend(self._fmt.delta_logprob_entries(choice))
            if choice.get("finish_reason"):
                self._finish[index] = choice["finish_reason"]
            if self._fmt.delta_calls_tools(choice):
                self._calls_tools.add(index)
                self._tool_pieces.setdefault(index, []).extend(
                    self._fmt.tool_call_pieces(choice))

    def review_text(self, index: int) -> str:
        """Choice ``index``'s text and tool calls, as a reviewer of a withheld answer reads it."""
        return review_text(self.text(index), self._tool_pieces.get(index, []))

    def answer_text(self, index: int) -> str:
        """Choice ``index``'s text and tool calls, as the confidence signals read them."""
        return answer_text(self.text(index), merged_calls(self._tool_pieces.get(index, [])))

    def calls_tools(self, index: int) -> bool:
        """Whether choice ``index`` streamed a piece of a tool call."""
        return index in self._calls_tools

    def indices(self) -> list[int]:
        return sorted(self._text)

    def text(self, index: int) -> str:
        return "".join(self._text.get(index, []))

    def logprobs(self, index: int) -> Json | None:
        entries = self._entries.get(index)
        return self._fmt.merged_logprobs(entries) if entries else None

    def tokens(self, index: int) -> Any:
        logprobs = self.logprobs(index)
        return self._fmt.tokens({"logprobs": logprobs}) if logprobs else None

    def finish_reason(self, index: int) -> str | None:
        return self._finish.get(index)
