"""The metrics' label values, each from a bounded set, so that no client can grow the series.

Tenants, models and segments are those the current config names (anything else counts as
``other``); the rest come from fixed vocabularies: decisions, stream modes, passthrough endpoint
families (:data:`policies.schema.PASSTHROUGH_FAMILIES`) and outcomes, refusal reasons, reliability
bins.
"""

from __future__ import annotations

from collections.abc import Callable

from proxy.judging.decision import ChoiceOutcome
from proxy.runtime.state import RuntimeState
from proxy.store import RELIABILITY_BINS

__all__ = [
    "BIN_LABELS",
    "INTERNAL_ERROR_PLACES",
    "OTHER",
    "PASSTHROUGH_OUTCOMES",
    "REFUSAL_REASONS",
    "ConfiguredLabels",
    "decision_label",
]

OTHER = "other"
REFUSAL_REASONS = ("headers_too_large", "request_timeout", "body_timeout", "malformed_http",
                   "server_busy", "idle_closed")
INTERNAL_ERROR_PLACES = ("request", "stream", "websocket")
PASSTHROUGH_OUTCOMES = ("1xx", "2xx", "3xx", "4xx", "5xx", "error")
BIN_LABELS = tuple(f"{i / RELIABILITY_BINS:.1f}" for i in range(RELIABILITY_BINS))
"""Reliability bin ``"0.3"`` holds confidences in ``[0.3, 0.4)``; ``"0.9"`` includes 1."""


def decision_label(outcome: ChoiceOutcome) -> str:
    """``not_applicable`` for a choice passed without a decision (a tool call), else
    ``no_confidence`` for a decision made without confidence, else answer or abstain."""
    if not outcome.applicable:
        return "not_applicable"
    return "no_confidence" if outcome.confidence is None else outcome.decision


class ConfiguredLabels:
    """Tenant, model and segment labels: the name if the config in force has it, else ``other``.

    Read at each call, so a reload takes effect at once.
    """

    def __init__(self, state: Callable[[], RuntimeState]) -> None:
        self._state = state

    def current(self) -> RuntimeState:
        """The config in force: labels resolved from it hold until it is replaced."""
        return self._state()

    def tenant(self, tenant: str) -> str:
        return tenant if tenant in self._state().tenants else OTHER

    def model(self, model: object) -> str:
        return model if isinstance(model, str) and model in self._state().models else OTHER

    def segment(self, tenant: str, segment: str) -> str:
        """``segment`` if the tenant's current config names it, else ``other``."""
        policy = self._state().config.tenants.get(tenant)
        names = policy.segments.names if policy is not None and policy.segments else ()
        return segment if segment in names else OTHER
