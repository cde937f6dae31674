"""Confidence signals: token logprobs, sampling consistency, verbalized confidence and a judge.

One module per signal behind one seam (:mod:`.base`), registered in :mod:`.registry`, run per
request by :mod:`.runner`. The gateway supplies a :class:`ModelCaller` (:mod:`.caller`).
"""

from proxy.signals.base import (
    Answer,
    CallResult,
    ConfidenceSignal,
    ModelCaller,
    SignalCall,
    SignalCalls,
    SignalRequest,
    SignalUnavailable,
)
from proxy.signals.caller import UpstreamModelCaller
from proxy.signals.registry import (
    FEATURE_KINDS,
    FEATURE_SIGNALS,
    SIGNALS,
    SignalConfigError,
    SignalPlan,
    build_signals,
    extra_calls_per_request,
    plan_signals,
    signals_to_run,
    uncalibrated_spec,
    upstream_body,
)
from proxy.signals.runner import SignalOutcome, SignalRun, measure_signals

__all__ = [
    "FEATURE_KINDS",
    "FEATURE_SIGNALS",
    "SIGNALS",
    "Answer",
    "CallResult",
    "ConfidenceSignal",
    "ModelCaller",
    "SignalCall",
    "SignalCalls",
    "SignalConfigError",
    "SignalOutcome",
    "SignalPlan",
    "SignalRequest",
    "SignalRun",
    "SignalUnavailable",
    "UpstreamModelCaller",
    "build_signals",
    "extra_calls_per_request",
    "measure_signals",
    "plan_signals",
    "signals_to_run",
    "uncalibrated_spec",
    "upstream_body",
]
