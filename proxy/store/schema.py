"""The store's tables, as versioned migrations every backend applies the same way.

Both backends hold the same tables and columns (``decisions``, ``feedback_totals``,
``segment_feedback_totals``, ``audit_totals`` and ``basguard_meta``), so an analyst's query
written against one runs against the other. Column types are written in SQLite's spelling;
:data:`REAL` becomes ``DOUBLE PRECISION`` on PostgreSQL.

A migration is applied once, in order, in one transaction with the version bump, by one process
at a time (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: an advisory lock), and every statement is
idempotent, so two replicas starting together cannot apply one twice. Adding a column is one
:class:`AddColumn` entry at the end of :data:`MIGRATIONS`, plus the column in
:data:`proxy.store.rows.INSERTED_COLUMNS` and its value in
:func:`proxy.store.rows.decision_rows`.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.store.rows import INSERTED_COLUMNS

__all__ = [
    "INSERTED_COLUMNS",
    "MIGRATIONS",
    "READ_COLUMNS",
    "SCHEMA_VERSION",
    "AddColumn",
    "Backfill",
    "CreateTables",
    "Migration",
    "column_type",
]

REAL = "{real}"
"""Placeholder for a floating-point column's type in the statements below."""

_CREATE_TABLES = (
    "CREATE TABLE IF NOT EXISTS basguard_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    f"""CREATE TABLE IF NOT EXISTS decisions (
    id TEXT NOT NULL,
    choice INTEGER NOT NULL,
    tenant TEXT NOT NULL,
    model TEXT NOT NULL,
    mode TEXT NOT NULL,
    decision TEXT NOT NULL CHECK (decision IN ('answer', 'abstain')),
    confidence {REAL},
    threshold {REAL} NOT NULL,
    wrong_answer_cost {REAL} NOT NULL,
    abstain_cost {REAL} NOT NULL,
    calibrator_method TEXT NOT NULL,
    calibrator_version TEXT NOT NULL,
    features TEXT,
    reason TEXT,
    prompt TEXT,
    abstained_answer TEXT,
    created_at {REAL} NOT NULL,
    correct INTEGER CHECK (correct IN (0, 1)),
    labelled_at {REAL},
    PRIMARY KEY (id, choice)
)""",
    "CREATE INDEX IF NOT EXISTS decisions_by_age ON decisions (created_at)",
    "CREATE INDEX IF NOT EXISTS decisions_labelled "
    "ON decisions (tenant, model, labelled_at) WHERE correct IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS decisions_abstained "
    "ON decisions (tenant, created_at) WHERE decision = 'abstain'",
    f"""CREATE TABLE IF NOT EXISTS feedback_totals (
    tenant TEXT NOT NULL,
    model TEXT NOT NULL,
    outcome TEXT NOT NULL,
    bin INTEGER NOT NULL,
    decisions INTEGER NOT NULL,
    confidence_sum {REAL} NOT NULL,
    utility_sum {REAL} NOT NULL,
    bas_sum {REAL} NOT NULL,
    PRIMARY KEY (tenant, model, outcome, bin)
)""",
)


_SEGMENT_TOTALS = """CREATE TABLE IF NOT EXISTS segment_feedback_totals (
    tenant TEXT NOT NULL,
    segment TEXT NOT NULL,
    outcome TEXT NOT NULL,
    decisions INTEGER NOT NULL,
    PRIMARY KEY (tenant, segment, outcome)
)"""
_SEGMENT_BACKFILL = (
    "INSERT INTO segment_feedback_totals (tenant, segment, outcome, decisions) "
    "SELECT tenant, 'other', CASE WHEN decision = 'answer' THEN "
    "CASE WHEN correct = 1 THEN 'answered_correct' ELSE 'answered_wrong' END ELSE "
    "CASE WHEN correct = 1 THEN 'abstained_correct' ELSE 'abstained_wrong' END END, count(*) "
    "FROM decisions WHERE correct IS NOT NULL GROUP BY 1, 3"
)


_AUDIT_TOTALS = """CREATE TABLE IF NOT EXISTS audit_totals (
    tenant TEXT NOT NULL,
    model TEXT NOT NULL,
    certificate TEXT NOT NULL,
    outcome TEXT NOT NULL,
    decisions INTEGER NOT NULL,
    PRIMARY KEY (tenant, model, certificate, outcome)
)"""
_AUDITED_INDEX = ("CREATE INDEX IF NOT EXISTS decisions_audited "
                  "ON decisions (tenant, created_at) WHERE audited = 1")


@dataclass(frozen=True)
class CreateTables:
    """Idempotent statements (``IF NOT EXISTS``)."""

    version: int
    description: str
    statements: tuple[str, ...]


@dataclass(frozen=True)
class AddColumn:
    """A nullable column added to an existing table (older rows read it as NULL)."""

    version: int
    description: str
    table: str
    column: str
    type: str
    """In SQLite's spelling (TEXT, INTEGER, REAL)."""


@dataclass(frozen=True)
class Backfill:
    """Statements run once, when their version is applied (never re-run on a later upgrade,
    unlike :class:`CreateTables`)."""

    version: int
    description: str
    statements: tuple[str, ...]


Migration = CreateTables | AddColumn | Backfill


def column_type(kind: str, real: str) -> str:
    """A column type in SQLite's spelling, in a backend's (``real``: its floating point)."""
    return real if kind == "REAL" else kind

MIGRATIONS: tuple[Migration, ...] = (
    CreateTables(1, "the decisions, feedback totals and meta tables", _CREATE_TABLES),
    AddColumn(2, "decisions.signal_calls: the confidence signals' extra calls, as JSON on a "
              "decision's first row", "decisions", "signal_calls", "TEXT"),
    AddColumn(3, "decisions.segment: the tenant's segment the request named (NULL, read as "
              "`other`, for older decisions)", "decisions", "segment", "TEXT"),
    CreateTables(4, "segment_feedback_totals: labelled decisions per tenant, segment and "
                 "outcome", (_SEGMENT_TOTALS,)),
    Backfill(5, "segment_feedback_totals from the labelled decisions still kept, all `other`",
             (_SEGMENT_BACKFILL,)),
    AddColumn(6, "decisions.decided_after_tokens: K of a stream gate's decision on the first K "
              "tokens (NULL: decided on the whole answer)", "decisions", "decided_after_tokens",
              "INTEGER"),
    AddColumn(7, "decisions.audited: 1 for a decision in its tenant's audit sample (drawn at "
              "random, answered or withheld alike, for labelling); 0 or NULL otherwise",
              "decisions", "audited", "INTEGER"),
    AddColumn(8, "decisions.risk_certificate: the version of the risk certificate the decision "
              "was made under (NULL: no risk limit, or no certificate)", "decisions",
              "risk_certificate", "TEXT"),
    CreateTables(9, "audit_totals: labelled audited decisions per tenant, model, risk "
                 "certificate ('' for none) and outcome, kept like the feedback totals; and the "
                 "index of audited decisions", (_AUDIT_TOTALS, _AUDITED_INDEX)),
)
SCHEMA_VERSION = len(MIGRATIONS)
"""Migrations are numbered 1, 2, ... in order (a test checks it)."""

READ_COLUMNS = (
    "id, choice, tenant, model, mode, decision, confidence, threshold, wrong_answer_cost, "
    "abstain_cost, prompt, abstained_answer, created_at, correct, labelled_at, segment, "
    "audited, risk_certificate"
)
"""The columns of a :class:`proxy.store.feedback.StoredDecision`, in its order."""

