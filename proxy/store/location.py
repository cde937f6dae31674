"""Where the decision store is: a URL naming its backend, with any password kept out of sight.

``sqlite:///relative.sqlite3`` and ``sqlite:////absolute/path.sqlite3`` (SQLAlchemy's spelling,
which LiteLLM users already write) and a plain path mean the embedded SQLite store;
``postgresql://`` (or ``postgres://``) a PostgreSQL database, connected to by libpq, which also
reads the standard ``PG*`` environment variables (``PGPASSWORD``, ``PGSSLMODE``, ...). A password
is taken from the environment only: from ``BASGUARD_STORE`` (a Kubernetes Secret) or
``PGPASSWORD``, never from the command line, where every user of the machine can read it; and
it is never logged: :meth:`StoreLocation.__str__` shows the URL with the password masked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["StoreLocation", "StoreLocationError", "parse_store_location"]

SQLITE_PREFIX = "sqlite:///"
POSTGRES_SCHEMES = ("postgresql", "postgres")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_MASK = "***"


class StoreLocationError(ValueError):
    """Not a store location basguard can use (an unknown scheme, a malformed URL)."""


@dataclass(frozen=True)
class StoreLocation:
    """A parsed store location: a SQLite file, or a PostgreSQL connection URL."""

    backend: Literal["sqlite", "postgresql"]
    path: Path | None = None
    """The SQLite file."""
    url: str | None = None
    """The PostgreSQL URL as given (it may hold a password: never show it; use ``str()``)."""

    @property
    def has_password(self) -> bool:
        if self.url is None:
            return False
        parts = urlsplit(self.url)
        return parts.password is not None or any(
            key == "password" for key, _ in parse_qsl(parts.query))

    def __str__(self) -> str:
        if self.path is not None:
            return str(self.path)
        assert self.url is not None
        return _redact(self.url)

    def __repr__(self) -> str:
        return f"StoreLocation({str(self)!r})"


def parse_store_location(value: str | Path) -> StoreLocation:
    """``value`` as a store location (raises :class:`StoreLocationError`)."""
    if isinstance(value, Path):
        return StoreLocation("sqlite", path=value)
    if value.startswith(SQLITE_PREFIX):
        rest = value[len(SQLITE_PREFIX):]
        if not rest:
            raise StoreLocationError("sqlite:/// needs a file path after it")
        return StoreLocation("sqlite", path=Path(rest))
    match = _SCHEME.match(value)
    if match is None:
        if not value:
            raise StoreLocationError("the store location is empty")
        return StoreLocation("sqlite", path=Path(value))
    scheme = match.group(1).lower()
    if scheme in POSTGRES_SCHEMES:
        try:
            urlsplit(value).port  # noqa: B018  # a bad port raises here, not at the first connect
        except ValueError as exc:
            raise StoreLocationError(f"{_redact(value)}: {exc}") from None
        return StoreLocation("postgresql", url=value)
    raise StoreLocationError(
        f"{scheme}://: not a store basguard knows (sqlite:///PATH, a plain path, or "
        "postgresql://...)")


def _redact(url: str) -> str:
    """``url`` with its password, in the authority or the query, masked."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            userinfo, _, host = netloc.rpartition("@")
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:{_MASK}@{host}"
        query = parts.query
        if "password" in query:
            query = urlencode([(k, _MASK if k == "password" else v) for k, v in
                               parse_qsl(query, keep_blank_values=True)], safe="*")
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return f"{url.split('://', 1)[0]}://{_MASK}"  # malformed: show nothing of it
