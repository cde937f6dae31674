"""Calibration methods: estimators that map scores in logit space to P(correct).

Every estimator follows the scikit-learn contract — ``__init__`` only stores hyper-parameters,
``fit(Z, y)`` learns state in attributes ending in ``_`` and returns ``self`` — and adds:

- ``predict(Z)``: calibrated probabilities for a batch, vectorised;
- ``predict_one(z)``: the same for one row in plain Python. A request decides one response at a
  time, where NumPy's per-call overhead (microseconds per array op) would cost more than the
  arithmetic; the scalar path keeps a single prediction within a few microseconds;
- ``to_params()`` / ``from_params()``: the fitted state as plain JSON numbers, so an artifact
  is data and loading it never executes code.

Inputs ``Z`` have shape ``(n_rows, n_features)``: probability scores already mapped to log-odds
(see :mod:`calibrators.signals`), so ``sigmoid(z)`` recovers the raw probability.
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from sklearn.linear_model import LogisticRegression

# scikit-learn and SciPy are imported inside the ``fit`` methods only: the gateway loads
# artifacts and predicts with NumPy alone, and importing those libraries costs a worker
# seconds and ~100 MiB before it can answer its first request.

__all__ = [
    "METHODS",
    "BetaCalibrator",
    "BinnedLogisticCalibrator",
    "Calibrator",
    "HistogramCalibrator",
    "IdentityCalibrator",
    "IsotonicCalibrator",
    "LogisticCalibrator",
    "LogisticIsotonicCalibrator",
    "PlattCalibrator",
    "TemperatureCalibrator",
]

Array = NDArray[np.float64]
Params = dict[str, Any]


def _sigmoid(x: float) -> float:
    # Branches keep math.exp from overflowing for large |x|.
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def _floats(params: Mapping[str, Any], key: str, *, length: int | None = None) -> list[float]:
    """A list of finite floats from fitted params, or ValueError naming what is wrong."""
    value = params.get(key)
    if not isinstance(value, list) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value
    ):
        raise ValueError(f"parameter {key!r} must be a list of numbers")
    numbers = [float(v) for v in value]
    if not all(math.isfinite(v) for v in numbers):
        raise ValueError(f"parameter {key!r} holds a non-finite number")
    if length is not None and len(numbers) != length:
        raise ValueError(f"parameter {key!r} must hold {length} numbers, not {len(numbers)}")
    return numbers


def _float(params: Mapping[str, Any], key: str) -> float:
    value = params.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"parameter {key!r} must be a finite number")
    return float(value)


def _expit(x: NDArray[Any]) -> Array:
    """The logistic sigmoid ``1 / (1 + e^-x)``, elementwise: SciPy's ``expit`` in NumPy.

    Built from ``e^-|x|`` on both sides of zero, so it never overflows (an overflow warning
    is an error under the test settings).
    """
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(-np.abs(x))
    return np.asarray(np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)), dtype=np.float64)


def _logistic_regression(C: float) -> LogisticRegression:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, max_iter=1000)


class _Estimator:
    """scikit-learn's ``get_params``/``set_params`` contract, without importing scikit-learn.

    The hyper-parameters are the ``__init__`` arguments, stored under the same names, so
    ``sklearn.base.clone`` copies a calibrator as it copies any estimator.
    """

    @classmethod
    def _get_param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return sorted(
            name for name, p in signature.parameters.items()
            if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        )

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params: Any) -> Self:
        valid = self._get_param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"invalid parameter {name!r} for {type(self).__name__}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


def _labels(y: NDArray[Any]) -> NDArray[np.int64]:
    labels = np.asarray(y).astype(np.int64)
    if np.unique(labels).size < 2:
        raise ValueError("fitting needs both correct and wrong answers")
    return labels


class Calibrator(_Estimator, ABC):
    """Base class: maps logit-space scores to P(correct)."""

    method: ClassVar[str]
    #: 1 for single-score methods; None for methods that combine any number of scores.
    n_scores: ClassVar[int | None] = 1
    #: Whether the score must express a probability (the method starts from ``sigmoid(z)``).
    needs_probability: ClassVar[bool] = False

    @abstractmethod
    def fit(self, Z: Array, y: NDArray[Any]) -> Self: ...

    @abstractmethod
    def predict(self, Z: Array) -> Array: ...

    @abstractmethod
    def predict_one(self, z: Sequence[float]) -> float: ...

    @abstractmethod
    def to_params(self) -> Params: ...

    @classmethod
    @abstractmethod
    def from_params(cls, params: Mapping[str, Any], n_features: int) -> Self: ...


class IdentityCalibrator(Calibrator):
    """No calibration: the score's own probability, ``sigmoid(z)``."""

    method = "identity"
    needs_probability = True

    def fit(self, Z: Array, y: NDArray[Any]) -> Self:
        return self

    def predict(self, Z: Array) -> Array:
        return np.asarray(_expit(Z[:, 0]), dtype=np.float64)

    def predict_one(self, z: Sequence[float]) -> float:
        return _sigmoid(z[0])

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
        model = _logistic_regression(1e4).fit(Z[:, :1], _labels(y))
        self.slope_ = float(model.coef_[0, 0])
        self.intercept_ = float(model.intercept_[0])
        return self

    def predict(self, Z: Array) -> Array:
        return np.asarray(_expit(self.slope_ * Z[:, 0] + self.intercept_), dtype=np.float64)

    def predict_one(self, z: Sequence[float]) -> float:
        return _sigmoid(self.slope_ * z[0] + self.intercept_)

    def to_params(self) -> Params:
        return {"slope": self.slope_, "intercept": self.intercept_}

    @classmethod
    def from_params(cls, params: Mapping[str, Any], n_features: int) -> Self:
        fitted = cls()
        fitted.slope_ = _float(params, "slope")
        fitted.intercept_ = _float(params, "intercept")
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
        labels = _labels(y)

        def log_loss(log_t: float) -> float:
            logits = z / math.exp(log_t)
            # log(1 + e^x) - y·x is the binary cross-entropy in logits; logaddexp is stable.
            return float(np.mean(np.logaddexp(0.0, logits) - labels * logits))

        from scipy.optimize import minimize_scalar

        result = minimize_scalar(log_loss, bounds=(-5.0, 5.0), method="bounded")
        self.temperature_ = float(math.exp(result.x))
        return self

    def predict(self, Z: Array) -> Array:
        return np.asarray(_expit(Z[:, 0] / self.temperature_), dtype=np.float64)

    def predict_one(self, z: Sequence[float]) -> float:
        return _sigmoid(z[0] / self.temperature_)

    def to_params(self) -> Params:
        return {"temperature": self.temperature_}

    @classmethod
    def from_params(cls, params: Mapping[str, Any], n_features: int) -> Self:
        temperature = _float(params, "temperature")
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
        labels = _labels(y)
        design = self._design(Z[:, 0])
        keep = [0, 1]
        while keep:
            model = _logistic_regression(1e4).fit(design[:, keep], labels)
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
            _expit(self.a_ * design[:, 0] + self.b_ * design[:, 1] + self.c_), dtype=np.float64
        )

    def predict_one(self, z: Sequence[float]) -> float:
        x = z[0]
        # log(1 + e^x) without overflow for large |x|.
        log1p_exp = x + math.log1p(math.exp(-x)) if x > 0 else math.log1p(math.exp(x))
        log_s = x - log1p_exp
        return _sigmoid(self.a_ * log_s + self.b_ * log1p_exp + self.c_)

    def to_params(self) -> Params:
        return {"a": self.a_, "b": self.b_, "c": self.c_}

    @classmethod
    def from_params(cls, params: Mapping[str, Any], n_features: int) -> Self:
        fitted = cls()
        fitted.a_, fitted.b_, fitted.c_ = (_float(params, k) for k in ("a", "b", "c"))
        if fitted.a_ < 0 or fitted.b_ < 0:
            raise ValueError("parameters 'a' and 'b' must be >= 0")
        return fitted


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
        return self._set_steps(*_smoothed_isotonic(Z[:, 0], _labels(y)))

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
        xs, ys = _floats(params, "x"), _floats(params, "y")
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
        labels = _labels(y)
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
        edges, levels = _floats(params, "edges"), _floats(params, "levels")
        if len(levels) != len(edges) + 1:
            raise ValueError("a histogram needs one more level than inner edges")
        if any(b <= a for a, b in pairwise(edges)):
            raise ValueError("histogram edges must be strictly increasing")
        if not all(0.0 <= v <= 1.0 for v in levels):
            raise ValueError("histogram levels must lie in [0, 1]")
        return cls(n_bins=len(levels))._set_bins(np.asarray(edges), np.asarray(levels))


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
        model = _logistic_regression(self.C)
        model.fit((Z - self.mean_) / self.scale_, _labels(y))
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
        return np.asarray(_expit(self.decision_function(Z)), dtype=np.float64)

    def predict_one(self, z: Sequence[float]) -> float:
        return _sigmoid(self.decision_one(z))

    def to_params(self) -> Params:
        return {
            "mean": self.mean_.tolist(),
            "scale": self.scale_.tolist(),
            "coef": self.coef_.tolist(),
            "intercept": self.intercept_,
        }

    @classmethod
    def from_params(cls, params: Mapping[str, Any], n_features: int) -> Self:
        scale = np.asarray(_floats(params, "scale", length=n_features))
        if np.any(scale <= 0):
            raise ValueError("parameter 'scale' must be positive")
        return cls()._set_weights(
            np.asarray(_floats(params, "mean", length=n_features)), scale,
            np.asarray(_floats(params, "coef", length=n_features)), _float(params, "intercept"),
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
        labels = _labels(y)
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
        model = _logistic_regression(self.C).fit(self._one_hot(Z), _labels(y))
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
        return np.asarray(_expit(total), dtype=np.float64)

    def predict_one(self, z: Sequence[float]) -> float:
        total = self.intercept_
        for value, (edges, weights) in zip(z, self._tables, strict=True):
            total += weights[bisect_right(edges, value)]
        return _sigmoid(total)

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
            e = _floats({"edges": edges_in[j]}, "edges")
            w = _floats({"weights": weights_in[j]}, "weights", length=len(e) + 1)
            if any(b <= a for a, b in pairwise(e)):
                raise ValueError("bin edges must be strictly increasing")
            edges.append(np.asarray(e))
            weights.append(np.asarray(w))
        return cls(n_bins=max(len(w) for w in weights))._set_model(
            edges, weights, _float(params, "intercept")
        )


#: Every method by its name in artifacts and on the command line.
METHODS: Mapping[str, type[Calibrator]] = {
    cls.method: cls
    for cls in (
        IdentityCalibrator,
        PlattCalibrator,
        TemperatureCalibrator,
        BetaCalibrator,
        IsotonicCalibrator,
        HistogramCalibrator,
        LogisticCalibrator,
        LogisticIsotonicCalibrator,
        BinnedLogisticCalibrator,
    )
}
