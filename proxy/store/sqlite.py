"""The embedded backend: one SQLite file, shared by the worker processes of one machine.

The database is in WAL mode: readers (the metrics, the review list) never block the writer, and
several gateway processes can share one file. The file (and SQLite's ``-wal`` and ``-shm``
beside it, which take its mode) is created readable by its owner only: it holds prompts and
withheld answers.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, ClassVar

from proxy.store.backend import Backend, Cursor, Session, StoreError, StoreInfo
from proxy.store.location import StoreLocation
from proxy.store.migrations import apply_migrations, store_info
from proxy.store.queries import insert_values, transaction
from proxy.store.schema import INSERTED_COLUMNS

__all__ = ["SQLiteBackend"]


def _null(value: None) -> None:
    return None


# The sqlite3 module binds None (a NULL) only after looking, and failing, to find an adapter
# for it: two attribute lookups whose AttributeError messages it formats and throws away, for
# each of the half-dozen NULLs of every decision row, with the GIL held. An adapter registered
# for None is found at once (measured: 1.4 against 0.6 µs a row of five NULLs). It changes no
# value, so it is safe for any other sqlite3 user in the process.
sqlite3.register_adapter(type(None), _null)


class _SQLiteSession:
    """A ``sqlite3`` connection as a :class:`Session` (it already speaks ``?``)."""

    begin = "BEGIN IMMEDIATE"
    lock_for_update = ""  # BEGIN IMMEDIATE already holds the database's one write lock
    row_placeholders = "(" + ", ".join("?" * len(INSERTED_COLUMNS)) + ")"

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return self.connection.execute(sql, params)

    def insert_rows(self, rows: Sequence[Any]) -> int:
        return insert_values(self, rows, self.row_placeholders)

    def close(self) -> None:
        self.connection.close()


class SQLiteBackend(Backend):
    """A SQLite file; opening it creates (mode 0600) or upgrades its schema."""

    name: ClassVar[str] = "sqlite"

    def __init__(self, location: StoreLocation) -> None:
        super().__init__(location)
        assert location.path is not None
        self.path: Path = location.path
        self._read: Session | None = None
        self._read_lock = threading.Lock()

    def connect(self) -> _SQLiteSession:
        try:
            return _SQLiteSession(_connect(self.path))
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open the decision store: {exc}") from None
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot create the decision store: {exc}") from None

    @contextmanager
    def reading(self) -> Iterator[Session]:
        with self._read_lock:
            if self._read is None:
                self._read = self.connect()
            yield self._read

    @property
    def read_connection(self) -> sqlite3.Connection:
        """The read connection itself (tests hold SQLite's write lock with it)."""
        with self._read_lock:
            if self._read is None:
                self._read = self.connect()
            assert isinstance(self._read, _SQLiteSession)
            return self._read.connection

    def migrate(self) -> list[int]:
        with self.reading() as session:
            try:
                tables = {row[0] for row in session.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'")}
                if tables and "basguard_meta" not in tables:
                    raise StoreError(
                        f"{self.path}: not a basguard decision store (it has other tables)")
                with transaction(session):  # BEGIN IMMEDIATE: one process at a time
                    return apply_migrations(session, self.path, _columns, "REAL")
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: cannot open the decision store: {exc}") from None

    def info(self) -> StoreInfo:
        with self.reading() as session:
            tables = {row[0] for row in session.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            return store_info(session, self.name, str(self.path), "basguard_meta" in tables)

    def purge(self, session: Session, cutoff: float, *, budget_seconds: float) -> tuple[int, bool]:
        # One statement: SQLite has one writer anyway, and this one is it.
        with transaction(session):
            deleted = session.execute("DELETE FROM decisions WHERE created_at < ?", (cutoff,))
        return deleted.rowcount, False

    def close(self) -> None:
        with self._read_lock:
            if self._read is not None:
                self._read.close()
                self._read = None


def _columns(session: Session, table: str) -> set[str]:
    return {row[1] for row in session.execute(f"PRAGMA table_info({table})")}


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    _create_private(path)
    # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE), see queries.transaction.
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        # NORMAL is durable across application crashes in WAL mode; only an OS crash or power
        # loss can take back the latest commits, which costs far less than FULL's fsyncs.
        db.execute("PRAGMA synchronous = NORMAL")
    except sqlite3.Error:
        db.close()
        raise
    return db


def _create_private(path: Path) -> None:
    """Create the store file readable by its owner only; SQLite gives ``-wal`` and ``-shm``
    the database's mode. An existing file keeps its mode (someone may have chosen it)."""
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))


