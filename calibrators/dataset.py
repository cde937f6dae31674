"""Reading labelled calibration data from JSON Lines, one validated row at a time.

Each line is a JSON object holding the score fields, a correctness label and optionally a group
(rows sharing a group are answers to one question). Lines are parsed and reduced to numbers one at
a time into compact arrays, so a file of millions of rows never holds its parsed objects in memory
at once. Every problem is reported as a :class:`~calibrators.errors.DataError` naming the file and
line.
"""

from __future__ import annotations

import hashlib
import math
from array import array
from collections.abc import Iterable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from .errors import DataError
from .json_lines import json_objects
from .signals import ScoreSpec

__all__ = [
    "CalibrationData",
    "calibration_data_from_records",
    "parse_label",
    "read_calibration_data",
]

_TRUE_LABELS = {"1", "true"}
_FALSE_LABELS = {"0", "false"}


@dataclass(frozen=True, eq=False)
class CalibrationData:
    """Scores, correctness labels and group ids of one data set."""

    scores: NDArray[np.float64]
    """Shape ``(n_rows, n_scores)``, in the units of each score's kind."""
    correct: NDArray[np.bool_]
    groups: NDArray[np.int64]
    """Dense group ids; every row is its own group when no group field was given."""
    specs: tuple[ScoreSpec, ...]
    label: str
    source: str

    @property
    def n_rows(self) -> int:
        return int(self.correct.shape[0])

    @property
    def n_groups(self) -> int:
        return int(np.unique(self.groups).size)

    def fingerprint(self) -> str:
        """``sha256:`` digest of the fields, scores and labels: identifies the training data."""
        digest = hashlib.sha256()
        digest.update(",".join(str(spec) for spec in self.specs).encode())
        digest.update(b"|" + self.label.encode() + b"|")
        digest.update(np.ascontiguousarray(self.scores).tobytes())
        digest.update(self.correct.tobytes())
        return "sha256:" + digest.hexdigest()

    def subset(self, rows: NDArray[np.bool_] | NDArray[np.intp]) -> CalibrationData:
        """The rows selected by a boolean mask or index array."""
        return CalibrationData(
            self.scores[rows], self.correct[rows], self.groups[rows], self.specs, self.label,
            self.source,
        )

    def require_both_classes(self) -> None:
        """Raise :class:`DataError` unless there are both correct and wrong answers."""
        n_correct = int(self.correct.sum())
        if n_correct == 0 or n_correct == self.n_rows:
            which = "correct" if n_correct else "wrong"
            raise DataError(
                self.source,
                f"all {self.n_rows} rows are {which} ({self.label!r}); a calibrator needs both "
                "correct and wrong answers",
            )


def parse_label(value: Any) -> bool | None:
    """Read a correctness label: 0/1, true/false (JSON booleans, numbers or strings)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        if value == 1:
            return True
        if value == 0:
            return False
        return None
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE_LABELS:
            return True
        if lowered in _FALSE_LABELS:
            return False
    return None


def read_calibration_data(
    path: str | Path, *, scores: Sequence[ScoreSpec], label: str, group: str | None = None
) -> CalibrationData:
    """Read and validate a JSON Lines file of labelled confidence scores.

    Parameters
    ----------
    path : str or Path
        The file, read by :func:`calibrators.json_lines.json_objects`: blank lines are skipped,
        and ``NaN`` or ``Infinity`` in a line is read, then refused as a score that is not
        finite.
    scores : sequence of ScoreSpec
        The score fields to read, each with its kind.
    label : str
        The correctness field (0/1, true/false).
    group : str, optional
        The field naming the question each row answers.

    Returns
    -------
    CalibrationData

    Raises
    ------
    DataError
        For an unreadable or empty file, a malformed line, a missing field, a label that is not
        0/1/true/false, or a score outside its kind's range, NaN or infinite.
    """
    # Closed at once, not when the generator is collected, should a row be refused.
    with closing(json_objects(path)) as records:
        return _collect(records, path, scores=scores, label=label, group=group,
                        empty="no records: the file is empty")


def calibration_data_from_records(
    records: Iterable[Mapping[str, Any]],
    *,
    source: str,
    scores: Sequence[ScoreSpec],
    label: str,
    group: str | None = None,
) -> CalibrationData:
    """Validate already-parsed records (from a database, say) as :func:`read_calibration_data`.

    Problems are reported as a :class:`DataError` naming ``source`` and the record's position
    (counted from 1).
    """
    return _collect(enumerate(records, start=1), source, scores=scores, label=label, group=group,
                    empty="no records")


def _collect(
    records: Iterable[tuple[int, Any]],
    source: str | Path,
    *,
    scores: Sequence[ScoreSpec],
    label: str,
    group: str | None,
    empty: str,
) -> CalibrationData:
    if not scores:
        raise ValueError("at least one score field is required")
    columns = [array("d") for _ in scores]
    labels = bytearray()
    group_ids: array[int] = array("q")
    group_index: dict[str, int] = {}
    for position, record in records:
        if not isinstance(record, dict):
            raise DataError(source, "each line must be a JSON object", line=position)
        for spec, column in zip(scores, columns, strict=True):
            column.append(_read_score(record, spec, source, position))
        labels.append(_read_label(record, label, source, position))
        if group is not None:
            key = _read_group(record, group, source, position)
            group_ids.append(group_index.setdefault(key, len(group_index)))
    if not labels:
        raise DataError(source, empty)
    n_rows = len(labels)
    matrix = np.empty((n_rows, len(scores)), dtype=np.float64)
    for j, column in enumerate(columns):
        matrix[:, j] = np.frombuffer(column, dtype=np.float64)
    correct = np.frombuffer(bytes(labels), dtype=np.uint8).astype(bool)
    groups = (
        np.frombuffer(group_ids, dtype=np.int64).copy()
        if group is not None
        else np.arange(n_rows, dtype=np.int64)
    )
    return CalibrationData(matrix, correct, groups, tuple(scores), label, str(source))


def _read_score(record: dict[str, Any], spec: ScoreSpec, path: str | Path, line: int) -> float:
    if spec.field not in record:
        raise DataError(path, f"missing score field {spec.field!r}", line=line)
    value = record[spec.field]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DataError(
            path, f"field {spec.field!r} must be a number, got {_describe(value)}", line=line
        )
    number = float(value)
    problem = spec.check(number)
    if problem is not None:
        raise DataError(path, problem, line=line)
    return number


def _read_label(record: dict[str, Any], field: str, path: str | Path, line: int) -> int:
    if field not in record:
        raise DataError(path, f"missing label field {field!r}", line=line)
    value = record[field]
    parsed = parse_label(value)
    if parsed is None:
        raise DataError(
            path, f"label {field!r} must be 0/1 or true/false, got {_describe(value)}", line=line
        )
    return int(parsed)


def _read_group(record: dict[str, Any], field: str, path: str | Path, line: int) -> str:
    if field not in record:
        raise DataError(path, f"missing group field {field!r}", line=line)
    value = record[field]
    if isinstance(value, dict | list) or value is None:
        raise DataError(
            path, f"group {field!r} must be a string or number, got {_describe(value)}", line=line
        )
    return str(value)


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    text = orjson.dumps(value).decode()
    return text if len(text) <= 40 else text[:37] + "..."
