"""Drift and the risk card know decisions by calibrator version: the feedback loop on a real
gateway, then ``drift``, ``calibrate fit --from-store`` and ``policy card`` through the real
``basguard`` command.

Issue #25: right after a refit, ``drift`` (mixing the decisions of the old calibrator) said DRIFT,
and the card of the refitted calibrator could not find the data it was fitted on.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from calibrators.artifact import load_artifact
from proxy.runtime.state import UNCALIBRATED
from proxy.store import DecisionStore
from tests.support.decision_store import record
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import serve_gateway
from tests.support.policy_traffic import OPS_KEY, ops_config, wait_until_stored


def basguard(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy.cli", *argv], capture_output=True,
                          text=True, timeout=300, check=False)


def ask(client: openai.OpenAI, rng: random.Random, i: int, accuracy: float) -> dict[str, Any]:
    """One question at a confidence of 0.6 to 0.99, labelled right at rate ``accuracy``."""
    p = rng.uniform(0.6, 0.99)
    fake = {"content": "an answer", "logprobs": [math.log(p)]}
    response = client.chat.completions.create(
        model="fake", messages=[{"role": "user", "content": json.dumps({"q": i, "fake": fake})}])
    decision: dict[str, Any] = (response.model_extra or {})["basguard"]
    client.post("/feedback", body={"id": decision["id"], "correct": rng.random() < accuracy},
                cast_to=object)
    return decision


def test_a_refit_starts_a_new_drift_window_and_its_card_finds_its_data(
    fake_upstream: tuple[FakeUpstream, str], tmp_path: Path
) -> None:
    rng = random.Random(25)
    config = ops_config(fake_upstream[1])
    store = tmp_path / "decisions.sqlite3"
    calibrator = tmp_path / "ops-calibrator.json"
    with serve_gateway(tmp_path, config, reload_interval_seconds=0.1) as url, openai.OpenAI(
        base_url=f"{url}/v1", api_key=OPS_KEY, max_retries=0, timeout=30
    ) as client:
        # 80 labelled answers, uncalibrated: p about 0.8, right half the time (overconfident).
        for i in range(80):
            assert ask(client, rng, i, 0.5)["calibrator"]["version"] == UNCALIBRATED.version
        wait_until_stored(store, "ops", 80)
        before = basguard("drift", "--store", str(store))
        assert before.returncode == 1, before.stdout + before.stderr
        assert f"ops              fake                 {UNCALIBRATED.version}       80" in \
            before.stdout and "DRIFT: overconfident" in before.stdout
        fit = basguard("calibrate", "fit", "--from-store", str(store), "--tenant", "ops",
                       "--model", "fake", "-o", str(calibrator))
        assert fit.returncode == 0, fit.stderr
        refitted = load_artifact(calibrator)
        assert refitted.training is not None and refitted.training.store is not None
        assert (refitted.training.store.tenant, refitted.training.store.model,
                refitted.training.store.prefix) == ("ops", "fake", None)
        # The refit goes live by hot reload; 10 answers are made and labelled under it.
        config["tenants"]["ops"]["calibrators"] = {"default": calibrator.name}
        (tmp_path / "basguard.yaml").write_text(yaml.safe_dump(config))
        deadline = time.monotonic() + 30
        i = 80
        while ask(client, rng, i, 0.5)["calibrator"]["version"] != refitted.version:
            assert time.monotonic() < deadline, "the refitted calibrator was not loaded"
            i += 1
        first_refitted = i
        for j in range(first_refitted + 1, first_refitted + 10):
            ask(client, rng, j, 0.5)
        total = first_refitted + 10
        wait_until_stored(store, "ops", total)
    after = basguard("drift", "--store", str(store))
    assert after.returncode == 0, after.stdout + after.stderr
    (row,) = [line for line in after.stdout.splitlines() if line.startswith("ops ")]
    assert row.split()[2:4] == [refitted.version, "10"]
    assert row.endswith("not enough labels (fewer than 50): no verdict")
    assert f"({total - 10} labelled decisions made under earlier calibrators are not compared;" \
        in after.stdout
    assert "verdict: none yet" in after.stdout and "DRIFT" not in after.stdout
    report = json.loads(basguard("drift", "--store", str(store), "--json").stdout)
    assert report["verdict"] == "no_verdict"
    (window,) = report["windows"]
    assert (window["calibrator_version"], window["labelled"], window["verdict"],
            window["earlier_labels"]) == (refitted.version, 10, "not_enough_labels", total - 10)
    mixed = basguard("drift", "--store", str(store), "--all-calibrators")
    assert mixed.returncode == 1 and "DRIFT: overconfident" in mixed.stdout  # the old behaviour

    card_dir = tmp_path / "card"
    card = basguard("policy", "card", "ops", "--config", str(tmp_path / "basguard.yaml"),
                    "--store", str(store), "-o", str(card_dir))
    assert card.returncode == 0, card.stderr
    text = (card_dir / "ops-risk-card.md").read_text()
    assert ("From the labelled decisions of tenant `ops` on model `fake` in the decision store "
            f"`{store}`") in text and "the fingerprint matches the artifact's" in text
    assert "### Expected at the threshold, on the calibrator's data" in text
    assert "Not available" not in text and (card_dir / "ops-default-expected.png").is_file()
    assert (f"no labels yet of decisions made under calibrator `{refitted.version}`" in text
            or f"over the latest 10 labels of decisions made under calibrator "
               f"`{refitted.version}`" in text)
    assert "**DRIFT**" not in text and "has drifted" not in text

    # A label changed after the fit: the store no longer holds the rows it was fitted on.
    first = DecisionStore(store, retention_seconds=None)
    try:
        (oldest, *_) = first.tenant_decisions("ops")
    finally:
        first.close()
    relabel = basguard("review", "label", "--store", str(store), oldest.id,
                       "wrong" if oldest.correct else "correct")
    assert relabel.returncode == 0, relabel.stderr
    again = basguard("policy", "card", "ops", "--config", str(tmp_path / "basguard.yaml"),
                     "--store", str(store), "-o", str(tmp_path / "card2"))
    assert again.returncode == 0, again.stderr
    assert "no longer holds those rows" in (tmp_path / "card2" / "ops-risk-card.md").read_text()


def drift_store(path: Path, labels: list[tuple[float, bool]]) -> Path:
    store = DecisionStore(path, retention_seconds=None)
    for i, (p, _) in enumerate(labels):
        store.decided(record(f"bg-{i}", p, created_at=1.0 + i))
    for i, (_, correct) in enumerate(labels):
        store.label_now("acme", f"bg-{i}", 0, correct)
    store.close()
    return path


def test_drift_states_no_drift_in_words_and_json(tmp_path: Path) -> None:
    # 60 labels at p = 0.7, right 42 times: a gap of 0.
    store = drift_store(tmp_path / "d.sqlite3", [(0.7, i % 10 < 7) for i in range(60)])
    done = basguard("drift", "--store", str(store))
    assert done.returncode == 0
    assert "no drift (within ±0.1)" in done.stdout
    assert done.stdout.rstrip().endswith(
        "verdict: no drift: 1 calibrator(s) within ±0.1 of their observed accuracy")
    report = json.loads(basguard("drift", "--store", str(store), "--json").stdout)
    assert report["verdict"] == "no_drift" and report["max_gap"] == 0.1
    (window,) = report["windows"]
    assert (window["verdict"], window["direction"], window["labelled"], window["earlier_labels"]) \
        == ("no_drift", None, 60, 0)
    assert window["gap"] == pytest.approx(0.0, abs=1e-9)
    assert window["calibrator_version"] == "v1"  # the test records' version


@pytest.mark.parametrize("argv", [["drift"], ["review", "list"], ["store", "info"]])
def test_reading_commands_never_create_a_store(argv: list[str], tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "proxy.cli", *argv], capture_output=True,
                          text=True, timeout=120, check=False, cwd=tmp_path,
                          env={k: v for k, v in os.environ.items() if k != "BASGUARD_STORE"})
    assert done.returncode == 2
    assert done.stderr == (
        "basguard: error: basguard-decisions.sqlite3: no decision store here (from the default, "
        "basguard-decisions.sqlite3 in the current directory); point at the gateway's store "
        "with --store PATH (a SQLite file, sqlite:///PATH or postgresql://...) or "
        "BASGUARD_STORE; basguard store migrate creates a new one\n")
    assert list(tmp_path.iterdir()) == []
    # A file that is there but holds no store is named as such, and left as it was.
    empty = tmp_path / "empty.sqlite3"
    empty.write_bytes(b"")
    if argv != ["store", "info"]:  # info describes it: schema none
        refused = basguard(*argv, "--store", str(empty))
        assert refused.returncode == 2
        assert "no decision store here (the database has no basguard tables)" in refused.stderr
