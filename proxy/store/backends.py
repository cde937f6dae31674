"""The store backends by name, and :func:`open_backend`, which opens the one a location names.

A backend is one module with one :class:`~proxy.store.backend.Backend` subclass, plus one line
in :data:`BACKENDS`. Its module is imported only when a store of its kind is opened, so the
embedded SQLite default never loads a driver it does not use (libpq, for PostgreSQL).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from proxy.store.backend import Backend, StoreError
from proxy.store.location import StoreLocation, StoreLocationError, parse_store_location

__all__ = ["BACKENDS", "BackendModule", "open_backend"]


@dataclass(frozen=True)
class BackendModule:
    """Where a backend's class lives, and what to install if its module cannot be imported."""

    module: str
    class_name: str
    missing_driver: str | None = None
    """What an ``ImportError`` of ``module`` means (None: a bug, raised as it is)."""

    def load(self) -> type[Backend]:
        """The backend's class (raises :class:`StoreError` if its driver is not installed)."""
        try:
            module = importlib.import_module(self.module)
        except ImportError as exc:
            if self.missing_driver is None:
                raise
            raise StoreError(f"{self.missing_driver} ({exc})") from None
        backend = getattr(module, self.class_name)
        if not (isinstance(backend, type) and issubclass(backend, Backend)):
            raise TypeError(f"{self.module}.{self.class_name} is not a store Backend")
        return backend


BACKENDS: dict[str, BackendModule] = {
    "sqlite": BackendModule("proxy.store.sqlite", "SQLiteBackend"),
    "postgresql": BackendModule(
        "proxy.store.postgres", "PostgresBackend",
        missing_driver="a PostgreSQL store needs psycopg: pip install 'basguard[postgres]'"),
}
"""Backend name (a :class:`StoreLocation`'s ``backend``) to the module that serves it."""


def open_backend(location: StoreLocation | Path | str) -> Backend:
    """The backend for ``location`` (raises :class:`StoreError` for an unknown kind)."""
    try:
        parsed = location if isinstance(location, StoreLocation) else \
            parse_store_location(location)
    except StoreLocationError as exc:
        raise StoreError(str(exc)) from None
    return BACKENDS[parsed.backend].load()(parsed)
