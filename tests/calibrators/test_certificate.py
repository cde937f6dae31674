"""Risk certificate files: round trip, and every malformed file refused with a reason."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from calibrators.artifact import FittedCalibrator
from calibrators.certificate import (
    CERTIFICATE_FORMAT,
    RiskCertificate,
    certificate_for,
    load_certificate,
    save_certificate,
)
from calibrators.certification import certify_calibrator
from calibrators.dataset import calibration_data_from_records
from calibrators.documents import document_checksum
from calibrators.errors import CertificateError
from calibrators.methods import PlattCalibrator
from calibrators.selection import fit_calibrator
from calibrators.signals import ScoreKind, ScoreSpec

SPEC = ScoreSpec("token_prob", ScoreKind.PROBABILITY)


@pytest.fixture
def certificate() -> tuple[RiskCertificate, FittedCalibrator]:
    rng = np.random.default_rng(0)
    p = rng.uniform(0.01, 0.99, size=2000)
    records = [{"token_prob": float(x), "correct": bool(rng.uniform() < x)} for x in p]
    data = calibration_data_from_records(records, source="memory", scores=[SPEC], label="correct")
    estimator = PlattCalibrator().fit(np.log(p / (1 - p))[:, None], data.correct)
    calibrator = FittedCalibrator(estimator=estimator, features=(SPEC,))
    outcome = certify_calibrator(calibrator, data, max_error_rate=0.1, confidence=0.9,
                                 group_field=None)
    return certificate_for(calibrator, outcome, source="memory",
                           fingerprint=data.fingerprint(), label="correct"), calibrator


def test_a_certificate_round_trips(certificate: tuple[RiskCertificate, FittedCalibrator],
                                   tmp_path: Path) -> None:
    document, calibrator = certificate
    path = tmp_path / "nested" / "risk.json"
    save_certificate(document, path)
    assert load_certificate(path, calibrator=calibrator) == document
    assert document.threshold is not None and document.calibrator.version == calibrator.version
    assert not list(path.parent.glob(".*.tmp"))  # the atomic write leaves nothing behind


def test_the_version_is_the_start_of_the_files_checksum(
        certificate: tuple[RiskCertificate, FittedCalibrator], tmp_path: Path) -> None:
    document, calibrator = certificate
    path = tmp_path / "risk.json"
    save_certificate(document, path)
    checksum = json.loads(path.read_text())["checksum"]
    assert document.version == checksum.removeprefix("sha256:")[:12]
    assert load_certificate(path, calibrator=calibrator).version == document.version
    # Another certification of the same calibrator is another certificate.
    assert document.model_copy(update={"threshold": 0.99}).version != document.version


def _rewrite(path: Path, change: dict[str, object], *, reseal: bool) -> None:
    loaded = json.loads(path.read_text())
    loaded.update(change)
    if reseal:
        body = {k: v for k, v in loaded.items() if k != "checksum"}
        loaded["checksum"] = document_checksum(body)
    path.write_text(json.dumps(loaded))


@pytest.mark.parametrize(
    ("change", "reseal", "message"),
    [
        ({"threshold": 0.01}, False, "checksum mismatch"),
        ({"format": "basguard.calibrator"}, True, "not a basguard risk certificate"),
        ({"format_version": 2}, True, "unsupported format_version 2"),
        ({"threshold": 1.5}, True, "invalid certificate field 'threshold'"),
        ({"surprise": 1}, True, "invalid certificate field 'surprise'"),
    ],
)
def test_a_tampered_or_foreign_certificate_is_refused(
        certificate: tuple[RiskCertificate, FittedCalibrator], tmp_path: Path,
        change: dict[str, object], reseal: bool, message: str) -> None:
    path = tmp_path / "risk.json"
    save_certificate(certificate[0], path)
    _rewrite(path, change, reseal=reseal)
    with pytest.raises(CertificateError, match=message) as error:
        load_certificate(path)
    assert str(error.value).startswith(f"{path}: ")


def test_a_truncated_or_missing_certificate_is_refused(
        certificate: tuple[RiskCertificate, FittedCalibrator], tmp_path: Path) -> None:
    path = tmp_path / "risk.json"
    save_certificate(certificate[0], path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CertificateError, match="not a valid JSON document"):
        load_certificate(path)
    with pytest.raises(CertificateError, match="cannot read the certificate"):
        load_certificate(tmp_path / "absent.json")
    assert certificate[0].format == CERTIFICATE_FORMAT


def test_a_certificate_says_what_chose_its_start(
        certificate: tuple[RiskCertificate, FittedCalibrator], tmp_path: Path) -> None:
    # A calibrator without a training curve (this one was never fitted by calibrate fit):
    # a share of the labels chose the start, and the file says so by leaving start_from out,
    # as certificates did before the field existed, so their versions do not change.
    document, _ = certificate
    assert document.procedure.start_from == "held_out_labels"
    assert document.procedure.start_labels == 600  # 30 % of 2,000
    path = tmp_path / "risk.json"
    save_certificate(document, path)
    assert "start_from" not in json.loads(path.read_text())["procedure"]
    assert load_certificate(path).procedure.start_from == "held_out_labels"
    # With the curve a fit records, the calibrator's training data chose it: every label tested.
    rng = np.random.default_rng(1)
    p = rng.uniform(0.01, 0.99, size=1000)
    records = [{"token_prob": float(x), "correct": bool(rng.uniform() < x), "group": i}
               for i, x in enumerate(p)]
    fit, held_out = (calibration_data_from_records(part, source="memory", scores=[SPEC],
                                                   label="correct", group="group")
                     for part in (records[:400], records[400:]))
    fitted = fit_calibrator(fit, method="platt").calibrator
    outcome = certify_calibrator(fitted, held_out, max_error_rate=0.1, confidence=0.9,
                                 group_field="group")
    curved = certificate_for(fitted, outcome, source="memory",
                             fingerprint=held_out.fingerprint(), label="correct")
    assert curved.procedure.start_from == "training_curve"
    assert curved.procedure.start_labels == 0 and curved.tested.labels == 600
    save_certificate(curved, path)
    assert json.loads(path.read_text())["procedure"]["start_from"] == "training_curve"
    assert load_certificate(path, calibrator=fitted) == curved
