"""``basguard calibrate certify``, run in-process through the real CLI on the shipped data."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from calibrators.artifact import load_artifact, save_artifact
from calibrators.certificate import load_certificate
from calibrators.dataset import read_calibration_data
from calibrators.errors import CertificateError
from proxy.cli.main import main
from tests.support.shipped_data import CHEMBENCH_GPT4O, NQ_GPT35

LIMIT = ("--max-error-rate", "0.2", "--confidence", "0.95")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _split(source: Path, directory: Path, fit_lines: int) -> tuple[Path, Path]:
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
    fit, held_out = directory / "fit.jsonl", directory / "held_out.jsonl"
    fit.write_text("".join(lines[:fit_lines]), encoding="utf-8")
    held_out.write_text("".join(lines[fit_lines:]), encoding="utf-8")
    return fit, held_out


@pytest.fixture(scope="module")
def chembench(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A calibrator fitted on the first 1,000 ChemBench gpt-4o answers, and the other 1,854."""
    directory = tmp_path_factory.mktemp("chembench")
    fit, held_out = _split(CHEMBENCH_GPT4O, directory, 1000)
    artifact = directory / "cal.json"
    assert main(["calibrate", "fit", str(fit), "--score", "token_prob", "--label", "correct",
                 "--group", "group", "-o", str(artifact)]) == 0
    return artifact, fit, held_out


def test_json_names_the_threshold_and_the_figures_behind_it(
        chembench: tuple[Path, Path, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    artifact, _, held_out = chembench
    capsys.readouterr()
    certificate = tmp_path / "risk.json"
    status, out, err = run(capsys, "calibrate", "certify", str(artifact), str(held_out),
                           "--label", "correct", "--group", "group", *LIMIT, "--json",
                           "-o", str(certificate))
    assert status == 0, err
    result = json.loads(out)
    assert result["max_error_rate"] == 0.2 and result["confidence"] == 0.95
    assert result["labels"] == 1854  # ChemBench: every question its own group
    assert result["groups"] == {"field": "group", "handling": "one_row_per_group",
                                "rows": 1854, "groups": 1854}
    assert result["labels_needed"] is None
    threshold = result["threshold"]
    assert 0.0 < threshold < 1.0
    assert result["upper_bound"] <= 0.2
    tested = result["tested"]
    assert tested["labels"] + result["procedure"]["start_labels"] == 1854
    assert tested["errors"] / tested["answered"] <= result["upper_bound"]
    # The answer and error rates are those of every row of DATA at the threshold.
    calibrator = load_artifact(artifact)
    data = read_calibration_data(held_out, scores=calibrator.features, label="correct")
    p = calibrator.predict(data.scores)
    answered = p >= threshold
    assert result["answer_rate"] == pytest.approx(answered.mean())
    assert result["error_rate"] == pytest.approx(1 - data.correct[answered].mean())
    assert result["calibrator"]["version"] == calibrator.version
    assert result["data"]["fingerprint"] == data.fingerprint()
    # The file holds the same document, checksummed, and loads for this calibrator only.
    loaded = load_certificate(certificate, calibrator=calibrator)
    assert loaded.threshold == threshold
    assert json.loads(certificate.read_text())["checksum"].startswith("sha256:")


def test_human_output_says_what_was_certified(
        chembench: tuple[Path, Path, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    artifact, _, held_out = chembench
    capsys.readouterr()
    certificate = tmp_path / "risk.json"
    status, out, _ = run(capsys, "calibrate", "certify", str(artifact), str(held_out),
                         "--label", "correct", *LIMIT, "-o", str(certificate))
    assert status == 0
    lines = out.splitlines()
    assert lines[0].startswith("certified: answer iff p >= ")
    assert "errors among answers <= 20.0% with 95% confidence" in lines[0]
    assert "wrong, upper bound" in lines[1] and "one per row" in lines[1]
    assert f"on {held_out} (1854 rows): answer rate" in lines[2]
    assert lines[-1] == f"wrote {certificate}"


def test_a_limit_that_cannot_be_certified_says_how_many_labels_it_needs(
        chembench: tuple[Path, Path, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    artifact, _, held_out = chembench
    capsys.readouterr()
    certificate = tmp_path / "risk.json"
    argv = ("calibrate", "certify", str(artifact), str(held_out), "--label", "correct",
            "--max-error-rate", "0.01", "--confidence", "0.95")
    status, out, _ = run(capsys, *argv, "--json", "-o", str(certificate))
    assert status == 1
    result = json.loads(out)
    assert result["threshold"] is None and result["upper_bound"] is None
    assert result["answer_rate"] == 0.0 and result["error_rate"] is None
    assert result["labels_needed"]["min_answered"] == 299  # ⌈ln 0.05 / ln 0.99⌉
    projected = result["labels_needed"]["at_observed_rates"]
    assert projected is None or projected > 1854
    # Recorded too: a gateway loading it abstains on everything.
    assert load_certificate(certificate).threshold is None
    status, out, _ = run(capsys, *argv)
    assert status == 1
    assert out.startswith("not certified: no threshold keeps errors among answers <= 1.0%")
    assert "needed: at least 299 tested answers at a threshold with none wrong" in out


def test_one_row_per_question_enters_the_test(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    fit, held_out = _split(NQ_GPT35, tmp_path, 5000)  # 500 questions, 10 answers each
    artifact = tmp_path / "cal.json"
    assert main(["calibrate", "fit", str(fit), "--score", "agreement", "--label", "correct",
                 "--group", "group", "--method", "isotonic", "-o", str(artifact)]) == 0
    capsys.readouterr()
    argv = ("calibrate", "certify", str(artifact), str(held_out), "--label", "correct",
            "--max-error-rate", "0.4", "--confidence", "0.95", "--json")
    status, out, _ = run(capsys, *argv, "--group", "group")
    assert status in (0, 1)
    grouped = json.loads(out)
    assert grouped["labels"] == 1000
    assert grouped["groups"] == {"field": "group", "handling": "one_row_per_group",
                                 "rows": 10000, "groups": 1000}
    _, out, _ = run(capsys, *argv)
    assert json.loads(out)["labels"] == 10000  # without --group every row counts as a question
    # The seed picks the row of each question, and is recorded.
    _, out, _ = run(capsys, *argv, "--group", "group", "--seed", "5")
    assert json.loads(out)["procedure"]["seed"] == 5


def test_the_training_file_is_refused(chembench: tuple[Path, Path, Path], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    artifact, fit, _ = chembench
    capsys.readouterr()
    certificate = tmp_path / "risk.json"
    status, out, err = run(capsys, "calibrate", "certify", str(artifact), str(fit),
                           "--label", "correct", *LIMIT, "-o", str(certificate))
    assert status == 2 and out == ""
    assert err.startswith(f"basguard: error: {fit}: this is the data calibrator ")
    assert "fitted on" in err
    assert not certificate.exists()


def test_a_changed_training_file_is_certified_with_a_warning(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data.jsonl"
    lines = CHEMBENCH_GPT4O.read_text(encoding="utf-8").splitlines(keepends=True)
    data.write_text("".join(lines[:1000]), encoding="utf-8")
    artifact = tmp_path / "cal.json"
    assert main(["calibrate", "fit", str(data), "--score", "token_prob", "--label", "correct",
                 "-o", str(artifact)]) == 0
    data.write_text("".join(lines[1000:]), encoding="utf-8")
    capsys.readouterr()
    status, _, err = run(capsys, "calibrate", "certify", str(artifact), str(data),
                         "--label", "correct", *LIMIT)
    assert status == 0
    assert err.startswith(f"basguard: warning: {data} is a file calibrator ")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"token_prob": 0.9, "correct": 1, "group": "a"}\n{"token_prob": 0.5, "correct": 1', ":2: malformed JSON"),
        ('{"token_prob": 0.9, "correct": 1, "group": "a"}\n{"correct": 0}\n', ":2: missing score field 'token_prob'"),
        ('{"token_prob": 0.9, "correct": "yes", "group": "a"}\n', ":1: label 'correct' must be 0/1 or true/false"),
        ('{"token_prob": 0.9, "correct": 1}\n', ":1: missing group field 'group'"),
    ],
)
def test_bad_data_is_one_line_with_file_and_line_and_no_certificate(
        chembench: tuple[Path, Path, Path], tmp_path: Path, content: str, message: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    artifact, _, _ = chembench
    data = tmp_path / "bad.jsonl"
    data.write_text(content, encoding="utf-8")
    certificate = tmp_path / "risk.json"
    capsys.readouterr()
    status, out, err = run(capsys, "calibrate", "certify", str(artifact), str(data),
                           "--label", "correct", "--group", "group", *LIMIT,
                           "-o", str(certificate))
    assert status == 2 and out == ""
    assert err.startswith(f"basguard: error: {data}{message}"), err
    assert len(err.splitlines()) == 1
    assert not certificate.exists()


@pytest.mark.parametrize("value", ["0", "1", "1.5", "-0.1", "nan", "five"])
def test_a_limit_outside_0_and_1_is_refused(chembench: tuple[Path, Path, Path], value: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    artifact, _, held_out = chembench
    capsys.readouterr()
    for option, other in (("--max-error-rate", "--confidence"), ("--confidence",
                                                                  "--max-error-rate")):
        with pytest.raises(SystemExit) as exit_info:
            main(["calibrate", "certify", str(artifact), str(held_out), "--label", "correct",
                  option, value, other, "0.5"])
        assert exit_info.value.code == 2
        assert "expected a number strictly between 0 and 1" in capsys.readouterr().err


def test_a_certificate_is_refused_for_another_calibrator(
        chembench: tuple[Path, Path, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    artifact, fit, held_out = chembench
    certificate = tmp_path / "risk.json"
    assert main(["calibrate", "certify", str(artifact), str(held_out), "--label", "correct",
                 *LIMIT, "-o", str(certificate)]) == 0
    other = tmp_path / "other.json"
    assert main(["calibrate", "fit", str(fit), "--score", "token_prob", "--label", "correct",
                 "--method", "platt", "-o", str(other)]) == 0
    with pytest.raises(CertificateError, match=r"certified for calibrator [0-9a-f]{12}, not"):
        load_certificate(certificate, calibrator=load_artifact(other))


def test_the_certified_threshold_holds_on_the_rest_of_the_data(
        chembench: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """Certified on half the held-out questions, the limit holds on the other half."""
    artifact, _, held_out = chembench
    calibrator = load_artifact(artifact)
    lines = held_out.read_text(encoding="utf-8").splitlines(keepends=True)
    certify_part = held_out.with_name("certify_half.jsonl")
    certify_part.write_text("".join(lines[::2]), encoding="utf-8")
    capsys.readouterr()
    status, out, _ = run(capsys, "calibrate", "certify", str(artifact), str(certify_part),
                         "--label", "correct", *LIMIT, "--json")
    assert status == 0
    threshold = json.loads(out)["threshold"]
    test_part = held_out.with_name("test_half.jsonl")
    test_part.write_text("".join(lines[1::2]), encoding="utf-8")
    data = read_calibration_data(test_part, scores=calibrator.features, label="correct")
    answered = calibrator.predict(data.scores) >= threshold
    assert answered.any()
    assert float(np.mean(~data.correct[answered])) <= 0.2


def test_every_label_is_tested_from_where_the_training_data_starts_it(
        chembench: tuple[Path, Path, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    artifact, _, held_out = chembench
    capsys.readouterr()
    status, out, _ = run(capsys, "calibrate", "certify", str(artifact), str(held_out),
                         "--label", "correct", "--group", "group", *LIMIT, "--json")
    assert status == 0
    result = json.loads(out)
    assert result["procedure"]["start_from"] == "training_curve"
    assert result["procedure"]["start_labels"] == 0 and result["tested"]["labels"] == 1854
    # An artifact written before fits recorded the curve: 30 % of the labels choose the start.
    calibrator = load_artifact(artifact)
    assert calibrator.training is not None
    old = tmp_path / "old.json"
    save_artifact(replace(calibrator, training=calibrator.training.model_copy(
        update={"curve": None})), old)
    status, out, _ = run(capsys, "calibrate", "certify", str(old), str(held_out),
                         "--label", "correct", "--group", "group", *LIMIT)
    assert status == 0
    assert "tested on 1298 of 1854 labels (one per group; 556 chose where testing starts)" in out
