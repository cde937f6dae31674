"""basguard's own log lines in the server's output, next to uvicorn's.

uvicorn's log config sets up only the ``uvicorn.*`` loggers. Any other logger falls through to
Python's last-resort handler, which shows warnings and errors only, so INFO lines such as
"config reloaded" never appeared. This gives the ``basguard.*`` loggers a handler of their own,
unless the host application (or a test runner) already configured logging.
"""

from __future__ import annotations

import logging

__all__ = ["show_basguard_logs"]


class _UvicornStyle(logging.Formatter):
    """``INFO:     basguard.reload: message``: lined up with uvicorn's default format."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"{record.levelname}:".ljust(9)
        return f"{prefix} {record.name}: {super().format(record)}"


def show_basguard_logs(level: int = logging.INFO) -> bool:
    """Send ``basguard.*`` records at ``level`` and above to stderr; returns whether it did.

    Does nothing when the ``basguard`` logger or the root logger already has a handler: then
    whoever configured logging decides where these lines go. uvicorn's later ``dictConfig``
    keeps this handler (it leaves loggers it does not name alone).
    """
    logger = logging.getLogger("basguard")
    if logger.handlers or logging.getLogger().handlers:
        return False
    handler = logging.StreamHandler()  # stderr, where uvicorn writes its own lines
    handler.setFormatter(_UvicornStyle("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    return True
