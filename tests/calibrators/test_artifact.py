from __future__ import annotations

import json
import os
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calibrators.artifact import FittedCalibrator, load_artifact, save_artifact
from calibrators.dataset import read_calibration_data
from calibrators.errors import ArtifactError
from calibrators.selection import fit_calibrator
from calibrators.signals import ScoreKind, parse_score_spec
from policies.risk_control import one_row_per_group
from tests.support.fuzzing import replace_at
from tests.support.shipped_data import NQ_GPT35, NQ_SCORES


@pytest.fixture(scope="module")
def fitted() -> FittedCalibrator:
    specs = [parse_score_spec(s) for s in NQ_SCORES]
    data = read_calibration_data(NQ_GPT35, scores=specs, label="correct", group="group")
    return fit_calibrator(data.subset(np.arange(3_000)), method="logistic_isotonic").calibrator


@pytest.fixture
def saved(fitted: FittedCalibrator, tmp_path: Path) -> Path:
    path = tmp_path / "calibrator.json"
    save_artifact(fitted, path)
    return path


def test_round_trip_keeps_predictions_and_description(
    fitted: FittedCalibrator, saved: Path
) -> None:
    loaded = load_artifact(saved)
    rows = np.array([[0.9, -0.1, -0.5, 0.8], [0.2, -1.6, -9.0, 0.1]])
    assert np.array_equal(loaded.predict(rows), fitted.predict(rows))
    assert loaded.predict_one(rows[0].tolist()) == pytest.approx(fitted.predict_one(rows[0]))
    assert loaded.version == fitted.version
    assert loaded.features == fitted.features
    assert loaded.training == fitted.training
    assert loaded.cross_validation == fitted.cross_validation
    assert loaded.created_at == fitted.created_at


def test_artifact_is_self_describing_plain_json(saved: Path) -> None:
    document = json.loads(saved.read_text())
    assert document["format"] == "basguard.calibrator"
    assert document["format_version"] == 1
    assert document["method"] == "logistic_isotonic"
    assert [f["name"] for f in document["features"]] == list(NQ_SCORES)
    assert document["training"]["rows"] == 3_000
    assert document["training"]["fingerprint"].startswith("sha256:")
    assert document["cross_validation"]["selected"].startswith("logistic_isotonic(")
    assert document["cross_validation"]["candidates"][0]["fold_bas"]
    assert document["created_at"]
    assert document["checksum"].startswith("sha256:")


def test_predict_features_by_name(fitted: FittedCalibrator) -> None:
    named = {"agreement": 0.8, "token_prob": 0.9, "mean_logprob": -0.1, "sum_logprob": -0.5}
    assert fitted.predict_features(named) == fitted.predict_one([0.9, -0.1, -0.5, 0.8])
    with pytest.raises(KeyError):
        fitted.predict_features({"token_prob": 0.9})


def test_predict_checks_the_number_of_scores(fitted: FittedCalibrator) -> None:
    with pytest.raises(ValueError, match=r"shape \(n, 4\)"):
        fitted.predict(np.zeros((3, 2)))


def test_truncated_artifact(saved: Path) -> None:
    saved.write_bytes(saved.read_bytes()[:200])
    with pytest.raises(ArtifactError, match=r"not a valid JSON document \(truncated\?\)"):
        load_artifact(saved)


def test_tampered_parameter_fails_the_checksum(saved: Path) -> None:
    document = json.loads(saved.read_text())
    document["params"]["logistic"]["intercept"] += 1.0
    saved.write_text(json.dumps(document))
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        load_artifact(saved)


def test_invalid_parameters_are_reported_even_with_a_valid_checksum(
    fitted: FittedCalibrator, tmp_path: Path
) -> None:
    from calibrators.artifact import _checksum

    body = fitted._document_body()
    body["params"]["isotonic"]["y"] = list(reversed(body["params"]["isotonic"]["y"]))
    path = tmp_path / "forged.json"
    path.write_text(json.dumps({**body, "checksum": _checksum(body)}))
    with pytest.raises(ArtifactError, match="invalid logistic_isotonic parameters"):
        load_artifact(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "something-else"}, "not a basguard calibrator"),
        ({"format_version": 99}, "unsupported format_version 99"),
    ],
)
def test_foreign_or_future_documents(saved: Path, change: dict[str, object], message: str) -> None:
    document = {**json.loads(saved.read_text()), **change}
    saved.write_text(json.dumps(document))
    with pytest.raises(ArtifactError, match=message):
        load_artifact(saved)


def test_missing_artifact(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="cannot read the artifact"):
        load_artifact(tmp_path / "absent.json")


def test_failed_save_leaves_the_old_artifact(fitted: FittedCalibrator, saved: Path) -> None:
    before = saved.read_bytes()
    with pytest.raises(ArtifactError, match="cannot write"):
        save_artifact(fitted, saved / "inside-a-file.json")
    assert saved.read_bytes() == before
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o027, 0o640)])
def test_artifacts_are_readable_as_the_umask_allows(
    fitted: FittedCalibrator, tmp_path: Path, umask: int, mode: int
) -> None:
    # A calibrator is not a secret: the gateway may run as another user than the one who fit it.
    previous = os.umask(umask)
    try:
        save_artifact(fitted, tmp_path / "new.json")
        (tmp_path / "replaced.json").write_text("old")
        save_artifact(fitted, tmp_path / "replaced.json")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "replaced.json").stat().st_mode) == mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.json", "replaced.json"]


def forge(body: Any, path: Path) -> Path:
    """Write ``body`` with the checksum it needs, as someone who knows the format could."""
    from calibrators.artifact import _checksum

    path.write_bytes(orjson.dumps({**body, "checksum": _checksum(body)}
                                  if isinstance(body, dict) else body))
    return path


def test_a_deeply_nested_document_is_an_artifact_error(
    fitted: FittedCalibrator, tmp_path: Path
) -> None:
    # Deep enough for the checksum's serialiser, shallow enough for the JSON parser.
    path = tmp_path / "deep.json"
    body = fitted._document_body()
    path.write_bytes(orjson.dumps(body)[:-1] + b', "extra": ' + b"[" * 1000 + b"]" * 1000 + b"}")
    with pytest.raises(ArtifactError, match="nested too deeply"):
        load_artifact(path)


def test_a_path_the_os_refuses_is_an_artifact_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="cannot read the artifact"):
        load_artifact(tmp_path / "nul\x00byte.json")


JSON = st.recursive(
    # What JSON (as orjson reads it) can hold: 64-bit integers, finite floats.
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)



@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.lists(st.integers(min_value=0, max_value=50), max_size=5), value=JSON)
def test_any_forged_document_is_loaded_or_refused_as_an_artifact_error(
    fitted: FittedCalibrator, tmp_path: Path, path: list[int], value: Any
) -> None:
    # The checksum is right, so every field is reached: the loader's only way out is its error.
    forged = forge(replace_at(fitted._document_body(), path, value), tmp_path / "forged.json")
    try:
        calibrator = load_artifact(forged)
    except ArtifactError as exc:
        assert str(exc).startswith(f"{forged}: ")
    else:  # a harmless change (a report's figure, a date): still a working calibrator
        row = [0.5 if spec.kind == ScoreKind.PROBABILITY else -0.5 for spec in calibrator.features]
        assert 0.0 <= calibrator.predict_one(row) <= 1.0


def test_a_fit_records_its_answers_on_its_training_data(fitted: FittedCalibrator,
                                                        saved: Path) -> None:
    # The curve is the final calibrator's: one row per training question, counted exactly.
    curve = fitted.training.curve if fitted.training is not None else None
    assert curve is not None
    specs = [parse_score_spec(s) for s in NQ_SCORES]
    data = read_calibration_data(NQ_GPT35, scores=specs, label="correct", group="group")
    rows = data.subset(np.arange(3_000))
    kept = one_row_per_group(rows.groups, seed=0)
    columns = [rows.specs.index(spec) for spec in fitted.features]
    p = fitted.predict(rows.scores[:, columns])[kept]
    wrong = ~rows.correct[kept]
    assert curve.answered[-1] == rows.n_groups == kept.size
    assert len(curve.thresholds) <= 512
    for t, n, k in zip(curve.thresholds, curve.answered, curve.errors, strict=True):
        assert n == np.sum(p >= t) and k == np.sum(wrong[p >= t])
    assert load_artifact(saved).training == fitted.training


def test_an_artifact_without_a_curve_keeps_its_version(fitted: FittedCalibrator,
                                                      tmp_path: Path) -> None:
    # Artifacts written before the curve existed lack the field: loaded and written again,
    # they keep their checksum, so certificates and decisions that name them stay valid.
    assert fitted.training is not None
    old = replace(fitted, training=fitted.training.model_copy(update={"curve": None}))
    body = old._document_body()
    assert "curve" not in body["training"]
    path = forge(body, tmp_path / "old.json")
    loaded = load_artifact(path)
    assert loaded.training is not None and loaded.training.curve is None
    assert loaded.version == old.version == json.loads(path.read_text())["checksum"][7:19]


@pytest.mark.parametrize(("curve", "message"), [
    ({"thresholds": [0.9, 0.8], "answered": [1], "errors": [0]}, "of one length"),
    ({"thresholds": [0.8, 0.9], "answered": [1, 2], "errors": [0, 0]}, "strictly decreasing"),
    ({"thresholds": [1.5], "answered": [1], "errors": [0]}, "strictly decreasing"),
    ({"thresholds": [0.9, 0.8], "answered": [2, 2], "errors": [0, 0]}, "strictly increasing"),
    ({"thresholds": [0.9, 0.8], "answered": [1, 2], "errors": [2, 2]}, "never decrease"),
    ({"thresholds": [0.9, 0.8], "answered": [1, 2], "errors": [1, 0]}, "never decrease"),
])
def test_a_forged_curve_is_refused(fitted: FittedCalibrator, tmp_path: Path,
                                   curve: dict[str, list[float]], message: str) -> None:
    body = fitted._document_body()
    body["training"]["curve"] = curve
    with pytest.raises(ArtifactError, match=rf"invalid artifact field 'training.curve'.*{message}"):
        load_artifact(forge(body, tmp_path / "forged.json"))
