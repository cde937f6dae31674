"""The feedback loop end to end, and the store's command line: review, drift, refit, hot reload."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from calibrators.artifact import load_artifact, save_artifact
from proxy.cli.main import main
from proxy.runtime.state import UNCALIBRATED
from proxy.store import DecisionStore
from tests.support.decision_store import record, tenant
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import SDK, TENANT_KEYS, gateway_config, serve_gateway
from tests.support.loopback import serve_process
from tests.support.metrics import scrape
from tests.support.waiting import wait_until


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture
def filled_store(tmp_path: Path) -> Path:
    """A store with abstentions of two tenants and labelled, overconfident answers."""
    path = tmp_path / "decisions.sqlite3"
    store = DecisionStore(path, retention_seconds=None)
    store.decided(record("bg-abstained", 0.2, created_at=1.0))
    store.decided(record("bg-rival", 0.1, owner=tenant("rival"), created_at=2.0))
    # 60 labels: more than drift's and calibrate fit's minimums.
    for i in range(60):
        store.decided(record(f"bg-answered-{i}", 0.9, created_at=3.0 + i))
    for i in range(60):
        store.label_now("acme", f"bg-answered-{i}", 0, i < 30)  # accuracy 0.5 at p = 0.9
    store.close()
    return path


def test_review_lists_withheld_answers_and_labels_them(
    filled_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(capsys, "review", "list", "--store", str(filled_store))
    assert status == 0
    assert "bg-abstained choice 0  acme/m  p=0.200 < 0.500  unlabelled" in out
    assert "bg-rival" in out and "withheld: answer 0" in out and "asked:    what is it?" in out
    status, out, _ = run(capsys, "review", "list", "--store", str(filled_store),
                         "--tenant", "acme", "--json")
    (item,) = [json.loads(line) for line in out.splitlines()]
    assert item["id"] == "bg-abstained" and item["answer"] == "answer 0"

    status, out, _ = run(capsys, "review", "label", "--store", str(filled_store),
                         "bg-abstained", "correct")
    assert status == 0 and "outcome abstained_correct" in out
    status, out, _ = run(capsys, "review", "label", "--store", str(filled_store),
                         "bg-abstained", "wrong")
    assert "(was correct)" in out and "abstained_wrong" in out
    _, out, _ = run(capsys, "review", "list", "--store", str(filled_store), "--tenant", "acme")
    assert "no abstained answers awaiting a label" in out


def test_review_label_errors_are_one_line(
    filled_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run(capsys, "review", "label", "--store", str(filled_store), "bg-nope",
                         "correct")
    assert status == 2 and "no decision 'bg-nope'" in err
    status, _, err = run(capsys, "review", "label", "--store", str(filled_store),
                         "bg-rival", "correct", "--tenant", "acme")
    assert status == 2 and "no decision 'bg-rival'" in err
    missing = tmp_path / "missing.sqlite3"
    status, _, err = run(capsys, "review", "list", "--store", str(missing))
    assert status == 2 and f"{missing}: no decision store here" in err
    assert not missing.exists()


def test_drift_reports_overconfidence_with_exit_status_1(
    filled_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(capsys, "drift", "--store", str(filled_store))
    assert status == 1
    assert "acme" in out and "+0.400  DRIFT: overconfident" in out
    status, out, _ = run(capsys, "drift", "--store", str(filled_store), "--max-gap", "0.5")
    assert status == 0 and "DRIFT" not in out
    status, out, _ = run(capsys, "drift", "--store", str(filled_store), "--tenant", "rival")
    assert status == 0 and "no labelled decisions" in out


def test_fit_from_store_learns_the_observed_accuracy(
    filled_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_path = tmp_path / "cal.json"
    status, out, err = run(capsys, "calibrate", "fit", "--from-store", str(filled_store),
                           "--tenant", "acme", "--model", "m", "--folds", "2",
                           "-o", str(out_path))
    assert status == 0, err
    assert "60 rows in 60 groups" in out
    # Confidence 0.9, right half the time: the refitted calibrator says about 0.5.
    fitted = load_artifact(out_path)
    assert fitted.predict_features({"token_prob": 0.9}) == pytest.approx(0.5, abs=0.1)
    # Its training curve, where certifying it will start: one answer per decision.
    assert fitted.training is not None and fitted.training.curve is not None
    assert fitted.training.curve.answered[-1] == 60


def test_fit_from_store_errors_write_nothing(
    filled_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_path = tmp_path / "cal.json"
    for argv, message in [
        (("--from-store", str(filled_store)), "--from-store needs --tenant and --model"),
        (("--from-store", str(filled_store), "--tenant", "acme", "--model", "elsewhere"),
         "(tenant 'acme', model 'elsewhere'; only labelled decisions with confidence "
         "features count): no records"),
        (("--from-store", str(filled_store), "--tenant", "acme", "--model", "m",
          "--score", "mean_topk_margin:real"), "missing score field 'mean_topk_margin'"),
        ((), "calibrate fit needs a data file, --score, --label"),
        (("--tenant", "acme"), "--tenant and --model go with --from-store"),
    ]:
        status, _, err = run(capsys, "calibrate", "fit", *argv, "-o", str(out_path))
        assert status == 2 and message in err, (argv, err)
        assert not out_path.exists()


def _ask(sdk: openai.OpenAI, logprob: float) -> tuple[str, str]:
    raw = sdk.chat.completions.with_raw_response.create(
        model="fake", messages=[{"role": "user", "content": json.dumps(
            {"fake": {"content": "an answer", "logprobs": [logprob, logprob]}})}])
    completion = raw.parse()
    return (completion.model_extra or {})["basguard"]["id"], raw.headers[
        "x-basguard-calibrator-version"]


def test_feedback_refit_and_hot_reload_close_the_loop(
    fake_upstream: tuple[FakeUpstream, str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], sdk_client: SDK,
) -> None:
    """Traffic, labels through the SDK, a refit from the store, and the proxy using it."""
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-x")
    artifact = tmp_path / "annotator.json"
    save_artifact(UNCALIBRATED, artifact)
    config = gateway_config(fake_upstream[1])
    config["tenants"]["annotator"]["calibrators"] = {"models": {"fake": artifact.name}}
    store = tmp_path / "decisions.sqlite3"
    with serve_gateway(tmp_path, config, reload_interval_seconds=0.05) as url:
        sdk = sdk_client(f"{url}/v1", TENANT_KEYS["annotator"])
        versions = set()
        for i in range(80):
            p = 0.05 + 0.9 * i / 79
            decision_id, version = _ask(sdk, math.log(p))
            versions.add(version)
            # The raw probability is overconfident: the truth is right about p² of the time.
            correct = (i * 7919 % 80) / 80 < p * p
            sdk.post("/feedback", body={"id": decision_id, "correct": correct}, cast_to=object)
        assert versions == {UNCALIBRATED.version}

        new_artifact = tmp_path / "refit.json"
        status, out, err = run(capsys, "calibrate", "fit", "--from-store", str(store),
                               "--tenant", "annotator", "--model", "fake", "--folds", "4",
                               "-o", str(new_artifact))
        assert status == 0, err
        assert "80 rows in 80 groups" in out
        os.replace(new_artifact, artifact)  # what a deploy step does: an atomic swap

        def version_now() -> str:
            return _ask(sdk, math.log(0.5))[1]

        wait_until(lambda: version_now() != UNCALIBRATED.version,
                   what="the refitted calibrator in force")
        infos = [dict(labels) for name, labels in scrape(url)
                 if name == "basguard_calibrator_info"]
        assert {"tenant": "annotator", "model": "fake", "training_rows": "80"}.items() <= next(
            info for info in infos if info["tenant"] == "annotator" and info["model"] == "fake"
        ).items()


@pytest.mark.slow
def test_several_workers_share_one_set_of_metrics_and_one_store(
    fake_upstream: tuple[FakeUpstream, str], tmp_path: Path, sdk_client: SDK,
) -> None:
    """``serve --workers 2``: prometheus-client multiprocess mode sums every worker's values."""
    path = tmp_path / "basguard.yaml"
    path.write_text(yaml.safe_dump(gateway_config(fake_upstream[1])))
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"stale")  # a previous run's leftovers
    env = {"FAKE_UPSTREAM_KEY": "sk-x", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    with serve_process(["--config", str(path), "--workers", "2",
                        "--store", str(tmp_path / "decisions.sqlite3")],
                       env=env, log=tmp_path / "server.log") as server:
        server.wait_ready("/readyz")  # bounded generously, and shows the output if it fails
        base = server.url
        sdk = sdk_client(f"{base}/v1", TENANT_KEYS["enforcer"])
        ids: list[str] = []
        for _ in range(30):
            # A new connection each time, so both workers get a share.
            with httpx.Client() as fresh:
                response = sdk.with_options(http_client=fresh).chat.completions.create(
                    model="fake", messages=[{"role": "user", "content": "hi"}])
                ids.append((response.model_extra or {})["basguard"]["id"])
        # Every scrape, whichever worker answers it, counts all thirty.
        for _ in range(6):
            samples = scrape(base)  # a new connection each time
            assert samples[("basguard_requests_total", (
                ("decision", "answer"), ("mode", "enforce"), ("model", "fake"),
                ("tenant", "enforcer")))] == 30
        assert len(list(metrics_dir.glob("counter_*.db"))) >= 1
        assert not (metrics_dir / "counter_999999.db").exists()
        # A label sent to either worker finds a decision another one made.
        for decision_id in ids[:10]:
            with httpx.Client() as fresh:
                sdk.with_options(http_client=fresh).post(
                    "/feedback", body={"id": decision_id, "correct": True}, cast_to=object)
        assert server.stop() == 0, server.output()


def test_fit_from_store_reads_the_signals_features_with_their_kinds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from proxy.judging.decision import ChoiceOutcome, DecisionRecord

    path = tmp_path / "decisions.sqlite3"
    store = DecisionStore(path, retention_seconds=None)
    acme = tenant()
    for i in range(60):
        agreement, distinct = (0.8, 2.0) if i % 2 else (0.2, 4.0)
        outcome = ChoiceOutcome(0, True, agreement, None,
                                {"agreement": agreement, "distinct_answers": distinct})
        store.decided(DecisionRecord(f"bg-{i}", acme, "m", [outcome], "identity", "v1",
                                     created_at=1.0 + i))
    for i in range(60):
        store.label_now("acme", f"bg-{i}", 0, bool(i % 2) == (i % 3 != 0))
    store.close()
    out_path = tmp_path / "cal.json"
    status, _, err = run(capsys, "calibrate", "fit", "--from-store", str(path),
                           "--tenant", "acme", "--model", "m", "--score", "agreement",
                           "--score", "distinct_answers", "--method", "logistic",
                           "--folds", "2", "-o", str(out_path))
    assert status == 0, err
    fitted = load_artifact(out_path)
    # distinct_answers is a count (the registry's kind), not a probability: 4.0 is valid.
    assert [(s.field, s.kind.value) for s in fitted.features] == [
        ("agreement", "prob"), ("distinct_answers", "real")]
    assert fitted.predict_features({"agreement": 0.8, "distinct_answers": 2.0}) > \
        fitted.predict_features({"agreement": 0.2, "distinct_answers": 4.0})
