"""The console's pages, rendered on the server with Jinja2: tenants, review queue, policy
simulator, refit and promote. Forms post with the session's CSRF token and redirect after a
success; the few scripted behaviours (keys, the slider) are in ``static/admin.js``."""

from __future__ import annotations

import math
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from proxy.admin.api import (
    parse_skipped,
    scoped_tenants,
    simulation_request,
    tenants_view,
)
from proxy.admin.context import AdminParts, Caller, PageCaller, PageOperator, Parts, base_path
from proxy.admin.models import FitReport
from proxy.admin.review import label_decision, review_entries
from proxy.admin.simulator import run_simulation
from proxy.admin.svg import curve_svg, reliability_svg
from proxy.admin.tenants import visible_tenants
from proxy.errors import GatewayError, InvalidRequest, LabelConflict

__all__ = ["render", "router"]

router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)


def render(request: Request, template: str, title: str, *, caller: Caller | None = None,
           status: int = 200, **context: Any) -> HTMLResponse:
    """A page, with what every page's layout reads."""
    parts: AdminParts = request.app.state.parts
    csrf = (parts.sessions.csrf_token(caller.session)
            if caller is not None and caller.session is not None else "")
    response: HTMLResponse = parts.templates.TemplateResponse(
        request, template,
        {"title": title, "base": base_path(request), "caller": caller, "csrf": csrf,
         "page": request.url.path.removeprefix(base_path(request)), **context},
        status_code=status)
    return response


def _see_other(request: Request, path: str, **query: Any) -> RedirectResponse:
    shown = {key: value for key, value in query.items() if value not in (None, "")}
    return RedirectResponse(f"{base_path(request)}{path}"
                            + (f"?{urlencode(shown)}" if shown else ""), status_code=303)


@router.get("/tenants")
async def tenants_page(
    request: Request, caller: PageCaller, parts: Parts,
    window_days: Annotated[float, Query(gt=0, le=3650)] = 7.0,
) -> HTMLResponse:
    view = await tenants_view(parts, caller, window_days)
    svgs = {(t.name, m.model): reliability_svg(
        m.reliability, title=f"Reliability of {t.name} on {m.model}: share correct against "
        "confidence, from the labelled decisions") for t in view.tenants for m in t.models}
    return render(request, "tenants.html", "Tenants", caller=caller, view=view, svgs=svgs)


async def _review_page(
    request: Request, caller: Caller, parts: AdminParts, tenant: str | None, skip: str, *,
    message: str | None = None, message_kind: str = "info", status: int = 200,
) -> HTMLResponse:
    state = parts.config.current
    tenants = scoped_tenants(state, caller, tenant or None)
    skipped = parse_skipped([skip])
    entries = await review_entries(parts.decisions, tenants, since_days=7.0, limit=11,
                                   skipped=skipped)
    current = entries[0] if entries else None
    next_skip = ",".join([*(f"{i}:{c}" for i, c in skipped),
                          *([f"{current.id}:{current.choice}"] if current else [])])
    skip_href = f"{base_path(request)}/review?" + urlencode(
        {key: value for key, value in (("tenant", tenant), ("skip", next_skip)) if value})
    return render(request, "review.html", "Review queue", caller=caller, status=status,
                  tenants=visible_tenants(state, caller.principal), tenant=tenant or "",
                  current=current, upcoming=entries[1:], skip=skip, skip_href=skip_href,
                  message=message, message_kind=message_kind)


@router.get("/review")
async def review_page(
    request: Request, caller: PageCaller, parts: Parts, tenant: str | None = None,
    skip: str = "", done: str | None = None,
) -> HTMLResponse:
    message = {"correct": "Labelled correct.", "wrong": "Labelled wrong."}.get(done or "")
    return await _review_page(request, caller, parts, tenant, skip, message=message,
                              message_kind="success")


@router.post("/review/label")
async def review_label(
    request: Request, caller: PageCaller, parts: Parts,
    id: Annotated[str, Form(min_length=1, max_length=200)],
    choice: Annotated[int, Form(ge=0, le=127)], correct: Annotated[bool, Form()],
    expected: Annotated[str, Form()] = "", tenant: Annotated[str, Form()] = "",
    skip: Annotated[str, Form()] = "",
) -> Response:
    seen = {"": None, "true": True, "false": False}.get(expected)
    try:
        await label_decision(parts.decisions, caller.principal, id, choice, correct, seen)
    except LabelConflict as exc:
        return await _review_page(request, caller, parts, tenant or None, skip,
                                  message=exc.message, message_kind="error", status=409)
    return _see_other(request, "/review", tenant=tenant, skip=skip,
                      done="correct" if correct else "wrong")


def _number(text: str | None, name: str, low: float, high: float) -> float | None:
    """A form's number field: empty means unset (a form sends every field, filled or not)."""
    if text is None or not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be a number from {low:g} to {high:g}", param=name)
    return value


@router.get("/simulator")
async def simulator_page(
    request: Request, caller: PageCaller, parts: Parts, tenant: str | None = None,
    model: str | None = None, threshold: str | None = None,
    wrong_answer_cost: str | None = None, abstain_cost: str | None = None,
    since_days: str | None = None,
) -> HTMLResponse:
    return await _simulator(
        request, caller, parts, tenant or None, model or None,
        _number(threshold, "threshold", 0.0, 0.999),
        _number(wrong_answer_cost, "wrong_answer_cost", 0.0, 1e6),
        _number(abstain_cost, "abstain_cost", 0.0, 1e6),
        _number(since_days, "since_days", 0.001, 3650.0))


async def _simulator(
    request: Request, caller: Caller, parts: AdminParts, tenant: str | None,
    model: str | None, threshold: float | None, wrong_answer_cost: float | None,
    abstain_cost: float | None, since_days: float | None,
) -> HTMLResponse:
    state = parts.config.current
    visible = visible_tenants(state, caller.principal)
    if not visible:
        return render(request, "error.html", "Policy simulator", caller=caller,
                      message="You see no tenant.")
    request_ = simulation_request(state, caller, tenant or visible[0], model or None, threshold,
                                  wrong_answer_cost, abstain_cost, since_days)
    runtime = state.tenants[request_.tenant]
    context: dict[str, Any] = {
        "tenants": visible, "models": list(state.models), "form": request_,
        "configured": runtime, "shown_threshold": threshold if threshold is not None
        else runtime.threshold, "report": None}
    await parts.decisions.settled()
    try:
        report, _, chosen = await run_in_threadpool(run_simulation, parts.decisions, state,
                                                    request_)
    except GatewayError as exc:
        return render(request, "simulator.html", "Policy simulator", caller=caller,
                      message=exc.message, message_kind="error", **context)
    query = {key: value for key, value in (
        ("tenant", request_.tenant), ("model", request_.model), ("threshold", threshold),
        ("wrong_answer_cost", wrong_answer_cost), ("abstain_cost", abstain_cost),
        ("since_days", since_days)) if value is not None}
    curve = curve_svg(report.curve.threshold, report.curve.reference_utility_per_request,
                      report.curve.coverage, configured=runtime.threshold,
                      simulated=chosen.threshold, optimum=report.optimum.get("threshold"),
                      title=f"{request_.tenant}: utility and coverage against the threshold")
    context.update(report=report, simulated=chosen, curve=curve,
                   shown_threshold=chosen.threshold,
                   card_href=f"{base_path(request)}/api/simulate/card?{urlencode(query)}")
    return render(request, "simulator.html", "Policy simulator", caller=caller, **context)


async def _calibrators_page(
    request: Request, caller: Caller, parts: AdminParts, *, tenant: str | None = None,
    model: str | None = None, report: FitReport | None = None, message: str | None = None,
    message_kind: str = "info", status: int = 200,
) -> HTMLResponse:
    state = parts.config.current
    visible = visible_tenants(state, caller.principal)
    history = await run_in_threadpool(parts.promotions.history, visible)
    svgs = {}
    if report is not None:
        svgs = {"candidate_svg": reliability_svg(
                    report.candidate_reliability,
                    title=f"Candidate {report.candidate_version}: out-of-fold reliability"),
                "serving_svg": reliability_svg(
                    report.serving_reliability,
                    title=f"Serving {report.serving_version}: reliability on the same rows")}
    return render(request, "calibrators.html", "Refit and promote", caller=caller,
                  status=status, tenants=visible, models=list(state.models),
                  form_tenant=tenant, form_model=model, report=report, history=history,
                  can_promote=caller.principal.can_promote, message=message,
                  message_kind=message_kind, **svgs)


@router.get("/calibrators")
async def calibrators_page(request: Request, caller: PageCaller, parts: Parts) -> HTMLResponse:
    return await _calibrators_page(request, caller, parts)


@router.post("/calibrators/fit")
async def calibrators_fit(
    request: Request, caller: PageOperator, parts: Parts, tenant: Annotated[str, Form()],
    model: Annotated[str, Form()],
) -> HTMLResponse:
    scoped_tenants(parts.config.current, caller, tenant)
    try:
        report = await run_in_threadpool(parts.promotions.fit, tenant, model)
    except GatewayError as exc:
        return await _calibrators_page(request, caller, parts, tenant=tenant, model=model,
                                       message=exc.message, message_kind="error",
                                       status=exc.status_code)
    return await _calibrators_page(request, caller, parts, tenant=tenant, model=model,
                                   report=report)


@router.post("/calibrators/promote")
async def calibrators_promote(
    request: Request, caller: PageOperator, parts: Parts, tenant: Annotated[str, Form()],
    model: Annotated[str, Form()], candidate_version: Annotated[str, Form()],
    serving_version: Annotated[str, Form()], confirm: Annotated[str, Form()] = "",
) -> HTMLResponse:
    scoped_tenants(parts.config.current, caller, tenant)
    if confirm != "yes":
        return await _calibrators_page(
            request, caller, parts, tenant=tenant, model=model, status=400,
            message="Not promoted: tick the confirmation first.", message_kind="error")
    try:
        record = await run_in_threadpool(parts.promotions.promote, caller.principal, tenant,
                                         model, candidate_version, serving_version)
    except GatewayError as exc:
        return await _calibrators_page(request, caller, parts, tenant=tenant, model=model,
                                       message=exc.message, message_kind="error",
                                       status=exc.status_code)
    return await _calibrators_page(
        request, caller, parts, tenant=tenant, model=model, message_kind="success",
        message=f"Promoted: {tenant} on {model} is now decided with calibrator "
        f"{record.to_version} ({record.method}, {record.rows} rows), replacing "
        f"{record.from_version}.")


@router.get("/docs")
async def api_docs(request: Request, caller: PageCaller) -> HTMLResponse:
    return render(request, "docs.html", "API", caller=caller)
