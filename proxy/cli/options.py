"""What several subcommands share: the decision store option, number types and exit codes."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from proxy.usage import UsageError

if TYPE_CHECKING:
    from proxy.store import DecisionStore, StoreLocation

__all__ = [
    "DEFAULT_STORE",
    "USAGE_ERROR",
    "add_store_option",
    "existing_store_location",
    "non_negative_int",
    "open_store",
    "positive_int",
    "store_location",
    "token_counts",
]

USAGE_ERROR = 2
"""The exit status of bad input (data, artifacts, policy files, options)."""
DEFAULT_STORE = "basguard-decisions.sqlite3"


def add_store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store", metavar="STORE",
        help="the decision store: a SQLite path, sqlite:///PATH or postgresql://USER@HOST/DB "
        f"(default: BASGUARD_STORE or {DEFAULT_STORE}; a password only from BASGUARD_STORE or "
        "PGPASSWORD)",
    )


def store_location(given: str | None) -> StoreLocation:
    """The store named on the command line, else by BASGUARD_STORE, else the default.

    A password on the command line is refused: every user of the machine can read it (ps).
    """
    from proxy.store import StoreError, StoreLocationError, parse_store_location

    try:
        location = parse_store_location(
            given if given is not None else os.environ.get("BASGUARD_STORE", DEFAULT_STORE))
    except StoreLocationError as exc:
        raise StoreError(str(exc)) from None
    if given is not None and location.has_password:
        raise UsageError(f"{location}: no password on the command line (anyone can read it "
                         "with ps); set PGPASSWORD, or the whole URL in BASGUARD_STORE")
    return location


def existing_store_location(given: str | None) -> StoreLocation:
    """The store named (as :func:`store_location`), refused unless a SQLite file is there.

    Reading a store must never create one: a mistyped path (or running in the wrong folder)
    would otherwise leave an empty store behind and report "no decisions", as if all were well.
    """
    location = store_location(given)
    if location.path is not None and not location.path.is_file():
        named = ("--store" if given is not None
                 else "BASGUARD_STORE" if os.environ.get("BASGUARD_STORE")
                 else f"the default, {DEFAULT_STORE} in the current directory")
        raise UsageError(
            f"{location}: no decision store here (from {named}); point at the gateway's store "
            "with --store PATH (a SQLite file, sqlite:///PATH or postgresql://...) or "
            "BASGUARD_STORE; basguard store migrate creates a new one")
    return location


def open_store(given: str | None) -> DecisionStore:
    """The store named, for reading and labelling: it must exist and have basguard's tables."""
    from proxy.store import DecisionStore, open_backend

    location = existing_store_location(given)
    backend = open_backend(location)
    try:
        info = backend.info()
    finally:
        backend.close()
    if info.schema_version is None:
        raise UsageError(
            f"{location}: no decision store here (the database has no basguard tables); point "
            "at the gateway's store with --store or BASGUARD_STORE, or create the tables with "
            "basguard store migrate")
    # No retention: the CLI never deletes; the server purges on its own schedule.
    return DecisionStore(location, retention_seconds=None)


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, not {value}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def token_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(sorted({int(part) for part in text.split(",")}))
    except ValueError:
        counts = ()
    if not counts or counts[0] < 1:
        raise argparse.ArgumentTypeError(
            f"expected token counts of at least 1, separated by commas (1,4,8,16): {text!r}")
    return counts
