"""``GET /metrics`` after real traffic: each app has its own registry."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from pydantic import ValidationError

from proxy.runtime.settings import ServerSettings
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import SDK, TENANT_KEYS, gateway_config, serve_gateway
from tests.support.metrics import scrape
from tests.support.waiting import wait_until


@pytest.fixture
def metered(fake_upstream: tuple[FakeUpstream, str], tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path, dict[str, Any]]]:
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-x")
    config = gateway_config(fake_upstream[1])
    with serve_gateway(tmp_path, config, reload_interval_seconds=0.05) as url:
        yield url, tmp_path / "basguard.yaml", config


def ask(client: openai.OpenAI, **fake: Any) -> None:
    client.chat.completions.create(
        model="fake", messages=[{"role": "user", "content": json.dumps({"fake": fake})}])


def test_decisions_confidence_and_utility_are_counted(
    metered: tuple[str, Path, dict[str, Any]], sdk_client: SDK
) -> None:
    url, _, _ = metered
    client = sdk_client(f"{url}/v1", TENANT_KEYS["enforcer"])
    ask(client, content="Paris", logprobs=[-0.01, -0.01])  # p = 0.990: answer
    ask(client, content="Lyon", logprobs=[-2.0, -2.0])  # p = 0.135: abstain
    ask(client, content="Rome", omit_logprobs=True)  # no confidence: abstain
    with pytest.raises(openai.InternalServerError):
        ask(client, status=500)
    samples = scrape(url)

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    base = {"tenant": "enforcer", "model": "fake", "mode": "enforce"}
    assert value("basguard_requests_total", decision="answer", **base) == 1
    assert value("basguard_requests_total", decision="abstain", **base) == 1
    assert value("basguard_requests_total", decision="no_confidence", **base) == 1
    assert value("basguard_no_confidence_decisions_total", tenant="enforcer", model="fake") == 1
    assert value("basguard_confidence_ratio_count", tenant="enforcer", model="fake") == 2
    assert value("basguard_confidence_ratio_bucket", tenant="enforcer", model="fake",
                 le="0.15") == 1
    # threshold 0.5 means λ = 1, a = 0: the answer expects 0.990 - 0.010, abstentions 0.
    assert value("basguard_expected_utility_sum", tenant="enforcer", model="fake") == \
        pytest.approx(0.99 - 0.01, abs=1e-3)
    assert value("basguard_upstream_errors_total", model="fake", kind="upstream_error") == 1
    assert value("basguard_threshold_ratio", tenant="enforcer") == 0.5
    infos = [dict(labels) for name, labels in samples if name == "basguard_calibrator_info"]
    expected = {"tenant": "enforcer", "model": "default", "method": "identity",
                "training_rows": "0"}
    assert any(expected.items() <= info.items() for info in infos)
    assert value("basguard_proxy_overhead_seconds_count", model="fake") == 3
    assert value("basguard_upstream_latency_seconds_count", model="fake") == 3


def test_unknown_models_count_as_other(
    metered: tuple[str, Path, dict[str, Any]], sdk_client: SDK
) -> None:
    url, _, _ = metered
    client = sdk_client(f"{url}/v1", TENANT_KEYS["enforcer"])
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert not [k for k in scrape(url) if ("model", "nope") in k[1]]


def test_reloads_are_counted_by_result(metered: tuple[str, Path, dict[str, Any]]) -> None:
    url, path, config = metered
    path.write_text("version: [broken\n")
    config["tenants"]["enforcer"]["risk"] = {"threshold": 0.9}

    def reloads(result: str) -> float:
        return scrape(url).get(("basguard_config_reloads_total", (("result", result),)), 0.0)

    wait_until(lambda: reloads("failure") >= 1, what="the failed reload counted")
    path.write_text(yaml.safe_dump(config))
    wait_until(lambda: reloads("success") >= 1, what="the reload counted")
    assert reloads("failure") >= 1 and reloads("success") >= 1
    assert scrape(url)[("basguard_threshold_ratio", (("tenant", "enforcer"),))] == 0.9


METRICS_KEY = "metrics-key-0123456789abcdef"


@pytest.fixture
def guarded(fake_upstream: tuple[FakeUpstream, str], tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A gateway with a metrics key."""
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-x")
    with serve_gateway(tmp_path, gateway_config(fake_upstream[1]),
                       metrics_key=METRICS_KEY) as url:
        yield url


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.mark.parametrize("headers", [{}, bearer("wrong-key-0123456789abcdef"),
                                     bearer(TENANT_KEYS["enforcer"]), {"authorization": METRICS_KEY}])
def test_metrics_need_the_metrics_key_when_one_is_set(guarded: str, headers: dict[str, str]) -> None:
    # A tenant's key is not the metrics key: tenants must not see each other's traffic.
    response = httpx.get(f"{guarded}/metrics", headers=headers)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "authentication_error" and "metrics key" in error["message"]
    assert "basguard_" not in response.text


def test_metrics_with_the_key(guarded: str) -> None:
    response = httpx.get(f"{guarded}/metrics", headers=bearer(METRICS_KEY))
    assert response.status_code == 200
    assert "basguard_config_reloads_total" in response.text


@pytest.mark.parametrize("scheme", ["bearer", "BEARER"])
def test_the_metrics_key_takes_any_case_of_the_scheme(guarded: str, scheme: str) -> None:
    response = httpx.get(f"{guarded}/metrics", headers={"authorization": f"{scheme} {METRICS_KEY}"})
    assert response.status_code == 200
    assert "basguard_config_reloads_total" in response.text


def test_readiness_shows_its_detail_only_to_the_metrics_key(guarded: str, tmp_path: Path) -> None:
    for headers in ({}, bearer(TENANT_KEYS["enforcer"])):
        response = httpx.get(f"{guarded}/readyz", headers=headers)
        assert response.status_code == 200
        assert response.json()["status"] == "ready"
        assert not {"tenants", "models", "calibrators", "config"} & set(response.json())
    detail = httpx.get(f"{guarded}/readyz", headers=bearer(METRICS_KEY)).json()
    assert detail["status"] == "ready"
    assert set(detail["tenants"]) >= {"enforcer", "annotator"}
    assert "fake" in detail["models"]
    assert detail["calibrators"]["enforcer"]["default"]
    assert "config" not in detail and str(tmp_path) not in json.dumps(detail)


def test_without_a_metrics_key_metrics_are_open_and_a_warning_says_so(
    fake_upstream: tuple[FakeUpstream, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-x")
    with serve_gateway(tmp_path, gateway_config(fake_upstream[1])) as url:
        assert httpx.get(f"{url}/metrics").status_code == 200
        # ... but the readiness detail is not: nobody can present a key that is not set.
        assert "tenants" not in httpx.get(f"{url}/readyz").json()
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "/metrics" in r.message]
    assert len(warnings) == 1
    assert "BASGUARD_METRICS_KEY" in warnings[0].message


@pytest.mark.parametrize("path", ["/openapi.json", "/docs", "/redoc"])
def test_no_schema_or_docs_are_served(guarded: str, path: str) -> None:
    response = httpx.get(f"{guarded}{path}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("key", ["short", ""])
def test_a_short_metrics_key_fails_the_start(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValidationError, match="the metrics key needs at least 16 characters") as caught:
        ServerSettings(config=tmp_path / "c.yaml", metrics_key=key)
    assert "short" not in str(caught.value)  # never echo a key


def test_the_metrics_key_is_never_written_out(tmp_path: Path) -> None:
    # serve --workers passes its settings to the workers as BASGUARD_* variables: the key must
    # not become "**********" (or "None") there; the workers read the real variable.
    settings = ServerSettings(config=tmp_path / "c.yaml", metrics_key=METRICS_KEY)
    assert "metrics_key" not in settings.model_dump()
    assert METRICS_KEY not in repr(settings)
