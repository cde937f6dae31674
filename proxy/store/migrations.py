"""Applying :data:`proxy.store.schema.MIGRATIONS`, the same way on every backend.

The caller holds its backend's lock for the duration (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL:
an advisory lock inside one transaction), so of several processes starting at once one migrates
and the others then find nothing to do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from proxy.store.backend import Session, StoreError, StoreInfo
from proxy.store.schema import MIGRATIONS, SCHEMA_VERSION, Backfill, CreateTables, column_type

__all__ = ["apply_migrations", "schema_version", "store_info"]

logger = logging.getLogger("basguard.store")

ColumnsOf = Callable[[Session, str], set[str]]


def schema_version(session: Session) -> int:
    """The version recorded in ``basguard_meta`` (0: none; the table must exist)."""
    row = session.execute(
        "SELECT value FROM basguard_meta WHERE key = 'schema_version'").fetchone()
    return 0 if row is None else int(row[0])


def apply_migrations(
    session: Session, where: str | Path, columns_of: ColumnsOf, real: str
) -> list[int]:
    """Apply the pending migrations in the caller's transaction; returns their versions."""
    session.execute(MIGRATIONS[0].statements[0])  # type: ignore[union-attr]  # basguard_meta
    version = schema_version(session)
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{where}: schema version {version}; this basguard reads {SCHEMA_VERSION}")
    if version == SCHEMA_VERSION:
        return []
    applied = []
    # An upgrade first re-creates what older versions' tables lacked (all IF NOT EXISTS): a
    # store from before a table existed gets it, as basguard before versioned migrations did.
    for migration in MIGRATIONS[:version]:
        if isinstance(migration, CreateTables):
            for statement in migration.statements:
                session.execute(statement.format(real=real))
    for migration in MIGRATIONS[version:]:
        if isinstance(migration, CreateTables | Backfill):
            for statement in migration.statements:
                session.execute(statement.format(real=real))
        # Idempotent by a look first: SQLite has no ADD COLUMN IF NOT EXISTS.
        elif migration.column not in columns_of(session, migration.table):
            session.execute(f"ALTER TABLE {migration.table} ADD COLUMN "
                            f"{migration.column} {column_type(migration.type, real)}")
        applied.append(migration.version)
    if applied:
        session.execute(
            "INSERT INTO basguard_meta (key, value) VALUES ('schema_version', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (str(applied[-1]),))
        if version:
            logger.info("decision store: upgraded the schema from version %d to %d",
                        version, applied[-1])
    return applied


def store_info(session: Session, backend: str, location: str, has_meta: bool) -> StoreInfo:
    version = schema_version(session) if has_meta else None
    decisions = labelled = 0
    oldest = newest = None
    if version:
        decisions, labelled, oldest, newest = session.execute(
            "SELECT count(*), count(correct), min(created_at), max(created_at) FROM decisions"
        ).fetchone()
    return StoreInfo(backend, location, version, SCHEMA_VERSION, decisions, labelled,
                     oldest, newest)
