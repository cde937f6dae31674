"""The tenants page's figures: each tenant's policy, risk limits and calibrators from the config
in force, and its live figures from the decision store (the feedback and audit totals
``/metrics`` also reads)."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from calibrators.artifact import FittedCalibrator
from policies.risk_limit import LiveBound
from proxy.admin.models import (
    CalibratorSummary,
    ModelFigures,
    ReliabilityBin,
    RiskLimitFigures,
    TenantFigures,
    TenantList,
)
from proxy.runtime.admin_access import AdminPrincipal
from proxy.runtime.risk_limits import LiveLimit, ModelRiskLimit
from proxy.runtime.state import RuntimeState, TenantRuntime
from proxy.store import RELIABILITY_BINS, DecisionCount, FeedbackTotal

__all__ = ["reliability_from_totals", "tenant_figures", "visible_tenants"]


def visible_tenants(state: RuntimeState, principal: AdminPrincipal) -> list[str]:
    """The configured tenants ``principal`` sees, in config order."""
    return [name for name in state.tenants if principal.sees(name)]


def reliability_from_totals(totals: Iterable[FeedbackTotal]) -> list[ReliabilityBin]:
    """The ten reliability bins of one tenant and model's feedback totals."""
    decisions = [0] * RELIABILITY_BINS
    correct = [0] * RELIABILITY_BINS
    confidence = [0.0] * RELIABILITY_BINS
    for total in totals:
        if total.bin < 0:
            continue  # decided without a confidence: in no bin
        decisions[total.bin] += total.decisions
        confidence[total.bin] += total.confidence_sum
        if total.outcome.endswith("_correct"):
            correct[total.bin] += total.decisions
    return [ReliabilityBin(low=b / RELIABILITY_BINS, high=(b + 1) / RELIABILITY_BINS,
                           decisions=decisions[b], correct=correct[b],
                           mean_confidence=confidence[b] / decisions[b] if decisions[b] else None)
            for b in range(RELIABILITY_BINS)]


def _calibrator(calibrator: FittedCalibrator, file: str | None, now: float) -> CalibratorSummary:
    created = calibrator.created_at.timestamp()
    return CalibratorSummary(method=calibrator.method, version=calibrator.version,
                             features=[str(spec) for spec in calibrator.features],
                             created_at=created, age_days=max(0.0, (now - created) / 86400),
                             file=file)


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def _risk_limit(limit: ModelRiskLimit, bound: LiveBound | None) -> RiskLimitFigures:
    """``bound``: the live bound under the certificate in force (None: nothing to watch)."""
    certificate = limit.certificate
    return RiskLimitFigures(
        max_error_rate=limit.max_error_rate, confidence=limit.confidence,
        on_breach=limit.on_breach,
        status=limit.status(breached=bound is not None and bound.breached),
        threshold=limit.threshold, certificate=limit.certificate_version,
        certificate_labels=0 if certificate is None else certificate.labels,
        certified_answer_rate=(certificate.answer_rate if certificate is not None
                               and certificate.threshold is not None else None),
        audited_answers=0 if bound is None else bound.labels,
        audited_wrong=0 if bound is None else bound.errors,
        error_lower_bound=None if bound is None else bound.lower,
        error_upper_bound=None if bound is None else bound.upper,
    )


def _model_figures(
    tenant: TenantRuntime, model: str, file: str | None, totals: Sequence[FeedbackTotal],
    counts: Sequence[DecisionCount], now: float, bound: LiveBound | None = None,
) -> ModelFigures:
    outcomes: defaultdict[str, int] = defaultdict(int)
    for total in totals:
        outcomes[total.outcome] += total.decisions
    labelled = sum(outcomes.values())
    scored = [t for t in totals if t.bin >= 0]
    scored_count = sum(t.decisions for t in scored)
    decided = sum(c.count for c in counts)
    withheld = sum(c.count for c in counts if c.decision == "abstain")
    limit = tenant.risk_limits.get(model)
    return ModelFigures(
        model=model, threshold=tenant.threshold, wrong_answer_cost=tenant.wrong_answer_cost,
        abstain_cost=tenant.abstain_cost,
        certified_threshold=None if limit is None else limit.certified_threshold,
        risk_limit=None if limit is None else _risk_limit(limit, bound),
        audit_rate=tenant.audit_rate, decisions=decided, withheld=withheld,
        abstention_rate=_ratio(withheld, decided), labelled=labelled,
        live_utility_per_request=_ratio(sum(t.utility_sum for t in totals), labelled),
        over_abstention=_ratio(outcomes["abstained_correct"], labelled),
        under_abstention=_ratio(outcomes["answered_wrong"], labelled),
        bas=_ratio(sum(t.bas_sum for t in scored), scored_count),
        calibrator=_calibrator(tenant.calibrator_for(model), file, now),
        reliability=reliability_from_totals(totals),
    )


def tenant_figures(
    state: RuntimeState, principal: AdminPrincipal, totals: Sequence[FeedbackTotal],
    counts: Sequence[DecisionCount], *, window_days: float, now: float | None = None,
    live: Iterable[LiveLimit] = (),
) -> TenantList:
    """Per visible tenant, a row per model it has used or has a calibrator or a risk limit for
    (else every configured model, so that a tenant without traffic yet still shows its
    settings). ``live``: the certified limits' live bounds
    (:func:`proxy.runtime.risk_limits.live_limits`)."""
    now = time.time() if now is None else now
    bounds: Mapping[tuple[str, str], LiveBound] = {
        (limit.tenant, limit.model): limit.bound for limit in live}
    by_pair: defaultdict[tuple[str, str], list[FeedbackTotal]] = defaultdict(list)
    for total in totals:
        by_pair[(total.tenant, total.model)].append(total)
    counted: defaultdict[tuple[str, str], list[DecisionCount]] = defaultdict(list)
    for count in counts:
        counted[(count.tenant, count.model)].append(count)
    tenants = []
    for name in visible_tenants(state, principal):
        tenant = state.tenants[name]
        refs = state.config.tenants[name].calibrators
        used = [model for model in state.models
                if (name, model) in by_pair or (name, model) in counted or model in refs.models
                or model in state.config.tenants[name].risk.certificate_paths()]
        rows = [_model_figures(tenant, model, refs.models.get(model, refs.default),
                               by_pair[(name, model)], counted[(name, model)], now,
                               bounds.get((name, model)))
                for model in used or list(state.models)]
        tenants.append(TenantFigures(name=name, mode=tenant.mode,
                                     description=state.config.tenants[name].description,
                                     models=rows))
    return TenantList(window_days=window_days, tenants=tenants)
