"""The decision store: every decision and its feedback label, in SQLite or PostgreSQL.

- :mod:`proxy.store.writer`: :class:`DecisionStore`, the batch writer the request path feeds;
- :mod:`proxy.store.queries`: the SQL, written once for every backend;
- :mod:`proxy.store.schema` and :mod:`proxy.store.migrations`: the tables, versioned;
- :mod:`proxy.store.sqlite`, :mod:`proxy.store.postgres`: one module per backend, chosen by the
  store's URL (:mod:`proxy.store.location`) from :data:`BACKENDS`;
- :mod:`proxy.store.feedback`: the accounting itself (outcomes, bins, totals), free of any database.
"""

from __future__ import annotations

from collections.abc import Callable

from proxy.store.backend import Backend, StoreError, StoreInfo
from proxy.store.feedback import (
    OUTCOMES,
    RELIABILITY_BINS,
    DriftWindow,
    FeedbackTotal,
    Label,
    SegmentTotal,
    StoredDecision,
    confidence_bin,
    outcome_of,
)
from proxy.store.location import StoreLocation, StoreLocationError, parse_store_location
from proxy.store.rows import TextLimits
from proxy.store.writer import DecisionStore, Recovery, open_backend

__all__ = [
    "BACKENDS",
    "OUTCOMES",
    "RELIABILITY_BINS",
    "Backend",
    "DecisionStore",
    "DriftWindow",
    "FeedbackTotal",
    "Label",
    "Recovery",
    "SegmentTotal",
    "StoreError",
    "StoreInfo",
    "StoreLocation",
    "StoreLocationError",
    "StoredDecision",
    "TextLimits",
    "confidence_bin",
    "open_backend",
    "outcome_of",
    "parse_store_location",
]


def _sqlite() -> type[Backend]:
    from proxy.store.sqlite import SQLiteBackend

    return SQLiteBackend


def _postgres() -> type[Backend]:
    # Imported only when a PostgreSQL store is used: the embedded default never loads libpq.
    try:
        from proxy.store.postgres import PostgresBackend
    except ImportError as exc:
        raise StoreError(f"a PostgreSQL store needs psycopg: pip install 'basguard[postgres]' "
                         f"({exc})") from None

    return PostgresBackend


BACKENDS: dict[str, Callable[[], type[Backend]]] = {"sqlite": _sqlite, "postgresql": _postgres}
"""Backend name (a :class:`StoreLocation`'s ``backend``) to its class, imported when used."""
