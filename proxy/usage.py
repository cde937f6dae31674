"""The command line's own error: the user asked for something the options cannot mean."""

from __future__ import annotations

__all__ = ["UsageError"]


class UsageError(Exception):
    """Options, files or names given on the command line that cannot work together.

    The CLI shows it as one line and exits 2, like every error the project raises on purpose;
    any other exception is a bug and keeps its traceback.
    """
