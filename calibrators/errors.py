"""The calibrators' error hierarchy.

::

    CalibrationError   anything the calibrators package refuses
    ├── DataError      bad calibration data: names the file and, where there is one, the line
    ├── ArtifactError  a calibrator artifact that is missing, truncated, tampered or invalid
    ├── CertificateError  a risk certificate that is missing, tampered, or for another calibrator
    └── MethodError    a calibration method that is unknown or cannot use the given scores

Front ends (the CLI, the gateway) catch :class:`CalibrationError` and show ``str(exc)``, which is
always one line a person can act on.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "ArtifactError", "CalibrationError", "CertificateError", "DataError", "MethodError",
]


class CalibrationError(Exception):
    """Base class of every error the calibrators package raises on purpose."""


class DataError(CalibrationError, ValueError):
    """Calibration data that cannot be used, located by file and (1-based) line."""

    def __init__(self, path: str | Path, message: str, *, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class ArtifactError(CalibrationError, ValueError):
    """A calibrator artifact that cannot be loaded or saved."""

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = str(path)
        self.message = message
        super().__init__(f"{self.path}: {message}")


class MethodError(CalibrationError, ValueError):
    """A calibration method that is unknown, or that none of the given scores can feed."""


class CertificateError(CalibrationError, ValueError):
    """A risk certificate that cannot be loaded or saved, or belongs to another calibrator."""

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = str(path)
        self.message = message
        super().__init__(f"{self.path}: {message}")
