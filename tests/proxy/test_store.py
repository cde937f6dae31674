"""The decision store: recording, labelling, totals, retention, shutdown, crash recovery.

One suite for both backends: every test taking ``location`` runs on a real SQLite file and on a
real PostgreSQL database (a fresh schema of the session's temporary cluster).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from calibrators.errors import DataError
from calibrators.signals import ScoreKind, ScoreSpec
from policies.bas import bas_score_scalar
from proxy.errors import DecisionNotFound, StoreUnavailable
from proxy.judging.decision import ChoiceOutcome, DecisionRecord
from proxy.store import (
    DecisionStore,
    Recovery,
    StoreError,
    TextLimits,
    confidence_bin,
    open_backend,
    outcome_of,
    queries,
)
from proxy.store import writer as store_module
from proxy.store.journal import journal_dir, orphaned_segments
from proxy.store.location import parse_store_location
from proxy.store.schema import SCHEMA_VERSION
from proxy.store.sqlite import SQLiteBackend
from tests.support.decision_store import (
    V1_SCHEMA,
    Location,
    holding_writes,
    query,
    record,
    tenant,
)


# PostgreSQL's half is slow (the session's cluster): `-m "not slow"` keeps SQLite's.
@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Location:
    if request.param == "sqlite":
        return tmp_path / "decisions.sqlite3"
    fresh: str = request.getfixturevalue("postgres_cluster").fresh_schema()
    return fresh


def journal_for(location: Location, tmp_path: Path) -> Path:
    """The journal directory the server would use (a PostgreSQL store's: any local one)."""
    return journal_dir(location) if isinstance(location, Path) else tmp_path / "journal"


def execute(location: Location, sql: str, params: Sequence[Any] = ()) -> None:
    """Run one statement that returns no rows, on a connection of its own (autocommit)."""
    backend = open_backend(location)
    try:
        with backend.reading() as session:
            session.execute(sql, params)
    finally:
        backend.close()


@pytest.fixture
def store(location: Location) -> Iterator[DecisionStore]:
    opened = DecisionStore(location, retention_seconds=None)
    yield opened
    opened.close()


def totals(store: DecisionStore) -> dict[tuple[str, int], tuple[int, float, float, float]]:
    return {(t.outcome, t.bin): (t.decisions, round(t.confidence_sum, 9),
                                 round(t.utility_sum, 9), round(t.bas_sum, 9))
            for t in store.feedback_totals()}


def test_bins_and_outcomes() -> None:
    assert [confidence_bin(p) for p in (0.0, 0.09, 0.1, 0.55, 0.99, 1.0, None)] == \
        [0, 0, 1, 5, 9, 9, -1]
    assert outcome_of(answered=False, correct=True) == "abstained_correct"  # over-abstention
    assert outcome_of(answered=True, correct=False) == "answered_wrong"  # under-abstention


def test_a_decision_is_stored_with_everything_and_labelled(
    store: DecisionStore, location: Location
) -> None:
    store.decided(record("bg-1", 0.2, 0.9))
    label = store.label_now("acme", "bg-1", 0, True)
    assert label.previous is None and label.outcome == "abstained_correct"
    stored = label.decision
    assert (stored.tenant, stored.model, stored.mode, stored.decision) == \
        ("acme", "m", "enforce", "abstain")
    assert stored.confidence == 0.2 and stored.threshold == 0.5
    assert stored.prompt == "what is it?" and stored.abstained_answer == "answer 0"
    assert stored.created_at == 1_000.0 and stored.correct is True
    answered = store.label_now("acme", "bg-1", 1, False).decision
    assert answered.abstained_answer is None and answered.prompt is None  # kept only to review
    ((features,),) = query(location, "SELECT features FROM decisions WHERE choice = 1")
    assert '"token_prob":0.9' in features
    assert totals(store) == {
        ("abstained_correct", 2): (1, 0.2, 0.0, round(bas_score_scalar(0.2, True), 9)),
        ("answered_wrong", 9): (1, 0.9, -1.0, round(bas_score_scalar(0.9, False), 9)),
    }


def test_the_last_label_wins_and_each_decision_counts_once(store: DecisionStore) -> None:
    store.decided(record("bg-1", 0.7))
    for verdict in (True, True, False, True, False):
        store.label_now("acme", "bg-1", 0, verdict)
    # Each flip took the old label back: only the last one is left (empty rows are not read).
    assert totals(store) == {
        ("answered_wrong", 7): (1, 0.7, -1.0, round(bas_score_scalar(0.7, False), 9)),
    }


def test_utility_uses_the_tenants_costs_at_decision_time(store: DecisionStore) -> None:
    costly = tenant(wrong_answer_cost=9.0, abstain_cost=0.5, threshold=0.85)
    store.decided(record("bg-1", 0.9, 0.3, None, owner=costly))
    for choice in range(3):
        store.label_now("acme", "bg-1", choice, False)
    by_outcome = {(t.outcome, t.bin): t.utility_sum for t in store.feedback_totals()}
    assert by_outcome == {("answered_wrong", 9): -9.0, ("abstained_wrong", 3): -0.5,
                          ("abstained_wrong", -1): -0.5}
    no_confidence = next(t for t in store.feedback_totals() if t.bin == -1)
    assert no_confidence.bas_sum == 0.0  # BAS needs a confidence


def test_labels_are_scoped_to_the_tenant(store: DecisionStore) -> None:
    store.decided(record("bg-1", 0.7))
    with pytest.raises(DecisionNotFound):
        store.label_now("other-tenant", "bg-1", 0, True)
    with pytest.raises(DecisionNotFound):
        store.label_now("acme", "bg-1", 1, True)  # no such choice
    with pytest.raises(DecisionNotFound):
        store.label_now("acme", "bg-unknown", 0, True)
    assert store.feedback_totals() == []
    assert store.label_now(None, "bg-1", 0, True).decision.tenant == "acme"  # the CLI: any


def test_a_label_sees_the_decision_queued_just_before_it(store: DecisionStore) -> None:
    async def burst() -> list[str]:
        labels = []
        for i in range(200):
            store.decided(record(f"bg-{i}", 0.6))
            labels.append(store.label("acme", f"bg-{i}", 0, i % 2 == 0))
        return [label.outcome for label in await asyncio.gather(*labels)]

    outcomes = asyncio.run(burst())
    assert outcomes.count("answered_correct") == outcomes.count("answered_wrong") == 100


def test_close_writes_everything_queued(location: Location) -> None:
    store = DecisionStore(location, retention_seconds=None)
    writers = [threading.Thread(target=lambda k=k: [
        store.decided(record(f"bg-{k}-{i}", 0.4, 0.8)) for i in range(500)]) for k in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    store.close()
    store.close()  # twice is harmless
    assert query(location, "SELECT count(*) FROM decisions") == [(4000,)]
    if isinstance(location, Path):
        assert query(location, "PRAGMA journal_mode") == [("wal",)]


def test_retention_deletes_old_decisions_but_keeps_the_totals(location: Location) -> None:
    path = location
    store = DecisionStore(path, retention_seconds=None)
    store.decided(record("bg-old", 0.9, created_at=9_850.0))
    store.decided(record("bg-new", 0.9, created_at=9_950.0))
    store.label_now("acme", "bg-old", 0, True)
    store.close()
    # The writer purges as it starts writing, then hourly: the cutoff here is 9 900.
    DecisionStore(path, retention_seconds=100, clock=lambda: 10_000.0).close()
    reopened = DecisionStore(path, retention_seconds=None)
    try:
        with pytest.raises(DecisionNotFound):
            reopened.label_now("acme", "bg-old", 0, True)
        assert reopened.label_now("acme", "bg-new", 0, True).previous is None
        assert sum(t.decisions for t in reopened.feedback_totals()) == 2
    finally:
        reopened.close()


def test_abstained_answers_for_review(store: DecisionStore) -> None:
    store.decided(record("bg-1", 0.1, created_at=1.0))
    store.decided(record("bg-2", 0.9, created_at=2.0))
    store.decided(record("bg-3", 0.2, created_at=3.0))
    store.decided(record("bg-4", 0.3, owner=tenant("rival"), created_at=4.0))
    store.label_now("acme", "bg-3", 0, True)
    assert [d.id for d in store.abstained("acme")] == ["bg-1"]
    assert [d.id for d in store.abstained("acme", unlabelled_only=False)] == ["bg-3", "bg-1"]
    assert [d.id for d in store.abstained(None, unlabelled_only=False, limit=2)] == \
        ["bg-4", "bg-3"]
    assert [d.id for d in store.abstained("acme", unlabelled_only=False, before=3.0)] == ["bg-1"]
    assert store.abstained("acme")[0].as_json()["answer"] == "answer 0"


def test_drift_compares_mean_confidence_with_accuracy(store: DecisionStore) -> None:
    now = [0.0]
    store._clock = lambda: now[0]  # labels in a known order
    for i in range(30):
        store.decided(record(f"bg-{i}", 0.9))
    for i in range(30):
        now[0] = float(i)
        store.label_now("acme", f"bg-{i}", 0, i < 10)  # the latest 20 are all wrong
    (everything,) = store.drift(100)
    assert everything.decisions == 30
    assert everything.gap == pytest.approx(0.9 - 10 / 30)
    (recent,) = store.drift(20)
    assert recent.accuracy == 0.0 and recent.gap == pytest.approx(0.9)
    assert store.drift(20, tenant="nobody") == []


def test_drift_counts_the_decisions_of_the_serving_calibrator(store: DecisionStore) -> None:
    """A refit starts a new window: decisions made under an earlier calibrator are left out."""
    now = [0.0]
    store._clock = lambda: now[0]
    for i in range(30):  # the old calibrator: p = 0.9, always wrong
        store.decided(record(f"bg-old-{i}", 0.9, created_at=1.0 + i))
    for i in range(10):  # the refitted one, newest: p = 0.5, right half the time
        store.decided(replace(record(f"bg-new-{i}", 0.5, created_at=100.0 + i),
                              calibrator_version="v2"))
    for i in range(30):
        now[0] = float(i)
        store.label_now("acme", f"bg-old-{i}", 0, False)
    for i in range(10):
        now[0] = 50.0 + i
        store.label_now("acme", f"bg-new-{i}", 0, i % 2 == 0)
    (serving,) = store.drift(100)
    assert (serving.calibrator_version, serving.decisions, serving.gap) == ("v2", 10, 0.0)
    assert serving.earlier_labels is None  # not counted unless asked
    (counted,) = store.drift(100, count_earlier=True)
    assert counted.earlier_labels == 30
    (named,) = store.drift(100, serving=lambda tenant, model: "v1", count_earlier=True)
    assert (named.calibrator_version, named.decisions, named.earlier_labels) == ("v1", 30, 10)
    assert named.gap == pytest.approx(0.9)
    (mixed,) = store.drift(100, all_versions=True)
    assert (mixed.calibrator_version, mixed.decisions) == (None, 40)
    # A version with no labels yet: a window of none, when the left-out labels are counted.
    (unlabelled,) = store.drift(100, serving=lambda tenant, model: "v3", count_earlier=True)
    assert (unlabelled.decisions, unlabelled.earlier_labels) == (0, 40)
    assert store.drift(100, serving=lambda tenant, model: "v3") == []


def test_a_fits_rows_are_read_again_by_their_label_time(store: DecisionStore) -> None:
    now = [10.0]
    store._clock = lambda: now[0]
    spec = [ScoreSpec("token_prob", ScoreKind.PROBABILITY)]
    for i in range(3):
        store.decided(record(f"bg-{i}", 0.2 + 0.3 * i, created_at=1.0 + i))
    for i in range(2):
        now[0] = 20.0 + i
        store.label_now("acme", f"bg-{i}", 0, True)
    until = store.latest_label_time("acme", "m")
    assert until == 21.0 and store.latest_label_time("acme", "nothing") is None
    fitted = store.labelled_data("acme", "m", spec, labelled_until=until)
    now[0] = 30.0
    store.label_now("acme", "bg-2", 0, False)  # a label after the fit
    again = store.labelled_data("acme", "m", spec, labelled_until=until)
    assert again.fingerprint() == fitted.fingerprint() and again.n_rows == 2
    assert store.labelled_data("acme", "m", spec).n_rows == 3


def test_labelled_decisions_become_calibration_data(store: DecisionStore) -> None:
    store.decided(record("bg-1", 0.8, 0.3))
    store.decided(record("bg-2", 0.6))
    store.decided(record("bg-3", None))  # no features: nothing to fit on
    for decision_id, choice, verdict in (("bg-1", 0, True), ("bg-1", 1, False),
                                         ("bg-2", 0, True), ("bg-3", 0, True)):
        store.label_now("acme", decision_id, choice, verdict)
    data = store.labelled_data("acme", "m", [ScoreSpec("token_prob", ScoreKind.PROBABILITY)])
    assert data.scores[:, 0].tolist() == [0.8, 0.3, 0.6]
    assert data.correct.tolist() == [True, False, True]
    assert data.groups.tolist() == [0, 0, 1]  # both choices of bg-1 answer one question
    with pytest.raises(DataError, match="missing score field 'mean_topk_margin'"):
        store.labelled_data("acme", "m", [ScoreSpec("mean_topk_margin", ScoreKind.REAL)])
    with pytest.raises(DataError, match="no records"):
        store.labelled_data("acme", "other-model", [ScoreSpec("token_prob", ScoreKind.PROBABILITY)])


def test_a_database_that_is_not_a_store_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "app.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE users (name TEXT)")
        db.execute("INSERT INTO users VALUES ('ada')")
    with pytest.raises(StoreError, match="not a basguard decision store"):
        DecisionStore(path)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == [("users",)]
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="cannot open the decision store"):
        DecisionStore(garbage)


def test_a_decision_that_cannot_be_written_is_counted_and_the_others_are_kept(
    location: Location,
) -> None:
    lost: list[tuple[str, int]] = []
    store = DecisionStore(location, retention_seconds=None,
                          on_lost=lambda reason, count: lost.append((reason, count)))
    broken = record("bg-broken", 0.9)
    broken.outcomes[0].features["token_prob"] = object()  # type: ignore[index]  # not JSON
    store.decided(record("bg-before", 0.9))
    store.decided(broken)
    store.decided(record("bg-after", 0.9))
    for good in ("bg-before", "bg-after"):
        assert store.label_now("acme", good, 0, True).outcome == "answered_correct"
    assert store.write_failures == 1 and lost == [("write_failed", 1)]
    with pytest.raises(DecisionNotFound):
        store.label_now("acme", "bg-broken", 0, True)
    store.close()


def test_decisions_beyond_the_queue_limit_are_dropped_and_counted(location: Location) -> None:
    lost: list[tuple[str, int]] = []
    store = DecisionStore(location, retention_seconds=None, max_queued=10,
                          on_lost=lambda reason, count: lost.append((reason, count)))
    try:
        with holding_writes(location):
            for i in range(50):
                store.decided(record(f"bg-{i}", 0.9))
        assert store.dropped > 0 and sum(n for _, n in lost) == store.dropped
        assert {reason for reason, _ in lost} == {"dropped"}
    finally:
        store.close()


def test_a_label_is_refused_not_queued_when_the_writer_is_behind(location: Location) -> None:
    store = DecisionStore(location, retention_seconds=None, max_queued=5)
    try:
        with holding_writes(location):
            for i in range(20):
                store.decided(record(f"bg-{i}", 0.9))
            with pytest.raises(StoreUnavailable, match="behind"):
                store.submit(lambda db: None)
    finally:
        store.close()
    # What was queued before the limit was written once the lock went.
    assert query(location, "SELECT count(*) FROM decisions")[0][0] >= 5


def test_a_closed_store_refuses_labels(location: Location) -> None:
    store = DecisionStore(location, retention_seconds=None)
    store.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        store.label_now("acme", "bg-1", 0, True)


def long_record(decision_id: str, *, prompt_chars: int, answer_chars: int) -> DecisionRecord:
    """An abstained decision with a long prompt and withheld answer."""
    owner = tenant()
    outcome = ChoiceOutcome(0, False, 0.1, None, {"token_prob": 0.1})
    return DecisionRecord(decision_id, owner, "m", [outcome], "identity", "v1",
                          {0: "a" * answer_chars}, "q" * prompt_chars, 1_000.0)


def test_long_prompts_and_answers_are_cut_with_a_marker(location: Location) -> None:
    store = DecisionStore(location, retention_seconds=None,
                          text_limits=TextLimits(prompt_chars=8_000, answer_chars=16_000))
    try:
        store.decided(long_record("bg-huge", prompt_chars=50_000_000, answer_chars=100_000))
        store.decided(long_record("bg-fits", prompt_chars=8_000, answer_chars=16_000))
        huge, fits = (store.label_now("acme", i, 0, True).decision for i in ("bg-huge", "bg-fits"))
    finally:
        store.close()
    assert huge.prompt == "q" * 8_000 + \
        "\n[basguard: truncated 49992000 of 50000000 characters]"
    assert huge.abstained_answer == "a" * 16_000 + \
        "\n[basguard: truncated 84000 of 100000 characters]"
    assert (fits.prompt, fits.abstained_answer) == ("q" * 8_000, "a" * 16_000)  # untouched


def test_the_queue_is_bounded_by_bytes_as_well_as_by_count(location: Location) -> None:
    lost: list[tuple[str, int]] = []
    store = DecisionStore(location, retention_seconds=None,
                          max_queued_bytes=1_048_576,
                          text_limits=TextLimits(prompt_chars=100_000, answer_chars=100_000),
                          on_lost=lambda reason, count: lost.append((reason, count)))
    try:
        with holding_writes(location):
            for i in range(40):  # 40 x 150 kB would be 6 MB; 10 queued decisions are far below
                store.decided(long_record(f"bg-{i}", prompt_chars=50_000, answer_chars=100_000))
            assert store.queued_bytes <= 1_048_576
    finally:
        store.close()
    assert store.dropped == 34 and sum(n for _, n in lost) == 34  # 6 fit in 1 MiB
    assert {reason for reason, _ in lost} == {"dropped"}
    assert query(location, "SELECT count(*) FROM decisions") == [(6,)]


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_store_and_its_journal_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "d.sqlite3"
    store = DecisionStore(path, retention_seconds=None, journal=journal_dir(path))
    try:
        store.decided(record("bg-1", 0.1))
        store.label_now("acme", "bg-1", 0, True)  # written: -wal and -shm exist
        (segment,) = journal_dir(path).glob("*.jsonl")
        files = [path, Path(f"{path}-wal"), Path(f"{path}-shm"), segment]
        assert {file.name: mode(file) for file in files} == {file.name: 0o600 for file in files}
        assert mode(journal_dir(path)) == 0o700
    finally:
        store.close()


def test_the_writer_logs_counts_and_goes_on_after_an_unexpected_error(
    location: Location, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(store_module, "WRITER_RETRY_SECONDS", 0.01)
    errors: list[None] = []
    store = DecisionStore(location, retention_seconds=None,
                          on_writer_error=lambda: errors.append(None))
    drain = store._drain
    failures = iter([RuntimeError("a bug in the writer")])

    def failing_once() -> list[object]:
        for failure in failures:
            raise failure
        return drain()

    monkeypatch.setattr(store, "_drain", failing_once)
    try:
        store.decided(record("bg-1", 0.7))
        assert store.label_now("acme", "bg-1", 0, True).outcome == "answered_correct"
        assert store.writer_alive and store.loop_errors == 1 and len(errors) == 1
    finally:
        store.close()
    assert "a bug in the writer" in caplog.text and "the writer goes on" in caplog.text


def test_a_dead_writer_is_visible_and_labels_are_refused_not_left_waiting(
    location: Location, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = DecisionStore(location, retention_seconds=None)
    release = threading.Event()

    def dying() -> list[object]:
        release.wait(10)
        raise SystemExit("something no handler should survive")

    monkeypatch.setattr(store, "_drain", dying)
    try:
        waiting = store.submit(lambda db: None)  # queued before the writer dies
        release.set()
        with pytest.raises(StoreUnavailable, match="writer has stopped"):
            waiting.result(timeout=10)
        assert not store.writer_alive
        with pytest.raises(StoreUnavailable, match="writer has stopped"):
            store.label_now("acme", "bg-1", 0, True)
    finally:
        store.close()
    assert "the writer stopped" in caplog.text


CRASHING_PROCESS = """
import os, signal, sys
from pathlib import Path
from tests.support.decision_store import holding_writes, record
from proxy.store import DecisionStore
location = sys.argv[1] if "://" in sys.argv[1] else Path(sys.argv[1])
store = DecisionStore(location, retention_seconds=None, journal=Path(sys.argv[2]))
with holding_writes(location):  # the writer cannot commit: all is in the journal
    for i in range(int(sys.argv[3])):
        store.decided(record(f"bg-{i}", 0.3, 0.8))
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_decisions_of_a_killed_process_are_replayed_from_its_journal(
    location: Location, tmp_path: Path
) -> None:
    path = location
    journal = journal_for(location, tmp_path)
    killed = subprocess.run(
        [sys.executable, "-c", CRASHING_PROCESS, str(path) if isinstance(path, Path) else path,
         str(journal), "300"], capture_output=True, text=True, timeout=120, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (segment,) = journal.glob("*.jsonl")
    with segment.open("r+b") as file:
        file.seek(file.read().index(b"\0"))  # the end of its lines
        file.write(b'[["bg-torn", 0, "acme"')  # a copy the kill cut short
    assert query(path, "SELECT count(*) FROM decisions") == [(0,)]
    store = DecisionStore(path, retention_seconds=None, journal=journal)
    try:
        assert store.recovery == Recovery(segments=1, recovered=300, already_stored=0,
                                          unreadable=1)
        assert store.label_now("acme", "bg-299", 1, True).outcome == "answered_correct"
        assert not segment.exists()
    finally:
        store.close()
    assert query(path, "SELECT count(*) FROM decisions") == [(600,)]
    # Replaying again changes nothing: nothing is left, and a repeated line is ignored.
    again = DecisionStore(path, retention_seconds=None, journal=journal)
    again.close()
    assert again.recovery == Recovery()
    assert list(journal.iterdir()) == []  # a clean close leaves no journal


def test_a_live_processs_journal_is_not_replayed_by_another(
    location: Location, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = location
    journal = journal_for(location, tmp_path)
    first = DecisionStore(path, retention_seconds=None, journal=journal)
    try:
        drain = first._drain
        monkeypatch.setattr(first, "_drain", list)  # first's decisions stay in its journal
        for i in range(5):
            first.decided(record(f"bg-{i}", 0.9))
        (segment,) = journal.glob("*.jsonl")
        # Another worker starting now must leave the live segment alone (its flock is held).
        second = DecisionStore(path, retention_seconds=None, journal=journal)
        second.close()
        assert second.recovery == Recovery() and segment.exists()
        monkeypatch.setattr(first, "_drain", drain)
        assert first.label_now("acme", "bg-4", 0, True).previous is None  # first stored it
    finally:
        first.close()


def test_the_journal_rotates_and_committed_segments_are_deleted(
    location: Location, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "JOURNAL_ROTATE_SECONDS", 0.0)
    journal = journal_for(location, tmp_path)
    store = DecisionStore(location, retention_seconds=None, journal=journal)
    try:
        seen: set[str] = set()
        for i in range(20):
            store.decided(record(f"bg-{i}", 0.9))
            store.label_now("acme", f"bg-{i}", 0, True)  # a batch: rotates, then retires
            seen.update(p.name for p in journal.glob("*.jsonl"))
        assert len(seen) > 2  # it rotated
        assert len(list(journal.glob("*.jsonl"))) <= 2  # and deleted what it wrote
    finally:
        store.close()


def test_a_decision_after_close_is_counted_lost_not_queued_forever(
    location: Location, tmp_path: Path
) -> None:
    lost: list[tuple[str, int]] = []
    journal = journal_for(location, tmp_path)
    store = DecisionStore(location, retention_seconds=None, journal=journal,
                          on_lost=lambda reason, count: lost.append((reason, count)))
    store.close()
    store.decided(record("bg-late", 0.9))  # e.g. a stream that ended after the shutdown
    assert lost == [("write_failed", 1)] and list(journal.iterdir()) == []


def test_a_segment_being_created_is_left_alone_and_a_dead_ones_leftover_removed(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "journal"
    directory.mkdir()
    fresh, stale = directory / "1-a.creating", directory / "2-b.creating"
    fresh.touch()
    stale.touch()
    os.utime(stale, (0, 0))  # created long ago by a process that died before renaming it
    assert list(orphaned_segments(directory)) == []
    assert fresh.exists() and not stale.exists()


def test_a_version_1_store_is_upgraded_in_place(tmp_path: Path) -> None:
    from proxy.signals.base import CallResult, SignalCall
    from proxy.signals.runner import SignalOutcome

    path = tmp_path / "decisions.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(V1_SCHEMA)
    calls = (SignalCall("consistency", "m", CallResult.OK, 0.25, 10, 3),
             SignalCall("consistency", "m", CallResult.TIMEOUT, 1.0))
    opened = DecisionStore(path, retention_seconds=None)
    try:
        base = record("bg-new", 0.8, 0.3)
        opened.decided(DecisionRecord(
            base.id, base.tenant, base.model, base.outcomes, "identity", "v1",
            base.abstained_answers, base.prompt, 2000.0,
            signals=SignalOutcome(({"agreement": 0.8}, {"agreement": 0.3}), calls, seconds=1.5)))
        asyncio.run(opened.settled())
        # The old decision is still there, labellable.
        assert opened.label_now("acme", "bg-old", 0, True).decision.correct is True
    finally:
        opened.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM basguard_meta").fetchone() == (str(SCHEMA_VERSION),)
        rows = dict(db.execute("SELECT id || ':' || choice, signal_calls FROM decisions"))
    assert rows["bg-old:0"] is None
    assert rows["bg-new:1"] is None  # the calls are the decision's: on its first row only
    assert json.loads(rows["bg-new:0"]) == {
        "extra_calls": 2, "extra_tokens": 13, "seconds": 1.5,
        "calls": [c.as_json() for c in calls]}
    # Opening the upgraded store again changes nothing.
    DecisionStore(path, retention_seconds=None).close()


def test_a_store_from_a_newer_basguard_is_refused(location: Location) -> None:
    DecisionStore(location, retention_seconds=None).close()
    newer = SCHEMA_VERSION + 1
    execute(location, f"UPDATE basguard_meta SET value = '{newer}'")
    with pytest.raises(StoreError,
                       match=f"schema version {newer}; this basguard reads {SCHEMA_VERSION}"):
        DecisionStore(location, retention_seconds=None)


def test_a_journal_line_of_a_version_1_basguard_is_read_with_no_signal_calls() -> None:
    from proxy.store.rows import ROW_WIDTH, decode_line

    v1_row = ["bg-1", 0, "acme", "m", "enforce", "answer", 0.9, 0.5, 1.0, 0.0, "identity", "v1",
              None, None, None, None, 1000.0]
    (row,) = decode_line(json.dumps([v1_row]).encode())
    assert len(row) == ROW_WIDTH and row[:17] == tuple(v1_row) and row[17] is None


def test_a_batch_the_database_refuses_is_counted_and_the_next_one_is_written(
    location: Location,
) -> None:
    lost: list[tuple[str, int]] = []
    store = DecisionStore(location, retention_seconds=None,
                          on_lost=lambda reason, count: lost.append((reason, count)))
    try:
        (row,) = decision_rows_of(record("bg-bad", 0.9))
        bad = (*row[:5], "maybe", *row[6:])  # the CHECK on decision refuses it
        with store._lock:
            store._pending.append(store_module._Decision([bad], 256))
        with pytest.raises(StoreUnavailable, match="failed"):  # the waiter shares its fate
            asyncio.run(store.settled())  # the first batch of the writer's session: it fails
        assert lost == [("write_failed", 1)]
        store.decided(record("bg-good", 0.9))
        assert store.label_now("acme", "bg-good", 0, True).outcome == "answered_correct"
    finally:
        store.close()


def decision_rows_of(made: DecisionRecord) -> list[tuple[Any, ...]]:
    from proxy.store.rows import decision_rows

    return decision_rows(made, TextLimits())


@pytest.mark.parametrize("count", [1, 300, 2 * queries.ROWS_PER_STATEMENT + 77])
def test_a_batch_of_any_size_is_inserted_whole_and_once(tmp_path: Path, count: int) -> None:
    # SQLite's statements hold powers of two of rows, at most ROWS_PER_STATEMENT each, so a
    # batch takes several; replayed (a journal read twice), it inserts nothing again.
    backend = SQLiteBackend(parse_store_location(tmp_path / "d.sqlite3"))
    backend.migrate()
    session = backend.connect()
    rows = [(f"bg-batch{position:08x}", 0, "t", "m", "enforce", "answer", 0.5, 0.5, 1.0, 0.0,
             "isotonic", "v1", None, None, None, None, 1.0, None, "other", None, 0, None)
            for position in range(count)]
    try:
        for expected in (count, 0):
            with queries.transaction(session):
                assert queries.insert_rows(session, rows) == expected
        [(stored,)] = session.execute("SELECT count(*) FROM decisions").fetchall()
        assert stored == count
    finally:
        session.close()
