from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from sklearn.base import clone

from calibrators.methods import (
    METHODS,
    BetaCalibrator,
    Calibrator,
    HistogramCalibrator,
    IsotonicCalibrator,
    PlattCalibrator,
    TemperatureCalibrator,
)
from calibrators.metrics import expected_calibration_error

SINGLE = [name for name, cls in METHODS.items() if cls.n_scores == 1]
MULTI = [name for name, cls in METHODS.items() if cls.n_scores is None]


def overconfident_scores(n: int, seed: int = 0) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Logit-space scores twice as extreme as the truth, with a second weaker signal."""
    rng = np.random.default_rng(seed)
    true_logit = rng.normal(0.0, 1.5, size=n)
    correct = rng.random(n) < 1.0 / (1.0 + np.exp(-true_logit))
    second = true_logit + rng.normal(0.0, 2.0, size=n)
    return np.column_stack([2.0 * true_logit, second]), correct


@pytest.fixture(scope="module")
def training() -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    return overconfident_scores(4_000)


@pytest.mark.parametrize("name", list(METHODS))
def test_predictions_are_probabilities_and_match_the_scalar_path(
    name: str, training: tuple[NDArray[np.float64], NDArray[np.bool_]]
) -> None:
    Z, y = training
    model = METHODS[name]().fit(Z, y)
    batch = model.predict(Z[:200])
    assert batch.shape == (200,)
    assert np.all((batch >= 0) & (batch <= 1))
    single = [model.predict_one(row.tolist()) for row in Z[:200]]
    assert np.allclose(batch, single, atol=1e-12)


@pytest.mark.parametrize("name", list(METHODS))
def test_params_round_trip_through_json(
    name: str, training: tuple[NDArray[np.float64], NDArray[np.bool_]]
) -> None:
    Z, y = training
    model = METHODS[name]().fit(Z, y)
    params = json.loads(json.dumps(model.to_params()))
    restored = METHODS[name].from_params(params, Z.shape[1])
    assert np.array_equal(restored.predict(Z), model.predict(Z))


@pytest.mark.parametrize("name", list(METHODS))
def test_follows_the_estimator_contract(name: str) -> None:
    model: Calibrator = METHODS[name]()
    fresh = clone(model)
    assert fresh.get_params() == model.get_params()
    assert not [k for k in vars(fresh) if k.endswith("_") and not k.startswith("_")]


@pytest.mark.parametrize("name", [n for n in METHODS if n != "identity"])
def test_fixing_overconfidence_lowers_calibration_error(
    name: str, training: tuple[NDArray[np.float64], NDArray[np.bool_]]
) -> None:
    Z, y = training
    test_Z, test_y = overconfident_scores(20_000, seed=1)
    model = METHODS[name]().fit(Z, y)
    raw = METHODS["identity"]().predict(test_Z)
    calibrated = model.predict(test_Z)
    assert expected_calibration_error(calibrated, test_y) < 0.03
    assert expected_calibration_error(raw, test_y) > 0.05


@pytest.mark.parametrize("name", ["identity", "platt", "temperature", "beta", "isotonic"])
@given(seed=st.integers(0, 10_000))
@settings(max_examples=15, deadline=None)
def test_single_score_maps_are_monotone(name: str, seed: int) -> None:
    Z, y = overconfident_scores(500, seed=seed)
    model = METHODS[name]().fit(Z, y)
    grid = np.linspace(-20, 20, 401)[:, None]
    assert np.all(np.diff(model.predict(grid)) >= -1e-12)


@given(seed=st.integers(0, 10_000))
@settings(max_examples=15, deadline=None)
def test_fit_does_not_depend_on_row_order(seed: int) -> None:
    Z, y = overconfident_scores(300, seed=seed)
    order = np.random.default_rng(seed).permutation(len(y))
    grid = np.linspace(-8, 8, 50)[:, None]
    for cls in (IsotonicCalibrator, HistogramCalibrator, PlattCalibrator):
        a = cls().fit(Z[:, :1], y).predict(grid)
        b = cls().fit(Z[order, :1], y[order]).predict(grid)
        assert np.allclose(a, b, atol=1e-6)


def test_isotonic_levels_are_smoothed_away_from_zero_and_one() -> None:
    z = np.arange(20.0)[:, None]
    y = z[:, 0] >= 10
    model = IsotonicCalibrator().fit(z, y)
    # Two pure blocks of 10: Laplace smoothing gives 1/12 and 11/12, never 0 or 1.
    assert model.predict(np.array([[-5.0], [50.0]])).tolist() == pytest.approx([1 / 12, 11 / 12])


def test_beta_keeps_its_shape_parameters_non_negative() -> None:
    Z, y = overconfident_scores(2_000)
    model = BetaCalibrator().fit(-Z[:, :1], y)  # an anti-correlated score
    assert model.a_ >= 0 and model.b_ >= 0


def test_temperature_undoes_doubled_logits() -> None:
    Z, y = overconfident_scores(50_000, seed=3)
    assert TemperatureCalibrator().fit(Z, y).temperature_ == pytest.approx(2.0, rel=0.1)


@pytest.mark.parametrize("name", [n for n in METHODS if n != "identity"])  # identity learns nothing
def test_single_class_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="both correct and wrong"):
        METHODS[name]().fit(np.zeros((10, 2)), np.ones(10, dtype=bool))


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("platt", {"slope": "x", "intercept": 0}, "'slope' must be a finite number"),
        ("temperature", {"temperature": -1.0}, "must be positive"),
        ("beta", {"a": -1.0, "b": 0.0, "c": 0.0}, "must be >= 0"),
        ("isotonic", {"x": [0.0, 1.0], "y": [0.9, 0.1]}, "non-decreasing"),
        ("isotonic", {"x": [1.0, 0.0], "y": [0.1, 0.9]}, "sorted"),
        ("isotonic", {"x": [0.0], "y": [1.5]}, r"\[0, 1\]"),
        ("isotonic", {"x": [0.0, 1.0], "y": [0.1]}, "as many levels"),
        ("histogram", {"edges": [0.0], "levels": [0.5]}, "one more level"),
        ("logistic", {"mean": [0.0], "scale": [1.0], "coef": [1.0], "intercept": 0.0},
         "must hold 2 numbers"),
        ("binned_logistic", {"edges": [[0.0]], "weights": [[0.0, 1.0]], "intercept": 0.0},
         "must hold 2 lists"),
        ("logistic_isotonic", {"logistic": [], "isotonic": {}}, "must be objects"),
    ],
)
def test_invalid_params_are_refused(name: str, params: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        METHODS[name].from_params(params, 2 if METHODS[name].n_scores is None else 1)


def test_method_registry_covers_single_and_multi_score_methods() -> None:
    assert {"identity", "platt", "temperature", "beta", "isotonic", "histogram"} <= set(SINGLE)
    assert {"logistic", "logistic_isotonic", "binned_logistic"} <= set(MULTI)
