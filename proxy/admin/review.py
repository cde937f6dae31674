"""The review queue: what a reviewer sees, and a label through the feedback path.

A label is written by :meth:`proxy.store.DecisionStore.label`, the method ``POST /v1/feedback``
calls: the same transaction updates the decision and the feedback totals that ``/metrics``, the
live figures, drift and refits read. The one difference is ``expected``: the label the reviewer
saw, so that a second reviewer of the same decision gets a conflict instead of overwriting.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection

from starlette.concurrency import run_in_threadpool

from proxy.admin.models import LabelReceipt, ReviewEntry
from proxy.errors import DecisionNotFound
from proxy.runtime.admin_access import AdminPrincipal
from proxy.store import DecisionStore, ReviewItem

__all__ = ["entry", "label_decision", "review_entries"]

logger = logging.getLogger("basguard.admin")


def entry(item: ReviewItem) -> ReviewEntry:
    decision = item.decision
    return ReviewEntry(
        id=decision.id, choice=decision.choice, tenant=decision.tenant, model=decision.model,
        mode=decision.mode, decision="answer" if decision.answered else "abstain",
        audited=decision.audited,
        confidence=decision.confidence, threshold=decision.threshold, prompt=decision.prompt,
        answer=decision.abstained_answer, created=decision.created_at,
        correct=decision.correct, labelled=decision.labelled_at, reason=item.reason,
        features=item.features, calibrator_version=item.calibrator_version,
    )


async def review_entries(
    decisions: DecisionStore, tenants: Collection[str], *, since_days: float, limit: int,
    skipped: Collection[tuple[str, int]] = (),
) -> list[ReviewEntry]:
    """The queue of ``tenants``: the audit sample first, then withheld answers, then the
    closest to the threshold."""
    await decisions.settled()  # include decisions made a moment ago
    items = await run_in_threadpool(
        decisions.review_items, tenants, since=time.time() - since_days * 86400, limit=limit,
        skipped=skipped)
    return [entry(item) for item in items]


async def label_decision(
    decisions: DecisionStore, principal: AdminPrincipal, decision_id: str, choice: int,
    correct: bool, expected: bool | None,
) -> LabelReceipt:
    """Label a decision the principal sees; another tenant's looks like no decision at all."""
    await decisions.settled()
    item = await run_in_threadpool(decisions.review_item, decision_id, choice)
    if item is None or not principal.sees(item.decision.tenant):
        raise DecisionNotFound(f"no decision {decision_id!r} (choice {choice}) that you may "
                               "review", param="id")
    tenant = item.decision.tenant
    labelled = await decisions.label(tenant, decision_id, choice, correct, expected=expected)
    logger.info("decision %s/%d of tenant %r labelled %s by %s", decision_id, choice, tenant,
                "correct" if correct else "wrong", principal.who)
    return LabelReceipt(id=decision_id, choice=choice, tenant=tenant, correct=correct,
                        previous=labelled.previous, outcome=labelled.outcome,
                        labelled_by=principal.who)
