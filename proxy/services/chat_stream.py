"""A chat (or legacy completions) stream being guarded: its chunks, its decision, its end.

:class:`ChatStream` is the :class:`~proxy.services.streaming.DecidedStream` of the
``chat.completion.chunk`` (and ``text_completion``) streams; :func:`gated` is the stream gate,
which only these streams have. The contract (also in :mod:`proxy.services.completions`):

- the ``basguard`` decision rides on the last chunk that carries choices, so the common
  ``chunk.choices[0]`` loop never meets an empty ``choices``; only a client that asked for
  ``stream_options.include_usage`` gets the final ``choices: []`` chunk, with ``usage`` and the
  decision (as OpenAI sends it); an upstream usage chunk is never sent unasked;
- a withheld choice is replayed without its answer, the abstention where its finish_reason was.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from calibrators.artifact import FittedCalibrator
from proxy.errors import UpstreamInvalidResponse
from proxy.judging.decision import (
    DecisionRecord,
    DecisionTerms,
    MissingConfidence,
    new_decision_id,
    not_applicable,
)
from proxy.judging.replies import (
    decide_or_pass,
    features_now,
    kept_for_review,
    missing_feature_reason,
    review_text,
)
from proxy.judging.stream_gate import (
    PrefixBuffer,
    StreamGate,
    decide_prefixes,
    gated_chunks,
    read_prefix,
    tokens_saved,
)
from proxy.runtime.state import TenantRuntime
from proxy.services.guarded import GuardedService, GuardedStream
from proxy.signals.base import Answer, SignalRequest
from proxy.signals.registry import SignalPlan
from proxy.signals.runner import SignalRun
from proxy.wire.events import StreamItem
from proxy.wire.formats import WireFormat, answer_text, merged_calls
from proxy.wire.withheld import Asked, not_decided_reason, withheld_shape

__all__ = ["ChatStream", "StreamedAnswers", "chunk_base", "gated"]

Json = dict[str, Any]


def chunk_base(chunk: Json, fmt: type[WireFormat]) -> Json:
    """The fields every chunk of the stream repeats (id, object, created, model)."""
    return {
        "id": chunk.get("id") or new_decision_id(),
        "object": fmt.chunk_object,
        "created": chunk.get("created") or int(time.time()),
        "model": chunk.get("model") or "",
    }


class StreamedAnswers:
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


@dataclass
class ChatStream:
    """One guarded chat stream, opened (its first chunk arrived) and not yet streamed."""

    service: GuardedService
    tenant: TenantRuntime
    fmt: type[WireFormat]
    body: Json
    segment: str
    name: str
    """The public model name."""
    calibrator: FittedCalibrator
    plan: SignalPlan
    request: SignalRequest
    run: SignalRun | None
    upstream: AsyncExitStack
    """Holds the upstream stream open; closing it closes the connection (and the run)."""
    first: Json
    chunks: AsyncIterator[Json]
    started: float
    choices: int
    """The ``n`` the request asked for (chunks for other choices are invalid)."""
    terms: DecisionTerms
    """The threshold, audit mark and risk limit the request is decided by."""

    def __post_init__(self) -> None:
        self.answers = StreamedAnswers(self.fmt)
        self.wanted, self.top_k = self.fmt.requested_logprobs(self.body)
        self.asked: Asked = self.fmt.asked(self.body)
        self.base = chunk_base(self.first, self.fmt)
        self.on_missing_confidence: MissingConfidence = self.tenant.on_missing_confidence

    async def upstream_chunks(self) -> AsyncGenerator[Json, None]:
        """Every upstream chunk, the first included, checked."""
        yield self.first
        async for chunk in self.chunks:
            self.fmt.check_chunk(chunk, self.name, choices=self.choices)
            yield chunk

    async def events(self) -> AsyncIterator[Json]:
        async for chunk in self.upstream_chunks():
            self.answers.add(chunk)
            if chunk["choices"]:
                yield chunk  # a usage chunk: sent at the end, and only if asked for

    def holds(self, event: Json) -> bool:
        return any(choice.get("finish_reason") for choice in event["choices"])

    def restrict(self, event: Json) -> None:
        for choice in event["choices"]:
            self.fmt.restrict_logprobs(choice, self.wanted, self.top_k)

    async def decide(self) -> DecisionRecord:
        answers = self.answers
        if not answers.indices():
            raise UpstreamInvalidResponse(
                f"the upstream for model {self.name!r} sent a stream without any choice")
        given = [Answer(i, answers.answer_text(i), answers.tokens(i)) for i in answers.indices()]
        # Follow-up calls (verbalized, judge) start now that the answers are complete.
        signals = None if self.run is None else await self.run.finish(given)
        found = features_now(self.plan, self.request, signals, given)
        tenant, names = self.tenant, self.calibrator.feature_names
        outcomes = [
            decide_or_pass(
                self.terms, tenant.on_missing_confidence, answer.index,
                found.features[position], missing_feature_reason(found, position, names),
                self.calibrator,
                not_decided_reason(tenant.drop_in, calls_tools=answers.calls_tools(answer.index),
                                   asked=self.asked))
            for position, answer in enumerate(given)
        ]
        abstained = {o.index: answers.review_text(o.index) for o in outcomes
                     if kept_for_review(o, self.terms)}
        record = DecisionRecord(
            new_decision_id(), tenant, self.name, outcomes, self.calibrator.method,
            self.calibrator.version, abstained,
            self.fmt.prompt_text(self.body) if abstained else None,
            signals=signals, segment=self.segment, terms=self.terms,
        )
        self.service.observer.decided(record)
        return record

    def closing(self, held: list[Json], record: DecisionRecord) -> list[Json]:
        """The last chunks, the decision riding on the last (see the module docstring)."""
        decision = record.as_json()
        if not held:
            held = [{**self.base, "choices": [self.fmt.empty_choice(self.answers.indices()[-1])]}]
        # The decision rides on the chunk with the finish_reason, which every client reads
        # (litellm, LangChain and the SDK's stream helper drop a `choices: []` chunk) ...
        closed = [*held[:-1], {**held[-1], "basguard": decision}]
        if _wants_usage(self.body):
            # ... and on the usage chunk, as OpenAI ends a stream that asked for usage.
            closed.append({**self.base, "choices": [], "usage": self.answers.usage,
                           "basguard": decision})
        return closed

    def replay(self, chunks: list[Json], record: DecisionRecord) -> list[Json]:
        """The buffered chunks again: answered choices as they came (logprobs trimmed to what
        the client asked for), withheld ones without their answer, which the abstention
        replaces where their finish_reason was; the decision on the last."""
        fmt = self.fmt
        shape = withheld_shape(self.tenant.drop_in, self.tenant.abstention_message,
                               asked=self.asked)
        withheld = {o.index for o in record.outcomes if not o.answer}
        replaced: set[int] = set()
        replayed: list[Json] = []
        for chunk in chunks:
            kept: list[Json] = []
            endings: list[Json] = []
            for choice in chunk["choices"]:
                index = choice.get("index", 0)
                if index not in withheld:
                    fmt.restrict_logprobs(choice, self.wanted, self.top_k)
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
            replayed.extend({**self.base, "choices": [ending]} for ending in endings)
        for index in sorted(withheld - replaced):  # a choice the upstream never finished
            replayed.extend({**self.base, "choices": [ending]}
                            for ending in fmt.withheld_chunk_choices(index, shape))
        last = replayed.pop()
        return [*replayed, *self.closing([last], record)]

    def failed(self, exc: BaseException) -> None:
        self.service.failed(self.name, exc)

    async def close(self) -> None:
        await self.upstream.aclose()


def _wants_usage(body: Json) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _choices_asked(body: Json) -> int:
    n = body.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1


async def gated(
    stream: ChatStream, gate: StreamGate,
    timed: Callable[[AsyncIterator[StreamItem]], AsyncIterator[StreamItem]],
) -> GuardedStream:
    """Decide on each choice's first K tokens, then stream it or stop
    (:mod:`proxy.judging.stream_gate`): ``enforce`` with a stream gate."""
    source = stream.upstream_chunks()

    async def tracked() -> AsyncGenerator[Json, None]:
        async for chunk in source:
            stream.answers.add(chunk)
            yield chunk

    rest = tracked()

    async def close_upstream() -> None:
        await rest.aclose()
        await source.aclose()
        await stream.close()

    prefix = PrefixBuffer(stream.fmt, gate.decide_after_tokens, _choices_asked(stream.body))
    try:
        await read_prefix(prefix, rest)
        record = _decide_prefix(stream, gate, prefix)
        if not any(o.answer for o in record.outcomes):
            # Nothing will be sent of it: stop the generation now.
            saved = tokens_saved(stream.body, prefix)
            await close_upstream()
            stream.service.observer.stream_cancelled(stream.name, saved)
        stream.service.raise_for_policy(stream.tenant, record, asked=stream.asked)
    except BaseException as exc:
        await close_upstream()
        stream.failed(exc)
        raise
    tenant, fmt = stream.tenant, stream.fmt
    chunks = gated_chunks(
        buffer=prefix, rest=rest, outcomes=record.outcomes, fmt=fmt, base=stream.base,
        withheld=withheld_shape(tenant.drop_in, tenant.abstention_message, asked=stream.asked),
        restrict=lambda choice: fmt.restrict_logprobs(choice, stream.wanted, stream.top_k),
        closing=lambda held: stream.closing(held, record),
        failed=stream.failed, close=close_upstream)
    return GuardedStream(timed(chunks), record.headers(), time.perf_counter() - stream.started)


def _decide_prefix(stream: ChatStream, gate: StreamGate, prefix: PrefixBuffer) -> DecisionRecord:
    """The decision on each choice's first tokens (a tool call the tenant passes is not
    decided), reported."""
    if not prefix.indices():
        raise UpstreamInvalidResponse(
            f"the upstream for model {stream.name!r} sent a stream without any choice")
    tenant, terms = stream.tenant, stream.terms
    outcomes = [
        outcome if (reason := not_decided_reason(
            tenant.drop_in, calls_tools=prefix.calls_tools(outcome.index),
            asked=stream.asked)) is None
        else not_applicable(outcome.index, reason)
        for outcome in decide_prefixes(prefix, gate, threshold=terms.threshold,
                                       on_missing_confidence=tenant.on_missing_confidence,
                                       withhold=terms.withhold)
    ]
    # An audited answer is kept as far as it was decided on: its first K tokens (the rest
    # streams after the decision is recorded).
    abstained = {o.index: prefix.text(o.index) for o in outcomes if kept_for_review(o, terms)}
    record = DecisionRecord(
        new_decision_id(), tenant, stream.name, outcomes, gate.calibrator.method,
        gate.calibrator.version, abstained,
        stream.fmt.prompt_text(stream.body) if abstained else None,
        segment=stream.segment, decided_after_tokens=gate.decide_after_tokens,
        prefix_tokens=tuple(prefix.received(o.index) for o in outcomes), terms=terms,
    )
    stream.service.observer.decided(record)
    return record
