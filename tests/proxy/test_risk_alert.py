"""End to end with a real Prometheus: feedback on audited decisions -> the live bound on
/metrics -> BasguardRiskLimitBreached firing, from the shipped rules.

Prometheus is Debian's ``prometheus`` package, run by :func:`tests.support.prometheus.prometheus_scraping`
with the shipped config, scraping this module's ``gateway`` every second.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import SDK, serve_gateway
from tests.support.prometheus import METRICS_KEY_FILE, prometheus_scraping, query
from tests.support.risk import (
    LIMITED_KEY,
    ask,
    certify,
    identity_calibrator,
    labelled_data,
    limited_config,
)
from tests.support.waiting import wait_until


@pytest.fixture
def gateway(fake_upstream: tuple[FakeUpstream, str], tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The tenant ``limited``: at most 10 % wrong at 90 %, certified; every decision audited."""
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-x")
    identity_calibrator(tmp_path / "cal.json")
    certify(tmp_path / "cal.json", labelled_data(tmp_path / "labelled.jsonl", rows=3000, seed=1),
            tmp_path / "risk.json", max_error_rate=0.1, confidence=0.9)
    config = limited_config(fake_upstream[1], "cal.json", certificates={"default": "risk.json"},
                            audit_rate=1.0)
    with serve_gateway(tmp_path, config, metrics_key=METRICS_KEY_FILE.read_text().strip(),
                       risk_watch_interval_seconds=0.2) as url:
        yield url


@pytest.fixture
def prometheus(gateway: str, tmp_path: Path) -> Iterator[str]:
    """Prometheus with the shipped config and rules, scraping the gateway every second."""
    with prometheus_scraping([gateway], tmp_path / "prometheus") as url:
        yield url


def firing(prometheus_url: str) -> list[dict[str, Any]]:
    alerts = httpx.get(f"{prometheus_url}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    return [alert for alert in alerts if alert["labels"]["alertname"] ==
            "BasguardRiskLimitBreached" and alert["state"] == "firing"]


def test_wrong_labels_on_audited_answers_fire_the_breach_alert(
    gateway: str, prometheus: str, sdk_client: SDK,
) -> None:
    client = sdk_client(f"{gateway}/v1", LIMITED_KEY)
    ids = []
    for _ in range(20):
        report = ask(client, 0.99)[0].model_extra["basguard"]
        assert report["decision"] == "answer" and report["audited"] is True
        ids.append(report["id"])
    # Right answers first: the bound is watched, and nothing fires.
    for decision_id in ids[:10]:
        client.post("/feedback", body={"id": decision_id, "correct": True}, cast_to=object)
    wait_until(lambda: any(float(s["value"][1]) == 10 for s in query(
        prometheus, 'basguard_risk_limit_audited_decisions{tenant="limited"}')),
        what="Prometheus to scrape 10 audited labels")
    (upper,) = query(prometheus, 'basguard_risk_limit_error_upper_bound_ratio{tenant="limited", '
                                 'model="fake"}')
    assert float(upper["value"][1]) < 1
    assert firing(prometheus) == []
    # Then ten wrong ones: 10 of 20 proves far more than 10 % wrong.
    for decision_id in ids[10:]:
        client.post("/feedback", body={"id": decision_id, "correct": False}, cast_to=object)
    wait_until(lambda: firing(prometheus), what="the breach alert to fire")
    (alert,) = firing(prometheus)
    assert alert["labels"] == {"alertname": "BasguardRiskLimitBreached", "severity": "critical",
                               "tenant": "limited", "model": "fake"}
    lower = float(alert["value"])
    assert 0.1 < lower < 0.5  # the lower bound: at least this share of the answers is wrong
    assert alert["annotations"]["summary"].startswith(
        "limited/fake: at least ") and "above its risk limit" in alert["annotations"]["summary"]
    (breached,) = query(prometheus, 'basguard_risk_limit_breached{tenant="limited", model="fake"}')
    assert float(breached["value"][1]) == 1
