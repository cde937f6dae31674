"""The deploy/ files: promtool accepts them, and what they reference exists."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.cli.main import build_parser
from proxy.runtime.config import GatewayConfig

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
ISSUE_PANELS = {  # what the on-call dashboard must show
    "Traffic by decision", "Abstention rate", "Confidence distribution", "Thresholds",
    "Expected vs realized utility per request", "Live BAS", "Over- vs under-abstention",
    "Calibration gap", "Proxy overhead p50 / p99", "Upstream errors",
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not installed: `apt-get install prometheus` (.ci/run does)")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60,
                          check=False)


def test_promtool_accepts_the_config_and_the_rules() -> None:
    config = promtool("check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr
    rules = promtool("check", "rules", str(DEPLOY / "prometheus" / "alerts.yml"))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    written = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    count = sum(len(group["rules"]) for group in written["groups"])
    assert count == 9  # every alert docs/monitoring.md names (tests/test_docs.py checks the names)
    assert f"SUCCESS: {count} rules found" in rules.stdout


def test_each_alert_fires_on_its_traffic_and_not_on_ordinary_traffic() -> None:
    result = promtool("test", "rules", str(DEPLOY / "prometheus" / "alerts.test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboard_has_a_tenant_variable_and_every_panel_the_issue_lists() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "basguard.json").read_text())
    (variable,) = dashboard["templating"]["list"]
    assert variable["name"] == "tenant" and variable["includeAll"] and variable["multi"]
    titles = {panel["title"] for panel in dashboard["panels"]}
    assert titles >= ISSUE_PANELS
    datasource = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == uid, panel["title"]
        for target in panel["targets"]:
            metrics = set(re.findall(r"basguard_[a-z_]+", target["expr"]))
            tenant_metrics = {m for m in metrics if not m.startswith((
                "basguard_proxy_overhead", "basguard_upstream", "basguard_time_to_first_byte",
                "basguard_config_reloads"))}
            # Per-tenant metrics follow the variable; the per-model ones have no tenant label.
            assert not tenant_metrics or 'tenant=~"$tenant"' in target["expr"], target["expr"]


def test_compose_and_dockerfile_reference_files_that_exist() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert set(compose["services"]) == {"basguard", "postgres", "prometheus", "grafana"}
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), volume
    build = compose["services"]["basguard"]["build"]
    dockerfile = (DEPLOY / build["context"] / build["dockerfile"]).resolve()
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY") and "--from" not in line:
            *sources, _ = line.split()[1:]
            for source in sources:
                assert (ROOT / source).exists(), line
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "basguard.yml").read_text())
    mounted = {v.split(":")[1] for v in compose["services"]["grafana"]["volumes"]}
    assert provider["providers"][0]["options"]["path"] in mounted


def kubernetes_documents() -> dict[str, dict[str, Any]]:
    import kubernetes_validate

    documents = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "basguard.yaml").read_text()))
    for document in documents:
        kubernetes_validate.validate(document, kubernetes_validate.latest_version(), strict=True)
    by_kind = {document["kind"]: document for document in documents}
    assert len(by_kind) == len(documents)  # one of each
    return by_kind


def test_the_kubernetes_manifests_are_valid_and_run_a_valid_config() -> None:
    by_kind = kubernetes_documents()
    assert set(by_kind) == {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler",
                            "PodDisruptionBudget"}
    # The embedded config is a valid gateway config ...
    config = yaml.safe_load(by_kind["ConfigMap"]["data"]["basguard.yaml"])
    GatewayConfig.model_validate(config)
    # ... at the path the container is told to serve, with options the CLI has.
    container = by_kind["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    args = build_parser().parse_args(container["args"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert args.config == Path(mounts["config"]) / "basguard.yaml"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert Path(env["BASGUARD_STORE_JOURNAL_DIR"]).is_relative_to(mounts["journal"])
    assert env["PROMETHEUS_MULTIPROC_DIR"] == mounts["metrics"] and args.workers > 1
    volumes = {v["name"]: v for v in by_kind["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes["journal"] and "emptyDir" in volumes["metrics"]


def test_the_replicas_share_postgres_scale_on_cpu_and_survive_a_drain() -> None:
    by_kind = kubernetes_documents()
    deployment = by_kind["Deployment"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    (store,) = [e for e in container["env"] if e["name"] == "BASGUARD_STORE"]
    assert "value" not in store  # the URL, password and all, only from a Secret
    assert store["valueFrom"]["secretKeyRef"] == {"name": "basguard-postgres", "key": "url"}
    # Readiness is /readyz, which fails while the store is unreachable (tested in
    # tests/proxy/test_store_postgres.py); a short database restart is tolerated.
    readiness = container["readinessProbe"]
    assert readiness["httpGet"]["path"] == "/readyz"
    assert readiness["periodSeconds"] * readiness["failureThreshold"] >= 15
    hpa = by_kind["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": deployment["metadata"]["name"]}
    assert hpa["minReplicas"] >= 2 and hpa["maxReplicas"] > hpa["minReplicas"]
    (cpu,) = hpa["metrics"]
    assert cpu["resource"]["name"] == "cpu" and "cpu" in container["resources"]["requests"]
    pdb = by_kind["PodDisruptionBudget"]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= pod_labels.items()
    assert 1 <= pdb["minAvailable"] < hpa["minReplicas"]  # a drain can still move a pod
    service = by_kind["Service"]["spec"]
    assert service["selector"].items() <= pod_labels.items()
    # The documented prometheus-adapter rule names a metric the gateway exports.
    text = (DEPLOY / "kubernetes" / "basguard.yaml").read_text()
    assert "seriesQuery: 'basguard_requests_total" in text
    assert '"basguard_requests_total"' in (ROOT / "proxy" / "observability" / "metrics.py").read_text()


def test_compose_runs_the_gateway_on_postgres_with_the_password_apart() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    gateway = compose["services"]["basguard"]
    postgres = compose["services"]["postgres"]
    from proxy.store import parse_store_location

    location = parse_store_location(gateway["environment"]["BASGUARD_STORE"])
    assert location.backend == "postgresql" and not location.has_password
    assert gateway["environment"]["PGPASSWORD"] == postgres["environment"]["POSTGRES_PASSWORD"]
    assert gateway["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert "healthcheck" in postgres


def test_the_kubernetes_pod_gets_its_metrics_key_from_a_secret() -> None:
    documents = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "basguard.yaml").read_text()))
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    (entry,) = [e for e in container["env"] if e["name"] == "BASGUARD_METRICS_KEY"]
    assert "value" not in entry  # never a literal key in the manifest
    assert entry["valueFrom"]["secretKeyRef"] == {"name": "basguard-metrics", "key": "key"}


def test_compose_waits_out_the_drain_before_killing() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    grace = compose["services"]["basguard"]["stop_grace_period"]
    assert grace.endswith("s") and int(grace[:-1]) > 20  # the default 20 s drain, plus a flush
