"""The store's audit sample, on a real SQLite file and a real PostgreSQL database: the audited
and risk_certificate columns, audit_totals under relabelling, the reads the review queue and
an admin console use, and stores and journals from before audits."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from pathlib import Path

import pytest

from calibrators.signals import ScoreKind, ScoreSpec
from proxy.judging.decision import DecisionRecord, DecisionTerms, RiskLimitTerms
from proxy.store import AuditTotal, DecisionStore
from proxy.store.rows import ROW_WIDTH, decode_line, encode_line
from proxy.store.schema import SCHEMA_VERSION
from tests.support.decision_store import V1_SCHEMA, Location, query, record

LIMIT = RiskLimitTerms(max_error_rate=0.1, confidence=0.9, cost_threshold=0.5,
                       certified_threshold=0.8, labels=1000, answer_rate=0.4,
                       certificate="c0ffee123456", status="certified", on_breach="alert")


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Location:
    if request.param == "sqlite":
        return tmp_path / "decisions.sqlite3"
    fresh: str = request.getfixturevalue("postgres_cluster").fresh_schema()
    return fresh


def audited(decision_id: str, *confidences: float, created_at: float = 1_000.0,
            limit: RiskLimitTerms | None = LIMIT, threshold: float = 0.8,
            sampled: bool = True) -> DecisionRecord:
    """A decision of ``acme`` made under the limit's terms (answered iff p >= threshold)."""
    base = record(decision_id, *confidences, created_at=created_at)
    outcomes = [dataclasses.replace(o, answer=o.confidence is not None
                                    and o.confidence >= threshold) for o in base.outcomes]
    terms = DecisionTerms(threshold, audited=sampled, limit=limit)
    texts = {o.index: f"answer {o.index}" for o in outcomes if sampled or not o.answer}
    return DecisionRecord(base.id, base.tenant, base.model, outcomes, "identity", "v1", texts,
                          "what is it?", created_at, terms=terms)


def test_the_sample_is_stored_with_its_texts_and_certificate(location: Location) -> None:
    store = DecisionStore(location, retention_seconds=None)
    try:
        store.decided(audited("bg-a", 0.9, 0.6))
        store.decided(audited("bg-b", 0.9, sampled=False))
        asyncio.run(store.settled())
        rows = query(location, "SELECT id, choice, decision, threshold, audited, "
                     "risk_certificate, prompt, abstained_answer FROM decisions "
                     "ORDER BY id, choice")
        assert rows == [
            ("bg-a", 0, "answer", 0.8, 1, "c0ffee123456", "what is it?", "answer 0"),
            ("bg-a", 1, "abstain", 0.8, 1, "c0ffee123456", "what is it?", "answer 1"),
            # Outside the sample an answer keeps no text (only withheld ones are reviewed).
            ("bg-b", 0, "answer", 0.8, 0, "c0ffee123456", None, None),
        ]
        sample = store.audited("acme")
        assert [(d.id, d.choice, d.audited, d.risk_certificate) for d in sample] == [
            ("bg-a", 0, True, "c0ffee123456"), ("bg-a", 1, True, "c0ffee123456")]
        assert sample[0].as_json()["audited"] is True
    finally:
        store.close()


def test_audit_totals_count_the_last_label_of_each_audited_decision(location: Location) -> None:
    store = DecisionStore(location, retention_seconds=None)
    try:
        store.decided(audited("bg-1", 0.9))
        store.decided(audited("bg-2", 0.95))
        store.decided(audited("bg-3", 0.3))  # withheld
        store.decided(audited("bg-4", 0.9, limit=None))  # audited, no limit
        store.decided(audited("bg-5", 0.9, sampled=False))  # labelled, but not in the sample
        for decision_id, correct in [("bg-1", False), ("bg-2", True), ("bg-3", True),
                                     ("bg-4", False), ("bg-5", False), ("bg-1", True),
                                     ("bg-2", True)]:
            store.label_now("acme", decision_id, 0, correct)
        assert sorted(store.audit_totals(), key=lambda t: (t.certificate, t.outcome)) == [
            AuditTotal("acme", "m", "", "answered_wrong", 1),
            AuditTotal("acme", "m", "c0ffee123456", "abstained_correct", 1),
            AuditTotal("acme", "m", "c0ffee123456", "answered_correct", 2),
        ]
    finally:
        store.close()


def test_reads_for_review_filter_and_order_by_the_sample(location: Location) -> None:
    store = DecisionStore(location, retention_seconds=None)
    try:
        store.decided(audited("bg-old-sample", 0.9, created_at=1.0))
        store.decided(audited("bg-withheld", 0.2, created_at=2.0, sampled=False))
        store.decided(audited("bg-answered", 0.9, created_at=3.0, sampled=False))
        store.decided(audited("bg-new-sample", 0.2, created_at=4.0))
        asyncio.run(store.settled())
        queue = store.review_queue("acme")
        # The sample first (newest first), then the other withheld answers.
        assert [d.id for d in queue] == ["bg-new-sample", "bg-old-sample", "bg-withheld"]
        assert [d.id for d in store.audited("acme")] == ["bg-new-sample", "bg-old-sample"]
        assert [d.id for d in store.audited("acme", before=4.0)] == ["bg-old-sample"]
        assert store.audited("acme", model="elsewhere") == []
        store.label_now("acme", "bg-new-sample", 0, True)
        assert [d.id for d in store.audited("acme")] == ["bg-old-sample"]
        assert [d.id for d in store.audited("acme", unlabelled_only=False)] == [
            "bg-new-sample", "bg-old-sample"]
        assert [d.id for d in store.review_queue("acme")] == ["bg-old-sample", "bg-withheld"]
        # Labelled data for certification: the sample's only, and only from `since` on.
        spec = [ScoreSpec("token_prob", ScoreKind.PROBABILITY)]
        store.label_now("acme", "bg-old-sample", 0, False)
        store.label_now("acme", "bg-answered", 0, True)
        assert store.labelled_data("acme", "m", spec, audited_only=True).n_rows == 2
        assert store.labelled_data("acme", None, spec, audited_only=True, since=2.0).n_rows == 1
        assert store.labelled_counts("acme", "m") == (3, 2)
        assert store.labelled_counts("acme", None, since=2.0) == (2, 1)
    finally:
        store.close()


def test_a_store_from_before_audits_is_upgraded_and_reads_as_unaudited(tmp_path: Path) -> None:
    path = tmp_path / "decisions.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(V1_SCHEMA)
    store = DecisionStore(path, retention_seconds=None)
    try:
        (old,) = store.tenant_decisions("acme")
        assert old.audited is False and old.risk_certificate is None
        store.label_now("acme", "bg-old", 0, False)
        assert store.audit_totals() == []  # not in any sample
        store.decided(audited("bg-new", 0.9))
        store.label_now("acme", "bg-new", 0, False)
        assert store.audit_totals() == [
            AuditTotal("acme", "m", "c0ffee123456", "answered_wrong", 1)]
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM basguard_meta").fetchone() == (str(SCHEMA_VERSION),)
        indexes = {row[0] for row in db.execute("SELECT name FROM sqlite_master "
                                                "WHERE type = 'index'")}
    assert "decisions_audited" in indexes


def test_journal_lines_from_before_audits_read_back_unaudited() -> None:
    (row,) = decode_line(encode_line([tuple(range(20))]))  # up to decided_after_tokens
    assert len(row) == ROW_WIDTH and row[20:] == (None, None)
    (row,) = decode_line(encode_line([tuple(range(ROW_WIDTH))]))
    assert row == tuple(range(ROW_WIDTH))
