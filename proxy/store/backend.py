"""What a store backend provides: connections that speak one SQL, migrations, retention.

The writer (:mod:`proxy.store.writer`) and the queries (:mod:`proxy.store.queries`) are written
once against :class:`Session`, whose SQL uses ``?`` placeholders; a backend translates what its
database spells differently. A new backend is one module with one :class:`Backend` subclass,
registered in :data:`proxy.store.backends.BACKENDS`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from proxy.store.location import StoreLocation

__all__ = ["Backend", "Cursor", "Session", "StoreError", "StoreInfo"]


class StoreError(ValueError):
    """The decision store cannot be opened (a bad path, or not a basguard database)."""


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Session(Protocol):
    """One connection, in autocommit mode: transactions are explicit (``begin``)."""

    begin: str
    """The statement that opens a write transaction."""
    lock_for_update: str
    """Appended to a label's read of its decision: locks the row until the label commits (two
    replicas labelling one decision at once must not both take back its old label)."""
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...

    def insert_rows(self, rows: Sequence[Any]) -> int:
        """Insert decision rows (:data:`proxy.store.rows.INSERTED_COLUMNS` order), skipping
        those already stored; returns how many were new."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class StoreInfo:
    """What ``basguard store info`` shows."""

    backend: str
    location: str
    schema_version: int | None
    """None: no basguard tables yet."""
    latest_version: int
    decisions: int
    labelled: int
    oldest: float | None
    newest: float | None


class Backend(ABC):
    """A database the store can live in."""

    name: ClassVar[str]

    def __init__(self, location: StoreLocation) -> None:
        self.location = location

    @abstractmethod
    def connect(self) -> Session:
        """A new connection for the writer (raises if the database is unreachable)."""

    @abstractmethod
    def reading(self) -> AbstractContextManager[Session]:
        """A connection for reads, beside the writer's."""

    @abstractmethod
    def migrate(self) -> list[int]:
        """Create or upgrade the schema, one process at a time; returns the versions applied.

        Raises :class:`StoreError` if the database is not a basguard store, or a newer one.
        """

    @abstractmethod
    def info(self) -> StoreInfo: ...

    @abstractmethod
    def purge(self, session: Session, cutoff: float, *, budget_seconds: float) -> tuple[int, bool]:
        """Delete decisions made before ``cutoff``; returns how many, and whether more remain
        (the budget ran out first)."""

    def is_transient(self, exc: BaseException) -> bool:
        """Whether ``exc`` means the database is unreachable for now (reconnect, retry)."""
        return False

    @abstractmethod
    def close(self) -> None:
        """Release the read connections."""
