"""Parametric maps of one score: identity, Platt, temperature and beta calibration.

Each learns at most three numbers, so none can overfit much; they differ in the shape of the
distortion of ``sigmoid(z)`` they can undo.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
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
    sigmoid,
    training_labels,
)

__all__ = ["BetaCalibrator", "IdentityCalibrator", "PlattCalibrator", "TemperatureCalibrator"]


class IdentityCalibrator(Calibrator):
    """No calibration: the score's own probability, ``sigmoid(z)``."""

    method = "identity"
    needs_probability = True

    def fit(self, Z: Array, y: NDArray[Any]) -> Self:
        return self

    def predict(self, Z: Array) -> Array:
        return np.asarray(expit(Z[:, 0]), dtype=np.float64)

    def predict_one(self, z: Sequence[float]) -> float:
        return sigmoid(z[0])

    def to_params(self) -> Params:
        return {}

    @classmethod
    def from_params(cls, params: Mapping[str, Any], n_features: int) -> Self:
        return cls()


class PlattCalibrator(Calibrator):
    """Platt scaling: ``p = sigmoid(a·z + b)``.

    Platt, "Probabilistic outputs for support vector machines", 1999. Fitted by (barely
    regularised) logistic regression on the score.
    """

    method = "platt"

    def fit(self, Z: Array, y: NDArray[Any]) -> Self:
        model = logistic_regression(1e4).fit(Z[:, :1], training_labels(y))
        self.slope_ = float(model.coef_[0, 0])
        self.intercept_ = float(model.intercept_[0])
        return self

    def predict(self, Z: Array) -> Array:
        return np.asarray(expit(self.slope_ * Z[:, 0] + self.intercept_), dtype=np.float64)

    def predict_one(self, z: Sequence[float]) -> float:
        return sigmoid(self.slope_ * z[0] + self.intercept_)

    def to_params(self) -> Params:
        return {"slope": self.slope_, "intercept": self.intercept_}

    @classmethod
    def from_params(cls, params: Mapping[str, Any], n_features: int) -> Self:
        fitted = cls()
        fitted.slope_ = param_float(params, "slope")
        fitted.intercept_ = param_float(params, "intercept")
        return fitted


class TemperatureCalibrator(Calibrator):
    """Temperature scaling: ``p = sigmoid(z / T)``.

    Guo et al., "On Calibration of Modern Neural Networks", ICML 2017. One parameter, so it
    cannot overfit; it only sharpens or softens the score. T minimises the log loss.
    """

    method = "temperature"
    needs_probability = True

    def fit(self, Z: Array, y: NDArray[Any]) -> Self:
        z = Z[:, 0]
        labels = training_labels(y)

        def log_loss(log_t: float) -> float:
            logits = z / math.exp(log_t)
            # log(1 + e^x) - y·x is the binary cross-entropy in logits; logaddexp is stable.
            return float(np.mean(np.logaddexp(0.0, logits) - labels * logits))

        from scipy.optimize import minimize_scalar

        result = minimize_scalar(log_loss, bounds=(-5.0, 5.0), method="bounded")
        self.temperature_ = float(math.exp(result.x))
        return self

    def predict(self, Z: Array) -> Array:
        return np.asarray(expit(Z[:, 0] / self.temperature_), dtype=np.float64)

    def predict_one(self, z: Sequence[float]) -> float:
        return sigmoid(z[0] / self.temperature_)

    def to_params(self) -> Params:
        return {"temperature": self.temperature_}

    @classmethod
    def from_params(cls, params: Mapping[str, Any], n_features: int) -> Self:
        temperature = param_float(params, "temperature")
        if temperature <= 0:
            raise ValueError("parameter 'temperature' must be positive")
        fitted = cls()
        fitted.temperature_ = temperature
        return fitted


class BetaCalibrator(Calibrator):
    """Beta calibration: ``p = sigmoid(a·ln s − b·ln(1 − s) + c)`` with ``a, b >= 0``.

    Kull, Silva Filho and Flach, "Beta calibration", AISTATS 2017. Fits the asymmetric
    distortions of a probability that Platt scaling cannot; ``s = sigmoid(z)``. A negative
    coefficient is refitted at zero, as the paper prescribes, so the map stays monotone.
    """

    method = "beta"
    needs_probability = True

    @staticmethod
    def _design(z: Array) -> Array:
        # ln s = -log(1 + e^-z) and -ln(1 - s) = log(1 + e^z), computed stably from the logit.
        return np.column_stack([-np.logaddexp(0.0, -z), np.logaddexp(0.0, z)])

    def fit(self, Z: Array, y: NDArray[Any]) -> Self:
        labels = training_labels(y)
        design = self._design(Z[:, 0])
        keep = [0, 1]
        while keep:
            model = logistic_regression(1e4).fit(design[:, keep], labels)
            coefs = dict(zip(keep, model.coef_[0].tolist(), strict=True))
            if min(coefs.values()) >= 0:
                self.a_, self.b_ = coefs.get(0, 0.0), coefs.get(1, 0.0)
                self.c_ = float(model.intercept_[0])
                return self
            # The paper's fix for a negative shape parameter: refit with it fixed at zero.
            keep.remove(min(coefs, key=coefs.__getitem__))
        # Neither shape is usable: the score carries no increasing signal, so predict the base rate.
        rate = float(labels.mean())
        self.a_, self.b_, self.c_ = 0.0, 0.0, math.log(rate / (1.0 - rate))
        return self

    def predict(self, Z: Array) -> Array:
        design = self._design(Z[:, 0])
        return np.asarray(
            expit(self.a_ * design[:, 0] + self.b_ * design[:, 1] + self.c_), dtype=np.float64
        )

    def predict_one(self, z: Sequence[float]) -> float:
        x = z[0]
        # log(1 + e^x) without overflow for large |x|.
        log1p_exp = x + math.log1p(math.exp(-x)) if x > 0 else math.log1p(math.exp(x))
        log_s = x - log1p_exp
        return sigmoid(self.a_ * log_s + self.b_ * log1p_exp + self.c_)

    def to_params(self) -> Params:
        return {"a": self.a_, "b": self.b_, "c": self.c_}

    @classmethod
    def from_params(cls, params: Mapping[str, Any], n_features: int) -> Self:
        fitted = cls()
        fitted.a_, fitted.b_, fitted.c_ = (param_float(params, k) for k in ("a", "b", "c"))
        if fitted.a_ < 0 or fitted.b_ < 0:
            raise ValueError("parameters 'a' and 'b' must be >= 0")
        return fitted

