"""A risk limit watched live over real sockets: labels of audited answers move the anytime-valid
bound on /metrics; a proven breach is 1 in basguard_risk_limit_breached and, under
``on_breach: abstain``, withholds every answer until a new certificate is loaded."""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from calibrators.certificate import load_certificate
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import SDK, serve_gateway
from tests.support.metrics import scrape
from tests.support.risk import (
    LIMITED_KEY,
    ask,
    certify,
    identity_calibrator,
    labelled_data,
    limited_config,
)
from tests.support.waiting import wait_until

KEY = (("model", "fake"), ("tenant", "limited"))


@pytest.fixture(autouse=True)
def upstream_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-upstream-secret-0123456789")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("watch")
    identity_calibrator(directory / "cal.json")
    data = labelled_data(directory / "held_out.jsonl", rows=3000, seed=1)
    certify(directory / "cal.json", data, directory / "risk.json", max_error_rate=0.1,
            confidence=0.9)
    return {"calibrator": directory / "cal.json", "certificate": directory / "risk.json",
            "data": data}


@pytest.fixture
def gateway(fake_upstream: tuple[FakeUpstream, str], tmp_path: Path,
            files: dict[str, Path]) -> Iterator[Any]:
    """``gateway(on_breach, audit_rate)``: the tenant ``limited`` with a certified limit of at
    most 10 % wrong at 90 %; its certificate is a copy the test may replace; the watch looks
    every 50 ms and the config is polled as often."""
    from contextlib import ExitStack

    certificate = tmp_path / "risk.json"
    shutil.copy(files["certificate"], certificate)
    with ExitStack() as stack:
        def start(on_breach: str, audit_rate: float = 1.0) -> tuple[str, Path]:
            config = limited_config(fake_upstream[1], str(files["calibrator"]),
                                    certificates={"default": str(certificate)},
                                    on_breach=on_breach, audit_rate=audit_rate)
            url = stack.enter_context(serve_gateway(
                tmp_path, config, risk_watch_interval_seconds=0.05,
                reload_interval_seconds=0.05))
            return url, certificate

        yield start


def answers(client: openai.OpenAI, count: int) -> list[str]:
    """The ids of ``count`` answered, audited decisions (asked before any is labelled: a
    breach the labels prove would withhold the next ones)."""
    ids = []
    for _ in range(count):
        report = ask(client, 0.99)[0].model_extra["basguard"]
        assert report["decision"] == "answer" and report["audited"] is True
        ids.append(report["id"])
    return ids


def label(client: openai.OpenAI, ids: list[str], *, correct: bool) -> None:
    """Label each decision through POST /v1/feedback."""
    for decision_id in ids:
        client.post("/feedback", body={"id": decision_id, "correct": correct}, cast_to=object)


def test_wrong_audited_answers_prove_a_breach_and_abstain_withholds_until_recertified(
    gateway: Any, files: dict[str, Path], sdk_client: SDK, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="basguard.risk")
    url, certificate = gateway("abstain")
    client = sdk_client(f"{url}/v1", LIMITED_KEY)
    # Audited but withheld: the error rate among answers does not count them.
    for _ in range(10):
        report = ask(client, 0.6)[0].model_extra["basguard"]
        assert report["decision"] == "abstain" and report["audited"] is True
        client.post("/feedback", body={"id": report["id"], "correct": False}, cast_to=object)
    right, wrong = answers(client, 20), answers(client, 20)
    # Correct labels: the bound falls, nothing is proven.
    label(client, right, correct=True)
    wait_until(lambda: scrape(url)[("basguard_risk_limit_audited_decisions", KEY)] == 20,
               what="20 audited labels on /metrics")
    metrics = scrape(url)
    assert metrics[("basguard_risk_limit_error_upper_bound_ratio", KEY)] < 0.2
    assert metrics[("basguard_risk_limit_error_lower_bound_ratio", KEY)] == 0
    assert metrics[("basguard_risk_limit_breached", KEY)] == 0
    # Then every audited answer is wrong: 20 of 40 proves far more than 10 %.
    label(client, wrong, correct=False)
    wait_until(lambda: scrape(url)[("basguard_risk_limit_breached", KEY)] == 1,
               what="the breach on /metrics")
    metrics = scrape(url)
    assert metrics[("basguard_risk_limit_audited_wrong_decisions", KEY)] == 20
    assert metrics[("basguard_risk_limit_error_lower_bound_ratio", KEY)] > 0.1

    def withheld() -> bool:
        report = ask(client, 0.99)[0].model_extra["basguard"]
        return bool(report["decision"] == "abstain")

    wait_until(withheld, what="withheld")
    body, headers = ask(client, 0.99)
    report = body.model_extra["basguard"]
    assert report["risk_limit"]["status"] == "breached"
    assert "risk limit breached" in report["choices"][0]["reason"]
    assert "status=breached" in headers["x-basguard-risk-limit"]
    # Logged once, when the watch first saw it (part way through the labels, maybe).
    breaches = [r.getMessage() for r in caplog.records
                if r.getMessage().startswith("risk limit breached")]
    assert len(breaches) == 1
    assert re.match(r"risk limit breached: tenant 'limited', model 'fake': \d+ of \d+ audited "
                    r"answers wrong; the error rate among answers is at least 0\.\d+ with 90% "
                    r"confidence, above the limit 0\.1; withholding every answer", breaches[0])
    # A new certificate ends the breach at once; its own count starts from nothing.
    certify(files["calibrator"], files["data"], certificate, max_error_rate=0.1,
            confidence=0.9, seed=7)
    new_version = load_certificate(certificate).version

    def recertified() -> bool:
        report = ask(client, 0.99)[0].model_extra["basguard"]
        return bool(report["risk_limit"]["certificate"] == new_version)

    wait_until(recertified, what="recertified")
    body, _ = ask(client, 0.99)
    report = body.model_extra["basguard"]
    assert report["decision"] == "answer" and report["risk_limit"]["status"] == "certified"
    metrics = scrape(url)
    assert metrics[("basguard_risk_limit_breached", KEY)] == 0
    assert metrics[("basguard_risk_limit_audited_decisions", KEY)] == 0


def test_alert_keeps_answering_and_says_it_is_breached(gateway: Any, sdk_client: SDK) -> None:
    url, _ = gateway("alert")
    client = sdk_client(f"{url}/v1", LIMITED_KEY)
    label(client, answers(client, 15), correct=False)
    wait_until(lambda: scrape(url)[("basguard_risk_limit_breached", KEY)] == 1,
               what="the breach on /metrics")

    def flagged() -> bool:
        report = ask(client, 0.99)[0].model_extra["basguard"]
        return bool(report["risk_limit"]["status"] == "breached")

    wait_until(flagged, what="flagged")
    report = ask(client, 0.99)[0].model_extra["basguard"]
    assert report["decision"] == "answer" and report["choices"][0]["reason"] is None


def test_labels_outside_the_sample_do_not_move_the_bound(
    gateway: Any, sdk_client: SDK,
) -> None:
    url, _ = gateway("abstain", audit_rate=0.0)
    client = sdk_client(f"{url}/v1", LIMITED_KEY)
    for _ in range(15):
        report = ask(client, 0.99)[0].model_extra["basguard"]
        assert report["audited"] is False and report["decision"] == "answer"
        client.post("/feedback", body={"id": report["id"], "correct": False}, cast_to=object)
    # The labels are stored (the feedback totals count them), and prove nothing about the limit.
    wait_until(lambda: scrape(url).get(("basguard_feedback_decisions", (
        ("model", "fake"), ("outcome", "answered_wrong"), ("tenant", "limited")))) == 15,
        what="15 stored labels on /metrics")
    metrics = scrape(url)
    assert metrics[("basguard_risk_limit_audited_decisions", KEY)] == 0
    assert metrics[("basguard_risk_limit_breached", KEY)] == 0
    assert ask(client, 0.99)[0].model_extra["basguard"]["decision"] == "answer"


def test_the_risk_card_states_the_limit_its_certificates_and_the_live_verdict(
    gateway: Any, sdk_client: SDK, tmp_path: Path,
) -> None:
    from proxy.cli.main import main

    url, certificate_path = gateway("abstain")
    client = sdk_client(f"{url}/v1", LIMITED_KEY)
    label(client, answers(client, 12), correct=False)
    wait_until(lambda: scrape(url)[("basguard_risk_limit_breached", KEY)] == 1,
               what="the breach on /metrics")
    certificate = load_certificate(certificate_path)
    out = tmp_path / "cards"
    assert main(["policy", "card", "limited", "--config", str(tmp_path / "basguard.yaml"),
                 "--store", str(tmp_path / "decisions.sqlite3"), "-o", str(out)]) == 0
    text = (out / "limited-risk-card.md").read_text(encoding="utf-8")
    assert "## Risk limit" in text
    assert "- **Limit:** at most **10 %** of the answers wrong, with **90 %** confidence" in text
    assert "- **On a proven breach:** `abstain` (every answer on the model is withheld" in text
    assert "- **Audit sample:** 100 % of decisions, drawn at random" in text
    tested = certificate.tested
    assert (f"| `fake` | `{certificate_path}` (version `{certificate.version}`, "
            f"{certificate.created_at.date().isoformat()}) | {certificate.threshold:.4f} | "
            f"{certificate.labels} | {tested.answered}, {tested.errors} of {tested.labels} |"
            in text)
    assert "| `fake` | 12 | 12 |" in text and "| **BREACHED** |" in text
    assert "Risk limit on `fake` breached: the audit sample proves more than 10 % wrong" in text
    assert f"- risk certificate: `{certificate_path}` (version `{certificate.version}`)" in text
