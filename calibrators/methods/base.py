"""What every calibration method shares: the estimator contract and reading fitted parameters.

:class:`Calibrator` is the contract (scikit-learn's, plus ``predict_one`` and
``to_params``/``from_params``); the functions below are the small pieces the methods build on:
the logistic sigmoid for one value and for an array, the labels a fit accepts, scikit-learn's
logistic regression (imported when a method fits, never when it predicts) and the checked
reading of fitted parameters from an artifact.
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from sklearn.linear_model import LogisticRegression

__all__ = [
    "Array",
    "Calibrator",
    "Params",
    "expit",
    "logistic_regression",
    "param_float",
    "param_floats",
    "sigmoid",
    "training_labels",
]

Array = NDArray[np.float64]
Params = dict[str, Any]


def sigmoid(x: float) -> float:
    # Branches keep math.exp from overflowing for large |x|.
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def param_floats(params: Mapping[str, Any], key: str, *, length: int | None = None) -> list[float]:
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


def param_float(params: Mapping[str, Any], key: str) -> float:
    value = params.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"parameter {key!r} must be a finite number")
    return float(value)


def expit(x: NDArray[Any]) -> Array:
    """The logistic sigmoid ``1 / (1 + e^-x)``, elementwise: SciPy's ``expit`` in NumPy.

    Built from ``e^-|x|`` on both sides of zero, so it never overflows (an overflow warning
    is an error under the test settings).
    """
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(-np.abs(x))
    return np.asarray(np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)), dtype=np.float64)


def logistic_regression(C: float) -> LogisticRegression:
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


def training_labels(y: NDArray[Any]) -> NDArray[np.int64]:
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

