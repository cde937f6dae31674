"""The shared backend: a PostgreSQL database, for replicas on several machines.

psycopg 3 (libpq) connects with the URL and the standard ``PG*`` environment variables, so a
password can come from ``PGPASSWORD`` or a Secret-provided ``BASGUARD_STORE``; it is never
logged. The writer has its own connection and reconnects after the database went away
(:meth:`PostgresBackend.is_transient`); reads (metrics, review, drift, fitting) share a small
pool that checks each connection before lending it, so a restarted database costs no failed
read.

Migrations run in one transaction under a transaction-level advisory lock
(:data:`MIGRATION_LOCK`): replicas starting together apply each migration once, and DDL being
transactional on PostgreSQL, a failed one leaves nothing half-done.

Retention deletes in small batches (:data:`PURGE_BATCH` rows, each batch its own transaction,
found by the ``created_at`` index), within a time budget per turn of the writer: each batch
holds its row locks for milliseconds, never a table lock, so labels and inserts go on between
batches. See the notes in the README for why not daily partitions.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from proxy.errors import StoreUnavailable
from proxy.store.backend import Backend, Cursor, Session, StoreError, StoreInfo
from proxy.store.location import StoreLocation
from proxy.store.migrations import apply_migrations, store_info
from proxy.store.queries import COLUMN_LIST, transaction

__all__ = ["MIGRATION_LOCK", "PURGE_BATCH", "PostgresBackend", "StoreUnreachable"]

logger = logging.getLogger("basguard.store")

MIGRATION_LOCK = 0x6261_7367_7561_7264  # "basguard": one key for every basguard database
PURGE_BATCH = 2_000
CONNECT_TIMEOUT_SECONDS = 5
READ_POOL_SIZE = 4
READ_WAIT_SECONDS = 5.0
"""How long a read waits for a connection before it fails (503, or a scrape without the
store's gauges)."""
_DOUBLE = "DOUBLE PRECISION"


class StoreUnreachable(StoreError):
    """The database cannot be reached now (it may be later)."""


@functools.lru_cache(maxsize=1024)
def _placeholders(sql: str) -> str:
    """``?`` to psycopg's ``%s`` (the store's SQL holds no other ``?`` or ``%``)."""
    return sql.replace("?", "%s")


class _PostgresSession:
    """A psycopg connection (autocommit; explicit transactions) as a :class:`Session`."""

    begin = "BEGIN"
    lock_for_update = " FOR UPDATE"

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self.connection = connection
        self._staging = False

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        if sql.startswith("ROLLBACK"):
            # A staging table created in what is rolled back is gone with it.
            self._staging = False
        return self.connection.execute(_placeholders(sql), params or None)

    def insert_rows(self, rows: Sequence[Any]) -> int:
        """COPY into a session-private staging table, then one statement that empties it into
        ``decisions`` with ``ON CONFLICT DO NOTHING``: COPY adapts rows in C (2.6 µs of client
        CPU per row, against 62 for multi-row VALUES with typed placeholders, measured on the
        test machine), and the conflict check that COPY lacks is the INSERT's. Two round trips
        per batch: each is a GIL hand-over with the event loop. Call inside a transaction."""
        if not self._staging:
            self.connection.execute(_STAGING)  # kept by the session, emptied at each commit
            self._staging = True
        with self.connection.cursor() as cursor:
            with cursor.copy(f"COPY basguard_incoming ({COLUMN_LIST}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cursor.execute(_MOVE_STAGED)
            return max(cursor.rowcount, 0)

    def close(self) -> None:
        self.connection.close()


_STAGING = ("CREATE TEMP TABLE IF NOT EXISTS basguard_incoming (LIKE decisions) "
            "ON COMMIT DELETE ROWS")
"""Per connection, created on first use: rows COPY takes before they are inserted. A rollback
takes it away if it was created in what was rolled back: the session then creates it again."""
_MOVE_STAGED = (f"WITH staged AS (DELETE FROM basguard_incoming RETURNING {COLUMN_LIST}) "
                f"INSERT INTO decisions ({COLUMN_LIST}) SELECT {COLUMN_LIST} FROM staged "
                "ON CONFLICT (id, choice) DO NOTHING")
"""Empties the staging table into ``decisions`` in one statement (a replay inserts line by line
in one transaction: each line's count must be its own)."""


class PostgresBackend(Backend):
    """A PostgreSQL database at ``location.url``."""

    name: ClassVar[str] = "postgresql"

    def __init__(self, location: StoreLocation) -> None:
        super().__init__(location)
        assert location.url is not None
        self._url = location.url
        self._pool: ConnectionPool[psycopg.Connection[Any]] | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(self._url, autocommit=True,
                                   connect_timeout=CONNECT_TIMEOUT_SECONDS,
                                   application_name="basguard")
        except psycopg.Error as exc:
            raise StoreUnreachable(f"{self.location}: cannot connect: {_message(exc)}") from None

    def connect(self) -> Session:
        return _PostgresSession(self._connection())

    @contextmanager
    def reading(self) -> Iterator[Session]:
        if self._pool is None:
            self._pool = ConnectionPool(
                self._url, min_size=1, max_size=READ_POOL_SIZE, open=True, name="basguard-read",
                kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_SECONDS,
                        "application_name": "basguard"},
                check=ConnectionPool.check_connection)
        try:
            with self._pool.connection(timeout=READ_WAIT_SECONDS) as connection:
                yield _PostgresSession(connection)
        except (PoolTimeout, psycopg.OperationalError) as exc:
            raise StoreUnavailable(
                f"the decision store is unreachable ({_message(exc)})") from None

    def migrate(self) -> list[int]:
        session = self.connect()
        try:
            with transaction(session):
                # Held to the end of the transaction: the next replica waits, then finds
                # nothing left to do.
                session.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
                meta, decisions = session.execute(
                    "SELECT to_regclass('basguard_meta'), to_regclass('decisions')").fetchone()
                if decisions is not None and meta is None:
                    raise StoreError(f"{self.location}: not a basguard decision store (it has "
                                     "a decisions table of its own; use another database or "
                                     "schema, e.g. ?options=-csearch_path%3Dbasguard)")
                return apply_migrations(session, str(self.location), _columns, _DOUBLE)
        except psycopg.OperationalError as exc:
            raise StoreUnreachable(f"{self.location}: {_message(exc)}") from None
        except psycopg.Error as exc:
            raise StoreError(f"{self.location}: cannot migrate the decision store: "
                             f"{_message(exc)}") from None
        finally:
            session.close()

    def info(self) -> StoreInfo:
        session = self.connect()
        try:
            (meta,) = session.execute("SELECT to_regclass('basguard_meta')").fetchone()
            return store_info(session, self.name, str(self.location), meta is not None)
        except psycopg.Error as exc:
            raise StoreError(f"{self.location}: {_message(exc)}") from None
        finally:
            session.close()

    def purge(self, session: Session, cutoff: float, *, budget_seconds: float) -> tuple[int, bool]:
        deleted = 0
        deadline = time.monotonic() + budget_seconds
        while True:
            # Autocommit: each batch is its own short transaction.
            batch = session.execute(
                "DELETE FROM decisions WHERE ctid = ANY(ARRAY("
                "SELECT ctid FROM decisions WHERE created_at < ? LIMIT ?))",
                (cutoff, PURGE_BATCH)).rowcount
            deleted += batch
            # A short batch usually means the end; but a row a label updated meanwhile has
            # moved (a new ctid) and was passed over: look before saying so.
            if batch < PURGE_BATCH and session.execute(
                    "SELECT 1 FROM decisions WHERE created_at < ? LIMIT 1",
                    (cutoff,)).fetchone() is None:
                return deleted, False
            if time.monotonic() >= deadline:
                return deleted, True

    def is_transient(self, exc: BaseException) -> bool:
        # OperationalError covers a lost connection, an administrator's shutdown and a
        # database that is starting; InterfaceError a connection already closed.
        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError
                          | StoreUnreachable | PoolTimeout)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None


def _columns(session: Session, table: str) -> set[str]:
    return {row[0] for row in session.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = ?", (table,))}


def _message(exc: BaseException) -> str:
    """The first line of a libpq error (its messages name the host, never the password)."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
