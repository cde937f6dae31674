"""A real Prometheus scrapes a live basguard: every dashboard query has data, the alerts load.

Prometheus is Debian's ``prometheus`` package (``.ci/run`` installs it). The test runs the
shipped ``deploy/prometheus`` config with its target pointed at the gateway on loopback, drives
traffic and feedback through the openai SDK, and asks Prometheus's HTTP API for each query of
``deploy/grafana/dashboards/basguard.json`` as Grafana would.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import SDK, TENANT_KEYS, gateway_config, serve_gateway
from tests.support.prometheus import (
    DEPLOY,
    METRICS_KEY_FILE,
    TENANTS,
    dashboard_queries,
    grafana_expression,
    prometheus_scraping,
    query,
    scraped_since,
)
from tests.support.risk import certify, identity_calibrator, labelled_data
from tests.support.waiting import wait_until


@pytest.fixture
def gateway(fake_upstream: tuple[FakeUpstream, str], tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The gateway with the shipped metrics key: Prometheus's scrapes must present it."""
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-x")
    config = gateway_config(fake_upstream[1])
    for tenant in TENANTS.split("|"):  # segments, for the parity panels
        config["tenants"][tenant]["segments"] = {"names": ["free", "pro"]}
    # A certified risk limit and an audit sample, for the risk-limit panels. The certificate
    # proves at most 45 % wrong from a threshold under the annotator's 0.5, so its decisions
    # are those of the threshold alone.
    identity_calibrator(tmp_path / "cal.json")
    certificate = certify(tmp_path / "cal.json",
                          labelled_data(tmp_path / "labelled.jsonl", rows=1000, seed=5),
                          tmp_path / "risk.json", max_error_rate=0.45, confidence=0.9)
    assert certificate.threshold is not None and certificate.threshold <= 0.5
    annotator = config["tenants"]["annotator"]
    annotator["calibrators"] = {"default": "cal.json"}
    annotator["risk"].update(max_error_rate=0.45, confidence=0.9,
                             certificates={"default": "risk.json"})
    annotator["audit_rate"] = 1.0
    with serve_gateway(tmp_path, config,
                       metrics_key=METRICS_KEY_FILE.read_text().strip()) as url:
        yield url


def test_compose_gives_the_gateway_the_key_prometheus_presents() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    environment = compose["services"]["basguard"]["environment"]
    assert environment["BASGUARD_METRICS_KEY"] == METRICS_KEY_FILE.read_text().strip()
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["authorization"] == {"type": "Bearer", "credentials_file": METRICS_KEY_FILE.name}


@pytest.fixture
def prometheus(gateway: str, tmp_path: Path) -> Iterator[str]:
    """Prometheus with the shipped config and rules, scraping the gateway every second."""
    with prometheus_scraping([gateway], tmp_path / "prometheus") as url:
        yield url


def drive_traffic(gateway: str, sdk_client: SDK) -> None:
    """Answers, abstentions, no-confidence decisions, a stream, upstream errors, labels, and
    passed-through requests."""
    for tenant in ("enforcer", "annotator"):
        sdk = sdk_client(f"{gateway}/v1", TENANT_KEYS[tenant])

        def ask(sdk: openai.OpenAI = sdk, segment: str = "free", **fake: Any) -> str:
            response = sdk.chat.completions.create(
                model="fake", messages=[{"role": "user", "content": json.dumps({"fake": fake})}],
                extra_headers={"x-basguard-segment": segment})
            return str((response.model_extra or {})["basguard"]["id"])

        for i in range(4):
            segment = ("free", "pro")[i % 2]
            confident = ask(content="Paris", segment=segment, logprobs=[-0.05 * i - 0.01])
            doubtful = ask(content="Lyon", segment=segment, logprobs=[-1.5 - 0.2 * i])
            sdk.post("/feedback", body={"id": confident, "correct": i != 0}, cast_to=object)
            sdk.post("/feedback", body={"id": doubtful, "correct": i == 0}, cast_to=object)
        ask(content="Rome", omit_logprobs=True)
        for _ in sdk.chat.completions.create(model="fake", stream=True, messages=[
                {"role": "user", "content": "hi"}]):
            pass
        with pytest.raises(openai.InternalServerError):
            ask(status=500)
        # Unguarded traffic, for the passthrough panels: an embedding and a realtime session.
        sdk.embeddings.create(model="fake", input="hello")
        with sdk.realtime.connect(model="fake") as connection:
            assert connection.recv().type == "session.created"


@pytest.mark.slow
def test_every_dashboard_query_returns_data_and_the_alert_rules_are_loaded(
    gateway: str, prometheus: str, sdk_client: SDK
) -> None:
    # Two rounds with a scrape between them, so rates and deltas see the counters move; then
    # a scrape of the second round's figures.
    drive_traffic(gateway, sdk_client)
    scraped_since(prometheus, time.time())
    drive_traffic(gateway, sdk_client)
    scraped_since(prometheus, time.time())

    empty = []
    for title, expr in dashboard_queries():
        result = query(prometheus, grafana_expression(expr))
        values = [float(series["value"][1]) for series in result]
        if not any(math.isfinite(v) for v in values):
            empty.append(f"{title}: {expr} -> {values}")
    assert not empty, "dashboard queries without data:\n" + "\n".join(empty)

    # Spot checks that the numbers mean what the panels say.
    (over,) = query(prometheus, 'sum(basguard_feedback_decisions{tenant="enforcer", '
                                'outcome="abstained_correct"})')
    assert float(over["value"][1]) == 2  # one per round: the doubtful answer labelled right
    by_segment = {s["metric"]["segment"]: float(s["value"][1]) for s in query(
        prometheus, 'sum by (segment) (basguard_feedback_segment_decisions{tenant="enforcer"})')}
    assert by_segment == {"free": 8, "pro": 8}  # 2 rounds x 2 requests x 2 labels each
    thresholds = {s["metric"]["tenant"]: float(s["value"][1])
                  for s in query(prometheus, "basguard_threshold_ratio")}
    assert thresholds["enforcer"] == 0.5

    def rules_evaluated() -> bool:
        groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return bool(rules) and all(rule["health"] == "ok" for rule in rules)

    wait_until(rules_evaluated, what="every alert rule evaluated")
    groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
    names = {rule["name"] for group in groups for rule in group["rules"]}
    assert names == {"BasguardAbstentionRateSpike", "BasguardCalibrationDrift",
                     "BasguardUpstreamErrorRate", "BasguardOverheadP99High",
                     "BasguardStoreWriterDown", "BasguardSegmentParityGap",
                     "BasguardDecisionsLost", "BasguardRiskLimitBreached",
                     "BasguardRiskLimitUncertified"}
    # Every alert expression is valid against live series (health ok, checked above).
