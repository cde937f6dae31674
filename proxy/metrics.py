"""The gateway's Prometheus metrics, in one place.

Names are ``basguard_<name>_<unit>``, counters end in ``_total``, times are in seconds. Labels
come only from bounded sets: tenants and models named in the config (anything else counts as
``other``), decisions (``answer``, ``abstain``, ``no_confidence``) and modes. Every metric is
registered on the registry given to :class:`GatewayMetrics`, so each app (and each test) has its
own.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from .decision import ChoiceOutcome
from .reload import ReloadResult
from .runtime import RuntimeState, TenantRuntime
from .serving import DecisionRecord

__all__ = ["GatewayMetrics", "decision_label"]

OTHER = "other"
CONFIDENCE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0, 60.0)


def decision_label(outcome: ChoiceOutcome) -> str:
    """``no_confidence`` for a decision made without confidence, else answer or abstain."""
    return "no_confidence" if outcome.confidence is None else outcome.decision


class GatewayMetrics:
    """Every metric the gateway exports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
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
            ["tenant", "model"], registry=r)
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
        self.threshold = Gauge(
            "basguard_threshold_ratio", "Each tenant's answer threshold.", ["tenant"], registry=r)
        self.calibrator = Info(
            "basguard_calibrator", "The calibrator each tenant applies per model.",
            ["tenant", "model"], registry=r)
        self.reloads = Counter(
            "basguard_config_reloads_total", "Config reloads by result.", ["result"], registry=r)
        self._tenants: frozenset[str] = frozenset()
        self._models: frozenset[str] = frozenset()

    def describe_config(self, state: RuntimeState) -> None:
        """Set the per-tenant gauges and info from a (re)loaded config."""
        self._tenants = frozenset(state.tenants)
        self._models = frozenset(state.models)
        for name, tenant in state.tenants.items():
            self.threshold.labels(name).set(tenant.threshold)
            for model in ("default", *tenant.model_calibrators):
                calibrator = (tenant.default_calibrator if model == "default"
                              else tenant.model_calibrators[model])
                training = calibrator.training
                self.calibrator.labels(name, model).info({
                    "method": calibrator.method,
                    "version": calibrator.version,
                    "training_rows": str(training.rows if training else 0),
                })

    def tenant_label(self, tenant: str) -> str:
        return tenant if tenant in self._tenants else OTHER

    def model_label(self, model: object) -> str:
        return model if isinstance(model, str) and model in self._models else OTHER

    def record_decisions(
        self, tenant: TenantRuntime, model: str, outcomes: Iterable[ChoiceOutcome]
    ) -> None:
        """Count each choice's decision and add its expected utility."""
        tenant_label, model_label = self.tenant_label(tenant.name), self.model_label(model)
        utility = 0.0
        for outcome in outcomes:
            self.requests.labels(tenant_label, model_label, decision_label(outcome),
                                 tenant.mode).inc()
            p = outcome.confidence
            if p is None:
                self.no_confidence.labels(tenant_label, model_label).inc()
                # Without confidence the expected utility is unknown; only abstention's is.
                utility -= tenant.abstain_cost if not outcome.answer else 0.0
                continue
            self.confidence.labels(tenant_label, model_label).observe(p)
            utility += (p - (1.0 - p) * tenant.wrong_answer_cost if outcome.answer
                        else -tenant.abstain_cost)
        self.expected_utility.labels(tenant_label, model_label).inc(utility)

    # DecisionObserver: how the completion service reports to the metrics.

    def decided(self, record: DecisionRecord) -> None:
        self.record_decisions(record.tenant, record.model, record.outcomes)

    def upstream_failed(self, model: str, kind: str) -> None:
        self.upstream_errors.labels(self.model_label(model), kind).inc()

    def reloaded(self, result: ReloadResult, state: RuntimeState) -> None:
        self.reloads.labels("success" if result.applied else "failure").inc()
        if result.applied:
            self.describe_config(state)
