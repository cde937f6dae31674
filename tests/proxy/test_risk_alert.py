"""End to end with a real Prometheus: feedback on audited decisions -> the live bound on
/metrics -> BasguardRiskLimitBreached firing, from the shipped rules.

Prometheus is Debian's ``prometheus`` package, run as :mod:`tests.proxy.test_prometheus` runs
it (its ``prometheus`` fixture, scraping this module's ``gateway`` every second).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.proxy.conftest import SDK, serve_gateway
from tests.proxy.fake_upstream import FakeUpstream
from tests.proxy.risk_setup import (
    LIMITED_KEY,
    ask,
    certify,
    identity_calibrator,
    labelled_data,
    limited_config,
)
from tests.proxy.test_prometheus import METRICS_KEY_FILE, prometheus, query  # noqa: F401
from tests.proxy.test_reload import wait_for


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


def firing(prometheus_url: str) -> list[dict[str, Any]]:
    alerts = httpx.get(f"{prometheus_url}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    return [alert for alert in alerts if alert["labels"]["alertname"] ==
            "BasguardRiskLimitBreached" and alert["state"] == "firing"]


def test_wrong_labels_on_audited_answers_fire_the_breach_alert(
    gateway: str, prometheus: str, sdk_client: SDK,  # noqa: F811
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
    wait_for(lambda: any(float(s["value"][1]) == 10 for s in query(
        prometheus, 'basguard_risk_limit_audited_decisions{tenant="limited"}')), timeout=30)
    (upper,) = query(prometheus, 'basguard_risk_limit_error_upper_bound_ratio{tenant="limited", '
                                 'model="fake"}')
    assert float(upper["value"][1]) < 1
    assert firing(prometheus) == []
    # Then ten wrong ones: 10 of 20 proves far more than 10 % wrong.
    for decision_id in ids[10:]:
        client.post("/feedback", body={"id": decision_id, "correct": False}, cast_to=object)
    wait_for(lambda: bool(firing(prometheus)), timeout=30)
    (alert,) = firing(prometheus)
    assert alert["labels"] == {"alertname": "BasguardRiskLimitBreached", "severity": "critical",
                               "tenant": "limited", "model": "fake"}
    lower = float(alert["value"])
    assert 0.1 < lower < 0.5  # the lower bound: at least this share of the answers is wrong
    assert alert["annotations"]["summary"].startswith(
        "limited/fake: at least ") and "above its risk limit" in alert["annotations"]["summary"]
    (breached,) = query(prometheus, 'basguard_risk_limit_breached{tenant="limited", model="fake"}')
    assert float(breached["value"][1]) == 1
