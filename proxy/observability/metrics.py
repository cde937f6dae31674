"""The gateway's Prometheus metrics, in one place.

Names are ``basguard_<name>_<unit>``, counters end in ``_total``, times are in seconds. Labels
come only from bounded sets: tenants and models named in the current config (anything else
counts as ``other``), decisions (``answer``, ``abstain``, ``no_confidence``, ``not_applicable``),
modes, passthrough endpoint families, outcomes and confidence bins
(:mod:`proxy.observability.labels`).

Three sources:

- events of this process (requests, confidence, expected utility, latencies, errors, reloads):
  counters, histograms and a summed gauge, which prometheus-client aggregates across worker
  processes in multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, see :func:`multiprocess_dir`);
- the current config (thresholds, calibrators), read at scrape time so a reload never leaves a
  stale series behind;
- the decision store (feedback outcomes, realized utility, live BAS, reliability bins, drift),
  read at scrape time from its totals table, which every process and the CLI share. These are
  gauges although they mostly grow: the last label for a decision wins, so a relabel can lower
  them, which a counter must never do.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from policies.schema import PASSTHROUGH_FAMILIES
from proxy.errors import StoreUnavailable
from proxy.judging.decision import ChoiceOutcome, DecidingTenant, DecisionRecord
from proxy.observability.feedback_figures import feedback_figures, segment_outcomes
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
from proxy.store import DecisionStore, DriftWindow, FeedbackTotal

__all__ = ["GatewayMetrics", "decision_label", "multiprocess_dir"]

CONFIDENCE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0, 60.0)
TOKEN_BUCKETS = (0, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 25_000, 100_000)


def multiprocess_dir() -> str | None:
    """The directory of prometheus-client's multiprocess mode, if this process is in it."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class GatewayMetrics:
    """Every metric the gateway exports; also a ``DecisionObserver``.

    Parameters
    ----------
    state : callable
        Returns the current runtime state (the config the labels and gauges come from).
    store : DecisionStore, optional
        Where feedback totals and drift are read.
    drift_window : int
        How many of the latest labelled decisions the drift gauges average over.
    """

    def __init__(
        self,
        state: Callable[[], RuntimeState],
        store: DecisionStore | None = None,
        *,
        drift_window: int = 500,
    ) -> None:
        self.labels = ConfiguredLabels(state)
        self._multiprocess = multiprocess_dir() is not None
        # In multiprocess mode values live in files shared by the workers and are collected
        # from there at scrape time (see exposition_registry); nothing registers in-process.
        self.registry = CollectorRegistry()
        r = None if self._multiprocess else self.registry
        self.requests = Counter(
            "basguard_requests_total", "Decided choices by tenant, model, decision and mode.",
            ["tenant", "model", "decision", "mode"], registry=r)
        self.confidence = Histogram(
            "basguard_confidence_ratio", "Calibrated P(correct) of decided choices.",
            ["tenant", "model"], buckets=CONFIDENCE_BUCKETS, registry=r)
        self.expected_utility = Gauge(
            "basguard_expected_utility_sum",
            "Running sum of each decision's expected utility under its tenant's profile "
            "(answer: p - (1 - p) * wrong_answer_cost; abstain: -abstain_cost).",
            ["tenant", "model"], registry=r, multiprocess_mode="sum")
        self.no_confidence = Counter(
            "basguard_no_confidence_decisions_total",
            "Choices decided without confidence (no usable logprobs).",
            ["tenant", "model"], registry=r)
        self.upstream_errors = Counter(
            "basguard_upstream_errors_total", "Upstream failures by kind.",
            ["model", "kind"], registry=r)
        self.overhead = Histogram(
            "basguard_proxy_overhead_seconds",
            "Time basguard spent on a request, excluding the upstream's.",
            ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.upstream_latency = Histogram(
            "basguard_upstream_latency_seconds", "Time the upstream took (to its first chunk "
            "when streaming).", ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.time_to_first_byte = Histogram(
            "basguard_time_to_first_byte_seconds",
            "From the request's arrival to the first byte of the response body.",
            ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.time_to_first_token = Histogram(
            "basguard_time_to_first_token_seconds",
            "From the start of a streamed request's upstream call to the first chunk with text "
            "handed to the client, by stream_mode: gated (enforce with a stream gate, decided "
            "on the first K tokens), buffered (enforce without: the whole answer first), "
            "passthrough (annotate, shadow).",
            ["model", "stream_mode"], buckets=LATENCY_BUCKETS, registry=r)
        self.stream_tokens_saved = Counter(
            "basguard_stream_gate_tokens_saved_total",
            "Tokens not generated because a stream gate abstained and cancelled the upstream "
            "stream: the request's max_tokens minus the tokens received, per unfinished "
            "choice (requests without max_tokens add 0).", ["model"], registry=r)
        self.stream_cancellations = Counter(
            "basguard_stream_gate_cancellations_total",
            "Upstream streams a stream gate cancelled after abstaining on every choice.",
            ["model"], registry=r)
        self.internal_errors = Counter(
            "basguard_internal_errors_total",
            "Unexpected exceptions turned into a 500 (where=request), a stream's error event "
            "(where=stream) or a WebSocket closed with 1011 (where=websocket).", ["where"],
            registry=r)
        for where in INTERNAL_ERROR_PLACES:
            self.internal_errors.labels(where)
        self.signal_calls = Counter(
            "basguard_signal_calls_total",
            "Extra upstream calls made by confidence signals, by signal and result (ok, "
            "timeout, error, garbage); a signal that failed on its own counts as one call.",
            ["signal", "result"], registry=r)
        self.signal_call_seconds = Histogram(
            "basguard_signal_call_seconds", "Duration of each confidence signal's extra calls.",
            ["signal"], buckets=LATENCY_BUCKETS, registry=r)
        self.signal_extra_tokens = Histogram(
            "basguard_signal_extra_tokens",
            "Tokens (prompt + completion) of the extra calls per request, for requests whose "
            "signals make calls.", buckets=TOKEN_BUCKETS, registry=r)
        self.reloads = Counter(
            "basguard_config_reloads_total", "Config reloads by result.", ["result"], registry=r)
        for result in ("success", "failure"):
            self.reloads.labels(result)  # exported as 0 before the first reload
        self.store_lost = Counter(
            "basguard_store_lost_decisions_total",
            "Decisions the store could not keep: dropped (the writer was too far behind, by "
            "count or bytes), write_failed, or crashed (a crash journal line cut short, found "
            "at start-up).", ["reason"], registry=r)
        for reason in ("dropped", "write_failed", "crashed"):
            self.store_lost.labels(reason)
        self.store_recovered = Counter(
            "basguard_store_recovered_decisions_total",
            "Decisions a crashed process had acknowledged but not committed, replayed into the "
            "store from its crash journal at start-up.", registry=r)
        self.store_writer_errors = Counter(
            "basguard_store_writer_errors_total",
            "Unexpected errors the decision store's writer logged and went on after (a failed "
            "batch's decisions count in basguard_store_lost_decisions_total).", registry=r)
        if store is not None:
            # Counted here, not by a callback: the replay ran in the store's constructor,
            # before these metrics existed.
            self.store_recovered.inc(store.recovery.recovered)
            self.store_lost_decisions("crashed", store.recovery.unreadable)
        self.connections_refused = Counter(
            "basguard_connections_refused_total",
            "Connections the HTTP server answered or closed itself, before the app: "
            "headers_too_large (431), request_timeout (408, a head too slow), body_timeout "
            "(408, a body too slow, or pushed out waiting for its body), malformed_http (400), "
            "server_busy (503, no free connection) and idle_closed (no request within the head "
            "timeout).",
            ["reason"], registry=r)
        for reason in REFUSAL_REASONS:
            self.connections_refused.labels(reason)
        self.segment_decisions = Counter(
            "basguard_segment_decisions_total",
            "Decided choices by tenant, segment (the tenant's configured names, else other) "
            "and decision: the abstention rate per segment, for parity.",
            ["tenant", "segment", "decision"], registry=r)
        self.passthrough_requests = Counter(
            "basguard_passthrough_requests_total",
            "Requests forwarded unguarded to an upstream (embeddings, audio, files, ...), by "
            "tenant, endpoint family (other: any path outside the known families) and outcome "
            "(the upstream's status class, or error: no response).",
            ["tenant", "endpoint", "outcome"], registry=r)
        self.passthrough_websockets = Gauge(
            "basguard_passthrough_websockets_open",
            "WebSocket sessions (the Realtime API) being relayed unguarded to an upstream now, by "
            "tenant; their handshakes are counted in basguard_passthrough_requests_total.",
            ["tenant"], registry=r, multiprocess_mode="livesum")
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._scraped: list[Collector] = [_ConfigCollector(state)]
        if store is not None:
            self._scraped.append(_StoreCollector(store, self.labels, drift_window))
        for collector in self._scraped:
            self.registry.register(collector)

    def child(self, metric: Counter | Gauge | Histogram, *labels: str) -> Any:
        """``metric.labels(*labels)``, remembered.

        ``labels()`` takes a lock and builds its key on every call; the label sets are bounded
        (tenants and models from the config, else ``other``), so each child is built once.
        """
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def exposition_registry(self) -> CollectorRegistry:
        """What ``/metrics`` shows: in multiprocess mode, every worker's values merged."""
        if not self._multiprocess:
            return self.registry
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        for collector in self._scraped:
            registry.register(collector)
        return registry

    def observe_overhead(self, model: object, started: float, upstream_seconds: float) -> None:
        """A request that arrived at ``started`` (``time.perf_counter()``) and whose upstream
        took ``upstream_seconds``: the upstream's latency and basguard's own time."""
        label = self.labels.model(model)
        self.child(self.upstream_latency, label).observe(upstream_seconds)
        self.child(self.overhead, label).observe(
            time.perf_counter() - started - upstream_seconds)

    def observe_first_byte(self, model: object, started: float) -> None:
        """The first byte of the response to a request that arrived at ``started``."""
        self.child(self.time_to_first_byte, self.labels.model(model)).observe(
            time.perf_counter() - started)

    def record_decisions(
        self, tenant: DecidingTenant, model: str, outcomes: Iterable[ChoiceOutcome]
    ) -> None:
        """Count each choice's decision and add its expected utility."""
        tenant_label, model_label = self.labels.tenant(tenant.name), self.labels.model(model)
        utility = 0.0
        for outcome in outcomes:
            self.child(self.requests, tenant_label, model_label, decision_label(outcome),
                       tenant.mode).inc()
            p = outcome.confidence
            if not outcome.applicable:
                continue  # passed unchanged: no confidence, no expected utility
            if p is None:
                self.child(self.no_confidence, tenant_label, model_label).inc()
                # Without confidence the expected utility is unknown; only abstention's is.
                utility -= tenant.abstain_cost if not outcome.answer else 0.0
                continue
            self.child(self.confidence, tenant_label, model_label).observe(p)
            utility += (p - (1.0 - p) * tenant.wrong_answer_cost if outcome.answer
                        else -tenant.abstain_cost)
        self.child(self.expected_utility, tenant_label, model_label).inc(utility)

    # DecisionObserver: how the completion service reports to the metrics.

    def decided(self, record: DecisionRecord) -> None:
        self.record_decisions(record.tenant, record.model, record.outcomes)
        tenant = self.labels.tenant(record.tenant.name)
        segment = self.labels.segment(record.tenant.name, record.segment)
        for outcome in record.outcomes:
            self.child(self.segment_decisions, tenant, segment, decision_label(outcome)).inc()
        if record.signals is not None:
            for call in record.signals.calls:
                # Bounded labels: signal names come from the registry, results from the enum.
                signal = call.signal if call.signal in SIGNALS else OTHER
                result = call.result.value if call.result in CallResult else OTHER
                self.signal_calls.labels(signal, result).inc()
                self.signal_call_seconds.labels(signal).observe(call.seconds)
            self.signal_extra_tokens.observe(record.signals.extra_tokens)

    def upstream_failed(self, model: str, kind: str) -> None:
        self.upstream_errors.labels(self.labels.model(model), kind).inc()

    # StreamObserver: how streams went.

    def first_token(self, model: str, mode: StreamMode, seconds: float) -> None:
        self.child(self.time_to_first_token, self.labels.model(model),
                   mode if mode in STREAM_MODES else OTHER).observe(seconds)

    def stream_cancelled(self, model: str, tokens_saved: int) -> None:
        label = self.labels.model(model)
        self.child(self.stream_cancellations, label).inc()
        self.child(self.stream_tokens_saved, label).inc(tokens_saved)

    def passthrough_forwarded(self, tenant: str, endpoint: str, outcome: str) -> None:
        """Count one passthrough request (labels bounded: tenants, families, outcomes)."""
        family = endpoint if endpoint in PASSTHROUGH_FAMILIES else OTHER
        result = outcome if outcome in PASSTHROUGH_OUTCOMES else OTHER
        self.child(self.passthrough_requests, self.labels.tenant(tenant), family, result).inc()

    def passthrough_websocket_opened(self, tenant: str) -> Callable[[], None]:
        """Count a relayed WebSocket session open; returns what counts it closed (on the same
        label, even if a reload removed the tenant meanwhile)."""
        gauge = self.child(self.passthrough_websockets, self.labels.tenant(tenant))
        gauge.inc()
        closed: Callable[[], None] = gauge.dec
        return closed

    def internal_error(self, where: str) -> None:
        self.internal_errors.labels(where if where in INTERNAL_ERROR_PLACES else OTHER).inc()

    def connection_refused(self, reason: str) -> None:
        self.child(self.connections_refused,
                   reason if reason in REFUSAL_REASONS else OTHER).inc()

    def store_lost_decisions(self, reason: str, count: int) -> None:
        self.store_lost.labels(reason).inc(count)

    def reloaded(self, result: ReloadResult) -> None:
        self.reloads.labels("success" if result.applied else "failure").inc()


class _ConfigCollector(Collector):
    """Thresholds and calibrators of the config in force, read when scraped."""

    def __init__(self, state: Callable[[], RuntimeState]) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        state = self._state()
        threshold = GaugeMetricFamily(
            "basguard_threshold_ratio", "Each tenant's answer threshold.", labels=["tenant"])
        calibrators = GaugeMetricFamily(
            "basguard_calibrator_info", "The calibrator each tenant applies per model (value 1).",
            labels=["tenant", "model", "method", "version", "training_rows"])
        for name, tenant in state.tenants.items():
            threshold.add_metric([name], tenant.threshold)
            for model, calibrator in (("default", tenant.default_calibrator),
                                      *tenant.model_calibrators.items()):
                training = calibrator.training
                calibrators.add_metric(
                    [name, model, calibrator.method, calibrator.version,
                     str(training.rows if training else 0)], 1.0)
        yield threshold
        yield calibrators


class _StoreCollector(Collector):
    """Feedback figures and drift from the decision store, read when scraped."""

    def __init__(self, store: DecisionStore, labels: ConfiguredLabels, drift_window: int) -> None:
        self._store = store
        self._labels = labels
        self._drift_window = drift_window

    def collect(self) -> Iterator[Metric]:
        try:
            totals = self._store.feedback_totals()
            segments = self._store.segment_totals()
            drifts = self._store.drift(self._drift_window)
        except StoreUnavailable:
            # The database is down: the scrape still answers, without the store's figures
            # (a gap in those series, not a zero), and with the writer's state.
            yield self._writer_up()
            return
        yield from self._feedback(totals)
        yield _gauge("basguard_feedback_segment_decisions",
                     "Labelled decisions by tenant, segment and outcome: over- and "
                     "under-abstention per segment, for parity.",
                     ["tenant", "segment", "outcome"],
                     segment_outcomes(segments, self._labels.tenant, self._labels.segment))
        yield from self._drift(drifts)
        yield self._writer_up()

    def _feedback(self, totals: Iterable[FeedbackTotal]) -> Iterator[Metric]:
        figures = feedback_figures(totals, self._labels.tenant, self._labels.model)
        yield _gauge("basguard_feedback_decisions",
                     "Labelled decisions by outcome: answered_wrong is under-abstention, "
                     "abstained_correct over-abstention.",
                     ["tenant", "model", "outcome"], figures.outcomes)
        yield _gauge("basguard_feedback_realized_utility_sum",
                     "Sum of labelled decisions' realized utility (answered: +1 correct, "
                     "-wrong_answer_cost wrong; abstained: -abstain_cost).",
                     ["tenant", "model"], figures.utility)
        yield _gauge("basguard_feedback_bas_sum",
                     "Sum of labelled decisions' BAS (s if correct, s + ln(1 - s) if wrong).",
                     ["tenant", "model"], figures.bas_sum)
        yield _gauge("basguard_feedback_bas_count",
                     "Labelled decisions with a confidence (live BAS = sum / count).",
                     ["tenant", "model"], figures.bas_count)
        yield _gauge("basguard_feedback_reliability_decisions",
                     "Labelled decisions by confidence bin (lower edge) and correctness.",
                     ["tenant", "model", "bin", "correct"], figures.bins)
        yield _gauge("basguard_feedback_reliability_confidence_sum",
                     "Sum of the confidences of the labelled decisions in each bin.",
                     ["tenant", "model", "bin"], figures.bin_confidence)

    def _drift(self, drifts: Iterable[DriftWindow]) -> Iterator[Metric]:
        gap = GaugeMetricFamily(
            "basguard_calibration_drift_ratio",
            f"Mean predicted P(correct) minus observed accuracy over the latest "
            f"{self._drift_window} labelled decisions (positive: overconfident).",
            labels=["tenant", "model"])
        window = GaugeMetricFamily(
            "basguard_calibration_drift_window_decisions",
            "Labelled decisions in the drift window.", labels=["tenant", "model"])
        for drift in drifts:
            labels = [self._labels.tenant(drift.tenant), self._labels.model(drift.model)]
            if OTHER in labels:
                continue  # a window of a tenant or model no longer configured
            gap.add_metric(labels, drift.gap)
            window.add_metric(labels, drift.decisions)
        yield gap
        yield window

    def _writer_up(self) -> Metric:
        return _gauge("basguard_store_writer_up",
                      "1 while the decision store's writer thread runs in the worker that "
                      "answered this scrape and reaches the database; 0 if it has stopped or "
                      "the database is unreachable (decisions are queued or lost, labels get "
                      "503, /readyz fails).", [], {(): float(self._store.ready)})


def _gauge(
    name: str, documentation: str, labels: list[str], values: Mapping[Any, float]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family
