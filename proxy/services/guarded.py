"""What every guarded service shares: the results it hands the routes, the observers it reports
to, and the steps around a decision (the upstream target and request, the signals that make
calls, counting failures, the errors a tenant's policy makes of a decision).

:class:`~proxy.services.completions.GuardedCompletions` (chat and legacy completions) and
:class:`~proxy.services.responses.GuardedResponses` (the Responses API) build on
:class:`GuardedService`; how each streams is in :mod:`proxy.services.streaming`.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

import orjson

from proxy.errors import AnswerWithheld, ConfidenceUnavailable, ModelNotFound, UpstreamError
from proxy.judging.decision import DecisionRecord, DecisionTerms, missing_confidence_error
from proxy.observability.first_token import StreamMode
from proxy.runtime.state import RuntimeState, TenantRuntime
from proxy.signals.base import SignalRequest
from proxy.signals.caller import UpstreamModelCaller
from proxy.signals.logprobs import TOPK_FEATURES
from proxy.signals.registry import SignalPlan
from proxy.signals.runner import SignalRun
from proxy.upstream.target import Upstream, UpstreamTarget
from proxy.wire.events import StreamItem
from proxy.wire.formats import WireFormat
from proxy.wire.withheld import Asked, withheld_as_error

if TYPE_CHECKING:
    from proxy.judging.offload import ReplyOffload
    from proxy.services.risk_watch import RiskWatch

__all__ = [
    "OFFLOAD_BYTES",
    "DecisionObserver",
    "GuardedResponse",
    "GuardedService",
    "GuardedStream",
    "Observers",
    "StreamObserver",
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
    judged in another process, :mod:`proxy.judging.offload`), each made from the other on
    demand."""

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

    chunks: AsyncIterator[StreamItem]
    """Events, or batches of them (:class:`~proxy.wire.events.EventBatch`)."""
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


class Observers:
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


class GuardedService:
    """The steps every guarded endpoint takes around its decision."""

    def __init__(
        self, upstreams: Mapping[str, Upstream], observers: Sequence[DecisionObserver] = (),
        offload: ReplyOffload | None = None, *, risk_watch: RiskWatch | None = None,
        audit_draw: Callable[[], float] = random.random,
    ) -> None:
        self._upstreams = upstreams
        self._observer = Observers(observers)
        self._offload = offload
        """Where large non-streamed replies from an HTTP upstream are parsed, judged and
        encoded (None: parsed here, judged in a thread)."""
        self._risk_watch = risk_watch
        """Which risk limits the audit sample proves breached (None: no live watch)."""
        self._audit_draw = audit_draw
        """A uniform draw in [0, 1) per request: below the tenant's audit_rate, audited."""

    @property
    def observer(self) -> Observers:
        """Where decisions, failures and stream timings are reported."""
        return self._observer

    def terms(self, tenant: TenantRuntime, model: str) -> DecisionTerms:
        """What a request of ``tenant`` on ``model`` is decided by, drawn as it arrives:
        whether it is in the audit sample (independently of everything else, so the sample is
        uniform over answered and withheld decisions alike), and whether its risk limit is
        proven breached."""
        audited = tenant.audit_rate > 0 and self._audit_draw() < tenant.audit_rate
        limit = tenant.risk_limits.get(model)
        watch = self._risk_watch
        breached = (limit is not None and watch is not None
                    and watch.breached(tenant.name, model, limit.certificate_version))
        return tenant.terms_for(model, audited=audited, breached=breached)

    def target(self, state: RuntimeState, body: Json) -> UpstreamTarget:
        """The upstream of the request's public ``model`` (404 ``model_not_found``)."""
        name = body.get("model")
        target = state.models.get(name) if isinstance(name, str) else None
        if target is None:
            raise ModelNotFound(
                f"the model {name!r} does not exist; available: {', '.join(sorted(state.models))}",
                param="model",
            )
        return target

    def upstream_body(
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

    def start_signals(
        self, state: RuntimeState, plan: SignalPlan, request: SignalRequest
    ) -> SignalRun | None:
        """The run of the signals that make calls, started now (consistency's samples go out
        with the main request); None when none does. Immediate signals (logprobs) are never
        part of it: :func:`proxy.judging.replies.features_now` computes them without a task,
        in the worker thread for a large reply."""
        calling = [signal for signal in plan.to_run if not signal.immediate]
        if not calling:
            return None
        return SignalRun.start(
            calling, request, UpstreamModelCaller(self._upstreams, state.models))

    def failed(self, model: str, exc: BaseException) -> None:
        """Count ``exc`` as the upstream's failure, if it is one."""
        if isinstance(exc, UpstreamError):
            self._observer.upstream_failed(model, exc.code or "upstream_error")

    async def counting_failure(self, model: str, work: Awaitable[T]) -> T:
        """``work`` (a reply judged in the offload's process), with an upstream's malformed
        reply counted as the upstream's failure, as when it is parsed here."""
        try:
            return await work
        except UpstreamError as exc:
            self.failed(model, exc)
            raise

    @staticmethod
    def raise_for_policy(
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

