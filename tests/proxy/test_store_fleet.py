"""Two replicas on one PostgreSQL store, scraped by a real Prometheus: the dashboard shows what
one replica would show for the same traffic.

The store-derived gauges (feedback outcomes, realized utility, BAS, reliability bins, drift,
a risk limit's live bound) are read from the shared store by every replica, so each replica exports the same values; the
dashboard takes ``max by`` their labels over instances (a plain ``sum`` would count them once
per replica), and sums the per-request counters and histograms. Here a fleet of two replicas
(traffic split between them, each decision labelled on the other replica) and a single replica
(the same traffic, its own store) are each scraped by a Prometheus of their own, and every
dashboard query is compared.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from websockets.sync.client import connect

from proxy.http.app import create_app
from proxy.runtime.settings import ServerSettings
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import TENANT_KEYS, gateway_config
from tests.support.loopback import serve_in_thread
from tests.support.postgres_cluster import PostgresCluster
from tests.support.prometheus import (
    METRICS_KEY_FILE,
    RATE_INTERVAL,
    dashboard_queries,
    grafana_expression,
    prometheus_scraping,
    query,
    scraped_since,
)
from tests.support.risk import certify, identity_calibrator, labelled_data
from tests.support.waiting import wait_until

LATENCY = ("basguard_proxy_overhead", "basguard_upstream_latency", "basguard_time_to_first_byte")
"""Timings differ between any two runs: those panels must have data, not equal values."""


def exactly_over(promql: str, seconds: int) -> str:
    """``promql`` with each ``rate``, ``increase`` and ``delta`` over Grafana's interval made the
    exact change over the last ``seconds``: the value now minus the value then (0 for a series
    born since). Prometheus extrapolates a range to its edges by where each series' first and last
    samples fall; two servers scraping at different phases, and a fleet whose counters are split
    between replicas scraped at different phases, then weigh the same increments differently, and
    a ratio or a difference of such rates (the parity gap) moves by points with no double count.
    The exact change leaves the panel's aggregation as it is, which is what this test checks."""
    def exact(match: re.Match[str]) -> str:
        function, selector = match.groups()
        change = f"({selector} - ({selector} offset {seconds}s or {selector} * 0))"
        return f"({change} / {seconds})" if function == "rate" else change

    return re.sub(rf"\b(rate|increase|delta)\(([^()\[\]]+)\[{re.escape(RATE_INTERVAL)}\]\)",
                  exact, promql)


@pytest.fixture
def gateways(
    postgres_cluster: PostgresCluster, fake_upstream: tuple[FakeUpstream, str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[list[str], str]]:
    """Two replicas on one store, and a single gateway on a store of its own."""
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-x")
    config = tmp_path / "basguard.yaml"
    policy = gateway_config(fake_upstream[1])
    for tenant in TENANTS:  # the parity panels read named segments
        policy["tenants"][tenant]["segments"] = {"names": list(SEGMENTS)}
    # A certified risk limit and an audit sample, for the risk-limit panels (as in
    # test_prometheus.py): at most 45 % wrong, certified under the annotator's threshold 0.5,
    # so its decisions are those of the threshold alone.
    identity_calibrator(tmp_path / "cal.json")
    certificate = certify(tmp_path / "cal.json",
                          labelled_data(tmp_path / "labelled.jsonl", rows=1000, seed=5),
                          tmp_path / "risk.json", max_error_rate=0.45, confidence=0.9)
    assert certificate.threshold is not None and certificate.threshold <= 0.5
    annotator = policy["tenants"]["annotator"]
    annotator["calibrators"] = {"default": "cal.json"}
    annotator["risk"].update(max_error_rate=0.45, confidence=0.9,
                             certificates={"default": "risk.json"})
    annotator["audit_rate"] = 1.0
    config.write_text(yaml.safe_dump(policy))
    shared, alone = postgres_cluster.fresh_schema(), postgres_cluster.fresh_schema()

    def settings(store: str, name: str) -> ServerSettings:
        return ServerSettings(config=config, store=store, reload_interval_seconds=0,
                              store_journal_dir=tmp_path / f"journal-{name}",
                              metrics_key=METRICS_KEY_FILE.read_text().strip())

    with ExitStack() as stack:
        fleet = [stack.enter_context(serve_in_thread(create_app(settings(shared, name))))
                 for name in ("a", "b")]
        single = stack.enter_context(serve_in_thread(create_app(settings(alone, "single"))))
        yield fleet, single


TENANTS = ("enforcer", "annotator")
SEGMENTS = ("free", "pro")


def ask(base: str, tenant: str, segment: str = "free", **fake: Any) -> httpx.Response:
    return httpx.post(
        f"{base}/v1/chat/completions", timeout=30,
        headers={"authorization": f"Bearer {TENANT_KEYS[tenant]}",
                 "x-basguard-segment": segment},
        json={"model": "fake", "messages": [{"role": "user", "content": json.dumps(
            {"fake": fake})}]})


def label(base: str, tenant: str, decision_id: str, correct: bool) -> None:
    response = httpx.post(f"{base}/v1/feedback", timeout=30,
                          headers={"authorization": f"Bearer {TENANT_KEYS[tenant]}"},
                          json={"id": decision_id, "correct": correct})
    assert response.status_code == 200, response.text


def pass_through(base: str, tenant: str) -> None:
    """Unguarded traffic, for the passthrough panels: an embedding and a realtime session."""
    headers = {"authorization": f"Bearer {TENANT_KEYS[tenant]}"}
    response = httpx.post(f"{base}/v1/embeddings", timeout=30, headers=headers,
                          json={"model": "fake", "input": "hello"})
    assert response.status_code == 200, response.text
    with connect(f"{base.replace('http://', 'ws://')}/v1/realtime?model=fake",
                 additional_headers=headers, open_timeout=30) as session:
        assert json.loads(session.recv(timeout=30))["type"] == "session.created"


def drive(fleet: list[str], single: str, round_: int) -> None:
    """The same requests to the fleet (alternating replicas, labels on the other one) and to
    the single gateway, one after the other, so both see the same traffic at the same time."""
    step = 0
    for tenant in ("enforcer", "annotator"):
        for i in range(4):
            for content, logprob, correct in (("Paris", -0.05 * i - 0.01, i != 0),
                                              ("Lyon", -1.5 - 0.2 * i, i == 0)):
                maker, labeller = fleet[step % 2], fleet[(step + 1) % 2]
                step += 1
                for decide_on, label_on in ((maker, labeller), (single, single)):
                    response = ask(decide_on, tenant, SEGMENTS[i % 2], content=content,
                                   logprobs=[logprob])
                    assert response.status_code == 200, response.text
                    label(label_on, tenant, response.headers["x-basguard-id"], correct)
        for base in (fleet[round_ % 2], single):
            assert ask(base, tenant, content="Rome", omit_logprobs=True).status_code == 200
            assert ask(base, tenant, status=500).status_code >= 500
            pass_through(base, tenant)


def warm_up(fleet: list[str], single: str) -> None:
    """Every series on every replica, before the measured traffic: Prometheus sees no increase
    in a counter's first sample, so a series born during the measured traffic on one replica
    but not on the other would make their rates differ for a reason that is no double count.
    The single gateway gets what both replicas get."""
    for tenant in ("enforcer", "annotator"):
        for base in (*fleet, single, single):
            for fake in ({"content": "Paris", "logprobs": [-0.01]},
                         {"content": "Lyon", "logprobs": [-2.0]},
                         {"content": "Rome", "omit_logprobs": True}):
                for segment in SEGMENTS:
                    assert ask(base, tenant, segment, **fake).status_code == 200
            assert ask(base, tenant, status=500).status_code >= 500
            pass_through(base, tenant)


def as_map(result: list[dict[str, Any]]) -> dict[frozenset[tuple[str, str]], float]:
    return {frozenset(series["metric"].items()): float(series["value"][1]) for series in result}


def close(a: float, b: float, tolerance: float) -> bool:
    if math.isnan(a) and math.isnan(b):
        return True
    return math.isclose(a, b, rel_tol=tolerance, abs_tol=1e-9)


def scrape_everything(on_fleet: str, on_single: str, scrapes: int = 1) -> None:
    """Wait for ``scrapes`` scrapes of every replica and of the single gateway, the first
    starting from now: all they export now is then in both Prometheus servers."""
    for _ in range(scrapes):
        now = time.time()
        scraped_since(on_fleet, now, targets=2)
        scraped_since(on_single, now)


def test_every_panel_on_two_replicas_equals_one_replicas(
    gateways: tuple[list[str], str], tmp_path: Path
) -> None:
    fleet, single = gateways
    with prometheus_scraping(fleet, tmp_path / "fleet") as on_fleet, \
            prometheus_scraping([single], tmp_path / "single") as on_single:
        warm_up(fleet, single)
        requests = 2 * 2 * 3 * 2  # tenants x replicas x decided requests x segments

        def scraped(prometheus: str, expected: int) -> bool:
            result = query(prometheus, "sum(basguard_requests_total)")
            return bool(result) and float(result[0]["value"][1]) == expected

        wait_until(lambda: scraped(on_fleet, requests) and scraped(on_single, requests),
                   what="the warm-up scraped on both")
        # A scrape of every new series, and one more: the window below starts up to a second
        # before measured_from (rounded to whole seconds), and must start after the first.
        scrape_everything(on_fleet, on_single, scrapes=2)
        measured_from = time.time()
        drive(fleet, single, 0)
        scrape_everything(on_fleet, on_single)  # between the rounds: rates see counters move
        drive(fleet, single, 1)
        labelled = 2 * 2 * 8  # rounds x tenants x labels

        requests += 2 * 2 * 9  # rounds x tenants x decided requests

        def caught_up(prometheus: str) -> bool:
            labels = query(prometheus, "sum(max by (tenant, model, outcome) "
                                       "(basguard_feedback_decisions))")
            return (scraped(prometheus, requests) and bool(labels)
                    and float(labels[0]["value"][1]) == labelled)

        wait_until(lambda: caught_up(on_fleet) and caught_up(on_single),
                   what="the measured traffic scraped on both")
        scrape_everything(on_fleet, on_single)  # the last scrape of every counter, on both

        # What the dashboard must avoid: a plain sum counts the shared store once per replica.
        naive = "sum(basguard_feedback_decisions)"
        assert float(query(on_fleet, naive)[0]["value"][1]) == 2 * labelled
        assert float(query(on_single, naive)[0]["value"][1]) == labelled

        differ = []
        # One instant for every query on both servers, and a window from just before the measured
        # traffic began: every series was scraped after the warm-up and before it (the wait
        # above), so the value then is the warm-up's and the change is the measured traffic's.
        evaluated_at = time.time()
        seconds = math.ceil(evaluated_at - measured_from)
        for title, expr in dashboard_queries():
            promql = exactly_over(grafana_expression(expr), seconds)
            got = as_map(query(on_fleet, promql, at=evaluated_at))
            want = as_map(query(on_single, promql, at=evaluated_at))
            if not want or not any(math.isfinite(v) for v in want.values()):
                differ.append(f"{title}: no data on the single gateway: {promql}")
                continue
            if any(name in expr for name in LATENCY):
                if not any(math.isfinite(v) for v in got.values()):
                    differ.append(f"{title}: no data on the fleet: {promql}")
                continue
            if got.keys() != want.keys() or not all(
                    close(got[key], want[key], 1e-9) for key in want):
                differ.append(f"{title}: {promql}\n  fleet:  {sorted(got.items())}\n"
                              f"  single: {sorted(want.items())}")
        assert not differ, "panels that differ between 2 replicas and 1:\n" + "\n".join(differ)
