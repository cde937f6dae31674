"""The store's SQL, written once for every backend (``?`` placeholders, see :class:`Session`)."""

from __future__ import annotations

import math
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
    "ServingVersion",
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
    "latest_label_time",
    "review_queue_query",
    "segment_totals",
    "tenant_decisions",
    "transaction",
]

ServingVersion = Callable[[str, str], str | None]
"""``(tenant, model)`` to the version of the calibrator serving them (None: not known)."""

ROWS_PER_STATEMENT = 512
"""A power of two; 512 rows of parameters stay under SQLite's limit of 32 766 a statement."""
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

    Each statement holds a power of two of rows, at most :data:`ROWS_PER_STATEMENT` (a batch of
    300 rows: 256, 32, 8 and 4), so there are only ten statement texts, which sqlite3 compiles
    once and keeps: a statement sized to each batch would be compiled anew for every batch,
    hundreds of parameters at a time.
    """
    inserted = 0
    start = 0
    while start < len(rows):
        count = min(ROWS_PER_STATEMENT, 1 << ((len(rows) - start).bit_length() - 1))
        chunk = rows[start:start + count]
        start += count
        values = ", ".join([placeholders] * count)
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
    return _listing_query("decision = 'abstain'", tenant=tenant, model=None,
                          unlabelled_only=unlabelled_only, before=before)


def audited_query(
    tenant: str | None, *, model: str | None, unlabelled_only: bool, before: float | None
) -> tuple[str, list[Any]]:
    """The audit sample's query (answered and withheld), newest first, ending in ``LIMIT ?``."""
    return _listing_query("audited = 1", tenant=tenant, model=model,
                          unlabelled_only=unlabelled_only, before=before)


def _listing_query(
    kept: str, *, tenant: str | None, model: str | None, unlabelled_only: bool,
    before: float | None,
) -> tuple[str, list[Any]]:
    """The decisions matching ``kept`` (and the filters), newest first, ending in ``LIMIT ?``."""
    where = [kept]
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
    session: Session, window: int, *, tenant: str | None, model: str | None,
    serving: ServingVersion | None = None, all_versions: bool = False,
    count_earlier: bool = False,
) -> list[DriftWindow]:
    """Mean confidence and accuracy over each tenant and model's last ``window`` labels, made
    under one calibrator.

    A refit changes what P(correct) means: decisions made under earlier calibrators say nothing
    about the one serving, and mixing them would report drift right after the refit that fixed
    it. So per tenant and model only decisions made under one calibrator version count: the
    one ``serving(tenant, model)`` names, else (no function, or it returns None) that of the
    pair's newest decision. ``all_versions`` counts every decision.
    With ``count_earlier``, each window also counts the labelled decisions of other versions,
    and a pair with none under its version still gets a window (of 0 decisions).
    """
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
        version = None if all_versions else (
            (serving and serving(pair_tenant, pair_model))
            or _newest_version(session, pair_tenant, pair_model))
        same = "" if version is None else " AND calibrator_version = ?"
        versioned = () if version is None else (version,)
        # The casts keep both databases' averages floats (PostgreSQL's avg of an integer is
        # numeric); DOUBLE PRECISION is REAL to SQLite.
        count, mean_p, accuracy = session.execute(
            "SELECT count(*), avg(confidence), avg(CAST(correct AS DOUBLE PRECISION)) FROM ("
            " SELECT confidence, correct FROM decisions"
            " WHERE tenant = ? AND model = ? AND correct IS NOT NULL"
            f" AND confidence IS NOT NULL{same} ORDER BY labelled_at DESC LIMIT ?) AS latest",
            (pair_tenant, pair_model, *versioned, window),
        ).fetchone()
        earlier = None
        if count_earlier and version is not None:
            (earlier,) = session.execute(
                "SELECT count(*) FROM decisions WHERE tenant = ? AND model = ? AND correct IS "
                "NOT NULL AND confidence IS NOT NULL AND calibrator_version <> ?",
                (pair_tenant, pair_model, version)).fetchone()
        if count or earlier:
            windows.append(DriftWindow(
                pair_tenant, pair_model, count, mean_p if count else math.nan,
                accuracy if count else math.nan, calibrator_version=version,
                earlier_labels=earlier))
    return windows


def _newest_version(session: Session, tenant: str, model: str) -> str | None:
    """The calibrator version of a pair's newest decision: the one serving it, as far as the
    store can tell."""
    row = session.execute(
        "SELECT calibrator_version FROM decisions WHERE tenant = ? AND model = ? "
        "ORDER BY created_at DESC LIMIT 1", (tenant, model)).fetchone()
    return None if row is None else str(row[0])


def labelled_rows(
    session: Session, tenant: str, model: str | None, prefix: int | None = None, *,
    audited_only: bool = False, since: float | None = None, labelled_until: float | None = None,
) -> list[tuple[str, str, int]]:
    """``(id, features, correct)`` of the tenant's labelled decisions on ``model`` (None: on
    any) with features, oldest first: those decided on the whole answer, or with ``prefix`` K
    those a stream gate decided on the first K tokens (each holds only its own kind of
    features); ``audited_only`` keeps the audit sample's, ``since`` those made from then on,
    ``labelled_until`` those labelled by then (a fit's rows, read again)."""
    where, params = _labelled_where(tenant, model, prefix, audited_only=audited_only,
                                    since=since, labelled_until=labelled_until)
    rows: list[tuple[str, str, int]] = session.execute(
        f"SELECT id, features, correct FROM decisions WHERE {where} "
        "ORDER BY created_at, id, choice",
        params,
    ).fetchall()
    return rows


def labelled_counts(
    session: Session, tenant: str, model: str | None, *, since: float | None = None
) -> tuple[int, int]:
    """The tenant's labelled decisions (on ``model``; from ``since`` on) with features, and how
    many of them are audited."""
    where, params = _labelled_where(tenant, model, None, since=since)
    labelled, audited = session.execute(
        "SELECT count(*), count(CASE WHEN audited = 1 THEN 1 END) FROM decisions "
        f"WHERE {where}", params,
    ).fetchone()
    return int(labelled), int(audited)


def latest_label_time(
    session: Session, tenant: str, model: str, prefix: int | None = None
) -> float | None:
    """When the newest of :func:`labelled_rows`' rows was labelled (None: there are none)."""
    where, params = _labelled_where(tenant, model, prefix)
    (latest,) = session.execute(
        f"SELECT max(labelled_at) FROM decisions WHERE {where}", params).fetchone()
    return None if latest is None else float(latest)


def _labelled_where(
    tenant: str, model: str | None, prefix: int | None, *, audited_only: bool = False,
    since: float | None = None, labelled_until: float | None = None,
) -> tuple[str, list[Any]]:
    """The WHERE clause (and its parameters) of :func:`labelled_rows`."""
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
    if labelled_until is not None:
        where.append("labelled_at <= ?")
        params.append(labelled_until)
    return " AND ".join(where), params
