"""Gated decisions in the decision store: the ``decided_after_tokens`` column (schema 3)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from calibrators.artifact import load_artifact
from proxy.cli.main import main
from proxy.store import DecisionStore
from proxy.store.rows import ROW_WIDTH, decode_line
from proxy.store.schema import SCHEMA_VERSION
from tests.support.decision_store import record


def stored(path: Path) -> dict[str, int | None]:
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT id || ':' || choice, decided_after_tokens FROM decisions"))


def test_a_gated_decision_is_stored_with_its_k(tmp_path: Path) -> None:
    path = tmp_path / "decisions.sqlite3"
    store = DecisionStore(path, retention_seconds=None)
    try:
        store.decided(replace(record("bg-gated", 0.9, 0.2), decided_after_tokens=16,
                              prefix_tokens=(16, 9)))
        store.decided(record("bg-whole", 0.9))
        asyncio.run(store.settled())
    finally:
        store.close()
    assert stored(path) == {"bg-gated:0": 16, "bg-gated:1": 16, "bg-whole:0": None}


def test_a_version_5_store_gets_the_column_and_keeps_its_decisions(tmp_path: Path) -> None:
    path = tmp_path / "decisions.sqlite3"
    DecisionStore(path, retention_seconds=None).close()
    with sqlite3.connect(path) as db:  # back to what a version-5 basguard made
        db.execute("ALTER TABLE decisions DROP COLUMN decided_after_tokens")
        db.execute("UPDATE basguard_meta SET value = '5'")
        db.execute("INSERT INTO decisions (id, choice, tenant, model, mode, decision, threshold, "
                   "wrong_answer_cost, abstain_cost, calibrator_method, calibrator_version, "
                   "created_at) VALUES ('bg-old', 0, 'acme', 'm', 'enforce', 'answer', 0.5, 1, "
                   "0, 'identity', 'v1', 1000)")
    store = DecisionStore(path, retention_seconds=None)
    try:
        store.decided(replace(record("bg-new", 0.9), decided_after_tokens=4))
        asyncio.run(store.settled())
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM basguard_meta").fetchone() == (str(SCHEMA_VERSION),)
    assert stored(path) == {"bg-old:0": None, "bg-new:0": 4}
    DecisionStore(path, retention_seconds=None).close()  # opening again changes nothing


def test_a_journal_line_of_a_version_3_basguard_is_read_with_no_k() -> None:
    v3_row = ["bg-1", 0, "acme", "m", "enforce", "answer", 0.9, 0.5, 1.0, 0.0, "identity", "v1",
              None, None, None, None, 1000.0, None, "pro"]
    (row,) = decode_line(json.dumps([v3_row]).encode())
    assert len(row) == ROW_WIDTH and row[:19] == tuple(v3_row) and row[19] is None


def test_fit_from_store_with_prefix_reads_the_gated_decisions_features(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "decisions.sqlite3"
    store = DecisionStore(path, retention_seconds=None)
    try:
        for i in range(40):
            p = 0.2 + 0.6 * (i % 2) + 0.004 * i
            base = record(f"bg-{i}", p)
            outcome = replace(base.outcomes[0], features={"token_prob@4": p})
            store.decided(replace(base, outcomes=[outcome], decided_after_tokens=4))
            # The same tenant's non-streamed requests: decided on the whole answer.
            store.decided(record(f"bw-{i}", p))
        asyncio.run(store.settled())
        for i in range(40):
            store.label_now("acme", f"bg-{i}", 0, i % 2 == 1)
            store.label_now("acme", f"bw-{i}", 0, i % 3 == 1)
    finally:
        store.close()
    artifact = tmp_path / "prefix4.json"
    assert main(["calibrate", "fit", "--from-store", str(path), "--tenant", "acme",
                 "--model", "m", "--prefix", "4", "--method", "platt", "-o", str(artifact)]) == 0
    fitted = load_artifact(artifact)
    assert fitted.feature_names == ("token_prob@4",)
    assert fitted.training is not None and fitted.training.rows == 40  # the gated ones only
    whole = tmp_path / "whole.json"
    assert main(["calibrate", "fit", "--from-store", str(path), "--tenant", "acme",
                 "--model", "m", "--method", "platt", "-o", str(whole)]) == 0
    fitted = load_artifact(whole)
    assert fitted.feature_names == ("token_prob",)
    assert fitted.training is not None and fitted.training.rows == 40  # the whole answers
