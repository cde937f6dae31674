"""Reading a JSON Lines file: each object with its line number, or a file:line error.

One reader for every JSON Lines file basguard is given: calibration data (``calibrate fit``),
records to replay (``policy simulate --records``) and questions (``collect``). It streams line by
line, since a file can hold millions of rows, and skips blank lines.

**NaN and infinity.** A line is read as Python's :func:`json.loads` reads it: standard JSON
(RFC 8259) in UTF-8, plus the words ``NaN``, ``Infinity`` and ``-Infinity`` that Python's
:mod:`json` writes for non-finite floats (its default, ``allow_nan=True``), which are read as
those floats; a number beyond a double's range (``1e400``) is read as infinity. The reader does
not refuse a non-finite number: the code that reads a field decides whether it may be one, and
names the field when it may not (a calibration score, a record's ``confidence`` and a label must
be finite: see ``data/calibration/README.md`` for what each field holds). So ``{"p": NaN}`` is
reported as "field 'p' ... must be finite", not as malformed JSON. orjson parses every line first
and the slower :mod:`json` only lines orjson refuses, which are then malformed only if :mod:`json`
refuses them too.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from pathlib import Path
from typing import Any

import orjson

from .errors import DataError

__all__ = ["json_objects", "parse_json_line"]


def parse_json_line(line: bytes) -> Any:
    """The JSON value of one line, read as :func:`json.loads` reads it (NaN and ±Infinity too).

    Parameters
    ----------
    line : bytes
        One line of a JSON Lines file, in UTF-8, with or without its line ending.

    Returns
    -------
    Any
        The value; ``NaN``, ``Infinity`` and ``-Infinity`` become the floats they name.

    Raises
    ------
    ValueError
        When the line is not JSON under that rule (not UTF-8, truncated, a stray word, ...);
        the message is orjson's, which says where.
    """
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as strict:
        # orjson is strict RFC 8259: it refuses the NaN and Infinity that Python's json module
        # writes. Read those lines with json itself, from UTF-8 text so that json's detection
        # of UTF-16 and of a byte-order mark widens nothing else.
        try:
            return json.loads(line.decode("utf-8"))
        except ValueError:
            raise strict from None


def json_objects(path: str | Path) -> Generator[tuple[int, dict[str, Any]], None, None]:
    """``(line number, object)`` for each non-blank line of ``path``, counted from 1.

    Parameters
    ----------
    path : str or Path
        The JSON Lines file.

    Yields
    ------
    tuple of (int, dict)
        Each line's number and its object, values read by :func:`parse_json_line`.

    Raises
    ------
    DataError
        Naming the file (and the line) when it cannot be read, a line is not JSON, or a line is
        not a JSON object.
    """
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the with block below
    except OSError as exc:
        raise DataError(path, f"cannot read the file: {exc.strerror or exc}") from exc
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = parse_json_line(line)
            except ValueError as exc:
                raise DataError(path, f"malformed JSON: {exc}", line=number) from None
            if not isinstance(record, dict):
                raise DataError(path, "each line must be a JSON object", line=number)
            yield number, record
