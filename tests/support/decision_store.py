"""Decision records for the store's tests, and direct looks at the database behind a store."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from proxy.judging.decision import ChoiceOutcome, DecisionRecord
from proxy.runtime.state import UNCALIBRATED, TenantRuntime
from proxy.store import open_backend

__all__ = ["V1_SCHEMA", "Location", "holding_writes", "query", "record", "tenant"]

Location = Path | str
"""A SQLite file, or a PostgreSQL URL."""


def tenant(name: str = "acme", *, threshold: float = 0.5, wrong_answer_cost: float = 1.0,
           abstain_cost: float = 0.0, mode: str = "enforce") -> TenantRuntime:
    return TenantRuntime(
        name=name, mode=mode, threshold=threshold,  # type: ignore[arg-type]
        wrong_answer_cost=wrong_answer_cost, abstain_cost=abstain_cost,
        abstention_message="no", abstain_action="message", on_missing_confidence="abstain",
        default_calibrator=UNCALIBRATED,
    )


def record(decision_id: str, *confidences: float | None, owner: TenantRuntime | None = None,
           created_at: float = 1_000.0, model: str = "m",
           calibrator_version: str = "v1") -> DecisionRecord:
    """A decision with one choice per confidence (``None``: decided without one), made under
    the calibrator ``calibrator_version``."""
    owner = owner or tenant()
    outcomes = [
        ChoiceOutcome(i, p is not None and p >= owner.threshold, p, None,
                      None if p is None else {"token_prob": p, "mean_logprob": -0.1})
        for i, p in enumerate(confidences)
    ]
    abstained = {o.index: f"answer {o.index}" for o in outcomes if not o.answer}
    return DecisionRecord(decision_id, owner, model, outcomes, "identity", calibrator_version,
                          abstained, "what is it?" if abstained else None, created_at)


def query(location: Location, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` (``?`` placeholders), read on a connection of its own."""
    backend = open_backend(location)
    try:
        with backend.reading() as session:
            return [tuple(row) for row in session.execute(sql, params).fetchall()]
    finally:
        backend.close()


@contextmanager
def holding_writes(location: Location) -> Iterator[None]:
    """Block the store's writer (it cannot commit) until the block ends."""
    if isinstance(location, Path):
        db = sqlite3.connect(location, isolation_level=None, timeout=10)
        db.execute("BEGIN IMMEDIATE")  # SQLite's one write lock
        try:
            yield
        finally:
            db.execute("ROLLBACK")
            db.close()
        return
    import psycopg

    with psycopg.connect(location) as db:  # a transaction, until the block ends
        db.execute("LOCK TABLE decisions IN EXCLUSIVE MODE")  # no insert can take its lock
        try:
            yield
        finally:
            db.rollback()


V1_SCHEMA = """
CREATE TABLE basguard_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO basguard_meta VALUES ('schema_version', '1');
CREATE TABLE decisions (
    id TEXT NOT NULL, choice INTEGER NOT NULL, tenant TEXT NOT NULL, model TEXT NOT NULL,
    mode TEXT NOT NULL, decision TEXT NOT NULL CHECK (decision IN ('answer', 'abstain')),
    confidence REAL, threshold REAL NOT NULL, wrong_answer_cost REAL NOT NULL,
    abstain_cost REAL NOT NULL, calibrator_method TEXT NOT NULL,
    calibrator_version TEXT NOT NULL, features TEXT, reason TEXT, prompt TEXT,
    abstained_answer TEXT, created_at REAL NOT NULL,
    correct INTEGER CHECK (correct IN (0, 1)), labelled_at REAL, PRIMARY KEY (id, choice)
);
INSERT INTO decisions VALUES ('bg-old', 0, 'acme', 'm', 'enforce', 'answer', 0.9, 0.5, 1.0, 0.0,
    'identity', 'v1', '{"token_prob": 0.9}', NULL, NULL, NULL, 1000.0, NULL, NULL);
"""
"""A store as version 1 wrote it (before migrations), holding one decision: upgrades start here."""
