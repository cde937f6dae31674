"""Feedback: a tenant labels its responses correct or wrong, and lists the answers it withheld
so that reviewers can label them (see :mod:`proxy.store`)."""

from __future__ import annotations

import re

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from proxy.errors import InvalidRequest
from proxy.http.routes.context import authenticated, decision_store, is_ascii_digits, read_json
from proxy.wire.request_body import validated
from proxy.wire.schema import (
    MAX_CHOICES,
    AbstainedAnswer,
    AbstainedList,
    FeedbackReceipt,
    FeedbackRequest,
)

__all__ = ["WITHHELD_PAGE_BYTES", "label", "withheld_answers"]

_SMALL_BODY = 4096  # a feedback label is a few dozen bytes
WITHHELD_PAGE_BYTES = 1_048_576
"""A page of withheld answers stops before this size (unless one response alone is larger)."""
_LIST_ENVELOPE_BYTES = 64  # {"object":"list","data":[...],"has_more":false}


async def label(request: Request) -> Response:
    """Label one of the tenant's responses correct or wrong; the last label wins."""
    _, tenant = authenticated(request)
    label_request = validated(FeedbackRequest, await read_json(request, _SMALL_BODY))
    labelled = await decision_store(request).label(
        tenant.name, label_request.id, label_request.choice, label_request.correct
    )
    decision = labelled.decision
    receipt = FeedbackReceipt(
        id=decision.id, choice=decision.choice, correct=label_request.correct,
        decision="answer" if decision.answered else "abstain", confidence=decision.confidence,
        outcome=labelled.outcome, previous=labelled.previous,
    )
    return Response(receipt.model_dump_json(), media_type="application/json")


async def withheld_answers(request: Request) -> Response:
    """The tenant's abstained answers, newest first, for reviewers to label.

    Query: ``limit`` (1-500, default 50), ``include_labelled`` (default false), ``before``
    (a ``created`` time: the next page). A page also stops before 1 MiB, and always ends
    between responses.
    """
    _, tenant = authenticated(request)
    query = request.query_params
    limit = _int_param(query.get("limit"), "limit", default=50, low=1, high=500)
    before = _float_param(query.get("before"), "before")
    include_labelled = query.get("include_labelled", "false").lower() in {"1", "true", "yes"}
    decisions = decision_store(request)
    await decisions.settled()  # include decisions made a moment ago
    # The choices of one response share its `created`, which is the page cursor: a page ends
    # only between responses, or the next one (`before=created`) would skip the rest.
    rows, has_more = await run_in_threadpool(
        decisions.withheld_page, tenant.name, limit=limit,
        max_bytes=WITHHELD_PAGE_BYTES - _LIST_ENVELOPE_BYTES, max_choices=MAX_CHOICES,
        unlabelled_only=not include_labelled, before=before,
    )
    listing = AbstainedList(
        data=[AbstainedAnswer.model_validate(row.as_json()) for row in rows], has_more=has_more,
    )
    return Response(listing.model_dump_json(), media_type="application/json")


# Query parameters are parsed strictly, in ASCII: str.isdigit and float() also accept other
# scripts' digits ("²", "١٢"), underscores and surrounding spaces.
_DECIMAL = re.compile(r"[0-9]{1,18}(?:\.[0-9]{1,18})?(?:[eE][-+]?[0-9]{1,3})?")


def _int_param(value: str | None, name: str, *, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    if not (is_ascii_digits(value) and len(value) <= 18 and low <= int(value) <= high):
        raise InvalidRequest(f"{name} must be an integer from {low} to {high}", param=name)
    return int(value)


def _float_param(value: str | None, name: str) -> float | None:
    if value is None:
        return None
    if _DECIMAL.fullmatch(value) is None or float(value) == float("inf"):
        raise InvalidRequest(f"{name} must be a number (a `created` time)", param=name)
    return float(value)
