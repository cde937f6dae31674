"""The store's SQL, written once for every backend (``?`` placeholders, see :class:`Session`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from policies.segments import OTHER_SEGMENT
from proxy.errors import DecisionNotFound, LabelConflict
from proxy.store.backend import Session
from proxy.store.feedback import (
    ANY_LABEL,
    AuditTotal,
    DriftWindow,
    ExpectedLabel,
    FeedbackTotal,
    Label,
    SegmentTotal,
    StoredDecision,
    label_changes,
    outcome_moves,
)
from proxy.store.rows import Row
from proxy.store.schema import INSERTED_COLUMNS, READ_COLUMNS

__all__ = [
    "abstained_query",
    "attempt",
    "audit_totals",
    "audited_query",
    "decision_from_row",
    "drift",
    "feedback_totals",
    "insert_rows",
    "insert_values",
    "label",
    "labelled_counts",
    "labelled_rows",
    "review_queue_query",
    "segment_totals",
    "tenant_decisions",
    "transaction",
]

ROWS_PER_STATEMENT = 500
"""20 x 500 parameters: under SQLite's limit of 32 766."""
COLUMN_LIST = ", ".join(name for name, _ in INSERTED_COLUMNS)
INSERT_HEAD = f"INSERT INTO decisions ({COLUMN_LIST}) VALUES "
_INSERT_TAIL = " ON CONFLICT (id, choice) DO NOTHING"


@contextmanager
def transaction(session: Session) -> Iterator[None]:
    session.execute(session.begin)
    try:
        yield
    except BaseException:
        session.execute("ROLLBACK")
        raise
    session.execute("COMMIT")


def insert_rows(session: Session, rows: Sequence[Row]) -> int:
    """Insert ``rows`` in one go, the backend's fastest way; returns how many were new.

    A row already stored (a journal replayed twice, a batch retried after a lost connection) is
    skipped (``ON CONFLICT DO NOTHING``).
    """
    return session.insert_rows(rows) if rows else 0


def insert_values(session: Session, rows: Sequence[Row], placeholders: str) -> int:
    """Insert ``rows`` with a few multi-row ``INSERT ... VALUES`` statements.

    ``executemany`` would run one statement per row, and the sqlite3 module releases and
    retakes the GIL around each: with the event loop busy in the same process that costs it a
    GIL hand-over per row. One statement for hundreds of rows hands over once.
    """
    inserted = 0
    for start in range(0, len(rows), ROWS_PER_STATEMENT):
        chunk = rows[start:start + ROWS_PER_STATEMENT]
        values = ", ".join([placeholders] * len(chunk))
        cursor = session.execute(INSERT_HEAD + values + _INSERT_TAIL,
                                 [field for row in chunk for field in row])
        inserted += max(cursor.rowcount, 0)
    return inserted


def attempt(run: Callable[[Session], Any], session: Session) -> tuple[Any, Exception | None]:
    """A job's result or its failure. A failed job's writes are rolled back to its savepoint,
    so it neither half-applies nor takes the batch's other writes down with it."""
    session.execute("SAVEPOINT job")
    try:
        value = run(session)
    except Exception as exc:
        session.execute("ROLLBACK TO SAVEPOINT job")
        session.execute("RELEASE SAVEPOINT job")
        return None, exc
    session.execute("RELEASE SAVEPOINT job")
    return value, None


def decision_from_row(row: Sequence[Any]) -> StoredDecision:
    """A row of ``READ_COLUMNS``; the label is kept as 0/1, a decision from before segments
    (NULL) is in ``other``, one from before audits (NULL) not audited."""
    *head, correct, labelled_at, segment, audited, certificate = row
    return StoredDecision(*head, correct=None if correct is None else bool(correct),  # type: ignore[misc]
                          labelled_at=labelled_at, segment=segment or OTHER_SEGMENT,
                          audited=bool(audited), risk_certificate=certificate)


def label(
    session: Session,
    tenant: str | None,
    decision_id: str,
    choice: int,
    correct: bool,
    now: float,
    *,
    expected: ExpectedLabel = ANY_LABEL,
) -> Label:
    """Label a decision and update its totals (call inside the writer's transaction).

    With ``expected`` (the label the caller saw, None for none), a decision labelled otherwise
    since is not relabelled: :class:`LabelConflict` says who won, so two reviewers of one
    decision never overwrite each other silently.
    """
    where = "id = ? AND choice = ?"
    params: list[Any] = [decision_id, choice]
    if tenant is not None:
        where += " AND tenant = ?"
        params.append(tenant)
    row = session.execute(
        f"SELECT {READ_COLUMNS} FROM decisions WHERE {where}{session.lock_for_update}", params,
    ).fetchone()
    if row is None:
        raise DecisionNotFound(
            f"no decision {decision_id!r} (choice {choice}) for this tenant; ids are in each "
            "response's `basguard.id` and `x-basguard-id` header",
            param="id",
        )
    before = decision_from_row(row)
    if expected != ANY_LABEL and before.correct is not expected:
        raise LabelConflict(
            f"decision {decision_id!r} (choice {choice}) was labelled "
            f"{_label_word(before.correct)} at {_utc(before.labelled_at)}, after you loaded it "
            "(by another reviewer, or in another tab); reload it to see the label, and change "
            "it if you disagree",
            param="expected",
        )
    for change in label_changes(before, correct):
        session.execute(
            "INSERT INTO feedback_totals (tenant, model, outcome, bin, decisions, "
            "confidence_sum, utility_sum, bas_sum) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (tenant, model, outcome, bin) DO UPDATE SET "
            "decisions = feedback_totals.decisions + excluded.decisions, "
            "confidence_sum = feedback_totals.confidence_sum + excluded.confidence_sum, "
            "utility_sum = feedback_totals.utility_sum + excluded.utility_sum, "
            "bas_sum = feedback_totals.bas_sum + excluded.bas_sum",
            change,
        )
    # The segment's count (and an audited decision's) moves with its outcome: the last
    # label wins.
    for outcome, sign in outcome_moves(before, correct):
        session.execute(
            "INSERT INTO segment_feedback_totals (tenant, segment, outcome, decisions) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (tenant, segment, outcome) DO UPDATE SET "
            "decisions = segment_feedback_totals.decisions + excluded.decisions",
            (before.tenant, before.segment, outcome, sign),
        )
        if before.audited:
            session.execute(
                "INSERT INTO audit_totals (tenant, model, certificate, outcome, decisions) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant, model, certificate, outcome) "
                "DO UPDATE SET decisions = audit_totals.decisions + excluded.decisions",
                (before.tenant, before.model, before.risk_certificate or "", outcome, sign),
            )
    session.execute(
        "UPDATE decisions SET correct = ?, labelled_at = ? WHERE id = ? AND choice = ?",
        (int(correct), now, decision_id, choice),
    )
    return Label(replace(before, correct=correct, labelled_at=now), before.correct)


def _label_word(correct: bool | None) -> str:
    return "unlabelled" if correct is None else ("correct" if correct else "wrong")


def _utc(when: float | None) -> str:
    return "an unknown time" if when is None else time.strftime("%Y-%m-%d %H:%M:%S UTC",
                                                                time.gmtime(when))


def abstained_query(
    tenant: str | None, *, unlabelled_only: bool, before: float | None
) -> tuple[str, list[Any]]:
    """The review list's query, newest first, ending in a ``LIMIT ?`` for the caller to fill."""
    where = ["decision = 'abstain'"]
    params: list[Any] = []
    if tenant is not None:
        where.append("tenant = ?")
        params.append(tenant)
    if unlabelled_only:
        where.append("correct IS NULL")
    if before is not None:
        where.append("created_at < ?")
        params.append(before)
    sql = (f"SELECT {READ_COLUMNS} FROM decisions WHERE {' AND '.join(where)} "
           "ORDER BY created_at DESC, id, choice LIMIT ?")
    return sql, params


def audited_query(
    tenant: str | None, *, model: str | None, unlabelled_only: bool, before: float | None
) -> tuple[str, list[Any]]:
    """The audit sample's query (answered and withheld), newest first, ending in ``LIMIT ?``."""
    where = ["audited = 1"]
    params: list[Any] = []
    for column, value in (("tenant", tenant), ("model", model)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if unlabelled_only:
        where.append("correct IS NULL")
    if before is not None:
        where.append("created_at < ?")
        params.append(before)
    sql = (f"SELECT {READ_COLUMNS} FROM decisions WHERE {' AND '.join(where)} "
           "ORDER BY created_at DESC, id, choice LIMIT ?")
    return sql, params


def review_queue_query(tenant: str | None, *, unlabelled_only: bool) -> tuple[str, list[Any]]:
    """What reviewers label, ending in ``LIMIT ?``: every audited decision (answered or
    withheld) first, newest first, then every other withheld one, newest first."""
    where = ["(decision = 'abstain' OR audited = 1)"]
    params: list[Any] = []
    if tenant is not None:
        where.append("tenant = ?")
        params.append(tenant)
    if unlabelled_only:
        where.append("correct IS NULL")
    sql = (f"SELECT {READ_COLUMNS} FROM decisions WHERE {' AND '.join(where)} "
           "ORDER BY CASE WHEN audited = 1 THEN 0 ELSE 1 END, created_at DESC, id, choice "
           "LIMIT ?")
    return sql, params


def audit_totals(session: Session) -> list[AuditTotal]:
    rows = session.execute(
        "SELECT tenant, model, certificate, outcome, decisions FROM audit_totals "
        "WHERE decisions > 0 ORDER BY tenant, model, certificate, outcome"
    ).fetchall()
    return [AuditTotal(*row) for row in rows]


def feedback_totals(session: Session) -> list[FeedbackTotal]:
    rows = session.execute(
        "SELECT tenant, model, outcome, bin, decisions, confidence_sum, utility_sum, "
        "bas_sum FROM feedback_totals WHERE decisions > 0"
    ).fetchall()
    return [FeedbackTotal(*row) for row in rows]


def segment_totals(session: Session) -> list[SegmentTotal]:
    rows = session.execute(
        "SELECT tenant, segment, outcome, decisions FROM segment_feedback_totals "
        "WHERE decisions > 0 ORDER BY tenant, segment, outcome"
    ).fetchall()
    return [SegmentTotal(*row) for row in rows]


# For reads of many decisions that need no prompts or answers (up to 24 000 characters each).
_READ_COLUMNS_WITHOUT_TEXTS = READ_COLUMNS.replace("prompt, abstained_answer", "NULL, NULL")


def tenant_decisions(
    session: Session, tenant: str, *, model: str | None, since: float | None
) -> list[StoredDecision]:
    where = ["tenant = ?"]
    params: list[Any] = [tenant]
    if model is not None:
        where.append("model = ?")
        params.append(model)
    if since is not None:
        where.append("created_at >= ?")
        params.append(since)
    rows = session.execute(
        f"SELECT {_READ_COLUMNS_WITHOUT_TEXTS} FROM decisions WHERE {' AND '.join(where)} "
        "ORDER BY created_at, id, choice", params,
    ).fetchall()
    return [decision_from_row(row) for row in rows]


def drift(
    session: Session, window: int, *, tenant: str | None, model: str | None
) -> list[DriftWindow]:
    """Mean confidence and accuracy over each tenant and model's last ``window`` labels."""
    where = ["decisions > 0"]
    params: list[Any] = []
    for column, value in (("tenant", tenant), ("model", model)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    pairs = session.execute(
        f"SELECT DISTINCT tenant, model FROM feedback_totals WHERE {' AND '.join(where)} "
        "ORDER BY tenant, model", params,
    ).fetchall()
    windows = []
    for pair_tenant, pair_model in pairs:
        # The casts keep both databases' averages floats (PostgreSQL's avg of an integer is
        # numeric); DOUBLE PRECISION is REAL to SQLite.
        count, mean_p, accuracy = session.execute(
            "SELECT count(*), avg(confidence), avg(CAST(correct AS DOUBLE PRECISION)) FROM ("
            " SELECT confidence, correct FROM decisions"
            " WHERE tenant = ? AND model = ? AND correct IS NOT NULL"
            " AND confidence IS NOT NULL ORDER BY labelled_at DESC LIMIT ?) AS latest",
            (pair_tenant, pair_model, window),
        ).fetchone()
        if count:
            windows.append(DriftWindow(pair_tenant, pair_model, count, mean_p, accuracy))
    return windows


def labelled_rows(
    session: Session, tenant: str, model: str | None, prefix: int | None = None, *,
    audited_only: bool = False, since: float | None = None,
) -> list[tuple[str, str, int]]:
    """``(id, features, correct)`` of the tenant's labelled decisions on ``model`` (None: on
    any) with features, oldest first: those decided on the whole answer, or with ``prefix`` K
    those a stream gate decided on the first K tokens (each holds only its own kind of
    features); ``audited_only`` keeps the audit sample's, ``since`` those made from then on."""
    where = ["tenant = ?", "correct IS NOT NULL", "features IS NOT NULL"]
    params: list[Any] = [tenant]
    if model is not None:
        where.append("model = ?")
        params.append(model)
    if prefix is None:
        where.append("decided_after_tokens IS NULL")
    else:
        where.append("decided_after_tokens = ?")
        params.append(prefix)
    if audited_only:
        where.append("audited = 1")
    if since is not None:
        where.append("created_at > ?")
        params.append(since)
    rows: list[tuple[str, str, int]] = session.execute(
        f"SELECT id, features, correct FROM decisions WHERE {' AND '.join(where)} "
        "ORDER BY created_at, id, choice",
        params,
    ).fetchall()
    return rows


def labelled_counts(
    session: Session, tenant: str, model: str | None, *, since: float | None = None
) -> tuple[int, int]:
    """The tenant's labelled decisions (on ``model``; from ``since`` on) with features, and how
    many of them are audited."""
    where = ["tenant = ?", "correct IS NOT NULL", "features IS NOT NULL",
             "decided_after_tokens IS NULL"]
    params: list[Any] = [tenant]
    if model is not None:
        where.append("model = ?")
        params.append(model)
    if since is not None:
        where.append("created_at > ?")
        params.append(since)
    labelled, audited = session.execute(
        "SELECT count(*), count(CASE WHEN audited = 1 THEN 1 END) FROM decisions "
        f"WHERE {' AND '.join(where)}", params,
    ).fetchone()
    return int(labelled), int(audited)
