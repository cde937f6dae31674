"""The ``basguard`` command line, run in-process on real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.cli.main import main
from proxy.store import DecisionStore
from tests.support.shipped_data import CHEMBENCH_CLAUDE, CHEMBENCH_GPT4O, NQ_GPT35


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_fit_then_eval_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    artifact = tmp_path / "cal.json"
    status, out, _ = run(
        capsys, "calibrate", "fit", str(CHEMBENCH_GPT4O), "--score", "token_prob",
        "--label", "correct", "--group", "group", "-o", str(artifact),
    )
    assert status == 0
    assert f"wrote {artifact}" in out
    assert "* " in out  # the selected candidate is marked
    status, out, _ = run(capsys, "calibrate", "eval", str(artifact), str(CHEMBENCH_GPT4O), "--json")
    assert status == 0
    result = json.loads(out)
    assert result["n"] == 2854
    assert result["accuracy"] == pytest.approx(0.579, abs=0.001)
    for side in ("raw", "calibrated"):
        assert {"bas", "ece", "aurc", "auroc", "brier"} <= set(result[side])
    assert result["calibrated"]["ece"] < result["raw"]["ece"]


def test_eval_prints_a_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    artifact = tmp_path / "cal.json"
    run(capsys, "calibrate", "fit", str(CHEMBENCH_CLAUDE), "--score", "verbalized",
        "--label", "correct", "--method", "isotonic", "-o", str(artifact))
    status, out, _ = run(capsys, "calibrate", "eval", str(artifact), str(CHEMBENCH_CLAUDE))
    assert status == 0
    assert "raw" in out and "calibrated" in out and "isotonic" in out


@pytest.mark.parametrize(
    ("content", "where", "message"),
    [
        ('{"p": 0.5, "y": 1}\n{"p": 0.5, "y": 1', ":2: ", "malformed JSON"),
        ('{"p": 0.5, "y": 1}\n{"q": 0.5, "y": 0}\n', ":2: ", "missing score field 'p'"),
        ('{"p": 0.5, "y": 1}\n{"p": 0.5, "y": "x"}\n', ":2: ", "must be 0/1 or true/false"),
        ('{"p": 1.2, "y": 1}\n', ":1: ", "not a probability"),
        ('{"p": NaN, "y": 1}\n', ":1: ", "must be finite"),
        ("", ": ", "no records"),
        ('{"p": 0.5, "y": 1}\n{"p": 0.7, "y": 1}\n', ": ", "all 2 rows are correct"),
    ],
)
def test_bad_data_is_one_line_exit_2_and_no_artifact(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, where: str, message: str
) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text(content)
    artifact = tmp_path / "cal.json"
    status, _, err = run(
        capsys, "calibrate", "fit", str(data), "--score", "p", "--label", "y", "-o", str(artifact)
    )
    assert status == 2
    assert err.count("\n") == 1
    assert err.startswith(f"basguard: error: {data}{where}")
    assert message in err
    assert not artifact.exists()


def test_bad_artifact_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    artifact = tmp_path / "cal.json"
    artifact.write_text('{"format": "basguard.calibrator", "format_')
    status, _, err = run(capsys, "calibrate", "eval", str(artifact), str(CHEMBENCH_GPT4O))
    assert status == 2
    assert "truncated" in err


def test_unusable_method_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text('{"n": 3, "y": 1}\n{"n": 9, "y": 0}\n')
    status, _, err = run(capsys, "calibrate", "fit", str(data), "--score", "n:real", "--label",
                         "y", "--method", "identity", "-o", str(tmp_path / "c.json"))
    assert status == 2
    assert "needs a probability score" in err


@pytest.mark.slow
def test_report_writes_table_and_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "report"
    status, out, _ = run(
        capsys, "report", str(CHEMBENCH_GPT4O), str(NQ_GPT35), "--score", "token_prob",
        "--label", "correct", "--group", "group", "--out", str(out_dir),
    )
    assert status == 0
    assert "| data | n | accuracy | BAS raw | BAS calibrated |" in out
    markdown = (out_dir / "report.md").read_text()
    for stem in (CHEMBENCH_GPT4O.stem, NQ_GPT35.stem):
        assert f"| {stem} |" in markdown
        for kind in ("reliability", "utility"):
            png = out_dir / f"{stem}-{kind}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert f"({png.name})" in markdown


POLICY = """\
version: 1
tenants:
  acme:
    api_keys:
      - env: ACME_KEY
    risk:
      profile: cautious
"""


def test_policy_check_prints_thresholds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    status, out, _ = run(capsys, "policy", "check", str(policy))
    assert status == 0
    assert "acme" in out and "0.7800" in out
    assert f"{policy}: OK (1 tenant)" in out


def test_policy_check_reports_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.replace("profile: cautious", "threshold: 1.5"))
    status, _, err = run(capsys, "policy", "check", str(policy))
    assert status == 2
    assert err.startswith(f"basguard: error: {policy}:7: ")


def test_policy_check_validates_calibrator_artifacts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "broken.json").write_text('{"format": "basguard.calibrator"')
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY + "    calibrators:\n      default: broken.json\n")
    status, _, err = run(capsys, "policy", "check", str(policy))
    assert status == 2
    assert "broken.json" in err and "truncated" in err


@pytest.mark.parametrize(("argv", "message"), [
    (["serve"], "give the gateway config with --config FILE or BASGUARD_CONFIG"),
    (["serve", "--config", "x.yaml", "--workers", "0"], "invalid setting workers"),
    (["review", "list", "--store", "missing.sqlite3"], "no decision store here"),
    (["calibrate", "fit", "--from-store", "d.sqlite3", "-o", "c.json"],
     "--from-store needs --tenant and --model"),
    (["calibrate", "fit", "--tenant", "acme", "-o", "c.json"], "go with --from-store"),
])
def test_misuse_is_one_line_and_exit_2(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BASGUARD_CONFIG", raising=False)
    status, _, err = run(capsys, *argv)
    assert status == 2
    assert err.startswith("basguard: error: ") and message in err
    assert len(err.strip().splitlines()) == 1


def test_a_bug_is_not_a_usage_error(
    filled_store_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ValueError the project did not mean (a bug) propagates: Python prints the traceback."""

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("an internal bug")

    monkeypatch.setattr(DecisionStore, "drift", broken)
    with pytest.raises(ValueError, match="an internal bug"):
        main(["drift", "--store", str(filled_store_path)])
    assert "basguard: error" not in capsys.readouterr().err


def test_a_bug_exits_1_with_a_traceback(tmp_path: Path) -> None:
    """The same through the real entry point: status 1 and the traceback, not a usage line."""
    store = tmp_path / "d.sqlite3"
    DecisionStore(store, retention_seconds=None).close()
    probe = ("import sys\nfrom proxy.store import DecisionStore\nfrom proxy.cli.main import main\n"
             "def broken(*a, **k): raise ValueError('an internal bug')\n"
             "DecisionStore.drift = broken\n"
             f"sys.exit(main(['drift', '--store', {str(store)!r}]))\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "ValueError: an internal bug" in result.stderr


@pytest.fixture
def filled_store_path(tmp_path: Path) -> Path:
    path = tmp_path / "d.sqlite3"
    DecisionStore(path, retention_seconds=None).close()
    return path
