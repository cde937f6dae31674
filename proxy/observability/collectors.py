"""The gateway's scrape-time gauges: what the config in force and the decision store say, read
when Prometheus scrapes, so that a reload or another process's label never leaves a stale series.

:class:`ConfigCollector` reads the config (thresholds, calibrators, risk limits and their
certificates); :class:`StoreCollector` the store's totals tables, which every process and the
CLI share (feedback outcomes, realized utility, live BAS, reliability bins, drift, each risk
limit's live bound from the audit sample, the writer's state). These are gauges although they
mostly grow: the last label for a decision wins, so a relabel can lower them, which a counter
must never do. Both read only what every process shares, so whichever worker answers a scrape
shows the same figures (rule 4 of :mod:`proxy.observability.metrics`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from proxy.errors import StoreUnavailable
from proxy.observability.feedback_figures import feedback_figures, segment_outcomes
from proxy.observability.labels import OTHER, ConfiguredLabels
from proxy.runtime.risk_limits import LiveLimit, live_limits
from proxy.runtime.state import RuntimeState
from proxy.store import DecisionStore, DriftWindow, FeedbackTotal

__all__ = ["ConfigCollector", "StoreCollector"]


class ConfigCollector(Collector):
    """Thresholds, calibrators and risk limits of the config in force, read when scraped."""

    def __init__(self, state: Callable[[], RuntimeState]) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        yield from self._thresholds()
        yield from self._risk_limits()

    def _thresholds(self) -> Iterator[Metric]:
        state = self._state()
        threshold = GaugeMetricFamily(
            "basguard_threshold_ratio", "Each tenant's cost-optimal answer threshold (a risk "
            "limit may raise it per model: basguard_risk_limit_threshold_ratio).",
            labels=["tenant"])
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

    def _risk_limits(self) -> Iterator[Metric]:
        """Each tenant's risk limit per model: A and C, whether a threshold is certified, the
        threshold in force, and what the certificate rests on."""
        labels = ["tenant", "model"]
        limit = GaugeMetricFamily(
            "basguard_risk_limit_max_error_ratio",
            "A tenant's risk limit on a model: at most this share of the answers wrong.",
            labels=labels)
        confidence = GaugeMetricFamily(
            "basguard_risk_limit_confidence_ratio",
            "The confidence with which the risk limit is certified and watched.", labels=labels)
        certified = GaugeMetricFamily(
            "basguard_risk_limit_certified",
            "1 when a certificate proves a threshold for the limit; 0 when none does (no "
            "certificate, or one that certified nothing): the tenant answers nothing on the "
            "model.", labels=labels)
        threshold = GaugeMetricFamily(
            "basguard_risk_limit_threshold_ratio",
            "The threshold a tenant with a risk limit answers at on a model: max(the cost "
            "threshold, the certified one); absent while uncertified.", labels=labels)
        certified_threshold = GaugeMetricFamily(
            "basguard_risk_limit_certified_threshold_ratio",
            "The certificate's threshold: the lowest it proves keeps the limit.", labels=labels)
        certificate_labels = GaugeMetricFamily(
            "basguard_risk_limit_certificate_labels",
            "Independent labels the certificate was computed on (one per question).", labels=labels)
        answer_rate = GaugeMetricFamily(
            "basguard_risk_limit_certified_answer_ratio",
            "The share of the certification data answered at the certified threshold: the "
            "answer rate the certificate implies.", labels=labels)
        for name, tenant in self._state().tenants.items():
            for model, model_limit in tenant.risk_limits.items():
                key = [name, model]
                limit.add_metric(key, model_limit.max_error_rate)
                confidence.add_metric(key, model_limit.confidence)
                certified.add_metric(key, float(model_limit.certified))
                certificate = model_limit.certificate
                if model_limit.threshold is not None and certificate is not None \
                        and certificate.threshold is not None:
                    threshold.add_metric(key, model_limit.threshold)
                    certified_threshold.add_metric(key, certificate.threshold)
                    answer_rate.add_metric(key, certificate.answer_rate)
                certificate_labels.add_metric(
                    key, 0.0 if certificate is None else float(certificate.labels))
        yield from (limit, confidence, certified, threshold, certified_threshold,
                    certificate_labels, answer_rate)


class StoreCollector(Collector):
    """Feedback figures, drift and risk limits' live bounds from the decision store, read when
    scraped."""

    def __init__(self, store: DecisionStore, labels: ConfiguredLabels, drift_window: int,
                 state: Callable[[], RuntimeState]) -> None:
        self._store = store
        self._labels = labels
        self._drift_window = drift_window
        self._state = state

    def _serving_version(self, tenant: str, model: str) -> str | None:
        """Drift is measured on the decisions of the calibrator in force (a refit starts a new
        window); None for a tenant no longer configured."""
        runtime = self._state().tenants.get(tenant)
        return None if runtime is None else runtime.calibrator_for(model).version

    def collect(self) -> Iterator[Metric]:
        state = self._state()
        limits = {name: tenant.risk_limits for name, tenant in state.tenants.items()
                  if tenant.risk_limits}
        try:
            totals = self._store.feedback_totals()
            segments = self._store.segment_totals()
            drifts = self._store.drift(self._drift_window, serving=self._serving_version)
            live = live_limits(limits, self._store.audit_totals()) if limits else []
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
        yield from _live_limits(live)
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
            f"{self._drift_window} labelled decisions made under the calibrator in force "
            "(positive: overconfident).",
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


def _live_limits(live: Iterable[LiveLimit]) -> Iterator[Metric]:
    """The audit sample's anytime-valid bounds on each certified limit (tenants and models
    from the config: bounded)."""
    labels = ["tenant", "model"]
    upper = GaugeMetricFamily(
        "basguard_risk_limit_error_upper_bound_ratio",
        "Anytime-valid upper confidence bound (at the limit's confidence) on the error rate "
        "among answers, from the labelled audited answers given under the certificate in "
        "force; 1 before any label.", labels=labels)
    lower = GaugeMetricFamily(
        "basguard_risk_limit_error_lower_bound_ratio",
        "Its lower side: above the limit, the labels prove the error rate is above it.",
        labels=labels)
    breached = GaugeMetricFamily(
        "basguard_risk_limit_breached",
        "1 when the lower bound is above the limit (the error rate among answers is proven "
        "above max_error_rate), else 0.", labels=labels)
    audited = GaugeMetricFamily(
        "basguard_risk_limit_audited_decisions",
        "Labelled audited answers the live bound rests on (since the certificate in force).",
        labels=labels)
    wrong = GaugeMetricFamily(
        "basguard_risk_limit_audited_wrong_decisions",
        "Of those, labelled wrong.", labels=labels)
    for limit in live:
        key = [limit.tenant, limit.model]
        upper.add_metric(key, limit.bound.upper)
        lower.add_metric(key, limit.bound.lower)
        breached.add_metric(key, float(limit.bound.breached))
        audited.add_metric(key, float(limit.bound.labels))
        wrong.add_metric(key, float(limit.bound.errors))
    yield from (upper, lower, breached, audited, wrong)


def _gauge(
    name: str, documentation: str, labels: list[str], values: Mapping[Any, float]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family
