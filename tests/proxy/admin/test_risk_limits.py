"""The console and a tenant's risk limit (docs/risk-limits.md): the tenants page shows the
limit, the certified threshold, the threshold answered at and the live bound as /metrics does;
the review queue puts the audit sample first, flagged, with an audited answer's text."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from calibrators.certificate import RiskCertificate
from policies.risk_limit import live_bound
from tests.support.admin_console import (
    ADMIN,
    CALIBRATOR_FILE,
    ask,
    console_config,
    write_identity_calibrator,
)
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import SDK, serve_gateway
from tests.support.metrics import scrape, value
from tests.support.risk import (
    LIMITED_KEY,
    certify,
    identity_calibrator,
    labelled_data,
    limited_config,
)
from tests.support.risk import ask as ask_at


@pytest.fixture
def certificate(console_dir: Path) -> RiskCertificate:
    """At most 10 % wrong with 90 % confidence, for ``cal.json`` beside the config."""
    identity_calibrator(console_dir / "cal.json")
    data = labelled_data(console_dir / "held_out.jsonl", rows=3000, seed=1)
    certified = certify(console_dir / "cal.json", data, console_dir / "risk.json",
                        max_error_rate=0.1, confidence=0.9)
    assert certified.threshold is not None and 0.6 < certified.threshold < 0.97
    return certified


@pytest.fixture
def limited_console(fake_upstream: tuple[FakeUpstream, str], console_dir: Path,
                    certificate: RiskCertificate) -> Iterator[str]:
    """The console's gateway plus the tenant ``limited``: a certified risk limit, and every
    decision in the audit sample."""
    fake_upstream[0].clear()
    config = console_config(fake_upstream[1])
    limited = limited_config(fake_upstream[1], "cal.json", certificates={"default": "risk.json"},
                             audit_rate=1.0)
    config["tenants"]["limited"] = limited["tenants"]["limited"]
    write_identity_calibrator(console_dir / CALIBRATOR_FILE)
    with serve_gateway(console_dir, config) as url:
        yield url


def api(url: str, method: str, path: str, **kwargs: Any) -> Any:
    response = httpx.request(method, f"{url}/admin/api{path}", headers=ADMIN, timeout=60,
                             **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


def row(url: str, tenant: str, model: str = "fake") -> dict[str, Any]:
    (found,) = [t for t in api(url, "GET", "/tenants")["tenants"] if t["name"] == tenant]
    (figures,) = [m for m in found["models"] if m["model"] == model]
    return figures


def test_the_tenants_page_shows_the_risk_limit_and_its_live_bound(
        limited_console: str, certificate: RiskCertificate, sdk_client: SDK) -> None:
    threshold = certificate.threshold
    assert threshold is not None
    client = sdk_client(f"{limited_console}/v1", LIMITED_KEY)
    answered, _ = ask_at(client, min(0.99, threshold + 0.02), content="Lyon")
    report = answered.model_extra["basguard"]
    assert report["decision"] == "answer" and report["audited"]
    # Before any label: the certificate in force, nothing to bound yet.
    figures = row(limited_console, "limited")
    limit = figures["risk_limit"]
    assert figures["certified_threshold"] == threshold and figures["audit_rate"] == 1.0
    assert limit["status"] == "certified" and limit["threshold"] == max(0.5, threshold)
    assert (limit["max_error_rate"], limit["confidence"], limit["on_breach"]) == (0.1, 0.9,
                                                                                   "alert")
    assert limit["certificate"] == certificate.version
    assert limit["certificate_labels"] == certificate.labels
    assert limit["certified_answer_rate"] == certificate.answer_rate
    assert (limit["audited_answers"], limit["error_lower_bound"], limit["error_upper_bound"]) \
        == (0, 0.0, 1.0)
    # A reviewer labels the audited answer wrong in the console: the bound moves, as /metrics.
    api(limited_console, "POST", "/review/label",
        json={"id": report["id"], "choice": 0, "correct": False, "expected": None})
    limit = row(limited_console, "limited")["risk_limit"]
    bound = live_bound(1, 1, max_error_rate=0.1, confidence=0.9)
    assert (limit["audited_answers"], limit["audited_wrong"]) == (1, 1)
    assert limit["error_lower_bound"] == pytest.approx(bound.lower)
    assert limit["error_upper_bound"] == pytest.approx(bound.upper)
    samples = scrape(limited_console)
    for name, figure in (("basguard_risk_limit_error_upper_bound_ratio", "error_upper_bound"),
                         ("basguard_risk_limit_error_lower_bound_ratio", "error_lower_bound")):
        assert value(samples, name, tenant="limited", model="fake") == pytest.approx(
            limit[figure])
    # A tenant without a limit says so; the page shows both.
    enforcer = row(limited_console, "enforcer")
    assert enforcer["risk_limit"] is None and enforcer["certified_threshold"] is None
    assert enforcer["audit_rate"] == 0.0
    page = httpx.get(f"{limited_console}/admin/tenants", headers=ADMIN, timeout=60)
    assert page.status_code == 200
    assert f"certified {threshold:.3f} on {certificate.labels} labels" in page.text
    assert "audit: 1 of 1 answers wrong" in page.text and "(audit 100.0 %)" in page.text
    assert "no risk limit" in page.text


def test_a_limit_without_a_certificate_answers_nothing_and_says_so(
        fake_upstream: tuple[FakeUpstream, str], console_dir: Path) -> None:
    identity_calibrator(console_dir / "cal.json")
    config = console_config(fake_upstream[1])
    config["tenants"]["limited"] = limited_config(fake_upstream[1], "cal.json",
                                                  certificates=None)["tenants"]["limited"]
    write_identity_calibrator(console_dir / CALIBRATOR_FILE)
    with serve_gateway(console_dir, config) as url:
        figures = row(url, "limited")
        limit = figures["risk_limit"]
        assert (limit["status"], limit["threshold"], limit["certificate"]) == (
            "uncertified", None, None)
        assert figures["certified_threshold"] is None and limit["error_upper_bound"] is None
        page = httpx.get(f"{url}/admin/tenants", headers=ADMIN, timeout=60).text
        assert "answers nothing" in page and "(no certificate)" in page


def test_the_queue_puts_the_audit_sample_first_with_an_audited_answers_text(
        limited_console: str, sdk_client: SDK) -> None:
    withheld = ask(limited_console, "enforcer", "q1", content="a1", logprob=math.log(0.45))
    client = sdk_client(f"{limited_console}/v1", LIMITED_KEY)
    answered, _ = ask_at(client, 0.99, content="Lyon")
    audited_withheld, _ = ask_at(client, 0.2, content="Nice")
    queue = api(limited_console, "GET", "/review/queue")["data"]
    order = [(item["id"], item["audited"], item["decision"]) for item in queue]
    # The sample first (withheld before answered within it), then the other withheld answers.
    assert order == [
        (audited_withheld.model_extra["basguard"]["id"], True, "abstain"),
        (answered.model_extra["basguard"]["id"], True, "answer"),
        (withheld.id, False, "abstain"),
    ]
    assert queue[1]["answer"] == "Lyon" and queue[1]["prompt"] is not None
    page = httpx.get(f"{limited_console}/admin/review", headers=ADMIN, timeout=60).text
    assert "audit sample" in page and "Nice" in page


def test_a_promotion_under_a_certificate_is_refused_and_the_certified_calibrator_stays(
        fake_upstream: tuple[FakeUpstream, str], console_dir: Path,
        certificate: RiskCertificate, sdk_client: SDK) -> None:
    """A certificate is bound to its calibrator: the reload refuses a new one beside it."""
    config = console_config(fake_upstream[1])
    limited = limited_config(fake_upstream[1], "cal.json",
                             certificates={"models": {"fake": "risk.json"}})["tenants"]["limited"]
    limited["calibrators"] = {"models": {"fake": "cal.json"}}  # a file of its own: promotable
    config["tenants"]["limited"] = limited
    write_identity_calibrator(console_dir / CALIBRATOR_FILE)
    with serve_gateway(console_dir, config) as url:
        client = sdk_client(f"{url}/v1", LIMITED_KEY)
        for i in range(40):
            p = 0.05 + 0.9 * i / 39
            body, _ = ask_at(client, p, content=f"answer {i}")
            response = httpx.post(f"{url}/v1/feedback", timeout=30,
                                  headers={"authorization": f"Bearer {LIMITED_KEY}"},
                                  json={"id": body.model_extra["basguard"]["id"],
                                        "correct": i % 3 != 0})
            assert response.status_code == 200, response.text
        report = api(url, "POST", "/calibrators/fit", json={"tenant": "limited", "model": "fake"})
        assert report["promotable"] and report["serving_version"] == certificate.calibrator.version
        refused = httpx.post(f"{url}/admin/api/calibrators/promote", headers=ADMIN, timeout=60,
                             json={"tenant": "limited", "model": "fake",
                                   "candidate_version": report["candidate_version"],
                                   "serving_version": report["serving_version"]})
        assert refused.status_code == 400, refused.text
        message = refused.json()["error"]["message"]
        assert "the previous one stays in force" in message
        assert f"certified for calibrator {certificate.calibrator.version}" in message
        figures = row(url, "limited")
        assert figures["calibrator"]["version"] == certificate.calibrator.version
        assert figures["risk_limit"]["status"] == "certified"


def test_the_simulator_compares_with_the_threshold_the_risk_limit_serves(
        limited_console: str, certificate: RiskCertificate, sdk_client: SDK) -> None:
    """A limited tenant answers from max(cost, certified): that is the configured row a replay
    compares with, not the cost threshold alone."""
    threshold = certificate.threshold
    assert threshold is not None and threshold > 0.5  # above the tenant's cost threshold
    client = sdk_client(f"{limited_console}/v1", LIMITED_KEY)
    for p in (threshold - 0.05, threshold + 0.02):
        ask_at(client, p)
    report = api(limited_console, "GET", "/simulate", params={"tenant": "limited",
                                                              "model": "fake"})
    reference = report["reference"]
    assert reference["name"] == "configured" and reference["threshold"] == threshold
    assert "under its risk limit: answers iff p >= " in reference["source"]
    # Replayed at that threshold, the stored decisions are decided as they were.
    assert report["configured_live"]["decided_differently_at_configured_threshold"] == 0
