"""Several scores combined: logistic regression, plain, recalibrated by isotonic, or over bins.

These are the methods with ``n_scores = None``: ``auto`` offers them the scores that are best
alone (see :mod:`calibrators.selection`).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import Any, Self

import numpy as np
from numpy.typing import NDArray

from .base import (
    Array,
    Calibrator,
    Params,
    expit,
    logistic_regression,
    param_float,
    param_floats,
    sigmoid,
    training_labels,
)
from .binning import IsotonicCalibrator

__all__ = ["BinnedLogisticCalibrator", "LogisticCalibrator", "LogisticIsotonicCalibrator"]


class LogisticCalibrator(Calibrator):
    """Logistic regression over several standardised scores: ``p = sigmoid(w·ẑ + b)``.

    Parameters
    ----------
    C : float, default=1.0
        Inverse L2 regularisation strength, as in scikit-learn.
    """

    method = "logistic"
    n_scores = None

    def __init__(self, C: float = 1.0) -> None:
        self.C = C

    def fit(self, Z: Array, y: NDArray[Any]) -> Self:
        self.mean_ = Z.mean(axis=0)
        scale = Z.std(axis=0)
        self.scale_ = np.where(scale > 0, scale, 1.0)
        model = logistic_regression(self.C)
        model.fit((Z - self.mean_) / self.scale_, training_labels(y))
        return self._set_weights(
            self.mean_, self.scale_, np.asarray(model.coef_[0], dtype=np.float64),
            float(model.intercept_[0]),
        )

    def _set_weights(self, mean: Array, scale: Array, coef: Array, intercept: float) -> Self:
        self.mean_, self.scale_, self.coef_, self.intercept_ = mean, scale, coef, intercept
        self._terms = list(zip(mean.tolist(), scale.tolist(), coef.tolist(), strict=True))
        return self

    def decision_function(self, Z: Array) -> Array:
        return np.asarray(((Z - self.mean_) / self.scale_) @ self.coef_ + self.intercept_)

    def decision_one(self, z: Sequence[float]) -> float:
        total = self.intercept_
        for value, (mean, scale, weight) in zip(z, self._terms, strict=True):
            total += weight * (value - mean) / scale
        return total

    def predict(self, Z: Array) -> Array:
        return np.asarray(expit(self.decision_function(Z)), dtype=np.float64)

    def predict_one(self, z: Sequence[float]) -> float:
        return sigmoid(self.decision_one(z))

    def to_params(self) -> Params:
        return {
            "mean": self.mean_.tolist(),
            "scale": self.scale_.tolist(),
            "coef": self.coef_.tolist(),
            "intercept": self.intercept_,
        }

    @classmethod
    def from_params(cls, params: Mapping[str, Any], n_features: int) -> Self:
        scale = np.asarray(param_floats(params, "scale", length=n_features))
        if np.any(scale <= 0):
            raise ValueError("parameter 'scale' must be positive")
        return cls()._set_weights(
            np.asarray(param_floats(params, "mean", length=n_features)), scale,
            np.asarray(param_floats(params, "coef", length=n_features)),
            param_float(params, "intercept"),
        )


class LogisticIsotonicCalibrator(Calibrator):
    """Logistic regression over several scores, recalibrated by smoothed isotonic regression.

    The logistic model finds the best linear combination of the signals for ranking; the
    isotonic step then fixes its probabilities where the true relation is not a sigmoid.

    Parameters
    ----------
    C : float, default=1.0
        Inverse L2 regularisation strength of the logistic step.
    """

    method = "logistic_isotonic"
    n_scores = None

    def __init__(self, C: float = 1.0) -> None:
        self.C = C

    def fit(self, Z: Array, y: NDArray[Any]) -> Self:
        labels = training_labels(y)
        self.logistic_ = LogisticCalibrator(C=self.C).fit(Z, labels)
        combined = self.logistic_.decision_function(Z)
        self.isotonic_ = IsotonicCalibrator().fit(combined[:, None], labels)
        return self

    def predict(self, Z: Array) -> Array:
        return self.isotonic_.predict(self.logistic_.decision_function(Z)[:, None])

    def predict_one(self, z: Sequence[float]) -> float:
        return self.isotonic_.predict_one((self.logistic_.decision_one(z),))

    def to_params(self) -> Params:
        return {"logistic": self.logistic_.to_params(), "isotonic": self.isotonic_.to_params()}

    @classmethod
    def from_params(cls, params: Mapping[str, Any], n_features: int) -> Self:
        logistic, isotonic = params.get("logistic"), params.get("isotonic")
        if not isinstance(logistic, dict) or not isinstance(isotonic, dict):
            raise ValueError("parameters 'logistic' and 'isotonic' must be objects")
        fitted = cls()
        fitted.logistic_ = LogisticCalibrator.from_params(logistic, n_features)
        fitted.isotonic_ = IsotonicCalibrator.from_params(isotonic, 1)
        return fitted


class BinnedLogisticCalibrator(Calibrator):
    """An additive logistic model over binned scores: ``p = sigmoid(b + Σ_j w_j[bin_j(z_j)])``.

    Each score is cut into equal-mass bins and every bin learns its own weight, so each signal
    gets a free-form monotone-or-not shape (a generalised additive model with step functions;
    Hastie and Tibshirani 1990) while the signals still combine additively. This catches what a
    straight logistic model misses, such as a discrete agreement score whose log-odds are not
    linear, and a single prediction is one bisect per score.

    Parameters
    ----------
    n_bins : int, default=10
        Equal-mass bins per score (fewer when a score has fewer distinct values).
    C : float, default=1.0
        Inverse L2 regularisation strength over the bin weights.
    """

    method = "binned_logistic"
    n_scores = None

    def __init__(self, n_bins: int = 10, C: float = 1.0) -> None:
        self.n_bins = n_bins
        self.C = C

    def _one_hot(self, Z: Array) -> Array:
        blocks = []
        for j, edges in enumerate(self.edges_):
            bins = np.searchsorted(edges, Z[:, j], side="right")
            block = np.zeros((Z.shape[0], edges.size + 1))
            block[np.arange(Z.shape[0]), bins] = 1.0
            blocks.append(block)
        return np.hstack(blocks)

    def fit(self, Z: Array, y: NDArray[Any]) -> Self:
        quantiles = np.linspace(0, 1, self.n_bins + 1)[1:-1]
        self.edges_ = [np.unique(np.quantile(Z[:, j], quantiles)) for j in range(Z.shape[1])]
        model = logistic_regression(self.C).fit(self._one_hot(Z), training_labels(y))
        splits = np.cumsum([edges.size + 1 for edges in self.edges_])[:-1]
        weights = np.split(np.asarray(model.coef_[0], dtype=np.float64), splits)
        return self._set_model(self.edges_, weights, float(model.intercept_[0]))

    def _set_model(self, edges: list[Array], weights: list[Array], intercept: float) -> Self:
        self.edges_, self.weights_, self.intercept_ = edges, weights, intercept
        self._tables = [(e.tolist(), w.tolist()) for e, w in zip(edges, weights, strict=True)]
        return self

    def predict(self, Z: Array) -> Array:
        total = np.full(Z.shape[0], self.intercept_)
        for j, (edges, weights) in enumerate(zip(self.edges_, self.weights_, strict=True)):
            total += weights[np.searchsorted(edges, Z[:, j], side="right")]
        return np.asarray(expit(total), dtype=np.float64)

    def predict_one(self, z: Sequence[float]) -> float:
        total = self.intercept_
        for value, (edges, weights) in zip(z, self._tables, strict=True):
            total += weights[bisect_right(edges, value)]
        return sigmoid(total)

    def to_params(self) -> Params:
        return {
            "edges": [e.tolist() for e in self.edges_],
            "weights": [w.tolist() for w in self.weights_],
            "intercept": self.intercept_,
        }

    @classmethod
    def from_params(cls, params: Mapping[str, Any], n_features: int) -> Self:
        edges_in, weights_in = params.get("edges"), params.get("weights")
        if not isinstance(edges_in, list) or not isinstance(weights_in, list):
            raise ValueError("parameters 'edges' and 'weights' must be lists, one per score")
        if len(edges_in) != n_features or len(weights_in) != n_features:
            raise ValueError(f"parameters 'edges' and 'weights' must hold {n_features} lists")
        edges, weights = [], []
        for j in range(n_features):
            e = param_floats({"edges": edges_in[j]}, "edges")
            w = param_floats({"weights": weights_in[j]}, "weights", length=len(e) + 1)
            if any(b <= a for a, b in pairwise(e)):
                raise ValueError("bin edges must be strictly increasing")
            edges.append(np.asarray(e))
            weights.append(np.asarray(w))
        return cls(n_bins=max(len(w) for w in weights))._set_model(
            edges, weights, param_float(params, "intercept")
        )

