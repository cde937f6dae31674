"""The gateway's Prometheus metrics, in one place, registered on the registry they are given.

Names are ``basguard_<name>_<unit>``, counters end in ``_total``, times are in seconds. Labels
come only from bounded sets (:mod:`proxy.observability.labels`). One small class per concern
defines its metrics and records them: :class:`DecisionMetrics`, :class:`UpstreamMetrics`,
:class:`StoreMetrics`, :class:`ServerMetrics` (connections, HTTP, reloads),
:class:`PassthroughMetrics`, :class:`StreamMetrics`; :class:`GatewayMetrics` builds them all.

Three sources:

- events of this process (requests, confidence, expected utility, latencies, errors, reloads):
  counters, histograms and a summed gauge, the *instruments*;
- the current config (thresholds, calibrators, risk limits and their certificates) and the
  decision store (feedback outcomes, realized utility, live BAS, reliability bins, drift, each
  risk limit's live bound), read at scrape time by the collectors of
  :mod:`proxy.observability.collectors`, so a reload never leaves a stale series behind.

Multiprocess mode (``serve --workers N``) follows prometheus-client's rules:

1. ``PROMETHEUS_MULTIPROC_DIR`` names an empty directory before any worker imports
   prometheus-client, which chooses file-backed values at import: the supervisor
   (:mod:`proxy.http.server`) empties or creates it and passes it down.
2. The instruments register on no registry; each worker writes their values to its own files.
   The injected registry (:func:`gateway_registry`) reads every worker's files through a
   ``MultiProcessCollector``, so a scrape of any worker shows the sums. Registering the
   instruments as well would show this worker's values twice.
3. Every gauge instrument names its ``multiprocess_mode``: ``sum`` for a running total,
   ``livesum`` for what is open now. (A worker that dies keeps its ``livesum`` file, so its last
   value, until ``multiprocess.mark_process_dead`` removes it; the supervisor does not call it.)
4. The scrape-time collectors read only what every process shares (the config file, the store),
   so whichever worker answers shows the same figures; they register on the injected registry
   in both modes. Nothing per-process is a collector, an ``Info`` or a ``set_function`` gauge:
   multiprocess mode cannot merge those.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess

from policies.schema import PASSTHROUGH_FAMILIES
from proxy.judging.decision import DecisionRecord
from proxy.observability.collectors import ConfigCollector, StoreCollector
from proxy.observability.first_token import STREAM_MODES, StreamMode
from proxy.observability.labels import (
    INTERNAL_ERROR_PLACES,
    OTHER,
    PASSTHROUGH_OUTCOMES,
    REFUSAL_REASONS,
    ConfiguredLabels,
    decision_label,
)
from proxy.runtime.reload import ReloadResult
from proxy.runtime.state import RuntimeState
from proxy.signals.base import CallResult
from proxy.signals.registry import SIGNALS
from proxy.signals.runner import SignalOutcome
from proxy.store import DecisionStore, Recovery

__all__ = [
    "DecisionMetrics",
    "GatewayMetrics",
    "PassthroughMetrics",
    "ServerMetrics",
    "StoreMetrics",
    "StreamMetrics",
    "UpstreamMetrics",
    "decision_label",
    "gateway_registry",
    "multiprocess_dir",
]

CONFIDENCE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0, 60.0)
TOKEN_BUCKETS = (0, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 25_000, 100_000)

InstrumentRegistry = CollectorRegistry | None
"""Where instruments register: the gateway's registry, or none in multiprocess mode (rule 2)."""


def multiprocess_dir() -> str | None:
    """The directory of prometheus-client's multiprocess mode, if this process is in it."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def gateway_registry() -> CollectorRegistry:
    """A fresh registry for one gateway: what ``/metrics`` shows.

    In multiprocess mode it also reads every worker's files at each scrape (rule 2).
    """
    registry = CollectorRegistry()
    if multiprocess_dir() is not None:
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


class Children:
    """``metric.labels(*values)``, each child built once.

    ``labels()`` takes a lock and builds its key on every call; the label sets are bounded, so
    remembering every child costs little and saves that on the request path.
    """

    def __init__(self) -> None:
        self._built: dict[tuple[int, tuple[str, ...]], Any] = {}

    def __call__(self, metric: Counter | Gauge | Histogram, *values: str) -> Any:
        key = (id(metric), values)
        found = self._built.get(key)
        if found is None:
            found = self._built[key] = metric.labels(*values)
        return found


class DecisionMetrics:
    """Decided choices: counts by decision and segment, confidence, expected utility."""

    def __init__(self, registry: InstrumentRegistry, labels: ConfiguredLabels) -> None:
        self._labels = labels
        self._resolved: dict[tuple[str, str, str, str], _Decided] = {}
        self._resolved_for: RuntimeState | None = None
        self.requests = Counter(
            "basguard_requests_total", "Decided choices by tenant, model, decision and mode.",
            ["tenant", "model", "decision", "mode"], registry=registry)
        self.confidence = Histogram(
            "basguard_confidence_ratio", "Calibrated P(correct) of decided choices.",
            ["tenant", "model"], buckets=CONFIDENCE_BUCKETS, registry=registry)
        self.expected_utility = Gauge(
            "basguard_expected_utility_sum",
            "Running sum of each decision's expected utility under its tenant's profile "
            "(answer: p - (1 - p) * wrong_answer_cost; abstain: -abstain_cost).",
            ["tenant", "model"], registry=registry, multiprocess_mode="sum")
        self.no_confidence = Counter(
            "basguard_no_confidence_decisions_total",
            "Choices decided without confidence (no usable logprobs).",
            ["tenant", "model"], registry=registry)
        self.segment_decisions = Counter(
            "basguard_segment_decisions_total",
            "Decided choices by tenant, segment (the tenant's configured names, else other) "
            "and decision: the abstention rate per segment, for parity.",
            ["tenant", "segment", "decision"], registry=registry)

    def decided(self, record: DecisionRecord) -> None:
        """Count each choice's decision (also by segment) and add its expected utility."""
        tenant = record.tenant
        children = self._children_for(tenant.name, record.model, tenant.mode, record.segment)
        utility = 0.0
        for outcome in record.outcomes:
            label = decision_label(outcome)
            children.decided(label).inc()
            children.by_segment(label).inc()
            p = outcome.confidence
            if not outcome.applicable:
                continue  # passed unchanged: no confidence, no expected utility
            if p is None:
                children.no_confidence().inc()
                # Without confidence the expected utility is unknown; only abstention's is.
                utility -= tenant.abstain_cost if not outcome.answer else 0.0
                continue
            children.confidence.observe(p)
            utility += (p - (1.0 - p) * tenant.wrong_answer_cost if outcome.answer
                        else -tenant.abstain_cost)
        children.expected_utility.inc(utility)

    def _children_for(self, tenant: str, model: str, mode: str, segment: str) -> _Decided:
        """The children a decision of ``tenant`` on ``model`` counts in, resolved once per
        config: every request would otherwise map its tenant, model and segment to their labels
        and look up five children (measured: 16,000 instructions a request, see
        docs/benchmarks.md). Forgotten at a reload, whose config may name other labels."""
        state = self._labels.current()
        if state is not self._resolved_for:
            self._resolved.clear()
            self._resolved_for = state
        key = (tenant, model, mode, segment)
        found = self._resolved.get(key)
        if found is None:
            tenant_label, model_label = self._labels.tenant(tenant), self._labels.model(model)
            found = self._resolved[key] = _Decided(
                self, tenant_label, model_label, self._labels.segment(tenant, segment), mode)
        return found


class _Decided:
    """The children one (tenant, model, mode, segment) counts its decisions in. Those of a
    decision label are made on first use: most tenants never see every label, and a child once
    made is exported, at 0."""

    __slots__ = ("_by_decision", "_by_segment", "_metrics", "_mode", "_model", "_no_confidence",
                 "_segment", "_tenant", "confidence", "expected_utility")

    def __init__(self, metrics: DecisionMetrics, tenant: str, model: str, segment: str,
                 mode: str) -> None:
        self._metrics = metrics
        self._tenant, self._model, self._segment, self._mode = tenant, model, segment, mode
        self._by_decision: dict[str, Any] = {}
        self._by_segment: dict[str, Any] = {}
        self.confidence = metrics.confidence.labels(tenant, model)
        self.expected_utility = metrics.expected_utility.labels(tenant, model)
        self._no_confidence: Any = None

    def decided(self, label: str) -> Any:
        found = self._by_decision.get(label)
        if found is None:
            found = self._by_decision[label] = self._metrics.requests.labels(
                self._tenant, self._model, label, self._mode)
        return found

    def no_confidence(self) -> Any:
        if self._no_confidence is None:
            self._no_confidence = self._metrics.no_confidence.labels(self._tenant, self._model)
        return self._no_confidence

    def by_segment(self, label: str) -> Any:
        found = self._by_segment.get(label)
        if found is None:
            found = self._by_segment[label] = self._metrics.segment_decisions.labels(
                self._tenant, self._segment, label)
        return found


class UpstreamMetrics:
    """Upstream calls: failures, latency, and the extra calls confidence signals make."""

    def __init__(self, registry: InstrumentRegistry, labels: ConfiguredLabels) -> None:
        self._labels = labels
        self._child = Children()
        self.errors = Counter(
            "basguard_upstream_errors_total", "Upstream failures by kind.",
            ["model", "kind"], registry=registry)
        self.latency = Histogram(
            "basguard_upstream_latency_seconds", "Time the upstream took (to its first chunk "
            "when streaming).", ["model"], buckets=LATENCY_BUCKETS, registry=registry)
        self.signal_calls = Counter(
            "basguard_signal_calls_total",
            "Extra upstream calls made by confidence signals, by signal and result (ok, "
            "timeout, error, garbage); a signal that failed on its own counts as one call.",
            ["signal", "result"], registry=registry)
        self.signal_call_seconds = Histogram(
            "basguard_signal_call_seconds", "Duration of each confidence signal's extra calls.",
            ["signal"], buckets=LATENCY_BUCKETS, registry=registry)
        self.signal_extra_tokens = Histogram(
            "basguard_signal_extra_tokens",
            "Tokens (prompt + completion) of the extra calls per request, for requests whose "
            "signals make calls.", buckets=TOKEN_BUCKETS, registry=registry)

    def failed(self, model: str, kind: str) -> None:
        self.errors.labels(self._labels.model(model), kind).inc()

    def took(self, model_label: str, seconds: float) -> None:
        self._child(self.latency, model_label).observe(seconds)

    def signals_called(self, signals: SignalOutcome) -> None:
        """Count the extra calls a request's confidence signals made, and their tokens."""
        for call in signals.calls:
            # Bounded labels: signal names come from the registry, results from the enum.
            signal = call.signal if call.signal in SIGNALS else OTHER
            result = call.result.value if call.result in CallResult else OTHER
            self.signal_calls.labels(signal, result).inc()
            self.signal_call_seconds.labels(signal).observe(call.seconds)
        self.signal_extra_tokens.observe(signals.extra_tokens)


class StoreMetrics:
    """Decisions the store lost or recovered, and its writer's errors."""

    def __init__(self, registry: InstrumentRegistry) -> None:
        self.lost = Counter(
            "basguard_store_lost_decisions_total",
            "Decisions the store could not keep: dropped (the writer was too far behind, by "
            "count or bytes), write_failed, or crashed (a crash journal line cut short, found "
            "at start-up).", ["reason"], registry=registry)
        for reason in ("dropped", "write_failed", "crashed"):
            self.lost.labels(reason)
        self.recovered = Counter(
            "basguard_store_recovered_decisions_total",
            "Decisions a crashed process had acknowledged but not committed, replayed into the "
            "store from its crash journal at start-up.", registry=registry)
        self.writer_errors = Counter(
            "basguard_store_writer_errors_total",
            "Unexpected errors the decision store's writer logged and went on after (a failed "
            "batch's decisions count in basguard_store_lost_decisions_total).",
            registry=registry)

    def decisions_lost(self, reason: str, count: int) -> None:
        self.lost.labels(reason).inc(count)

    def decisions_recovered(self, count: int) -> None:
        self.recovered.inc(count)

    def writer_failed(self) -> None:
        self.writer_errors.inc()

    def count_recovery(self, recovery: Recovery) -> None:
        """What the store's start-up replay found: recovered decisions and crash losses."""
        self.decisions_recovered(recovery.recovered)
        self.decisions_lost("crashed", recovery.unreadable)


class ServerMetrics:
    """The HTTP server: connections refused, time spent, internal errors; config reloads."""

    def __init__(self, registry: InstrumentRegistry) -> None:
        self._child = Children()
        self.overhead = Histogram(
            "basguard_proxy_overhead_seconds",
            "Time basguard spent on a request, excluding the upstream's.",
            ["model"], buckets=LATENCY_BUCKETS, registry=registry)
        self.time_to_first_byte = Histogram(
            "basguard_time_to_first_byte_seconds",
            "From the request's arrival to the first byte of the response body.",
            ["model"], buckets=LATENCY_BUCKETS, registry=registry)
        self.internal_errors = Counter(
            "basguard_internal_errors_total",
            "Unexpected exceptions turned into a 500 (where=request), a stream's error event "
            "(where=stream) or a WebSocket closed with 1011 (where=websocket).", ["where"],
            registry=registry)
        for where in INTERNAL_ERROR_PLACES:
            self.internal_errors.labels(where)
        self.connections_refused = Counter(
            "basguard_connections_refused_total",
            "Connections the HTTP server answered or closed itself, before the app: "
            "headers_too_large (431), request_timeout (408, a head too slow), body_timeout "
            "(408, a body too slow, or pushed out waiting for its body), malformed_http (400), "
            "server_busy (503, no free connection) and idle_closed (no request within the head "
            "timeout).",
            ["reason"], registry=registry)
        for reason in REFUSAL_REASONS:
            self.connections_refused.labels(reason)
        self.reloads = Counter(
            "basguard_config_reloads_total", "Config reloads by result.", ["result"],
            registry=registry)
        for result in ("success", "failure"):
            self.reloads.labels(result)  # exported as 0 before the first reload

    def spent(self, model_label: str, seconds: float) -> None:
        self._child(self.overhead, model_label).observe(seconds)

    def first_byte(self, model_label: str, seconds: float) -> None:
        self._child(self.time_to_first_byte, model_label).observe(seconds)

    def internal_error(self, where: str) -> None:
        self.internal_errors.labels(where if where in INTERNAL_ERROR_PLACES else OTHER).inc()

    def connection_refused(self, reason: str) -> None:
        self._child(self.connections_refused,
                    reason if reason in REFUSAL_REASONS else OTHER).inc()

    def reloaded(self, result: ReloadResult) -> None:
        self.reloads.labels("success" if result.applied else "failure").inc()


class PassthroughMetrics:
    """Requests and Realtime WebSocket sessions relayed unguarded to an upstream."""

    def __init__(self, registry: InstrumentRegistry, labels: ConfiguredLabels) -> None:
        self._labels = labels
        self._child = Children()
        self.requests = Counter(
            "basguard_passthrough_requests_total",
            "Requests forwarded unguarded to an upstream (embeddings, audio, files, ...), by "
            "tenant, endpoint family (other: any path outside the known families) and outcome "
            "(the upstream's status class, or error: no response).",
            ["tenant", "endpoint", "outcome"], registry=registry)
        self.websockets = Gauge(
            "basguard_passthrough_websockets_open",
            "WebSocket sessions (the Realtime API) being relayed unguarded to an upstream now, by "
            "tenant; their handshakes are counted in basguard_passthrough_requests_total.",
            ["tenant"], registry=registry, multiprocess_mode="livesum")

    def forwarded(self, tenant: str, endpoint: str, outcome: str) -> None:
        """Count one passthrough request (labels bounded: tenants, families, outcomes)."""
        family = endpoint if endpoint in PASSTHROUGH_FAMILIES else OTHER
        result = outcome if outcome in PASSTHROUGH_OUTCOMES else OTHER
        self._child(self.requests, self._labels.tenant(tenant), family, result).inc()

    def websocket_opened(self, tenant: str) -> Callable[[], None]:
        """Count a relayed WebSocket session open; returns what counts it closed (on the same
        label, even if a reload removed the tenant meanwhile)."""
        gauge = self._child(self.websockets, self._labels.tenant(tenant))
        gauge.inc()
        closed: Callable[[], None] = gauge.dec
        return closed


class StreamMetrics:
    """Guarded streams: time to first token, and what stream gates cancelled."""

    def __init__(self, registry: InstrumentRegistry, labels: ConfiguredLabels) -> None:
        self._labels = labels
        self._child = Children()
        self.time_to_first_token = Histogram(
            "basguard_time_to_first_token_seconds",
            "From the start of a streamed request's upstream call to the first chunk with text "
            "handed to the client, by stream_mode: gated (enforce with a stream gate, decided "
            "on the first K tokens), buffered (enforce without: the whole answer first), "
            "passthrough (annotate, shadow).",
            ["model", "stream_mode"], buckets=LATENCY_BUCKETS, registry=registry)
        self.tokens_saved = Counter(
            "basguard_stream_gate_tokens_saved_total",
            "Tokens not generated because a stream gate abstained and cancelled the upstream "
            "stream: the request's max_tokens minus the tokens received, per unfinished "
            "choice (requests without max_tokens add 0).", ["model"], registry=registry)
        self.cancellations = Counter(
            "basguard_stream_gate_cancellations_total",
            "Upstream streams a stream gate cancelled after abstaining on every choice.",
            ["model"], registry=registry)

    def first_token(self, model: str, mode: StreamMode, seconds: float) -> None:
        self._child(self.time_to_first_token, self._labels.model(model),
                    mode if mode in STREAM_MODES else OTHER).observe(seconds)

    def cancelled(self, model: str, tokens_saved: int) -> None:
        label = self._labels.model(model)
        self._child(self.cancellations, label).inc()
        self._child(self.tokens_saved, label).inc(tokens_saved)


class GatewayMetrics:
    """Every metric the gateway exports; also a ``DecisionObserver`` and a ``StreamObserver``.

    Parameters
    ----------
    registry : CollectorRegistry
        What the metrics register on and ``/metrics`` shows: :func:`gateway_registry`, or a
        fresh ``CollectorRegistry`` in a test.
    state : callable
        Returns the current runtime state (the config the labels and gauges come from).
    store : DecisionStore, optional
        Where feedback totals and drift are read.
    drift_window : int
        How many of the latest labelled decisions the drift gauges average over.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        state: Callable[[], RuntimeState],
        store: DecisionStore | None = None,
        *,
        drift_window: int = 500,
    ) -> None:
        self.registry = registry
        self.labels = ConfiguredLabels(state)
        instruments = None if multiprocess_dir() is not None else registry  # rule 2
        self.decisions = DecisionMetrics(instruments, self.labels)
        self.upstream = UpstreamMetrics(instruments, self.labels)
        self.store = StoreMetrics(instruments)
        self.server = ServerMetrics(instruments)
        self.passthrough = PassthroughMetrics(instruments, self.labels)
        self.streams = StreamMetrics(instruments, self.labels)
        registry.register(ConfigCollector(state))
        if store is not None:
            # Counted here, not by a callback: the replay ran in the store's constructor,
            # before these metrics existed.
            self.store.count_recovery(store.recovery)
            registry.register(StoreCollector(store, self.labels, drift_window, state))

    def observe_overhead(self, model: object, started: float, upstream_seconds: float) -> None:
        """A request that arrived at ``started`` (``time.perf_counter()``) and whose upstream
        took ``upstream_seconds``: the upstream's latency and basguard's own time."""
        label = self.labels.model(model)
        self.upstream.took(label, upstream_seconds)
        self.server.spent(label, time.perf_counter() - started - upstream_seconds)

    def observe_answer(self, model: object, started: float, upstream_seconds: float) -> None:
        """A complete answer to a request that arrived at ``started``, sent now:
        :meth:`observe_overhead` and :meth:`observe_first_byte` at once, with the model's label
        and the clock read once (every guarded answer passes here)."""
        label = self.labels.model(model)
        elapsed = time.perf_counter() - started
        self.upstream.took(label, upstream_seconds)
        self.server.spent(label, elapsed - upstream_seconds)
        self.server.first_byte(label, elapsed)

    def observe_first_byte(self, model: object, started: float) -> None:
        """The first byte of the response to a request that arrived at ``started``."""
        self.server.first_byte(self.labels.model(model), time.perf_counter() - started)

    def internal_error(self, where: str) -> None:
        self.server.internal_error(where)

    # DecisionObserver: how the completion service reports to the metrics.

    def decided(self, record: DecisionRecord) -> None:
        self.decisions.decided(record)
        if record.signals is not None:
            self.upstream.signals_called(record.signals)

    def upstream_failed(self, model: str, kind: str) -> None:
        self.upstream.failed(model, kind)

    # StreamObserver: how streams went.

    def first_token(self, model: str, mode: StreamMode, seconds: float) -> None:
        self.streams.first_token(model, mode, seconds)

    def stream_cancelled(self, model: str, tokens_saved: int) -> None:
        self.streams.cancelled(model, tokens_saved)
