"""Step functions of one score: isotonic regression and histogram binning.

Both are free-form (any non-decreasing map, any per-bin level), and both smooth each level as
``(k + 1) / (n + 2)`` so that a pure block or bin never predicts exactly 0 or 1. The scalar path
bisects Python lists, which beats NumPy on one value.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import Any, Self

import numpy as np
from numpy.typing import NDArray

from .base import Array, Calibrator, Params, param_floats, training_labels

__all__ = ["HistogramCalibrator", "IsotonicCalibrator"]


def _check_steps(xs: list[float], ys: list[float]) -> None:
    if not xs or len(xs) != len(ys):
        raise ValueError("a step function needs as many levels as points, and at least one")
    if any(b < a for a, b in pairwise(xs)):
        raise ValueError("step points must be sorted")
    if any(b < a for a, b in pairwise(ys)):
        raise ValueError("calibrated levels must be non-decreasing")
    if not all(0.0 <= v <= 1.0 for v in ys):
        raise ValueError("calibrated levels must lie in [0, 1]")


class IsotonicCalibrator(Calibrator):
    """Isotonic regression with Laplace-smoothed levels.

    Zadrozny and Elkan, KDD 2002: the best non-decreasing step function of the score (pool
    adjacent violators). Each pooled block of ``n`` answers with ``k`` correct gets the level
    ``(k + 1) / (n + 2)`` instead of ``k / n``: plain isotonic regression says 0 or 1 for pure
    blocks at the extremes, and one wrong answer at confidence 1 costs ``ln 1e-4 ≈ -9.2`` of BAS.
    Between block ends the map interpolates linearly, as scikit-learn's does.
    """

    method = "isotonic"

    def fit(self, Z: Array, y: NDArray[Any]) -> Self:
        return self._set_steps(*_smoothed_isotonic(Z[:, 0], training_labels(y)))

    def _set_steps(self, x: Array, y: Array) -> Self:
        self.x_, self.y_ = x, y
        # Python lists for the scalar path: bisect on a list beats np.interp on one value ~5x.
        self._x_list, self._y_list = x.tolist(), y.tolist()
        return self

    def predict(self, Z: Array) -> Array:
        return np.interp(Z[:, 0], self.x_, self.y_)

    def predict_one(self, z: Sequence[float]) -> float:
        return _interpolate(self._x_list, self._y_list, z[0])

    def to_params(self) -> Params:
        return {"x": self.x_.tolist(), "y": self.y_.tolist()}

    @classmethod
    def from_params(cls, params: Mapping[str, Any], n_features: int) -> Self:
        xs, ys = param_floats(params, "x"), param_floats(params, "y")
        _check_steps(xs, ys)
        return cls()._set_steps(np.asarray(xs), np.asarray(ys))


def _smoothed_isotonic(z: Array, labels: NDArray[np.int64]) -> tuple[Array, Array]:
    from sklearn.isotonic import IsotonicRegression

    model = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(z, labels)
    # Every training point sits inside one pooled block, where the fit is exactly the block's
    # mean, so counting training points per fitted value recovers each block's size.
    levels, sizes = np.unique(model.predict(z), return_counts=True)
    smoothed = (levels * sizes + 1.0) / (sizes + 2.0)
    x = np.asarray(model.X_thresholds_, dtype=np.float64)
    y = np.asarray(model.y_thresholds_, dtype=np.float64)
    positions = np.clip(np.searchsorted(levels, y), 0, levels.size - 1)
    exact = np.isclose(levels[positions], y, rtol=0.0, atol=1e-12)
    y_smoothed = np.where(exact, smoothed[positions], y)
    return x, np.maximum.accumulate(y_smoothed)


def _interpolate(xs: list[float], ys: list[float], x: float) -> float:
    if x <= xs[0]:
        return ys[0]
    if x >= xs[-1]:
        return ys[-1]
    i = bisect_right(xs, x)
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return y0 if x1 == x0 else y0 + (x - x0) * (y1 - y0) / (x1 - x0)


class HistogramCalibrator(Calibrator):
    """Histogram binning: the smoothed accuracy of the score's equal-mass bin.

    Zadrozny and Elkan, ICML 2001. Each bin of ``n`` answers with ``k`` correct predicts
    ``(k + 1) / (n + 2)``.

    Parameters
    ----------
    n_bins : int, default=15
        Number of equal-mass bins (fewer when the score has fewer distinct values).
    """

    method = "histogram"

    def __init__(self, n_bins: int = 15) -> None:
        self.n_bins = n_bins

    def fit(self, Z: Array, y: NDArray[Any]) -> Self:
        z = Z[:, 0]
        labels = training_labels(y)
        inner = np.unique(np.quantile(z, np.linspace(0, 1, self.n_bins + 1)[1:-1]))
        bins = np.searchsorted(inner, z, side="right")
        counts = np.bincount(bins, minlength=inner.size + 1)
        hits = np.bincount(bins, weights=labels, minlength=inner.size + 1)
        return self._set_bins(inner, (hits + 1.0) / (counts + 2.0))

    def _set_bins(self, edges: Array, levels: Array) -> Self:
        self.edges_, self.levels_ = edges, levels
        self._edge_list, self._level_list = edges.tolist(), levels.tolist()
        return self

    def predict(self, Z: Array) -> Array:
        return np.asarray(
            self.levels_[np.searchsorted(self.edges_, Z[:, 0], side="right")], dtype=np.float64
        )

    def predict_one(self, z: Sequence[float]) -> float:
        return float(self._level_list[bisect_right(self._edge_list, z[0])])

    def to_params(self) -> Params:
        return {"edges": self.edges_.tolist(), "levels": self.levels_.tolist()}

    @classmethod
    def from_params(cls, params: Mapping[str, Any], n_features: int) -> Self:
        edges, levels = param_floats(params, "edges"), param_floats(params, "levels")
        if len(levels) != len(edges) + 1:
            raise ValueError("a histogram needs one more level than inner edges")
        if any(b <= a for a, b in pairwise(edges)):
            raise ValueError("histogram edges must be strictly increasing")
        if not all(0.0 <= v <= 1.0 for v in levels):
            raise ValueError("histogram levels must lie in [0, 1]")
        return cls(n_bins=len(levels))._set_bins(np.asarray(edges), np.asarray(levels))

