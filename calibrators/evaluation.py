"""Raw versus calibrated figures of a data set."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .artifact import FittedCalibrator
from .dataset import CalibrationData
from .metrics import aurc, auroc, summarize
from .signals import ScoreSpec, probability_view

__all__ = ["Evaluation", "evaluate_calibrator", "raw_confidence", "raw_summary"]


def raw_confidence(data: CalibrationData) -> tuple[ScoreSpec, NDArray[np.float64] | None]:
    """The uncalibrated confidence: the first score field that expresses a probability.

    When no field does (every score is ``real``), returns the first field and None: such a score
    can still be ranked, but says nothing about probabilities.
    """
    for j, spec in enumerate(data.specs):
        if spec.kind.is_probabilistic:
            return spec, np.clip(probability_view(data.scores[:, j], spec.kind), 0.0, 1.0)
    return data.specs[0], None


def raw_summary(data: CalibrationData) -> tuple[ScoreSpec, dict[str, float]]:
    """Figures of the raw confidence; ranking-only figures for a score that is not a probability."""
    spec, confidence = raw_confidence(data)
    if confidence is not None:
        return spec, summarize(confidence, data.correct)
    ranking = data.scores[:, 0]
    return spec, {"auroc": auroc(ranking, data.correct), "aurc": aurc(ranking, data.correct)}


@dataclass(frozen=True)
class Evaluation:
    """A calibrator's figures on a data set, next to the raw score's."""

    n: int
    accuracy: float
    raw_score: str
    raw: dict[str, float]
    calibrated: dict[str, float]


def evaluate_calibrator(calibrator: FittedCalibrator, data: CalibrationData) -> Evaluation:
    """Score ``calibrator`` on ``data`` (read with the calibrator's own score fields)."""
    calibrated = summarize(calibrator.predict(data.scores), data.correct)
    spec, raw = raw_summary(data)
    return Evaluation(
        n=data.n_rows,
        accuracy=float(data.correct.mean()),
        raw_score=str(spec),
        raw=raw,
        calibrated=calibrated,
    )
