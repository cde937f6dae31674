"""The decision store: every decision and its feedback label, written in batches, read back.

:class:`DecisionStore` is the one object the gateway, the CLI and the policy tools hold. It is
built from parts with one job each: the batch writer (:mod:`proxy.store.writer`: the queue and
its thread, reconnection, retention, journal rotation), start-up recovery of crashed processes'
journals (:mod:`proxy.store.recovery`), the read API (:mod:`proxy.store.reads`), and a backend
chosen by the store's URL (:mod:`proxy.store.backends`). What is left here is the labels.

A label goes through the writer's queue, so it always sees the decision before it, even one made
a moment earlier; it and its feedback totals (outcome counts, realized utility, BAS and
reliability bins per tenant and model) are written in one transaction. Those totals live in a
small table, so reading them for ``/metrics`` is a few rows, and every replica, worker process
and the CLI see the same figures. A repeated label for one decision first takes back the old
label's contribution: the last label wins and each decision counts once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from proxy.errors import DecisionNotFound
from proxy.store import queries
from proxy.store.backend import Session
from proxy.store.backends import open_backend
from proxy.store.feedback import ANY_LABEL, ExpectedLabel, Label
from proxy.store.location import StoreLocation
from proxy.store.reads import DecisionReads
from proxy.store.rows import TextLimits
from proxy.store.writer import DEFAULT_TEXT_LIMITS, LINGER_SECONDS, BatchWriter

__all__ = ["DecisionStore"]

OTHER_WRITER_GRACE_SECONDS = 4 * LINGER_SECONDS
"""How long a label for an unknown decision waits before it looks again (and then 404s): the
decision may be in another replica's queue, committed within its ``LINGER_SECONDS``."""


class DecisionStore(BatchWriter, DecisionReads):
    """Records decisions and labels in a backend; also a ``DecisionObserver``.

    Its writes (``decided``, ``submit``, ``close``, the queue's figures) are the
    :class:`BatchWriter`'s and its reads the :class:`DecisionReads`'; both are bases rather
    than members, so that the gateway, the CLI and the metrics hold one object, as before.

    Parameters
    ----------
    location : StoreLocation, Path or str
        ``sqlite:///PATH`` or a path (a SQLite file, created mode 0600 with its schema if
        missing), or ``postgresql://...``.
    retention_seconds : float or None
        Decisions older than this are deleted (hourly, or more often for short retentions);
        feedback totals, like counters, are kept. None keeps everything.
    max_queued : int
        Decisions waiting for the writer beyond this are dropped and counted (a database that
        cannot keep up must not grow the gateway's memory without bound).
    max_queued_bytes : int
        The same bound in bytes (about: the texts of the queued rows, plus a fixed overhead
        per row), so that large prompts and answers cannot fill memory within the count.
    text_limits : TextLimits
        The longest prompt and withheld answer kept; longer ones are cut, with a marker.
    journal : Path, optional
        This process's crash journal directory (see :mod:`proxy.store.journal`), shared by every
        process writing the store from this machine. At start, the journals of dead processes
        in it are replayed (:attr:`recovery`). None: no journal (the CLI).
    require_store : bool
        True (the CLI): an unreachable database raises :class:`StoreError` now. False (the
        server): it serves, queues decisions and connects when the database is back.
    on_lost : callable, optional
        Told ``(reason, count)`` of decisions that could not be stored: ``dropped`` (the queue
        was full), ``write_failed`` or ``crashed`` (a journal line a crash cut short). The
        metrics count them. Never called from the constructor.
    on_writer_error : callable, optional
        Told of each unexpected error the writer logged and went on after (the metrics count
        them), from the writer thread.
    on_recovered : callable, optional
        Told how many decisions a replay deferred to the writer (the database was down at
        start) recovered; a replay at start is in :attr:`recovery` instead.
    """


    def __init__(
        self,
        location: StoreLocation | Path | str,
        *,
        retention_seconds: float | None = 30 * 86400,
        max_queued: int = 100_000,
        max_queued_bytes: int = 64 * 1_048_576,
        text_limits: TextLimits = DEFAULT_TEXT_LIMITS,
        journal: Path | None = None,
        require_store: bool = True,
        clock: Callable[[], float] = time.time,
        on_lost: Callable[[str, int], None] | None = None,
        on_writer_error: Callable[[], None] | None = None,
        on_recovered: Callable[[int], None] | None = None,
    ) -> None:
        backend = open_backend(location)
        self.path = backend.location.path
        """The SQLite file (None on PostgreSQL)."""
        super().__init__(
            backend, retention_seconds=retention_seconds, max_queued=max_queued,
            max_queued_bytes=max_queued_bytes, text_limits=text_limits, journal=journal,
            require_store=require_store, clock=clock, on_lost=on_lost,
            on_writer_error=on_writer_error, on_recovered=on_recovered)

    def upstream_failed(self, model: str, kind: str) -> None:
        return None  # a failed upstream call made no decision: nothing to store

    # Labels.

    def label_now(self, tenant: str | None, decision_id: str, choice: int, correct: bool) -> Label:
        """Label a decision and wait for it (the CLI). ``tenant=None``: any tenant's."""
        return self.submit(
            lambda db: queries.label(db, tenant, decision_id, choice, correct, self.now())
        ).result()

    async def label(
        self, tenant: str, decision_id: str, choice: int, correct: bool, *,
        expected: ExpectedLabel = ANY_LABEL,
    ) -> Label:
        """Label one of ``tenant``'s decisions (the feedback endpoint, the review queue).

        ``expected``: the label the reviewer saw (None: none), for the ops console, where two
        reviewers may label one decision; by default the last label wins.

        Raises
        ------
        DecisionNotFound
            No decision with this id and choice belongs to ``tenant``.
        LabelConflict
            It was labelled otherwise than ``expected`` since.
        """
        def run(db: Session) -> Label:
            return queries.label(db, tenant, decision_id, choice, correct, self.now(),
                                 expected=expected)

        try:
            return await asyncio.wrap_future(self.submit(run))
        except DecisionNotFound:
            # Another replica (or worker) may have made it a moment ago: its writer commits
            # within LINGER_SECONDS. One look again after that, before a 404.
            await asyncio.sleep(OTHER_WRITER_GRACE_SECONDS)
            return await asyncio.wrap_future(self.submit(run))

    async def settled(self) -> None:
        """Wait until every decision queued so far is written (so a read sees it)."""
        await asyncio.wrap_future(self.submit(lambda db: None))
