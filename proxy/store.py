"""The decision store: every decision, and its feedback label, in an embedded SQLite database.

One writer thread owns all writes. The request path builds the decision's rows (with long
prompts and answers cut to the configured lengths), appends them to the crash journal with one
``write()`` (see :mod:`proxy.journal`) and to an in-memory queue, so storing costs a request a
few microseconds, not a disk commit. Every 50 ms the writer commits what has
queued up in one transaction: that keeps up with over a hundred thousand decisions a second and
costs a busy gateway one commit per 50 ms instead of one per request. Labels go through the same
queue, so a label always sees the decision before it, even one made a moment earlier. On a clean
shutdown :meth:`DecisionStore.close` drains the queue before closing, so nothing is lost; after
a crash (SIGKILL), the next start replays the dead process's journal, so nothing acknowledged
is lost either. The queue is bounded by count and by bytes: beyond either, decisions are dropped
and counted, so a disk that cannot keep up never grows the gateway's memory without bound.

The writer loop logs, counts and goes on after any error. Should the thread end anyway,
:attr:`DecisionStore.writer_alive` says so (``/readyz`` and a gauge show it), and labels are
refused with :class:`StoreUnavailable` instead of waiting forever.

Feedback totals (outcome counts, realized utility, BAS and reliability bins per tenant and model)
are kept in a small table updated in the same transaction as each label, so reading them for
``/metrics`` is a few rows, and every worker process and the CLI see the same figures. A repeated
label for one decision first takes back the old label's contribution: the last label wins and each
decision counts once.

The database is in WAL mode: readers (the metrics, the review list) never block the writer, and
several gateway processes can share one file. The file (and SQLite's ``-wal`` and ``-shm``
beside it, which take its mode) is created readable by its owner only: it holds prompts and
withheld answers.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import orjson

from calibrators.dataset import CalibrationData, calibration_data_from_records
from calibrators.signals import ScoreSpec
from policies.bas import bas_score_scalar
from policies.utility import realized_utility_scalar

from .decision_rows import (
    ROW_WIDTH,
    Row,
    TextLimits,
    decision_rows,
    decode_line,
    encode_line,
    queued_size,
)
from .errors import DecisionNotFound, StoreUnavailable
from .feedback import (
    OUTCOMES,
    RELIABILITY_BINS,
    DriftWindow,
    FeedbackTotal,
    Label,
    StoredDecision,
    confidence_bin,
    outcome_of,
)
from .journal import Journal, JournalSegment, orphaned_segments
from .serving import DecisionRecord

__all__ = [
    "OUTCOMES",
    "RELIABILITY_BINS",
    "DecisionStore",
    "DriftWindow",
    "FeedbackTotal",
    "Label",
    "Recovery",
    "StoreError",
    "StoredDecision",
    "TextLimits",
    "confidence_bin",
    "outcome_of",
]

logger = logging.getLogger("basguard.store")

SCHEMA_VERSION = 2
"""2 added ``decisions.signal_calls``; a version-1 store is upgraded in place when opened."""
LINGER_SECONDS = 0.05
"""How long the writer waits for more decisions before committing (nothing waits on them)."""
MAX_BATCH = 4096
JOURNAL_ROTATE_SECONDS = 1.0
"""How often the writer starts a new journal segment (if the current one has lines), so that
committed lines are deleted about this long after they were written."""
DEFAULT_TEXT_LIMITS = TextLimits()
WRITER_RETRY_SECONDS = 1.0
"""How long the writer pauses after an unexpected error before it goes on."""
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS basguard_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS decisions (
    id TEXT NOT NULL,
    choice INTEGER NOT NULL,
    tenant TEXT NOT NULL,
    model TEXT NOT NULL,
    mode TEXT NOT NULL,
    decision TEXT NOT NULL CHECK (decision IN ('answer', 'abstain')),
    confidence REAL,
    threshold REAL NOT NULL,
    wrong_answer_cost REAL NOT NULL,
    abstain_cost REAL NOT NULL,
    calibrator_method TEXT NOT NULL,
    calibrator_version TEXT NOT NULL,
    features TEXT,
    reason TEXT,
    prompt TEXT,
    abstained_answer TEXT,
    created_at REAL NOT NULL,
    signal_calls TEXT,
    correct INTEGER CHECK (correct IN (0, 1)),
    labelled_at REAL,
    PRIMARY KEY (id, choice)
);
CREATE INDEX IF NOT EXISTS decisions_by_age ON decisions (created_at);
CREATE INDEX IF NOT EXISTS decisions_labelled
    ON decisions (tenant, model, labelled_at) WHERE correct IS NOT NULL;
CREATE INDEX IF NOT EXISTS decisions_abstained
    ON decisions (tenant, created_at) WHERE decision = 'abstain';
CREATE TABLE IF NOT EXISTS feedback_totals (
    tenant TEXT NOT NULL,
    model TEXT NOT NULL,
    outcome TEXT NOT NULL,
    bin INTEGER NOT NULL,
    decisions INTEGER NOT NULL,
    confidence_sum REAL NOT NULL,
    utility_sum REAL NOT NULL,
    bas_sum REAL NOT NULL,
    PRIMARY KEY (tenant, model, outcome, bin)
);
"""

_INSERT_HEAD = """
INSERT OR IGNORE INTO decisions (
    id, choice, tenant, model, mode, decision, confidence, threshold, wrong_answer_cost,
    abstain_cost, calibrator_method, calibrator_version, features, reason, prompt,
    abstained_answer, created_at, signal_calls
) VALUES """

_DECISION_COLUMNS = (
    "id, choice, tenant, model, mode, decision, confidence, threshold, wrong_answer_cost, "
    "abstain_cost, prompt, abstained_answer, created_at, correct, labelled_at"
)


class StoreError(ValueError):
    """The decision store cannot be opened (a bad path, or not a basguard database)."""



class _Stop:
    """Queued by :meth:`DecisionStore.close`: write what is queued, then stop."""


@dataclass
class _Job:
    """A write that someone waits for (a label), run in order with the queued decisions."""

    run: Callable[[sqlite3.Connection], Any]
    future: concurrent.futures.Future[Any]


@dataclass(frozen=True)
class _Decision:
    """One decision's rows, queued, and about how many bytes they hold."""

    rows: list[Row]
    size: int


@dataclass(frozen=True)
class _Rotated:
    """Queued at a journal rotation: every line of ``segment`` is in a decision queued before."""

    segment: JournalSegment


_Queued = _Decision | _Job | _Stop | _Rotated


@dataclass(frozen=True)
class Recovery:
    """What start-up replayed from the journals of processes that died (SIGKILL, OOM)."""

    segments: int = 0
    recovered: int = 0
    """Decisions that were acknowledged but never committed, now stored."""
    already_stored: int = 0
    """Journal lines whose decisions the dead process had committed."""
    unreadable: int = 0
    """Lines that could not be read back: lost (a write the crash cut short)."""


class DecisionStore:
    """Records decisions and labels in SQLite; also a ``DecisionObserver``.

    Parameters
    ----------
    path : Path
        The database file, created (mode 0600) with its schema if missing.
    retention_seconds : float or None
        Decisions older than this are deleted (hourly, or more often for short retentions);
        feedback totals, like counters, are kept. None keeps everything.
    max_queued : int
        Decisions waiting for the writer beyond this are dropped and counted (a disk that
        cannot keep up must not grow the gateway's memory without bound).
    max_queued_bytes : int
        The same bound in bytes (about: the texts of the queued rows, plus a fixed overhead
        per row), so that large prompts and answers cannot fill memory within the count.
    text_limits : TextLimits
        The longest prompt and withheld answer kept; longer ones are cut, with a marker.
    journal : Path, optional
        This process's crash journal directory (see :mod:`proxy.journal`), shared by every
        process writing the store. At start, the journals of dead processes in it are replayed
        (:attr:`recovery`). None: no journal (the CLI, which records no decisions).
    on_lost : callable, optional
        Told ``(reason, count)`` of decisions that could not be stored: ``dropped`` (the queue
        was full), ``write_failed`` or ``crashed`` (a journal line a crash cut short). The
        metrics count them. Never called from the constructor.
    on_writer_error : callable, optional
        Told of each unexpected error the writer logged and went on after (the metrics count
        them), from the writer thread.
    """

    def __init__(
        self,
        path: Path,
        *,
        retention_seconds: float | None = 30 * 86400,
        max_queued: int = 100_000,
        max_queued_bytes: int = 64 * 1_048_576,
        text_limits: TextLimits = DEFAULT_TEXT_LIMITS,
        journal: Path | None = None,
        clock: Callable[[], float] = time.time,
        on_lost: Callable[[str, int], None] | None = None,
        on_writer_error: Callable[[], None] | None = None,
    ) -> None:
        self.path = path
        self.retention_seconds = retention_seconds
        self._clock = clock
        # A deque: the writer drains it in batches on a timer, so the request path never
        # waits on the writer; the lock (held for a few hundred nanoseconds) keeps the journal
        # and the queue in one order, which rotation relies on, and the byte count exact.
        self._pending: collections.deque[_Queued] = collections.deque()
        self._lock = threading.Lock()
        self._queued_bytes = 0
        self._max_queued = max_queued
        self._max_queued_bytes = max_queued_bytes
        self._limits = text_limits
        self._read = _connect(path)  # also creates or checks the schema
        self._read_lock = threading.Lock()
        self._urgent = threading.Event()
        self._on_lost = on_lost
        self._on_writer_error = on_writer_error
        self.dropped = 0
        self.write_failures = 0
        self.loop_errors = 0
        """Unexpected errors the writer loop logged and went on after."""
        self.recovery = Recovery()
        self._journal: Journal | None = None
        self._journal_failed = False
        if journal is not None:
            try:
                self.recovery = _replay_orphans(self._read, journal)
            except (sqlite3.Error, OSError) as exc:  # the segments stay for the next start
                raise StoreError(f"{journal}: cannot replay the crash journal: {exc}") from None
            try:
                self._journal = Journal(journal)
            except OSError as exc:
                raise StoreError(f"{journal}: cannot create the crash journal: {exc} (set "
                                 "BASGUARD_STORE_JOURNAL=false to run without one)") from None
        self._journal_rotated = time.monotonic()
        self._accepting = True  # False once the writer has stopped: refuse, never hang
        self._writer = threading.Thread(target=self._run_writer, name="basguard-store",
                                        daemon=True)
        self._writer.start()

    @property
    def writer_alive(self) -> bool:
        """Whether the writer thread runs (False after :meth:`close`, or if it died)."""
        return self._accepting and self._writer.is_alive()

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    # The request path.

    def decided(self, record: DecisionRecord) -> None:
        try:
            rows = decision_rows(record, self._limits)
            line = encode_line(rows) if self._journal is not None else None
        except (TypeError, ValueError) as exc:  # one malformed record; the rest go on
            self.write_failures += 1
            self._lost("write_failed", 1)
            logger.error("decision store: cannot store decision %s: %s", record.id, exc)
            return
        if not rows:
            return  # only not_applicable choices (tool calls passed unchanged): nothing to label
        size = queued_size(rows) if line is None else len(line)
        dropped = closed = False
        with self._lock:
            if not self._accepting and self._journal is None:
                closed = True  # after close(): nothing would ever write it
            elif (len(self._pending) >= self._max_queued
                    or self._queued_bytes + size > self._max_queued_bytes):
                self.dropped += 1
                dropped = True
            else:
                if line is not None:
                    self._append_to_journal(line)
                self._pending.append(_Decision(rows, size))
                self._queued_bytes += size
        # Told outside the lock: the callback is someone else's code.
        if dropped:
            self._lost("dropped", 1)
        elif closed:
            self.write_failures += 1
            self._lost("write_failed", 1)

    def _append_to_journal(self, line: bytes) -> None:
        """Under the lock. A segment the line filled is retired after what is queued now."""
        if self._journal is None:  # closed: the decision stays queued and is counted at close
            return
        try:
            full = self._journal.append(line)
        except OSError as exc:
            self._journal_error(exc)
            return
        if full is not None:
            self._pending.append(_Rotated(full))

    def _journal_error(self, exc: OSError) -> None:
        # The decision is still queued and will be written; only a crash before then would
        # lose it. Said once, not per request.
        if not self._journal_failed:
            self._journal_failed = True
            logger.error("decision store %s: cannot write the crash journal (%s); decisions "
                         "are stored, but a crash may lose the latest ones", self.path, exc)

    def upstream_failed(self, model: str, kind: str) -> None:
        return None

    def _lost(self, reason: str, count: int) -> None:
        if self._on_lost is not None and count:
            self._on_lost(reason, count)

    # Labels.

    def submit(self, run: Callable[[sqlite3.Connection], T]) -> concurrent.futures.Future[T]:
        """Run ``run(connection)`` on the writer, in one transaction, after what is queued."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            if not self.writer_alive:
                raise StoreUnavailable("the decision store is closed, or its writer has stopped")
            if len(self._pending) >= self._max_queued:
                raise StoreUnavailable("the decision store is behind; try again shortly")
            self._pending.append(_Job(run, future))
        self._urgent.set()
        return future

    def label_now(self, tenant: str | None, decision_id: str, choice: int, correct: bool) -> Label:
        """Label a decision and wait for it (the CLI). ``tenant=None``: any tenant's."""
        return self.submit(
            lambda db: _label(db, tenant, decision_id, choice, correct, self._clock())
        ).result()

    async def label(self, tenant: str, decision_id: str, choice: int, correct: bool) -> Label:
        """Label one of ``tenant``'s decisions (the feedback endpoint).

        Raises
        ------
        DecisionNotFound
            No decision with this id and choice belongs to ``tenant``.
        """
        future = self.submit(
            lambda db: _label(db, tenant, decision_id, choice, correct, self._clock())
        )
        return await asyncio.wrap_future(future)

    async def settled(self) -> None:
        """Wait until every decision queued so far is written (so a read sees it)."""
        await asyncio.wrap_future(self.submit(lambda db: None))

    # Reads, on their own connection: WAL lets them run beside the writer.

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._read_lock:
            yield self._read

    def abstained(
        self,
        tenant: str | None,
        *,
        limit: int = 50,
        unlabelled_only: bool = True,
        before: float | None = None,
    ) -> list[StoredDecision]:
        """Abstained answers, newest first, for reviewers to label."""
        sql, params = _abstained_query(tenant, unlabelled_only=unlabelled_only, before=before)
        with self._reading() as db:
            rows = db.execute(sql, (*params, limit)).fetchall()
        return [_decision_from_row(row) for row in rows]

    def withheld_page(
        self,
        tenant: str,
        *,
        limit: int,
        max_bytes: int,
        max_choices: int,
        unlabelled_only: bool = True,
        before: float | None = None,
    ) -> tuple[list[StoredDecision], bool]:
        """One page of the review list, newest first, and whether more follow.

        A page holds whole responses only (their choices share the ``created`` cursor, so a
        page split inside one would skip the rest), at least one, and then stops before it
        would pass ``limit`` choices or ``max_bytes`` of JSON (counted as ``as_json`` with a
        separator; the wire model holds a subset of those fields). ``max_choices`` is the most
        choices a response can have.
        """
        sql, params = _abstained_query(tenant, unlabelled_only=unlabelled_only, before=before)
        page: list[StoredDecision] = []
        size = 0
        response: list[StoredDecision] = []
        response_size = 0
        with self._reading() as db:
            # Enough rows to finish the last response that starts within the limit, and one
            # more to tell whether anything follows; read one by one, so stopping early saves
            # decoding the rest.
            for row in db.execute(sql, (*params, limit + max_choices + 1)):
                item = _decision_from_row(row)
                if response and item.id != response[0].id:
                    if page and size + response_size > max_bytes:
                        return page, True
                    page += response
                    size += response_size
                    response, response_size = [], 0
                    if len(page) >= limit:
                        return page, True
                response.append(item)
                response_size += len(orjson.dumps(item.as_json())) + 1
        if response and page and size + response_size > max_bytes:
            return page, True
        return page + response, False

    def feedback_totals(self) -> list[FeedbackTotal]:
        with self._reading() as db:
            rows = db.execute(
                "SELECT tenant, model, outcome, bin, decisions, confidence_sum, utility_sum, "
                "bas_sum FROM feedback_totals WHERE decisions > 0"
            ).fetchall()
        return [FeedbackTotal(*row) for row in rows]

    def drift(
        self, window: int, *, tenant: str | None = None, model: str | None = None
    ) -> list[DriftWindow]:
        """Mean confidence and accuracy over each tenant and model's last ``window`` labels."""
        with self._reading() as db:
            pairs = db.execute(
                "SELECT DISTINCT tenant, model FROM feedback_totals WHERE decisions > 0 AND "
                "(:tenant IS NULL OR tenant = :tenant) AND (:model IS NULL OR model = :model) "
                "ORDER BY tenant, model",
                {"tenant": tenant, "model": model},
            ).fetchall()
            windows = []
            for pair_tenant, pair_model in pairs:
                count, mean_p, accuracy = db.execute(
                    "SELECT count(*), avg(confidence), avg(correct) FROM ("
                    " SELECT confidence, correct FROM decisions"
                    " WHERE tenant = ? AND model = ? AND correct IS NOT NULL"
                    " AND confidence IS NOT NULL ORDER BY labelled_at DESC LIMIT ?)",
                    (pair_tenant, pair_model, window),
                ).fetchone()
                if count:
                    windows.append(DriftWindow(pair_tenant, pair_model, count, mean_p, accuracy))
        return windows

    def labelled_data(
        self, tenant: str, model: str, scores: Sequence[ScoreSpec]
    ) -> CalibrationData:
        """The tenant's labelled decisions on ``model`` as calibration data.

        Each decision id is a group: the choices of one request answer one question, so they
        never straddle cross-validation folds.
        """
        with self._reading() as db:
            rows = db.execute(
                "SELECT id, features, correct FROM decisions WHERE tenant = ? AND model = ? "
                "AND correct IS NOT NULL AND features IS NOT NULL ORDER BY created_at",
                (tenant, model),
            ).fetchall()
        records = (
            {**orjson.loads(features), "correct": bool(correct), "decision": decision_id}
            for decision_id, features, correct in rows
        )
        return calibration_data_from_records(
            records,
            source=f"{self.path} (tenant {tenant!r}, model {model!r}; only labelled decisions "
            "with confidence features count)",
            scores=scores, label="correct", group="decision",
        )

    # Life cycle.

    def close(self) -> None:
        """Write everything queued, then close. Safe to call twice."""
        if self._writer.is_alive():
            self._pending.append(_Stop())
            self._urgent.set()
            self._writer.join()
        unwritten = sum(isinstance(item, _Decision) for item in self._pending)
        if unwritten and self._journal is not None:
            logger.error("decision store %s: %d decisions were not written; they stay in the "
                         "journal, which the next start replays", self.path, unwritten)
        elif unwritten:
            self._lost("write_failed", unwritten)
        self._pending.clear()
        with self._reading() as db:
            db.close()

    def _run_writer(self) -> None:
        """The writer thread: the loop, and whatever must happen if it ever ends abnormally."""
        stopped = False
        try:
            db = _connect(self.path, schema=False)
            try:
                self._write_loop(db)
                stopped = True
            finally:
                db.close()
        except BaseException as exc:  # logged here: a thread's exception is otherwise lost
            logger.critical("decision store %s: the writer stopped: %r; decisions are no "
                            "longer stored, labels are refused (503) and /readyz fails",
                            self.path, exc, exc_info=True)
        finally:
            self._writer_stopped(clean=stopped)

    def _write_loop(self, db: sqlite3.Connection) -> None:
        last_purge = 0.0
        purge_every = _purge_interval(self.retention_seconds)
        while True:
            if len(self._pending) < MAX_BATCH:  # else the writer is behind: no pause
                self._urgent.wait(LINGER_SECONDS)
            # Submitters append before they set, so whatever set the flag is drained below.
            self._urgent.clear()
            try:
                self._rotate_journal()
                batch = self._drain()
            except Exception as exc:  # e.g. a new journal segment cannot be created
                self._loop_error("could not take the next batch", exc)
                continue
            stop = any(isinstance(item, _Stop) for item in batch)
            try:
                self._write(db, batch)
            except Exception as exc:
                # _write answers its own failures; this is a bug in it. Nobody may wait forever.
                self._loop_error("the batch failed", exc)
                self._fail(batch, exc)
            now = self._clock()
            if self.retention_seconds is not None and now - last_purge >= purge_every:
                self._purge(db, now - self.retention_seconds)
                last_purge = now
            if stop:
                with self._lock:
                    if self._journal is not None and not self._pending:
                        self._journal.close()  # everything is committed: nothing to replay
                        self._journal = None
                return

    def _loop_error(self, what: str, exc: Exception) -> None:
        self._count_writer_error()
        logger.error("decision store %s: %s (%r); the writer goes on", self.path, what, exc,
                     exc_info=True)
        time.sleep(WRITER_RETRY_SECONDS)  # not a tight loop if the error repeats

    def _count_writer_error(self) -> None:
        self.loop_errors += 1
        if self._on_writer_error is not None:
            with suppress(Exception):  # counting must not be what stops the writer
                self._on_writer_error()

    def _writer_stopped(self, *, clean: bool) -> None:
        """Refuse new work, and fail the waiting labels: a label must not wait forever.

        Queued decisions stay queued (and in the journal, which the next start replays).
        """
        with self._lock:
            self._accepting = False
            jobs = [item for item in self._pending if isinstance(item, _Job)]
        if not clean:
            error = StoreUnavailable("the decision store's writer has stopped")
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(error)

    def _fail(self, batch: Sequence[_Queued], exc: BaseException) -> None:
        """Answer every waiter in ``batch`` with an error, and count its decisions as lost."""
        decisions = sum(isinstance(item, _Decision) for item in batch)
        self.write_failures += decisions
        self._lost("write_failed", decisions)
        error = exc if isinstance(exc, StoreUnavailable) else StoreUnavailable(
            f"the decision store failed: {exc}")
        for item in batch:
            if isinstance(item, _Job) and not item.future.done():
                item.future.set_exception(error)

    def _rotate_journal(self) -> None:
        journal = self._journal
        if journal is None or journal.written == 0:  # only this thread sets it to None
            return
        now = time.monotonic()
        if now - self._journal_rotated < JOURNAL_ROTATE_SECONDS:
            return
        self._journal_rotated = now
        with self._lock:  # lines written before this are queued before the marker
            try:
                self._pending.append(_Rotated(journal.rotate()))
            except OSError as exc:
                self._journal_error(exc)

    def _drain(self) -> list[_Queued]:
        """What is pending, oldest first, up to ``MAX_BATCH`` items, to commit all at once.

        The writer wakes every ``LINGER_SECONDS`` rather than per decision: committing each
        decision alone, or a wake-up per request, would cost CPU and GIL time that the request
        path shares. Someone waiting (a label, ``settled``, ``close``) sets ``_urgent`` and ends
        the sleep, so feedback is never held up. An idle writer finds nothing 20 times a second,
        a few microseconds each.
        """
        pending = self._pending
        # Only this thread pops, so the deque holds at least this many items.
        batch = [pending.popleft() for _ in range(min(len(pending), MAX_BATCH))]
        size = sum(item.size for item in batch if isinstance(item, _Decision))
        if size:
            with self._lock:
                self._queued_bytes -= size
        return batch

    def _write(self, db: sqlite3.Connection, batch: list[_Queued]) -> None:
        jobs = [item for item in batch if isinstance(item, _Job)]
        decisions = [item for item in batch if isinstance(item, _Decision)]
        rotated = [item.segment for item in batch if isinstance(item, _Rotated)]
        if decisions or jobs:
            self._commit(db, decisions, jobs)
        # Committed (or failed and counted): the journal's copy is no longer needed.
        for segment in rotated:
            Journal.retire(segment)

    def _commit(self, db: sqlite3.Connection, decisions: list[_Decision], jobs: list[_Job]) -> None:
        try:
            with _transaction(db):
                # Decisions first: a label in this batch may be for one of them.
                _insert(db, [row for decision in decisions for row in decision.rows])
                results = [_attempt(job.run, db) for job in jobs]
        except Exception as exc:  # the writer must outlive any one bad batch
            logger.error("decision store %s: could not write %d decisions: %s",
                         self.path, len(decisions), exc)
            self._fail([*decisions, *jobs], exc)
            return
        # A label is acknowledged only now, after its transaction has committed.
        for job, (value, error) in zip(jobs, results, strict=True):
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(value)

    def _purge(self, db: sqlite3.Connection, cutoff: float) -> None:
        try:
            with _transaction(db):
                deleted = db.execute("DELETE FROM decisions WHERE created_at < ?", (cutoff,))
            if deleted.rowcount:
                logger.info("decision store: deleted %d decisions past retention",
                            deleted.rowcount)
        except Exception as exc:  # the next purge tries again; the writer goes on
            self._count_writer_error()
            logger.error("decision store %s: retention purge failed: %s", self.path, exc)


def _replay_orphans(db: sqlite3.Connection, directory: Path) -> Recovery:
    """Store what dead processes' journals hold; each line once (INSERT OR IGNORE)."""
    recovery = Recovery()
    for segment in orphaned_segments(directory):
        lines, torn = segment.read()
        unreadable = int(torn)
        recovered = already = 0
        with _transaction(db):
            for line in lines:
                try:
                    rows = decode_line(line)
                except ValueError:
                    unreadable += 1
                    continue
                before = db.total_changes
                try:
                    _insert(db, rows)
                except sqlite3.Error:  # well-formed JSON, but not rows this store can take
                    unreadable += 1
                    continue
                if db.total_changes > before:
                    recovered += 1
                else:
                    already += 1
        segment.discard()
        if recovered or unreadable:
            logger.warning(
                "decision store: recovered %d decisions from a crashed process's journal %s "
                "(%d were already stored; %d unreadable lines lost)",
                recovered, segment.path.name, already, unreadable)
        recovery = Recovery(recovery.segments + 1, recovery.recovered + recovered,
                            recovery.already_stored + already, recovery.unreadable + unreadable)
    return recovery


def _abstained_query(
    tenant: str | None, *, unlabelled_only: bool, before: float | None
) -> tuple[str, list[Any]]:
    """The review list's query, newest first, ending in a ``LIMIT ?`` for the caller to fill."""
    where = ["decision = 'abstain'"]
    params: list[Any] = []
    if tenant is not None:
        where.append("tenant = ?")
        params.append(tenant)
    if unlabelled_only:
        where.append("correct IS NULL")
    if before is not None:
        where.append("created_at < ?")
        params.append(before)
    sql = (f"SELECT {_DECISION_COLUMNS} FROM decisions WHERE {' AND '.join(where)} "
           "ORDER BY created_at DESC, id, choice LIMIT ?")
    return sql, params


def _purge_interval(retention_seconds: float | None) -> float:
    if retention_seconds is None:
        return 3600.0
    return max(1.0, min(3600.0, retention_seconds / 10))


def _attempt(
    run: Callable[[sqlite3.Connection], Any], db: sqlite3.Connection
) -> tuple[Any, Exception | None]:
    """A job's result or its failure. A failed job's writes are rolled back to its savepoint,
    so it neither half-applies nor takes the batch's other writes down with it."""
    db.execute("SAVEPOINT job")
    try:
        value = run(db)
    except Exception as exc:
        db.execute("ROLLBACK TO job")
        db.execute("RELEASE job")
        return None, exc
    db.execute("RELEASE job")
    return value, None


def _connect(path: Path, *, schema: bool = True) -> sqlite3.Connection:
    """A connection; with ``schema``, the schema is created or checked first (the writer's
    connection skips that: the constructor did it, and DDL would wait on other writers)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _create_private(path)
        # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE), see _transaction.
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
        db.execute("PRAGMA journal_mode = WAL")
        # NORMAL is durable across application crashes in WAL mode; only an OS crash or power
        # loss can take back the latest commits, which costs far less than FULL's fsyncs.
        db.execute("PRAGMA synchronous = NORMAL")
        if not schema:
            return db
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "basguard_meta" not in tables:
            db.close()
            raise StoreError(f"{path}: not a basguard decision store (it has other tables)")
        # Every statement is IF NOT EXISTS / OR IGNORE: several processes may start at once.
        db.executescript(_SCHEMA)
        db.execute("INSERT OR IGNORE INTO basguard_meta VALUES ('schema_version', ?)",
                   (str(SCHEMA_VERSION),))
        version = _migrate(db)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot open the decision store: {exc}") from None
    except OSError as exc:
        raise StoreError(f"{path}: cannot create the decision store: {exc}") from None
    if version != str(SCHEMA_VERSION):
        db.close()
        raise StoreError(f"{path}: schema version {version}; this basguard reads {SCHEMA_VERSION}")
    return db


def _migrate(db: sqlite3.Connection) -> str:
    """Upgrade an older store in place; returns the schema version it then has.

    Version 1 lacks ``decisions.signal_calls`` (the confidence signals' extra calls, a JSON
    object on a decision's first row, NULL for older decisions and logprobs-only ones). The
    check and the change share one write transaction, so of several processes opening the same
    store at once exactly one adds the column.
    """
    with _transaction(db):
        (version,) = db.execute(
            "SELECT value FROM basguard_meta WHERE key = 'schema_version'"
        ).fetchone()
        if version == "1":
            columns = {row[1] for row in db.execute("PRAGMA table_info(decisions)")}
            if "signal_calls" not in columns:
                db.execute("ALTER TABLE decisions ADD COLUMN signal_calls TEXT")
            db.execute("UPDATE basguard_meta SET value = '2' WHERE key = 'schema_version'")
            version = "2"
            logger.info("decision store: upgraded the schema from version 1 to 2")
    return str(version)


def _create_private(path: Path) -> None:
    """Create the store file readable by its owner only; SQLite gives ``-wal`` and ``-shm``
    the database's mode. An existing file keeps its mode (someone may have chosen it)."""
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


_ROW_PLACEHOLDERS = "(" + ", ".join("?" * ROW_WIDTH) + ")"
_ROWS_PER_STATEMENT = 500  # 18 x 500 parameters, under SQLite's limit of 32 766


def _insert(db: sqlite3.Connection, rows: list[Row]) -> None:
    """Insert ``rows`` with a few multi-row statements.

    ``executemany`` runs one statement per row, and the sqlite3 module releases and retakes the
    GIL around each: with the event loop busy in the same process that costs it a GIL hand-over
    per row. One statement for hundreds of rows hands over once.
    """
    for start in range(0, len(rows), _ROWS_PER_STATEMENT):
        chunk = rows[start:start + _ROWS_PER_STATEMENT]
        values = ", ".join([_ROW_PLACEHOLDERS] * len(chunk))
        db.execute(_INSERT_HEAD + values, [field for row in chunk for field in row])


def _decision_from_row(row: Sequence[Any]) -> StoredDecision:
    """A row of ``_DECISION_COLUMNS``; SQLite keeps the label as 0/1."""
    *head, correct, labelled_at = row
    return StoredDecision(*head, correct=None if correct is None else bool(correct),  # type: ignore[misc]
                          labelled_at=labelled_at)


def _label(
    db: sqlite3.Connection,
    tenant: str | None,
    decision_id: str,
    choice: int,
    correct: bool,
    now: float,
) -> Label:
    row = db.execute(
        f"SELECT {_DECISION_COLUMNS} FROM decisions WHERE id = :id AND choice = :choice "
        "AND (:tenant IS NULL OR tenant = :tenant)",
        {"id": decision_id, "choice": choice, "tenant": tenant},
    ).fetchone()
    if row is None:
        raise DecisionNotFound(
            f"no decision {decision_id!r} (choice {choice}) for this tenant; ids are in each "
            "response's `basguard.id` and `x-basguard-id` header",
            param="id",
        )
    before = _decision_from_row(row)
    if before.correct is not correct:
        if before.correct is not None:
            _add_to_totals(db, before, before.correct, -1)
        _add_to_totals(db, before, correct, +1)
    db.execute(
        "UPDATE decisions SET correct = ?, labelled_at = ? WHERE id = ? AND choice = ?",
        (int(correct), now, decision_id, choice),
    )
    return Label(replace(before, correct=correct, labelled_at=now), before.correct)


def _add_to_totals(
    db: sqlite3.Connection, decision: StoredDecision, correct: bool, sign: int
) -> None:
    p = decision.confidence
    utility = realized_utility_scalar(
        correct, decision.answered, wrong_answer_cost=decision.wrong_answer_cost,
        abstain_cost=decision.abstain_cost,
    )
    bas = bas_score_scalar(p, correct) if p is not None else 0.0
    db.execute(
        "INSERT INTO feedback_totals VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (tenant, model, outcome, bin) DO UPDATE SET "
        "decisions = decisions + excluded.decisions, "
        "confidence_sum = confidence_sum + excluded.confidence_sum, "
        "utility_sum = utility_sum + excluded.utility_sum, "
        "bas_sum = bas_sum + excluded.bas_sum",
        (decision.tenant, decision.model, outcome_of(decision.answered, correct),
         confidence_bin(p), sign, sign * (p or 0.0), sign * utility, sign * bas),
    )
