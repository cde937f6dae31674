"""The decision store: every decision and its feedback label, in SQLite or PostgreSQL.

- :mod:`proxy.store.decision_store`: :class:`DecisionStore`, which the request path feeds and the
  tools read, built from :mod:`proxy.store.writer` (the batch writer), :mod:`proxy.store.reads`
  (the read API) and :mod:`proxy.store.recovery` (replaying crashed processes' journals);
- :mod:`proxy.store.review`: the ops console's reads (the review queue, decision counts);
- :mod:`proxy.store.journal`: the crash journal, and :mod:`proxy.store.rows`: a decision's rows;
- :mod:`proxy.store.queries`: the SQL, written once for every backend;
- :mod:`proxy.store.schema` and :mod:`proxy.store.migrations`: the tables, versioned;
- :mod:`proxy.store.sqlite`, :mod:`proxy.store.postgres`: one module per backend, chosen by the
  store's URL (:mod:`proxy.store.location`) from :data:`proxy.store.backends.BACKENDS`;
- :mod:`proxy.store.feedback`: the accounting itself (outcomes, bins, totals), free of any database.
"""

from __future__ import annotations

from proxy.store.backend import Backend, StoreError, StoreInfo
from proxy.store.backends import BACKENDS, open_backend
from proxy.store.decision_store import DecisionStore
from proxy.store.feedback import (
    OUTCOMES,
    RELIABILITY_BINS,
    AuditTotal,
    DriftWindow,
    FeedbackTotal,
    Label,
    SegmentTotal,
    StoredDecision,
    confidence_bin,
    outcome_of,
)
from proxy.store.location import StoreLocation, StoreLocationError, parse_store_location
from proxy.store.recovery import Recovery
from proxy.store.review import DecisionCount, ReviewItem
from proxy.store.rows import TextLimits

__all__ = [
    "BACKENDS",
    "OUTCOMES",
    "RELIABILITY_BINS",
    "AuditTotal",
    "Backend",
    "DecisionCount",
    "DecisionStore",
    "DriftWindow",
    "FeedbackTotal",
    "Label",
    "Recovery",
    "ReviewItem",
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

