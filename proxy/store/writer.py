"""The store's batch writer: a queue, one thread that commits it, reconnection, retention.

One writer thread owns all writes. The request path builds the decision's rows (with long
prompts and answers cut to the configured lengths), appends them to the crash journal with one
copy (see :mod:`proxy.store.journal`) and to an in-memory queue, so storing costs a request a few
microseconds, not a commit. Every 50 ms the writer commits what has queued up in one
transaction, with multi-row INSERTs: that keeps up with tens of thousands of decisions a second
and costs a busy gateway one commit per 50 ms instead of one per request. Labels go through the
same queue (:meth:`BatchWriter.submit`), so a label always sees the decision before it, even one
made a moment earlier. On a clean shutdown :meth:`BatchWriter.close` drains the queue before
closing, so nothing is lost; after a crash (SIGKILL), the next start replays the dead process's
journal (:mod:`proxy.store.recovery`), so nothing acknowledged is lost either. The queue is
bounded by count and by bytes: beyond either, decisions are dropped and counted, so a database
that cannot keep up never grows the gateway's memory without bound.

The journal is rotated about every second, and a segment deleted once every decision queued
before its rotation is committed, so the journal holds about a second of traffic.

The writer loop logs, counts and goes on after any error. Should the thread end anyway,
:attr:`BatchWriter.writer_alive` says so (``/readyz`` and a gauge show it), and labels are
refused with :class:`StoreUnavailable` instead of waiting forever.

A database that goes away (PostgreSQL restarted, the network cut) is not an error of a batch:
its decisions go back to the head of the queue, in order, and the writer reconnects every
second; meanwhile :attr:`BatchWriter.connected` is False (``/readyz`` fails), labels are
refused at once with :class:`StoreUnavailable` (a 503), and decisions queue up to the bounds.
Rows are inserted ``ON CONFLICT DO NOTHING``, so a batch whose commit the lost connection did
acknowledge is harmless to write again. A server may even start while the database is down
(``require_store=False``): it migrates and replays the journal once it can connect.

Decisions past retention are deleted by the writer too, between batches, within a time budget
per turn, so that retention never holds up the queue for long.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from proxy.errors import StoreUnavailable
from proxy.store import queries
from proxy.store.backend import Backend, Session, StoreError
from proxy.store.journal import Journal, JournalSegment
from proxy.store.recovery import Recovery, replay_journal
from proxy.store.rows import Row, TextLimits, decision_rows, encode_line, queued_size

if TYPE_CHECKING:
    from proxy.judging.decision import DecisionRecord

__all__ = ["DEFAULT_TEXT_LIMITS", "BatchWriter"]

logger = logging.getLogger("basguard.store")

LINGER_SECONDS = 0.05
"""How long the writer waits for more decisions before committing (nothing waits on them)."""
MAX_BATCH = 4096
JOURNAL_ROTATE_SECONDS = 1.0
"""How often the writer starts a new journal segment (if the current one has lines), so that
committed lines are deleted about this long after they were written."""
DEFAULT_TEXT_LIMITS = TextLimits()
WRITER_RETRY_SECONDS = 1.0
"""How long the writer pauses after an unexpected error, or a failed reconnection, before it
goes on."""
PURGE_BUDGET_SECONDS = 0.2
"""The longest one turn of the writer spends deleting expired decisions (PostgreSQL: in small
batches; the rest is deleted on the next turns)."""
T = TypeVar("T")


class _Stop:
    """Queued by :meth:`BatchWriter.close`: write what is queued, then stop."""


@dataclass
class _Job:
    """A write that someone waits for (a label), run in order with the queued decisions."""

    run: Callable[[Session], Any]
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


class BatchWriter:
    """Queues decisions and writes (:meth:`submit`), and commits them in batches on a thread.

    The parameters are :class:`~proxy.store.DecisionStore`'s, which documents them; the writer
    takes an open ``backend``, and closes it in :meth:`close` (or when it cannot start).
    """

    def __init__(
        self,
        backend: Backend,
        *,
        retention_seconds: float | None,
        max_queued: int,
        max_queued_bytes: int,
        text_limits: TextLimits,
        journal: Path | None,
        require_store: bool,
        clock: Callable[[], float],
        on_lost: Callable[[str, int], None] | None,
        on_writer_error: Callable[[], None] | None,
        on_recovered: Callable[[int], None] | None,
    ) -> None:
        self.backend = backend
        self.location = backend.location
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
        self._urgent = threading.Event()
        self._on_lost = on_lost
        self._on_writer_error = on_writer_error
        self._on_recovered = on_recovered
        self.dropped = 0
        self.write_failures = 0
        self.loop_errors = 0
        """Unexpected errors the writer loop logged and went on after."""
        self.recovery = Recovery()
        self._journal_directory = journal
        self._migrated = self._migrate_at_start(require_store)
        self.connected = self._migrated
        """Whether the writer's last attempt to reach the database succeeded."""
        self._journal_failed = False
        self._journal = None if journal is None else self._open_journal(journal)
        self._journal_rotated = time.monotonic()
        self._accepting = True  # False once the writer has stopped: refuse, never hang
        self._writer = threading.Thread(target=self._run_writer, name="basguard-store",
                                        daemon=True)
        self._writer.start()

    def _migrate_at_start(self, require_store: bool) -> bool:
        """Whether the schema is up to date; False if the database is down and may wait."""
        try:
            self.backend.migrate()
        except StoreError as exc:
            if require_store or not self.backend.is_transient(exc):
                self.backend.close()
                raise
            logger.warning("decision store %s is unreachable (%s); serving, and queueing "
                           "decisions until it is back", self.location, exc)
            return False
        return True

    def _open_journal(self, directory: Path) -> Journal:
        """This process's journal, after replaying the dead ones' (if the database is up)."""
        if self._migrated:
            self._replay(directory)
        try:
            return Journal(directory)
        except OSError as exc:
            self.backend.close()
            raise StoreError(f"{directory}: cannot create the crash journal: {exc} (set "
                             "BASGUARD_STORE_JOURNAL=false to run without one)") from None

    def _replay(self, directory: Path) -> None:
        self.recovery = replay_journal(self.backend, directory)

    @property
    def writer_alive(self) -> bool:
        """Whether the writer thread runs (False after :meth:`close`, or if it died)."""
        return self._accepting and self._writer.is_alive()

    @property
    def ready(self) -> bool:
        """Whether decisions are being written now: the writer runs and reaches the database."""
        return self.writer_alive and self.connected

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    @property
    def queued(self) -> int:
        return len(self._pending)

    def now(self) -> float:
        """The store's clock: a label's time, and retention's."""
        return self._clock()

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
                         "are stored, but a crash may lose the latest ones", self.location, exc)

    def _lost(self, reason: str, count: int) -> None:
        if self._on_lost is not None and count:
            self._on_lost(reason, count)

    # Writes someone waits for (labels): in order with the decisions queued before them.

    def submit(self, run: Callable[[Session], T]) -> concurrent.futures.Future[T]:
        """Run ``run(session)`` on the writer, in one transaction, after what is queued."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            if not self.writer_alive:
                raise StoreUnavailable("the decision store is closed, or its writer has stopped")
            if not self.connected:
                raise StoreUnavailable("the decision store is unreachable; try again shortly")
            if len(self._pending) >= self._max_queued:
                raise StoreUnavailable("the decision store is behind; try again shortly")
            self._pending.append(_Job(run, future))
        self._urgent.set()
        return future

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
                         "journal, which the next start replays", self.location, unwritten)
        elif unwritten:
            self._lost("write_failed", unwritten)
        self._pending.clear()
        self.backend.close()

    def _run_writer(self) -> None:
        """The writer thread: the loop, and whatever must happen if it ever ends abnormally."""
        stopped = False
        try:
            self._write_loop()
            stopped = True
        except BaseException as exc:  # logged here: a thread's exception is otherwise lost
            logger.critical("decision store %s: the writer stopped: %r; decisions are no "
                            "longer stored, labels are refused (503) and /readyz fails",
                            self.location, exc, exc_info=True)
        finally:
            self._writer_stopped(clean=stopped)

    def _write_loop(self) -> None:
        session: Session | None = None
        try:
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
                if session is None:
                    session = self._reconnect()
                    if session is None:
                        self._requeue(batch)
                if session is None or not self._write(session, batch):
                    # Unreachable: the batch is back at the head of the queue.
                    if session is not None:
                        session.close()
                        session = None
                    if stop:
                        return  # close() accounts for what is still queued
                    self._urgent.wait(WRITER_RETRY_SECONDS)
                    continue
                now = self.now()
                if self.retention_seconds is not None and now - last_purge >= purge_every:
                    more = self._purge(session, now - self.retention_seconds)
                    last_purge = 0.0 if more else now
                if stop:
                    with self._lock:
                        if self._journal is not None and not self._pending:
                            self._journal.close()  # everything is committed: nothing to replay
                            self._journal = None
                    return
        finally:
            if session is not None:
                session.close()

    def _reconnect(self) -> Session | None:
        """The writer's connection, or None (counted, logged once) while unreachable."""
        try:
            if not self._migrated:
                self.backend.migrate()
                self._migrated = True
                logger.info("decision store %s: reachable; schema up to date", self.location)
                if self._journal_directory is not None:
                    # Deferred from a start while the database was down: counted now, as the
                    # metrics count a start's replay.
                    self._replay(self._journal_directory)
                    self._lost("crashed", self.recovery.unreadable)
                    if self._on_recovered is not None and self.recovery.recovered:
                        self._on_recovered(self.recovery.recovered)
            session = self.backend.connect()
        except Exception as exc:
            if not self.backend.is_transient(exc):
                raise
            if self.connected:
                logger.error("decision store %s: unreachable (%s); decisions queue up (at "
                             "most %d, or %d bytes) and labels get 503 until it is back",
                             self.location, exc, self._max_queued, self._max_queued_bytes)
            self.connected = False
            return None
        if not self.connected:
            logger.info("decision store %s: connected", self.location)
        self.connected = True
        return session

    def _loop_error(self, what: str, exc: Exception) -> None:
        self._count_writer_error()
        logger.error("decision store %s: %s (%r); the writer goes on", self.location, what, exc,
                     exc_info=True)
        time.sleep(WRITER_RETRY_SECONDS)  # not a tight loop if the error repeats

    def _count_writer_error(self) -> None:
        self.loop_errors += 1
        if self._on_writer_error is not None:
            try:
                self._on_writer_error()
            except Exception:  # counting must not be what stops the writer
                logger.debug("the writer-error callback failed", exc_info=True)

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

    def _requeue(self, batch: Sequence[_Queued]) -> None:
        """Put the batch's decisions and journal markers back at the head of the queue, in
        order, and refuse its labels: they were not written, and their callers get a 503 now
        rather than a wait of unknown length."""
        kept = [item for item in batch if isinstance(item, _Decision | _Rotated)]
        with self._lock:
            self._pending.extendleft(reversed(kept))
            self._queued_bytes += sum(item.size for item in kept if isinstance(item, _Decision))
        error = StoreUnavailable("the decision store is unreachable; try again shortly")
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

    def _write(self, session: Session, batch: list[_Queued]) -> bool:
        """Write ``batch``; False if the database was unreachable (the batch is requeued)."""
        jobs = [item for item in batch if isinstance(item, _Job)]
        decisions = [item for item in batch if isinstance(item, _Decision)]
        rotated = [item.segment for item in batch if isinstance(item, _Rotated)]
        try:
            if (decisions or jobs) and not self._commit(session, decisions, jobs):
                self._requeue(batch)
                return False
            # Committed (or failed and counted): the journal's copy is no longer needed.
            for segment in rotated:
                Journal.retire(segment)
        except Exception as exc:
            # _commit answers its own failures; this is a bug in it. Nobody may wait forever.
            self._loop_error("the batch failed", exc)
            self._fail(batch, exc)
        return True

    def _commit(self, session: Session, decisions: list[_Decision], jobs: list[_Job]) -> bool:
        try:
            with queries.transaction(session):
                # Decisions first: a label in this batch may be for one of them.
                queries.insert_rows(session, [row for decision in decisions
                                              for row in decision.rows])
                results = [queries.attempt(job.run, session) for job in jobs]
        except Exception as exc:  # the writer must outlive any one bad batch
            if self.backend.is_transient(exc):
                logger.error("decision store %s: unreachable (the connection failed: %s); "
                             "%d decisions go back in the queue, labels get 503 until it is "
                             "back", self.location, exc, len(decisions))
                self.connected = False
                return False
            logger.error("decision store %s: could not write %d decisions: %s",
                         self.location, len(decisions), exc)
            self._fail([*decisions, *jobs], exc)
            return True
        # A label is acknowledged only now, after its transaction has committed.
        for job, (value, error) in zip(jobs, results, strict=True):
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(value)
        return True

    def _purge(self, session: Session, cutoff: float) -> bool:
        """Delete decisions past retention; True if some are left for the next turn."""
        try:
            deleted, more = self.backend.purge(session, cutoff,
                                               budget_seconds=PURGE_BUDGET_SECONDS)
        except Exception as exc:  # the next purge tries again; the writer goes on
            self._count_writer_error()
            logger.error("decision store %s: retention purge failed: %s", self.location, exc)
            return False
        if deleted:
            logger.info("decision store: deleted %d decisions past retention", deleted)
        return more


def _purge_interval(retention_seconds: float | None) -> float:
    if retention_seconds is None:
        return 3600.0
    return max(1.0, min(3600.0, retention_seconds / 10))
