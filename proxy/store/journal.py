"""A per-process, append-only crash journal of the decisions the store has not committed yet.

The store's writer commits every 50 ms, so a process killed with SIGKILL (an OOM kill, a
Kubernetes grace period running out) would lose what was queued since the last commit, although
each of those decisions had already been answered, with its id, to a client. To bound that, the
request path also copies each decision, as one line, into this journal: a file mapped into
memory with ``MAP_SHARED``. Its pages belong to the kernel's page cache of the file, so once the
copy is done the line survives the death of the process, exactly as if ``write()`` had returned
(not the death of the machine: there is no fsync, so power loss or a kernel crash can still take
the latest lines; the store itself is in the same position). A copy into the mapping cost
0.4 µs of CPU per 400-byte line on the 2-core test machine, a ``write()`` 1.3 µs; and
``write()`` releases the GIL, handing it to the writer thread in the middle of a request.

A ``.jsonl`` file holds the lines in order, each a JSON array of the decision's rows.

A segment is a fixed-size file (4 MiB unless one line is larger), zero past its last line, so a
reader stops at the first NUL byte.

The writer rotates to a new segment now and then and deletes a segment once everything queued
before the rotation is committed, so the journal holds about a second of traffic.

Several processes share one store (``serve --workers N``), so each process writes its own
segments, named by its pid and a random token, and holds an exclusive ``flock`` on each one it
has open. The kernel releases those locks when the process dies, however it dies: at start-up,
a segment nobody holds a lock on belongs to a dead process and is replayed into the store (see
:func:`orphaned_segments`). A new segment is created under a temporary name, locked, then
renamed, so no other process can ever see it unlocked.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Journal", "JournalSegment", "OrphanedSegment", "journal_dir", "orphaned_segments"]

SEGMENT_SUFFIX = ".jsonl"
SEGMENT_BYTES = 4 * 1_048_576
_TEMPORARY_SUFFIX = ".creating"
_CREATION_GRACE_SECONDS = 60.0


def journal_dir(store: Path) -> Path:
    """Where a store's journals live: beside it (not ``-journal``, SQLite's own file name)."""
    return store.with_name(store.name + ".basguard-journal")


@dataclass(frozen=True)
class JournalSegment:
    """One open, locked, mapped segment file of this process."""

    path: Path
    fd: int
    memory: mmap.mmap


class Journal:
    """This process's journal in ``directory``: appends lines, rotates and retires segments.

    Not thread-safe: the store calls :meth:`append` and :meth:`rotate` under its own lock, so
    that lines and queued decisions are in the same order on both sides of a rotation.
    """

    def __init__(self, directory: Path) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.directory = directory
        self._segment = self._create_segment(SEGMENT_BYTES)
        self.written = 0
        """Bytes written to the current segment."""

    def append(self, line: bytes) -> JournalSegment | None:
        """Copy ``line`` in: the kernel's once this returns (raises ``OSError``).

        Returns the previous segment if this line did not fit in it and a new one was started:
        retire it once everything queued before this line is committed.
        """
        full = None
        end = self.written + len(line)
        if end > len(self._segment.memory):
            full = self.rotate(len(line))
            end = len(line)
        self._segment.memory[self.written:end] = line
        self.written = end
        return full

    def rotate(self, room: int = 0) -> JournalSegment:
        """Start a new segment; returns the old one, to :meth:`retire` once it is committed."""
        old = self._segment
        self._segment = self._create_segment(max(SEGMENT_BYTES, room))
        self.written = 0
        return old

    @staticmethod
    def retire(segment: JournalSegment) -> None:
        """Delete a segment whose every line is committed to the store."""
        segment.path.unlink(missing_ok=True)
        segment.memory.close()
        os.close(segment.fd)  # the lock goes with it

    def close(self) -> None:
        """Delete the current segment (call only when everything queued is committed)."""
        self.retire(self._segment)

    def _create_segment(self, size: int) -> JournalSegment:
        name = f"{os.getpid()}-{secrets.token_hex(8)}"
        creating = self.directory / (name + _TEMPORARY_SUFFIX)
        fd = os.open(creating, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # Reserve the blocks now: a full disk fails here, not as a SIGBUS in a request.
            os.posix_fallocate(fd, 0, size)
            memory = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            path = self.directory / (name + SEGMENT_SUFFIX)
            os.rename(creating, path)
        except BaseException:
            os.close(fd)
            creating.unlink(missing_ok=True)
            raise
        return JournalSegment(path, fd, memory)


@dataclass(frozen=True)
class OrphanedSegment:
    """A dead process's segment, now locked by this one: its lines, then :meth:`discard`."""

    path: Path
    fd: int

    def read(self) -> tuple[list[bytes], bool]:
        """Every complete line, and whether the file ends in a line the crash cut short.

        A cut line's ``write()`` never returned, so its decision was never acknowledged.
        """
        with os.fdopen(os.dup(self.fd), "rb") as file:
            content = file.read()
        # The segment is zero past its last line; a line never holds a NUL (JSON escapes it).
        content = content.split(b"\0", 1)[0]
        *complete, unterminated = content.split(b"\n")
        return [line for line in complete if line], bool(unterminated)

    def discard(self) -> None:
        """Delete the segment once its lines are in the store."""
        self.path.unlink(missing_ok=True)
        os.close(self.fd)


def orphaned_segments(directory: Path) -> Iterator[OrphanedSegment]:
    """Segments no live process holds, each locked for the caller while it replays them.

    Two processes starting together each get a different subset: a lock taken by one makes the
    other pass over that segment. A segment that vanished meanwhile was replayed by another.
    """
    if not directory.is_dir():
        return
    for leftover in directory.glob("*" + _TEMPORARY_SUFFIX):
        # A dead process's, unless it is being created right now: between its creation and its
        # lock, another process could lock it and delete it from under its creator.
        with suppress(FileNotFoundError):
            if time.time() - leftover.stat().st_mtime < _CREATION_GRACE_SECONDS:
                continue
        held = _lock(leftover)
        if held is not None:
            leftover.unlink(missing_ok=True)
            os.close(held)
    for path in sorted(directory.glob("*" + SEGMENT_SUFFIX)):
        fd = _lock(path)
        if fd is not None:
            yield OrphanedSegment(path, fd)


def _lock(path: Path) -> int | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd
