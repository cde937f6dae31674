"""Certify a fitted calibrator's risk limit on labelled data it was not fitted on.

The glue between a calibrator, a labelled data set and the statistics of
:mod:`policies.risk_control`: predict the calibrated probabilities, keep one row per group (rows of
one question are not independent), certify, and measure the result on every row of the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
from numpy.typing import ArrayLike

from policies.risk_control import (
    Certification,
    SelectiveErrorCurve,
    certify_selective_risk,
    one_row_per_group,
    projected_labels_needed,
    selective_error_curve,
)

from .artifact import FittedCalibrator, TrainingCurve
from .dataset import CalibrationData, read_calibration_data
from .errors import DataError
from .signals import parse_score_spec

__all__ = [
    "GROUP_HANDLING",
    "START_FRACTION",
    "CalibratorCertification",
    "LabelsNeeded",
    "certify_calibrator",
    "check_not_training_data",
    "is_training_data",
    "start_curve",
    "training_curve",
]

GROUP_HANDLING: Final = "one_row_per_group"
"""Rows sharing a group are reduced to one, drawn at random (see policies.risk_control)."""
START_FRACTION = 0.3
"""For a calibrator without a training curve: the share of the independent labels that chooses
where testing starts, and is not tested."""
CURVE_POINTS: Final = 512
"""Points of the training curve an artifact keeps: a start to within 0.2 % of the answers."""


def training_curve(p: ArrayLike, correct: ArrayLike, groups: ArrayLike) -> TrainingCurve:
    """What an artifact records of a fitted calibrator's answers on its training data.

    ``p`` are the final calibrator's predictions for its training rows. One row per group
    (seed 0), as certifying keeps, so the curve counts independent answers.
    """
    kept = one_row_per_group(groups, seed=0)
    curve = selective_error_curve(np.asarray(p)[kept], np.asarray(correct)[kept])
    curve = curve.thinned(CURVE_POINTS)
    return TrainingCurve(thresholds=curve.thresholds.tolist(), answered=curve.answered.tolist(),
                         errors=curve.errors.tolist())


def start_curve(calibrator: FittedCalibrator) -> SelectiveErrorCurve | None:
    """The curve that chooses where certifying ``calibrator`` starts, if its artifact has one."""
    recorded = None if calibrator.training is None else calibrator.training.curve
    if recorded is None:
        return None
    return SelectiveErrorCurve(
        thresholds=np.asarray(recorded.thresholds, dtype=np.float64),
        answered=np.asarray(recorded.answered, dtype=np.int64),
        errors=np.asarray(recorded.errors, dtype=np.int64),
    )


@dataclass(frozen=True)
class LabelsNeeded:
    """How many labels it would take, when nothing could be certified."""

    min_answered: int
    """Fewest tested answers at a threshold, none of them wrong, that can certify the limit."""
    at_observed_rates: int | None
    """Independent labels that would certify a threshold were the observed rates to hold."""


@dataclass(frozen=True)
class CalibratorCertification:
    """A certification and what it means on the whole data set."""

    certification: Certification
    rows: int
    """Rows of the data."""
    groups: int
    group_field: str | None
    seed: int
    answer_rate: float
    """Share of all rows answered at the threshold (0 when nothing is certified)."""
    error_rate: float | None
    """Error rate among all rows answered at the threshold."""
    labels_needed: LabelsNeeded | None
    """Only when nothing could be certified."""


def certify_calibrator(
    calibrator: FittedCalibrator,
    data: CalibrationData,
    *,
    max_error_rate: float,
    confidence: float,
    group_field: str | None,
    seed: int = 0,
) -> CalibratorCertification:
    """Certify ``calibrator`` on ``data`` (read with its features, label and groups).

    One row per group enters the test (drawn with ``seed``); the answer and error rates at the
    certified threshold are then measured on every row of ``data``. The calibrator's training
    curve chooses where testing starts; for an artifact without one, :data:`START_FRACTION` of
    the labels do, and are not tested.
    """
    columns = [data.specs.index(spec) for spec in calibrator.features]
    p = calibrator.predict(data.scores[:, columns])
    kept = one_row_per_group(data.groups, seed=seed)
    curve = start_curve(calibrator)
    certification = certify_selective_risk(
        p[kept], data.correct[kept], max_error_rate=max_error_rate, confidence=confidence,
        start_curve=curve, start_fraction=START_FRACTION, seed=seed,
    )
    answer_rate, error_rate = 0.0, None
    needed = None
    if certification.threshold is not None:
        answered = p >= certification.threshold
        answer_rate = float(answered.mean())
        error_rate = float(1.0 - data.correct[answered].mean()) if answered.any() else None
    else:
        needed = LabelsNeeded(
            min_answered=certification.min_answered,
            at_observed_rates=projected_labels_needed(
                p[kept], data.correct[kept], max_error_rate=max_error_rate,
                confidence=confidence,
                start_fraction=0.0 if curve is not None else START_FRACTION,
            ),
        )
    return CalibratorCertification(
        certification=certification,
        rows=data.n_rows,
        groups=data.n_groups,
        group_field=group_field,
        seed=seed,
        answer_rate=answer_rate,
        error_rate=error_rate,
        labels_needed=needed,
    )


def is_training_data(calibrator: FittedCalibrator, path: Path) -> bool:
    """Whether ``path`` holds exactly the data ``calibrator`` was fitted on.

    The artifact records a fingerprint of its training data (every score field offered to the
    fit, the label, the scores and the labels, in file order): ``path`` read the same way with
    the same fingerprint is that data. False for a calibrator that was not fitted, or a file
    missing a field the fit read.
    """
    training = calibrator.training
    if training is None:
        return False
    try:
        specs = [parse_score_spec(text) for text in training.scores]
        seen = read_calibration_data(path, scores=specs, label=training.label)
    except (DataError, ValueError):
        return False  # a field the fit read is missing: not the training file
    return seen.fingerprint() == training.fingerprint


def check_not_training_data(calibrator: FittedCalibrator, path: Path) -> str | None:
    """Refuse the calibrator's own training file; warn when ``path`` only shares its name.

    A bound computed on the rows a calibrator was fitted on is optimistic and guarantees nothing
    (see :func:`is_training_data` for how the file is recognised).

    Returns
    -------
    str or None
        A warning when ``path`` is a file the calibrator was fitted on but its content has
        changed since (it may still overlap), else None.

    Raises
    ------
    DataError
        When ``path`` holds exactly the training data.
    """
    training = calibrator.training
    if training is None:
        return None
    if is_training_data(calibrator, path):
        raise DataError(
            path,
            f"this is the data calibrator {calibrator.version} was fitted on ({training.rows} "
            "rows, same fingerprint); certify on labelled data it has not seen, or the bound "
            "means nothing",
        )
    resolved = path.resolve()
    if any(Path(source).resolve() == resolved for source in training.sources):
        return (f"{path} is a file calibrator {calibrator.version} was fitted on, since "
                "changed; rows it was fitted on make the bound optimistic")
    return None
