"""Fitting, storing, applying and evaluating calibrators: scores in, P(correct) out.

Depends on :mod:`policies` for the BAS and utility math; never on the gateway (``proxy``).
"""

from .artifact import FittedCalibrator, load_artifact, save_artifact
from .dataset import CalibrationData, read_calibration_data
from .errors import ArtifactError, CalibrationError, DataError
from .evaluation import Evaluation, evaluate_calibrator
from .methods import METHODS, Calibrator
from .selection import AUTO, FitOutcome, fit_calibrator
from .signals import ScoreKind, ScoreSpec, parse_score_spec

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
