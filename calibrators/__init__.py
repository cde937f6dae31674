"""Fitting, storing, applying and evaluating calibrators: scores in, P(correct) out.

Depends on :mod:`policies` for the BAS and utility math; never on the gateway (``proxy``).

The names below load their module on first use (PEP 562): the gateway imports
``calibrators.artifact`` to predict, and must not pay for the fitting and evaluation modules,
which pull in scikit-learn and SciPy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .artifact import FittedCalibrator, load_artifact, save_artifact
    from .dataset import CalibrationData, read_calibration_data
    from .errors import ArtifactError, CalibrationError, DataError
    from .evaluation import Evaluation, evaluate_calibrator
    from .methods import METHODS, Calibrator
    from .selection import AUTO, FitOutcome, fit_calibrator
    from .signals import ScoreKind, ScoreSpec, parse_score_spec

_HOMES = {
    "AUTO": "selection",
    "METHODS": "methods",
    "ArtifactError": "errors",
    "CalibrationData": "dataset",
    "CalibrationError": "errors",
    "Calibrator": "methods",
    "DataError": "errors",
    "Evaluation": "evaluation",
    "FitOutcome": "selection",
    "FittedCalibrator": "artifact",
    "ScoreKind": "signals",
    "ScoreSpec": "signals",
    "evaluate_calibrator": "evaluation",
    "fit_calibrator": "selection",
    "load_artifact": "artifact",
    "parse_score_spec": "signals",
    "read_calibration_data": "dataset",
    "save_artifact": "artifact",
}

__all__ = [
    "AUTO",
    "METHODS",
    "ArtifactError",
    "CalibrationData",
    "CalibrationError",
    "Calibrator",
    "DataError",
    "Evaluation",
    "FitOutcome",
    "FittedCalibrator",
    "ScoreKind",
    "ScoreSpec",
    "evaluate_calibrator",
    "fit_calibrator",
    "load_artifact",
    "parse_score_spec",
    "read_calibration_data",
    "save_artifact",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{home}", __name__), name)
