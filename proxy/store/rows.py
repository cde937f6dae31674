"""A decision as rows of the ``decisions`` table, with long texts cut, and as one journal line.

Built on the request path (they are what the crash journal holds), so this stays cheap: a few
tuples, one small ``orjson.dumps`` per choice's features, and slicing of texts over the limits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from proxy.judging.decision import DecisionRecord, signals_json

__all__ = ["INSERTED_COLUMNS", "ROW_WIDTH", "Row", "TextLimits", "decision_rows", "decode_line",
           "encode_line", "queued_size", "truncate"]

Row = tuple[Any, ...]
INSERTED_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "TEXT"), ("choice", "INTEGER"), ("tenant", "TEXT"), ("model", "TEXT"),
    ("mode", "TEXT"), ("decision", "TEXT"), ("confidence", "REAL"), ("threshold", "REAL"),
    ("wrong_answer_cost", "REAL"), ("abstain_cost", "REAL"), ("calibrator_method", "TEXT"),
    ("calibrator_version", "TEXT"), ("features", "TEXT"), ("reason", "TEXT"), ("prompt", "TEXT"),
    ("abstained_answer", "TEXT"), ("created_at", "REAL"), ("signal_calls", "TEXT"),
    ("segment", "TEXT"), ("decided_after_tokens", "INTEGER"), ("audited", "INTEGER"),
    ("risk_certificate", "TEXT"),
)
"""The ``decisions`` columns a row of :func:`decision_rows` fills, in its order, with their
SQLite types (:mod:`proxy.store.schema` holds the table; PostgreSQL's multi-row inserts cast to
these types, since a column of NULLs would otherwise be text)."""
ROW_WIDTH = len(INSERTED_COLUMNS)
"""Columns per row, in the order of the store's INSERT."""
_V1_ROW_WIDTH = 17
"""Rows journaled by a basguard before ``signal_calls`` (17 columns), ``segment`` (18),
``decided_after_tokens`` (19), ``audited`` (20) or ``risk_certificate`` (21) are read back with
NULL in the columns they lack."""
_ROW_OVERHEAD = 256
"""Bytes a row's numbers, names and ids take, besides its texts (for the queue's byte bound)."""


@dataclass(frozen=True)
class TextLimits:
    """The longest prompt and withheld answer the store keeps, in characters."""

    prompt_chars: int = 8_000
    answer_chars: int = 16_000


def truncate(text: str, limit: int) -> str:
    """``text``, or its first ``limit`` characters and a marker saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n[basguard: truncated {len(text) - limit} of {len(text)} characters]"


def decision_rows(record: DecisionRecord, limits: TextLimits) -> list[Row]:
    """One row per choice. The prompt and answer are kept for review: for abstained choices,
    and for every choice of an audited decision (``record.abstained_answers`` holds them).

    Raises ``TypeError`` if a choice's features are not JSON (a bug upstream of the store).
    """
    tenant = record.tenant
    prompt = record.prompt
    if prompt is not None:
        prompt = truncate(prompt, limits.prompt_chars)
    # The extra calls are the decision's, not a choice's: kept once, on the first row, so
    # summing the column over rows counts each call once.
    calls = None if record.signals is None else orjson.dumps(signals_json(record.signals)).decode()
    rows = []
    # A not_applicable choice (a tool call passed unchanged) has no decision to label.
    decided = [outcome for outcome in record.outcomes if outcome.applicable]
    audited = record.audited
    limit = record.limit
    certificate = None if limit is None else limit.certificate
    for position, outcome in enumerate(decided):
        kept = audited or not outcome.answer
        answer = record.abstained_answers.get(outcome.index) if kept else None
        rows.append((
            record.id, outcome.index, tenant.name, record.model, tenant.mode, outcome.decision,
            outcome.confidence, record.threshold, tenant.wrong_answer_cost, tenant.abstain_cost,
            record.calibrator_method, record.calibrator_version,
            orjson.dumps(outcome.features).decode() if outcome.features else None,
            outcome.reason,
            prompt if kept else None,
            None if answer is None else truncate(answer, limits.answer_chars),
            record.created_at,
            calls if position == 0 else None,
            record.segment,
            record.decided_after_tokens,
            int(audited),
            certificate,
        ))
    return rows


def queued_size(rows: list[Row]) -> int:
    """About how many bytes ``rows`` hold: their texts plus a fixed overhead per row."""
    size = 0
    for row in rows:
        size += (_ROW_OVERHEAD + len(row[12] or "") + len(row[14] or "") + len(row[15] or "")
                 + len(row[17] or ""))
    return size


def encode_line(rows: list[Row]) -> bytes:
    """The journal line of one decision: its rows as a JSON array, and a newline."""
    return orjson.dumps(rows, option=orjson.OPT_APPEND_NEWLINE)


def decode_line(line: bytes) -> list[Row]:
    """The rows of a journal line (raises ``ValueError`` if it is not one)."""
    rows = orjson.loads(line)
    if not isinstance(rows, list) or not all(
        isinstance(row, list) and _V1_ROW_WIDTH <= len(row) <= ROW_WIDTH for row in rows
    ):
        raise ValueError("not a journal line of decision rows")
    # A journal left by a crashed older basguard: its rows lack the newer columns.
    return [tuple(row) + (None,) * (ROW_WIDTH - len(row)) for row in rows]
