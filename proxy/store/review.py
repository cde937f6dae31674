"""The reads of the ops console: the review queue, one decision as a reviewer sees it, and
decision counts per tenant and model.

The queue is every unlabelled decision of the tenants a reviewer sees, in the order labels are
worth most: the audit sample first (answered and withheld: only its labels certify a risk limit
and watch it live), then withheld answers (nobody else saw them, and they measure
over-abstention), then by how close the confidence came to the threshold (where a label moves
the calibrator most), then newest first. Decisions without a confidence come last in their
group.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.store.backend import Session
from proxy.store.feedback import StoredDecision
from proxy.store.queries import decision_from_row
from proxy.store.schema import READ_COLUMNS

__all__ = ["MAX_SKIPPED", "DecisionCount", "ReviewItem", "decision_counts", "review_item",
           "review_queue"]

MAX_SKIPPED = 500
"""The most decisions one queue read leaves out as skipped (the parameters of one query)."""
_REVIEW_COLUMNS = f"{READ_COLUMNS}, features, reason, calibrator_version"


@dataclass(frozen=True)
class ReviewItem:
    """A decision with what a reviewer reads besides its texts: the signals' features and the
    reason it was decided as it was."""

    decision: StoredDecision
    features: dict[str, Any]
    reason: str | None
    calibrator_version: str


@dataclass(frozen=True)
class DecisionCount:
    """How many choices of one tenant and model were answered or withheld."""

    tenant: str
    model: str
    decision: str
    count: int


def _item(row: Sequence[Any]) -> ReviewItem:
    *head, features, reason, version = row
    return ReviewItem(decision_from_row(head), orjson.loads(features) if features else {},
                      reason, version)


def review_queue(
    session: Session, tenants: Collection[str], *, since: float, limit: int,
    skipped: Collection[tuple[str, int]] = (),
) -> list[ReviewItem]:
    """Unlabelled decisions of ``tenants`` made from ``since`` on, best to label first."""
    if not tenants:
        return []
    skipped = list(skipped)[:MAX_SKIPPED]
    where = [f"tenant IN ({', '.join('?' * len(tenants))})", "correct IS NULL",
             "created_at >= ?"]
    params: list[Any] = [*sorted(tenants), since]
    for decision_id, choice in skipped:
        where.append("NOT (id = ? AND choice = ?)")
        params += [decision_id, choice]
    rows = session.execute(
        f"SELECT {_REVIEW_COLUMNS} FROM decisions WHERE {' AND '.join(where)} "
        "ORDER BY CASE WHEN audited = 1 THEN 0 ELSE 1 END, "
        "CASE WHEN decision = 'abstain' THEN 0 ELSE 1 END, "
        "CASE WHEN confidence IS NULL THEN 1 ELSE 0 END, abs(confidence - threshold), "
        "created_at DESC, id, choice LIMIT ?", [*params, limit],
    ).fetchall()
    return [_item(row) for row in rows]


def review_item(session: Session, decision_id: str, choice: int) -> ReviewItem | None:
    """One decision, labelled or not, whatever its tenant (the caller checks who may see it)."""
    row = session.execute(f"SELECT {_REVIEW_COLUMNS} FROM decisions WHERE id = ? AND choice = ?",
                          (decision_id, choice)).fetchone()
    return None if row is None else _item(row)


def decision_counts(session: Session, *, since: float) -> list[DecisionCount]:
    """Answered and withheld choices per tenant and model, made from ``since`` on."""
    rows = session.execute(
        "SELECT tenant, model, decision, count(*) FROM decisions WHERE created_at >= ? "
        "GROUP BY tenant, model, decision ORDER BY tenant, model, decision", (since,),
    ).fetchall()
    return [DecisionCount(*row) for row in rows]
