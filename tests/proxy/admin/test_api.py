"""The console's JSON API over real sockets: tenant figures, the review queue and its labels
(through the feedback path, into the store and the metrics), the simulator (the `policy
simulate` computation), the policy card, and refit and promote."""

from __future__ import annotations

import io
import json
import math
import sqlite3
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from calibrators.artifact import load_artifact
from policies.simulate import simulate
from proxy.admin.promotion import PROMOTION_LOG
from proxy.admin.simulator import CONSOLE_BOOTSTRAP
from proxy.analysis.policy_simulate import (
    ConfiguredPolicy,
    candidates_for,
    replay_from_store,
    simulation_json,
)
from proxy.store import DecisionStore
from tests.support.admin_console import (
    ADMIN,
    ADMIN_KEY,
    CALIBRATOR_FILE,
    REVIEWER,
    ask,
    digest,
    labelled_traffic,
)
from tests.support.metrics import scrape


def api(url: str, method: str, path: str, headers: dict[str, str] = ADMIN,
        **kwargs: Any) -> httpx.Response:
    return httpx.request(method, f"{url}/admin/api{path}", headers=headers, timeout=60,
                         **kwargs)


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def figures(url: str, tenant: str, model: str = "fake") -> dict[str, Any]:
    listing = ok(api(url, "GET", "/tenants"))
    (found,) = [t for t in listing["tenants"] if t["name"] == tenant]
    (row,) = [m for m in found["models"] if m["model"] == model]
    return row


def label(url: str, decision_id: str, correct: bool, expected: bool | None = None,
          headers: dict[str, str] = ADMIN) -> httpx.Response:
    return api(url, "POST", "/review/label", headers=headers,
               json={"id": decision_id, "choice": 0, "correct": correct, "expected": expected})


def test_whoami_names_the_key_and_what_it_may_do(console: str) -> None:
    assert ok(api(console, "GET", "/whoami")) == {
        "name": "admin", "key_id": digest(ADMIN_KEY)[:8],
        "tenants": ["annotator", "enforcer", "lenient", "refuser", "shadower", "strict"],
        "can_promote": True, "session_expires": None}
    reviewer = ok(api(console, "GET", "/whoami", headers=REVIEWER))
    assert reviewer["name"] == "clinic-review" and reviewer["tenants"] == ["annotator"]
    assert reviewer["can_promote"] is False


def test_tenant_figures_come_from_the_config_and_the_feedback_totals(console: str,
                                                                    console_dir: Path) -> None:
    right = ask(console, "enforcer", "capital of France?", content="Paris", logprob=-0.01)
    ask(console, "enforcer", "capital of Spain?", content="Madrid", logprob=-0.01)
    withheld = ask(console, "enforcer", "tallest mountain?", content="Everest", logprob=-2.3)
    ask(console, "enforcer", "deepest lake?", content="Baikal", logprob=-2.3)
    assert (right.decision, withheld.decision) == ("answer", "abstain")
    ok(label(console, right.id, False))     # answered, wrong: under-abstention
    ok(label(console, withheld.id, True))   # withheld, correct: over-abstention
    row = figures(console, "enforcer")
    serving = load_artifact(console_dir / CALIBRATOR_FILE)
    assert row["threshold"] == 0.5 and row["wrong_answer_cost"] == 1.0
    assert row["certified_threshold"] is None
    assert (row["decisions"], row["withheld"], row["abstention_rate"]) == (4, 2, 0.5)
    assert (row["labelled"], row["over_abstention"], row["under_abstention"]) == (2, 0.5, 0.5)
    # Answered and wrong costs λ = 1, withheld costs a = 0: (−1 + 0) / 2.
    assert row["live_utility_per_request"] == pytest.approx(-0.5)
    assert row["calibrator"]["version"] == serving.version
    assert row["calibrator"]["file"] == CALIBRATOR_FILE
    assert row["calibrator"]["method"] == "identity"
    bins = {b["low"]: b for b in row["reliability"] if b["decisions"]}
    assert bins[0.9]["decisions"] == 1 and bins[0.9]["correct"] == 0
    assert bins[0.1]["decisions"] == 1 and bins[0.1]["correct"] == 1
    assert bins[0.9]["mean_confidence"] == pytest.approx(right.confidence)
    # The same totals /metrics reads.
    samples = scrape(console)
    labels = (("model", "fake"), ("outcome", "answered_wrong"), ("tenant", "enforcer"))
    assert samples[("basguard_feedback_decisions", labels)] == 1
    # A tenant without traffic still shows its settings, on every configured model.
    strict = ok(api(console, "GET", "/tenants"))["tenants"][-1]  # the config's order
    assert strict["name"] == "strict" and len(strict["models"]) == 4
    assert all(m["labelled"] == 0 and m["abstention_rate"] is None for m in strict["models"])


def test_the_queue_holds_withheld_answers_first_then_the_closest_to_the_threshold(
        console: str) -> None:
    far_answer = ask(console, "enforcer", "q1", content="a1", logprob=math.log(0.99))
    near_answer = ask(console, "enforcer", "q2", content="a2", logprob=math.log(0.55))
    far_withheld = ask(console, "enforcer", "q3", content="a3", logprob=math.log(0.10))
    near_withheld = ask(console, "enforcer", "q4", content="a4", logprob=math.log(0.45))
    queue = ok(api(console, "GET", "/review/queue", params={"tenant": "enforcer"}))["data"]
    assert [item["id"] for item in queue] == [
        near_withheld.id, far_withheld.id, near_answer.id, far_answer.id]
    first = queue[0]
    assert first["decision"] == "abstain" and first["answer"] == "a4"
    assert '"q": "q4"' in first["prompt"] and first["threshold"] == 0.5
    assert first["features"]["token_prob"] == pytest.approx(0.45)
    assert first["reason"] is None and first["calibrator_version"]  # decided on its confidence
    # The store keeps no text of an answered decision: the app that asked has it.
    assert queue[2]["prompt"] is None and queue[2]["answer"] is None
    skipped = ok(api(console, "GET", "/review/queue",
                     params={"tenant": "enforcer", "skip": f"{near_withheld.id}:0"}))["data"]
    assert skipped[0]["id"] == far_withheld.id
    ok(label(console, far_withheld.id, True))
    rest = ok(api(console, "GET", "/review/queue", params={"tenant": "enforcer"}))["data"]
    assert far_withheld.id not in [item["id"] for item in rest]
    bad = api(console, "GET", "/review/queue", params={"skip": "no-choice"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "skip"


def test_a_label_from_the_queue_takes_the_feedback_path(console: str, console_dir: Path) -> None:
    decided = ask(console, "enforcer", "q", content="Everest", logprob=-2.3)
    receipt = ok(label(console, decided.id, True))
    assert receipt == {"id": decided.id, "choice": 0, "tenant": "enforcer", "correct": True,
                       "previous": None, "outcome": "abstained_correct",
                       "labelled_by": f"admin (key {digest(ADMIN_KEY)[:8]})"}
    with sqlite3.connect(console_dir / "decisions.sqlite3") as db:
        assert db.execute("SELECT correct FROM decisions WHERE id = ?",
                          (decided.id,)).fetchone() == (1,)
    samples = scrape(console)
    pair = (("model", "fake"), ("outcome", "abstained_correct"), ("tenant", "enforcer"))
    assert samples[("basguard_feedback_decisions", pair)] == 1
    drift = (("model", "fake"), ("tenant", "enforcer"))
    assert samples[("basguard_calibration_drift_window_decisions", drift)] == 1
    # The tenant's own review list no longer offers it.
    withheld = httpx.get(f"{console}/v1/feedback/withheld",
                         headers={"authorization": "Bearer key-enforcer-0123456789abcdef"})
    assert withheld.json()["data"] == []


def test_two_reviewers_of_one_decision_get_a_conflict_not_an_overwrite(console: str) -> None:
    decided = ask(console, "annotator", "q", content="x", logprob=-2.3)
    ok(label(console, decided.id, True, headers=REVIEWER))
    late = label(console, decided.id, False)   # it saw the decision unlabelled
    assert late.status_code == 409
    error = late.json()["error"]
    assert error["code"] == "label_conflict" and "labelled correct" in error["message"]
    queue = ok(api(console, "GET", "/review/queue", params={"tenant": "annotator"}))["data"]
    assert decided.id not in [item["id"] for item in queue]
    samples = scrape(console)
    wrong = (("model", "fake"), ("outcome", "answered_wrong"), ("tenant", "annotator"))
    assert samples.get(("basguard_feedback_decisions", wrong), 0) == 0
    # Having seen the other label, a reviewer may still change it, knowingly.
    assert ok(label(console, decided.id, False, expected=True))["previous"] is True


def test_the_simulator_runs_the_policy_simulate_computation(console: str,
                                                            console_dir: Path) -> None:
    labelled_traffic(console, "enforcer", 40)
    report = ok(api(console, "GET", "/simulate", params={"tenant": "enforcer",
                                                         "threshold": 0.3}))
    store = DecisionStore(console_dir / "decisions.sqlite3", retention_seconds=None)
    try:
        from policies.simulate import Candidate

        configured = ConfiguredPolicy(Candidate("configured", 0.5, 1.0, 0.0, "configured"), "")
        replay = replay_from_store(store, "enforcer", model=None, since_seconds=None,
                                   configured=configured)
    finally:
        store.close()
    reference, candidates = candidates_for(replay.configured, presets=True,
                                           thresholds=[0.3], costs=[])
    expected = simulation_json(simulate(replay.data, candidates, reference=reference,
                                        bootstrap=CONSOLE_BOOTSTRAP), replay)
    assert report["simulated"] == "t=0.3"
    assert report["candidates"] == expected["candidates"]
    assert report["optimum"] == expected["optimum"] and report["curve"] == expected["curve"]
    (moved,) = [c for c in report["candidates"] if c["name"] == "t=0.3"]
    assert moved["decisions"] == 40 and moved["labelled"] == 40
    assert moved["coverage"] == pytest.approx(sum(0.05 + 0.9 * i / 39 >= 0.3
                                                  for i in range(40)) / 40)
    costs = ok(api(console, "GET", "/simulate", params={"tenant": "enforcer",
                                                        "wrong_answer_cost": 4,
                                                        "abstain_cost": 0.1}))
    (priced,) = [c for c in costs["candidates"] if c["name"] == costs["simulated"]]
    assert priced["threshold"] == pytest.approx((4 - 0.1) / (1 + 4))
    empty = api(console, "GET", "/simulate", params={"tenant": "strict"})
    assert empty.status_code == 400 and "no decisions to replay" in empty.json()["error"]["message"]


def test_the_simulated_policy_downloads_as_a_risk_card(console: str) -> None:
    labelled_traffic(console, "enforcer", 12)
    response = api(console, "GET", "/simulate/card", params={"tenant": "enforcer",
                                                             "threshold": 0.7})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert "attachment" in response.headers["content-disposition"]
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    names = archive.namelist()
    assert "enforcer-risk-card.md" in names and any(n.endswith(".png") for n in names)
    card = archive.read("enforcer-risk-card.md").decode()
    assert "simulated in the ops console by admin" in card
    assert "threshold 0.700" in card and "the config in force has 0.500" in card
    assert "## Live figures" in card and "| 12 |" in card


def test_refit_and_promote_swaps_the_calibrator_in_and_logs_who(console: str,
                                                                console_dir: Path) -> None:
    labelled_traffic(console, "enforcer", 40)
    serving = load_artifact(console_dir / CALIBRATOR_FILE).version
    report = ok(api(console, "POST", "/calibrators/fit",
                    json={"tenant": "enforcer", "model": "fake"}))
    assert report["rows"] == 40 and report["serving_version"] == serving
    assert report["promotable"] is True and report["target"] == CALIBRATOR_FILE
    assert report["candidate"]["ece"] is not None and report["serving"]["ece"] is not None
    assert sum(b["decisions"] for b in report["candidate_reliability"]) == 40
    assert report["candidate_version"] != serving
    record = ok(api(console, "POST", "/calibrators/promote", json={
        "tenant": "enforcer", "model": "fake", "candidate_version": report["candidate_version"],
        "serving_version": serving}))
    assert record["who"] == f"admin (key {digest(ADMIN_KEY)[:8]})"
    assert (record["from_version"], record["to_version"]) == (serving,
                                                               report["candidate_version"])
    # The file, the config in force and the next decision all have the new calibrator.
    assert load_artifact(console_dir / CALIBRATOR_FILE).version == report["candidate_version"]
    assert load_artifact(console_dir / (CALIBRATOR_FILE + ".previous")).version == serving
    assert figures(console, "enforcer")["calibrator"]["version"] == report["candidate_version"]
    after = ask(console, "enforcer", "after the promotion", content="x", logprob=-0.2)
    ok(api(console, "GET", "/review/queue"))  # waits until the store has written it
    with sqlite3.connect(console_dir / "decisions.sqlite3") as db:
        assert db.execute("SELECT calibrator_version FROM decisions WHERE id = ?",
                          (after.id,)).fetchone() == (report["candidate_version"],)
    (logged,) = [json.loads(line) for line in
                 (console_dir / PROMOTION_LOG).read_text().splitlines()]
    assert logged == record
    assert ok(api(console, "GET", "/calibrators/promotions"))["data"] == [record]
    # A second promotion based on what was serving before is refused, not applied.
    stale = api(console, "POST", "/calibrators/promote", json={
        "tenant": "enforcer", "model": "fake", "candidate_version": report["candidate_version"],
        "serving_version": serving})
    assert stale.status_code == 409
    assert stale.json()["error"]["code"] == "serving_calibrator_changed"


def test_a_pair_without_a_file_of_its_own_is_fitted_but_not_promoted(console: str) -> None:
    labelled_traffic(console, "annotator", 30)
    report = ok(api(console, "POST", "/calibrators/fit",
                    json={"tenant": "annotator", "model": "fake"}))
    assert report["promotable"] is False and report["target"] is None
    assert "calibrators: models: {fake: FILE}" in report["why_not"]
    refused = api(console, "POST", "/calibrators/promote", json={
        "tenant": "annotator", "model": "fake", "candidate_version": report["candidate_version"],
        "serving_version": report["serving_version"]})
    assert refused.status_code == 400


def test_a_fit_without_enough_labels_is_refused_with_the_reason(console: str) -> None:
    labelled_traffic(console, "enforcer", 4)
    refused = api(console, "POST", "/calibrators/fit", json={"tenant": "enforcer",
                                                             "model": "fake"})
    assert refused.status_code == 400
    assert "labelled rows" in refused.json()["error"]["message"]
    unknown = api(console, "POST", "/calibrators/fit", json={"tenant": "enforcer",
                                                             "model": "nope"})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"


def test_the_openapi_schema_documents_every_endpoint(console: str) -> None:
    schema = ok(httpx.get(f"{console}/admin/openapi.json", headers=ADMIN))
    assert schema["servers"] == [{"url": "/admin"}]
    assert set(schema["paths"]) == {
        "/api/whoami", "/api/tenants", "/api/review/queue", "/api/review/label",
        "/api/simulate", "/api/simulate/card", "/api/calibrators/fit",
        "/api/calibrators/promote", "/api/calibrators/promotions"}
    assert schema["components"]["securitySchemes"]["adminKey"]["scheme"] == "bearer"
    label_body = schema["components"]["schemas"]["LabelRequest"]
    assert set(label_body["required"]) == {"id", "correct", "expected"}
