"""The inputs every metric validates: confidences ``p`` and correctness labels ``y``."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["Float", "check_labels", "check_pair", "check_scores", "mean_or_nan"]

Float = NDArray[np.float64]


def check_labels(y: ArrayLike) -> Float:
    """Correctness as a 1-D float array of 0.0/1.0 (floats, because most metrics average it)."""
    raw = np.asarray(y)
    if raw.ndim != 1:
        raise ValueError(f"y must be 1-D, got shape {raw.shape}")
    labels = raw.astype(np.float64)
    # Bool input is 0/1 by construction; anything else (0.5, 2, NaN) is not a correctness label.
    if raw.dtype != np.bool_ and not np.all((labels == 0.0) | (labels == 1.0)):
        raise ValueError("y must hold only 0/1 or True/False correctness labels")
    return labels


def check_scores(p: ArrayLike, *, probabilities: bool) -> Float:
    """Confidences as a 1-D float array; finite, and within [0, 1] when they are probabilities."""
    scores = np.asarray(p, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"p must be 1-D, got shape {scores.shape}")
    if scores.size == 0:
        return scores
    lowest, highest = float(scores.min()), float(scores.max())
    # min/max propagate NaN, so one pass over the data catches NaN, infinities and the range.
    if not (math.isfinite(lowest) and math.isfinite(highest)):
        raise ValueError("p must be finite (no NaN or infinity)")
    if probabilities and (lowest < 0.0 or highest > 1.0):
        raise ValueError(f"p must lie in [0, 1], got values in [{lowest!r}, {highest!r}]")
    return scores


def check_pair(p: ArrayLike, y: ArrayLike, *, probabilities: bool = True) -> tuple[Float, Float]:
    """Validated ``(p, y)``: both 1-D and of equal length."""
    scores = check_scores(p, probabilities=probabilities)
    labels = check_labels(y)
    if scores.shape != labels.shape:
        raise ValueError(
            f"p and y must have the same length, got {scores.size} confidences "
            f"and {labels.size} labels"
        )
    return scores, labels


def mean_or_nan(values: Float) -> float:
    return float(values.mean()) if values.size else math.nan

