"""``calibrate fit`` and ``calibrate eval`` through the real ``basguard`` command: why a candidate
won, what a refusal needs, ``--json``, and a warning for the calibrator's own training file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.shipped_data import CHEMBENCH_GPT4O

CHEMBENCH_LLAMA = CHEMBENCH_GPT4O.parent / "chembench_llama-3.1-8b-instruct_tokenprob.jsonl"


def basguard(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy.cli", *argv], capture_output=True,
                          text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def answers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 real answers of Llama 3.1 8B, on which a lower-BAS, simpler candidate wins."""
    path = tmp_path_factory.mktemp("answers") / "llama200.jsonl"
    with CHEMBENCH_LLAMA.open() as source:
        path.write_text("".join(next(source) for _ in range(200)))
    return path


def test_fit_says_why_the_chosen_candidate_won(answers: Path, tmp_path: Path) -> None:
    artifact = tmp_path / "cal.json"
    done = basguard("calibrate", "fit", str(answers), "--score", "token_prob", "--label",
                    "correct", "-o", str(artifact))
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())  # lines are wrapped for the terminal
    assert ("chosen: platt(token_prob), by the one-standard-error rule: beta(token_prob) has "
            "the highest out-of-fold BAS (0.1308), but platt(token_prob)'s 0.1270 is within one "
            "standard error (0.0044) of it, and platt(token_prob) is simpler") in text
    assert ("ECE does not choose: beta(token_prob)'s ECE 0.0238 is lower than 0.0610, but the "
            "choice is by out-of-fold BAS") in text
    assert f"wrote {artifact}: platt(token_prob)" in text


def test_fit_json_has_the_rule_the_figures_and_every_candidate(
    answers: Path, tmp_path: Path
) -> None:
    artifact = tmp_path / "cal.json"
    done = basguard("calibrate", "fit", str(answers), "--score", "token_prob", "--label",
                    "correct", "-o", str(artifact), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["fitted"] is True and report["output"] == str(artifact)
    assert report["selected"] == "platt(token_prob)"
    assert report["data"] == {"source": str(answers), "rows": 200, "positives": 89, "groups": 200}
    selection = report["selection"]
    assert (selection["rule"], selection["criterion"], selection["best_by_bas"]) == \
        ("one_standard_error", "bas", "beta(token_prob)")
    bas = {c["name"]: c["oof"]["bas"] for c in report["candidates"]}
    assert len(bas) == 6 and max(bas, key=bas.__getitem__) == "beta(token_prob)"
    assert 0 < bas["beta(token_prob)"] - bas["platt(token_prob)"] <= selection["standard_error"]
    assert selection["explanation"][0].startswith("chosen: platt(token_prob), by the one-")
    saved = json.loads(artifact.read_text())
    assert saved["cross_validation"]["selected"] == "platt(token_prob)"


def test_a_refusal_says_how_many_more_labels_of_which_kind(
    answers: Path, tmp_path: Path
) -> None:
    rows = [json.loads(line) for line in answers.read_text().splitlines()]
    few = tmp_path / "few.jsonl"
    few.write_text("".join(json.dumps(r) + "\n" for r in
                           [r for r in rows if r["correct"]][:3]
                           + [r for r in rows if not r["correct"]][:43]))
    argv = ("calibrate", "fit", str(few), "--score", "token_prob", "--label", "correct",
            "-o", str(tmp_path / "c.json"))
    done = basguard(*argv)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        f"basguard: error: {few}: too little labelled data to fit a calibrator: 3 groups with a "
        "correct answer (at least 5 needed). Needed: 2 more groups (questions) with a correct "
        "answer; at the rates so far (3 groups with a correct answer and 43 with a wrong one in "
        "46 rows) that is about 31 more labelled rows. Collect or label more answers and fit "
        "again\n")
    as_json = basguard(*argv, "--json")
    assert as_json.returncode == 2
    report = json.loads(as_json.stdout)
    assert report["fitted"] is False
    assert report["have"] == {"rows": 46, "correct_groups": 3, "wrong_groups": 43}
    assert report["needed"] == {"rows": 0, "correct_groups": 2, "wrong_groups": 0,
                                "labels_at_observed_rates": 31}
    assert not (tmp_path / "c.json").exists()


def test_eval_warns_on_the_calibrators_own_training_file(answers: Path, tmp_path: Path) -> None:
    artifact = tmp_path / "cal.json"
    assert basguard("calibrate", "fit", str(answers), "--score", "token_prob", "--label",
                    "correct", "--method", "platt", "-o", str(artifact)).returncode == 0
    own = basguard("calibrate", "eval", str(artifact), str(answers), "--json")
    assert own.returncode == 0
    assert own.stderr.startswith(f"basguard: warning: {answers} is the data calibrator ")
    assert "in-sample and optimistic" in own.stderr
    report = json.loads(own.stdout)
    assert report["training_data"] is True and len(report["warnings"]) == 1
    # The same file with its rows in another order is other data by fingerprint: no warning.
    other = tmp_path / "shuffled.jsonl"
    other.write_text("".join(reversed(answers.read_text().splitlines(keepends=True))))
    unseen = basguard("calibrate", "eval", str(artifact), str(other))
    assert unseen.returncode == 0 and unseen.stderr == ""
    assert "calibrated" in unseen.stdout
