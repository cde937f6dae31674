"""A real Prometheus (Debian's ``prometheus`` package; ``.ci/run`` installs it) with the shipped
config and rules, scraping gateways on loopback every second; and the dashboard's queries as
Grafana would send them."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.loopback import free_port
from tests.support.shipped_data import REPOSITORY
from tests.support.waiting import wait_until

__all__ = [
    "DASHBOARD",
    "DEPLOY",
    "METRICS_KEY_FILE",
    "RATE_INTERVAL",
    "TENANTS",
    "dashboard_queries",
    "grafana_expression",
    "prometheus_binary",
    "prometheus_scraping",
    "query",
    "scraped_since",
]

DEPLOY = REPOSITORY / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "basguard.json"
METRICS_KEY_FILE = DEPLOY / "prometheus" / "metrics-key"
TENANTS = "enforcer|annotator"
"""The dashboard's ``$tenant`` variable: the tenants of the gateways the tests scrape."""
RATE_INTERVAL = "30s"  # what Grafana's $__rate_interval becomes at a 1 s scrape interval


def prometheus_binary() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("Prometheus is not installed: `apt-get install prometheus` (.ci/run does)")
    return binary


@contextmanager
def prometheus_scraping(targets: list[str], directory: Path) -> Iterator[str]:
    """Prometheus with the shipped config and rules, scraping ``targets`` (base URLs) every
    second; yields its URL once every target is up. Its files go in ``directory``."""
    directory.mkdir()
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(DEPLOY / "prometheus" / name) for name in config["rule_files"]]
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": [t.removeprefix("http://") for t in targets]}]
    # Relative to the config's directory, which is now a temporary one.
    job["authorization"]["credentials_file"] = str(METRICS_KEY_FILE)
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log_path = directory / "prometheus.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [prometheus_binary(), f"--config.file={directory / 'prometheus.yml'}",
             f"--storage.tsdb.path={directory / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"

        def all_up() -> bool:
            if process.poll() is not None:
                pytest.fail(f"Prometheus exited: {log_path.read_text()}")
            response = httpx.get(f"{url}/api/v1/targets", timeout=1)
            if response.status_code != 200:  # a plain-text 503 until its TSDB is open
                return False
            active = response.json()["data"]["activeTargets"]
            return len(active) == len(targets) and all(t["health"] == "up" for t in active)

        try:
            wait_until(all_up, what="Prometheus to scrape every target", timeout=90,
                       ignoring=(httpx.HTTPError,), output=log_path.read_text)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=30)


def query(prometheus: str, expr: str, at: float | None = None) -> list[dict[str, Any]]:
    """``expr`` evaluated now, or at the Unix time ``at``."""
    params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
    response = httpx.get(f"{prometheus}/api/v1/query", params=params, timeout=5)
    document = response.json()
    assert document["status"] == "success", (expr, document)
    result: list[dict[str, Any]] = document["data"]["result"]
    return result


def scraped_since(prometheus: str, moment: float, targets: int = 1) -> None:
    """Wait until Prometheus has scraped each of its ``targets`` once more, starting after the
    Unix time ``moment``: what a target exported at ``moment`` is then in its store."""

    def every_target_scraped() -> bool:
        # A sample's timestamp is its scrape's start; `up` has one per target and scrape.
        scraped = [float(series["value"][1]) for series in query(prometheus, "timestamp(up)")]
        return len(scraped) == targets and min(scraped) > moment

    wait_until(every_target_scraped, what=f"a scrape of {targets} target(s) after {moment:.3f}")


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"]
            for target in panel["targets"]]


def grafana_expression(expr: str) -> str:
    """``expr`` as Grafana sends it, with the dashboard's variables set."""
    return expr.replace("$tenant", TENANTS).replace("$__rate_interval", RATE_INTERVAL)
