"""Reading a JSON Lines file a user gave: each object with its line number, or a file:line error.

Streamed line by line (a records or questions file can be large); blank lines are skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from calibrators.errors import DataError

__all__ = ["json_objects"]


def json_objects(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line of ``path``.

    Raises :class:`~calibrators.errors.DataError` naming the file (and the line) when it cannot
    be read, a line is not JSON, or a line is not a JSON object.
    """
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise DataError(path, f"cannot read the file: {exc.strerror or exc}") from exc
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise DataError(path, f"malformed JSON: {exc}", line=number) from None
            if not isinstance(record, dict):
                raise DataError(path, "each line must be a JSON object", line=number)
            yield number, record
