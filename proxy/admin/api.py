"""The console's JSON API under ``/admin/api/``: everything the pages do, for scripts.

Thin routes: each parses, checks what the caller may see, calls a service module and returns
its typed model. Blocking work (store reads, fits, simulations) runs in the thread pool.
"""

from __future__ import annotations

import re
import time
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from proxy.admin.context import AdminParts, ApiCaller, Caller, Operator, Parts
from proxy.admin.models import (
    FitReport,
    FitRequest,
    LabelReceipt,
    LabelRequest,
    PromoteRequest,
    PromotionList,
    PromotionRecord,
    ReviewQueue,
    SimulationReport,
    TenantList,
    WhoAmI,
)
from proxy.admin.review import label_decision, review_entries
from proxy.admin.simulator import SimulationRequest, policy_card_zip, run_simulation
from proxy.admin.tenants import tenant_figures, visible_tenants
from proxy.errors import InvalidRequest, ModelNotFound
from proxy.runtime.risk_limits import live_limits
from proxy.runtime.state import RuntimeState

__all__ = ["parse_skipped", "router", "scoped_tenants", "simulation_request"]

router = APIRouter(prefix="/api", tags=["ops console"])

_SKIPPED = re.compile(r"^([^:,]{1,200}):([0-9]{1,3})$")


def scoped_tenants(state: RuntimeState, caller: Caller, tenant: str | None) -> list[str]:
    """The tenants a request covers: the one named (if the caller sees it), else all it sees."""
    visible = visible_tenants(state, caller.principal)
    if tenant is None:
        return visible
    if tenant not in visible:
        raise InvalidRequest(f"no tenant {tenant!r} that you may see", param="tenant",
                             code="tenant_not_found")
    return [tenant]


def _model(state: RuntimeState, model: str | None) -> str | None:
    if model is not None and model not in state.models:
        raise ModelNotFound(f"no model {model!r}; configured: {', '.join(state.models)}")
    return model


def parse_skipped(skip: list[str]) -> list[tuple[str, int]]:
    """``ID:CHOICE`` items (repeated, or comma-separated) the queue should leave out."""
    pairs = []
    for item in (part for value in skip for part in value.split(",") if part):
        match = _SKIPPED.match(item)
        if match is None:
            raise InvalidRequest("skip takes decision ids as ID:CHOICE", param="skip")
        pairs.append((match.group(1), int(match.group(2))))
    return pairs


@router.get("/whoami", summary="The key's holder and what it may do")
async def whoami(caller: ApiCaller, parts: Parts) -> WhoAmI:
    principal = caller.principal
    return WhoAmI(name=principal.name, key_id=principal.key_id,
                  tenants=visible_tenants(parts.config.current, principal),
                  can_promote=principal.can_promote, session_expires=caller.expires)


async def tenants_view(parts: AdminParts, caller: Caller, window_days: float) -> TenantList:
    state = parts.config.current
    decisions = parts.decisions
    await decisions.settled()  # include decisions made a moment ago
    totals = await run_in_threadpool(decisions.feedback_totals)
    counts = await run_in_threadpool(decisions.decision_counts,
                                     since=time.time() - window_days * 86400)
    limits = {name: state.tenants[name].risk_limits
              for name in visible_tenants(state, caller.principal)
              if state.tenants[name].risk_limits}
    # The live bounds as /metrics computes them, from the audit sample's totals.
    live = live_limits(limits, await run_in_threadpool(decisions.audit_totals)) if limits else []
    return tenant_figures(state, caller.principal, totals, counts, window_days=window_days,
                          live=live)


@router.get("/tenants", summary="Each tenant's policy, calibrators and live figures")
async def tenants(
    caller: ApiCaller, parts: Parts,
    window_days: Annotated[float, Query(gt=0, le=3650, description="Count decisions made in "
                                        "this many days (labels: all of them).")] = 7.0,
) -> TenantList:
    return await tenants_view(parts, caller, window_days)


@router.get("/review/queue", summary="Decisions waiting for a label, best to label first")
async def review_queue(
    caller: ApiCaller, parts: Parts,
    tenant: Annotated[str | None, Query(description="One tenant (default: all you see).")]
    = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    since_days: Annotated[float, Query(gt=0, le=3650)] = 7.0,
    skip: Annotated[list[str], Query(description="ID:CHOICE of decisions to leave out "
                                     "(skipped).")] = [],  # noqa: B006  # FastAPI's idiom
) -> ReviewQueue:
    tenants_ = scoped_tenants(parts.config.current, caller, tenant)
    entries = await review_entries(parts.decisions, tenants_, since_days=since_days,
                                   limit=limit, skipped=parse_skipped(skip))
    return ReviewQueue(data=entries)


@router.post("/review/label", summary="Label a decision correct or wrong")
async def review_label(caller: ApiCaller, parts: Parts, body: LabelRequest) -> LabelReceipt:
    return await label_decision(parts.decisions, caller.principal, body.id, body.choice,
                                body.correct, body.expected)


def simulation_request(
    state: RuntimeState, caller: Caller, tenant: str, model: str | None,
    threshold: float | None, wrong_answer_cost: float | None, abstain_cost: float | None,
    since_days: float | None,
) -> SimulationRequest:
    scoped_tenants(state, caller, tenant)
    return SimulationRequest(tenant=tenant, model=_model(state, model), threshold=threshold,
                             wrong_answer_cost=wrong_answer_cost, abstain_cost=abstain_cost,
                             since_days=since_days)


Threshold = Annotated[float | None, Query(ge=0, lt=1, description="Answer iff P(correct) >= "
                                          "this (default: from the costs, else configured).")]
WrongCost = Annotated[float | None, Query(ge=0, le=1e6, description="λ: a wrong answer's cost.")]
AbstainCost = Annotated[float | None, Query(ge=0, le=1e6, description="a: an abstention's cost.")]
SinceDays = Annotated[float | None, Query(gt=0, le=3650, description="Only decisions this "
                                          "recent (default: all kept).")]


@router.get("/simulate", summary="Replay a tenant's decisions under a threshold or costs")
async def simulate(
    caller: ApiCaller, parts: Parts, tenant: str, model: str | None = None,
    threshold: Threshold = None, wrong_answer_cost: WrongCost = None,
    abstain_cost: AbstainCost = None, since_days: SinceDays = None,
) -> SimulationReport:
    state = parts.config.current
    request = simulation_request(state, caller, tenant, model, threshold, wrong_answer_cost,
                                 abstain_cost, since_days)
    await parts.decisions.settled()
    report, _, _ = await run_in_threadpool(run_simulation, parts.decisions, state, request)
    return report


@router.get("/simulate/card", summary="The simulated policy as a risk card (a zip)",
            response_class=Response,
            responses={200: {"content": {"application/zip": {}}}})
async def simulate_card(
    caller: ApiCaller, parts: Parts, tenant: str, model: str | None = None,
    threshold: Threshold = None, wrong_answer_cost: WrongCost = None,
    abstain_cost: AbstainCost = None, since_days: SinceDays = None,
) -> Response:
    state = parts.config.current
    request = simulation_request(state, caller, tenant, model, threshold, wrong_answer_cost,
                                 abstain_cost, since_days)
    await parts.decisions.settled()
    name, payload = await run_in_threadpool(policy_card_zip, parts.decisions, state, request,
                                            who=caller.principal.who)
    return Response(payload, media_type="application/zip",
                    headers={"content-disposition": f'attachment; filename="{name}"'})


@router.post("/calibrators/fit", summary="Fit a calibrator on the store's labels")
async def fit(caller: Operator, parts: Parts, body: FitRequest) -> FitReport:
    state = parts.config.current
    scoped_tenants(state, caller, body.tenant)
    _model(state, body.model)
    return await run_in_threadpool(parts.promotions.fit, body.tenant, body.model)


@router.post("/calibrators/promote", summary="Swap a fitted candidate in for the serving one")
async def promote(caller: Operator, parts: Parts, body: PromoteRequest) -> PromotionRecord:
    state = parts.config.current
    scoped_tenants(state, caller, body.tenant)
    _model(state, body.model)
    return await run_in_threadpool(parts.promotions.promote, caller.principal, body.tenant,
                                   body.model, body.candidate_version, body.serving_version)


@router.get("/calibrators/promotions", summary="The latest promotions, newest first")
async def promotions(caller: ApiCaller, parts: Parts) -> PromotionList:
    visible = visible_tenants(parts.config.current, caller.principal)
    return PromotionList(data=await run_in_threadpool(parts.promotions.history, visible))
