"""Replaying the crash journals of processes that died (SIGKILL, OOM) into the store.

Every decision a process acknowledged is a line in its journal (:mod:`proxy.store.journal`)
until the writer has committed it. A segment no live process holds a lock on belongs to a dead
process: :func:`replay_journal` stores each of its lines, once, and deletes it. Rows are
inserted ``ON CONFLICT DO NOTHING``, so the lines whose decisions the dead process did commit
are harmless, and two processes starting together never store a line twice.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

from proxy.errors import StoreUnavailable
from proxy.store import queries
from proxy.store.backend import Backend, Session, StoreError
from proxy.store.journal import OrphanedSegment, orphaned_segments
from proxy.store.rows import Row, decode_line

__all__ = ["Recovery", "replay_journal"]

logger = logging.getLogger("basguard.store")


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

    def __add__(self, other: Recovery) -> Recovery:
        return Recovery(self.segments + other.segments, self.recovered + other.recovered,
                        self.already_stored + other.already_stored,
                        self.unreadable + other.unreadable)


def replay_journal(backend: Backend, directory: Path) -> Recovery:
    """Store what the dead processes' journals in ``directory`` hold.

    Raises :class:`StoreError` if the database or the journal cannot be read: the segments not
    yet replayed stay for the next start.
    """
    try:
        with backend.reading() as db:
            recovery = Recovery()
            for segment in orphaned_segments(directory):
                recovery += _replay_segment(db, segment)
            return recovery
    except (StoreError, StoreUnavailable, OSError) as exc:
        raise StoreError(f"{directory}: cannot replay the crash journal: {exc}") from None
    except Exception as exc:
        if not backend.is_transient(exc):
            raise
        raise StoreError(f"{directory}: cannot replay the crash journal: {exc}") from None


def _replay_segment(db: Session, segment: OrphanedSegment) -> Recovery:
    """Store one dead segment's lines in one transaction, then delete it."""
    lines, torn = segment.read()
    unreadable = int(torn)
    recovered = already = 0
    with queries.transaction(db):
        for line in lines:
            try:
                rows = decode_line(line)
            except ValueError:
                unreadable += 1
                continue
            inserted, error = queries.attempt(functools.partial(_insert, rows=rows), db)
            if error is not None:  # well-formed JSON, but not rows this store can take
                unreadable += 1
            elif inserted:
                recovered += 1
            else:
                already += 1
    segment.discard()
    if recovered or unreadable:
        logger.warning(
            "decision store: recovered %d decisions from a crashed process's journal %s "
            "(%d were already stored; %d unreadable lines lost)",
            recovered, segment.path.name, already, unreadable)
    return Recovery(1, recovered, already, unreadable)


def _insert(session: Session, rows: list[Row]) -> int:
    return queries.insert_rows(session, rows)
