"""Two ``basguard serve`` processes sharing one PostgreSQL store, end to end.

A decision made on replica A is labelled on replica B; the review list is the same from either;
``basguard calibrate fit --from-store postgresql://...`` and ``basguard drift`` read what both
wrote. Real processes, real sockets, a real database (the session's temporary cluster).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from calibrators.artifact import load_artifact
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import TENANT_KEYS, gateway_config
from tests.support.loopback import ServerProcess, serve_process
from tests.support.postgres_cluster import PostgresCluster

AUTH = {"authorization": f"Bearer {TENANT_KEYS['enforcer']}"}


@pytest.fixture
def replicas(
    postgres_cluster: PostgresCluster, fake_upstream: tuple[FakeUpstream, str], tmp_path: Path
) -> Iterator[tuple[str, ServerProcess, ServerProcess]]:
    """The store's URL and two replicas serving from it, each ready (store reachable)."""
    url = postgres_cluster.fresh_schema()
    config = tmp_path / "basguard.yaml"
    config.write_text(yaml.safe_dump(gateway_config(fake_upstream[1])))
    with ExitStack() as stack:
        servers = []
        for name in ("a", "b"):
            env = {"BASGUARD_STORE": url, "FAKE_UPSTREAM_KEY": "sk-x",
                   "BASGUARD_STORE_JOURNAL_DIR": str(tmp_path / f"journal-{name}"),
                   "BASGUARD_RELOAD_INTERVAL_SECONDS": "0"}
            servers.append(stack.enter_context(serve_process(
                ["--config", str(config)], env=env, log=tmp_path / f"{name}.log")))
        for server in servers:
            server.wait_ready("/readyz")
        yield url, servers[0], servers[1]
        for server in servers:
            assert server.stop(signal.SIGTERM) == 0, server.output()


def ask(base: str, logprob: float) -> str:
    response = httpx.post(
        f"{base}/v1/chat/completions", headers=AUTH, timeout=30,
        json={"model": "fake", "messages": [{"role": "user", "content": json.dumps(
            {"fake": {"content": "Paris", "logprobs": [logprob]}})}]})
    assert response.status_code == 200, response.text
    decision_id: str = response.headers["x-basguard-id"]
    return decision_id


def label(base: str, decision_id: str, correct: bool) -> dict[str, Any]:
    response = httpx.post(f"{base}/v1/feedback", headers=AUTH, timeout=30,
                          json={"id": decision_id, "correct": correct})
    assert response.status_code == 200, response.text
    receipt: dict[str, Any] = response.json()
    return receipt


def withheld(base: str) -> list[tuple[str, int]]:
    response = httpx.get(f"{base}/v1/feedback/withheld", headers=AUTH, timeout=30,
                         params={"include_labelled": "true", "limit": 500})
    assert response.status_code == 200, response.text
    return [(item["id"], item["choice"]) for item in response.json()["data"]]


def basguard(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy.cli", *argv], capture_output=True,
                          text=True, timeout=300, check=False)


def test_two_replicas_share_decisions_labels_review_fitting_and_drift(
    replicas: tuple[str, ServerProcess, ServerProcess], tmp_path: Path
) -> None:
    url, a, b = replicas
    # Confidence p = exp(logprob); half the decisions made on each replica, each labelled
    # at once on the other one: the label must find a decision its replica never saw.
    made = []
    for i in range(80):
        maker, labeller = (a, b) if i % 2 == 0 else (b, a)
        logprob = -0.02 - 1.6 * (i % 8) / 8  # p from 0.98 down to about 0.24
        decision_id = ask(maker.url, logprob)
        correct = (i // 8) % 4 != 0  # right 7 times in 10 at every confidence
        receipt = label(labeller.url, decision_id, correct)
        assert receipt["id"] == decision_id and receipt["previous"] is None
        made.append((decision_id, logprob > -0.69))  # answered iff p >= 0.5
    # Relabelling on the maker takes back the other replica's label: counted once.
    first_id = made[0][0]
    assert label(a.url, first_id, True)["previous"] is False
    # Review: the same withheld answers, newest first, from either replica.
    abstained = {decision_id for decision_id, answered in made if not answered}
    listed = withheld(a.url)
    assert {decision_id for decision_id, _ in listed} == abstained
    assert withheld(b.url) == listed
    # Metrics: both replicas show the same store-derived figures.
    def outcomes(server: ServerProcess) -> list[str]:
        text = httpx.get(f"{server.url}/metrics", timeout=30).text
        return sorted(line for line in text.splitlines()
                      if line.startswith("basguard_feedback_decisions{")
                      and 'tenant="enforcer"' in line)
    assert outcomes(a) == outcomes(b) and outcomes(a)
    total = sum(float(line.rsplit(" ", 1)[1]) for line in outcomes(a))
    assert total == 80  # each decision once, though labelled on another replica

    fit = basguard("calibrate", "fit", "--from-store", url, "--tenant", "enforcer",
                   "--model", "fake", "--folds", "2", "-o", str(tmp_path / "cal.json"))
    assert fit.returncode == 0, fit.stderr
    assert "80 rows in 80 groups" in fit.stdout
    # Right 7 times in 10 at every confidence: the refit says about 0.7.
    assert load_artifact(tmp_path / "cal.json").predict_features(
        {"token_prob": 0.9}) == pytest.approx(0.7, abs=0.15)
    drift = basguard("drift", "--store", url, "--min-labels", "10")
    assert drift.returncode in (0, 1), drift.stderr
    (row,) = [line for line in drift.stdout.splitlines() if line.startswith("enforcer")]
    assert row.split()[3] == "80"  # every label from both replicas is in the window
    info = basguard("store", "info", "--store", url, "--json")
    assert json.loads(info.stdout)["labelled"] == 80 and info.returncode == 0
