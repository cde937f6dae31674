"""Hot reload: file changes and SIGHUP, good and bad configs, requests in flight."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from calibrators.artifact import save_artifact
from calibrators.dataset import read_calibration_data
from calibrators.selection import fit_calibrator
from calibrators.signals import parse_score_spec
from proxy.http.app import create_app
from proxy.runtime.reload import ConfigStore, ReloadResult
from proxy.runtime.settings import ServerSettings
from proxy.runtime.state import RuntimeState, build_runtime
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import SDK, TENANT_KEYS, gateway_config
from tests.support.loopback import serve_in_thread, serve_process
from tests.support.shipped_data import NQ_GPT35
from tests.support.waiting import wait_until, wait_until_async

CONFIDENT = [-0.01, -0.01]


def write_config(path: Path, config: dict[str, Any]) -> None:
    # Write then rename, as deploy tools do, so the watcher never reads half a file.
    temporary = path.with_suffix(".tmp")
    temporary.write_text(yaml.safe_dump(config))
    os.replace(temporary, path)


@pytest.fixture
def live(
    fake_upstream: tuple[FakeUpstream, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    sdk_client: SDK,
) -> Iterator[tuple[Path, dict[str, Any], openai.OpenAI]]:
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-upstream-secret-0123456789")
    path = tmp_path / "basguard.yaml"
    config = gateway_config(fake_upstream[1])
    write_config(path, config)
    app = create_app(ServerSettings(config=path, reload_interval_seconds=0.05,
                                    store=tmp_path / "decisions.sqlite3"))
    with serve_in_thread(app) as url:
        yield path, config, sdk_client(f"{url}/v1", TENANT_KEYS["enforcer"])


def decide(client: openai.OpenAI, **fake: Any) -> dict[str, Any]:
    response = client.chat.completions.create(
        model="fake", messages=[{"role": "user", "content": json.dumps(
            {"fake": {"content": "Paris", "logprobs": CONFIDENT, **fake}})}])
    return (response.model_extra or {})["basguard"]


def test_a_valid_change_is_applied(live: tuple[Path, dict[str, Any], openai.OpenAI]) -> None:
    path, config, client = live
    assert decide(client)["decision"] == "answer"
    config["tenants"]["enforcer"]["risk"] = {"threshold": 0.995}
    write_config(path, config)
    wait_until(lambda: decide(client)["threshold"] == 0.995, what="the new threshold")
    assert decide(client)["decision"] == "abstain"


def test_an_invalid_change_is_refused_and_the_old_config_stays(
    live: tuple[Path, dict[str, Any], openai.OpenAI], caplog: pytest.LogCaptureFixture
) -> None:
    path, config, client = live
    path.write_text("version: 1\ntenants: [this is not valid\n")
    wait_until(lambda: "config reload rejected" in caplog.text, what="the rejection logged")
    assert decide(client)["decision"] == "answer"
    # The log names the file and line, and where the unclosed list began.
    assert f"{path}:3: invalid YAML" in caplog.text
    assert "started on line 2" in caplog.text
    config["tenants"]["enforcer"]["risk"] = {"threshold": 0.995}
    write_config(path, config)
    wait_until(lambda: decide(client)["decision"] == "abstain", what="the edit applied")


def test_requests_in_flight_finish_on_the_config_they_started_with(
    live: tuple[Path, dict[str, Any], openai.OpenAI], upstream: FakeUpstream,
) -> None:
    path, config, client = live
    results: list[dict[str, Any]] = []
    slow = threading.Thread(target=lambda: results.append(decide(client, delay=1.0)))
    slow.start()
    # At the upstream, so past reading the config it finishes on.
    wait_until(lambda: upstream.delaying > 0, what="the slow request at the upstream")
    config["tenants"]["enforcer"]["risk"] = {"threshold": 0.995}
    write_config(path, config)
    wait_until(lambda: decide(client)["threshold"] == 0.995, what="the new threshold")
    slow.join()
    assert results[0]["threshold"] == 0.5
    assert results[0]["decision"] == "answer"


def test_a_new_calibrator_artifact_is_picked_up(
    live: tuple[Path, dict[str, Any], openai.OpenAI],
) -> None:
    path, config, client = live
    artifact = path.parent / "calibrator.json"
    data = read_calibration_data(NQ_GPT35, scores=[parse_score_spec("token_prob")],
                                 label="correct", group="group")
    save_artifact(fit_calibrator(data.subset(slice(0, 2000)), method="platt").calibrator, artifact)
    config["tenants"]["enforcer"]["calibrators"] = {"default": artifact.name}
    write_config(path, config)
    wait_until(lambda: decide(client)["calibrator"]["method"] == "platt",
               what="the platt calibrator in force")
    first = decide(client)["calibrator"]["version"]
    save_artifact(fit_calibrator(data.subset(slice(0, 2000)), method="isotonic").calibrator,
                  artifact)
    wait_until(lambda: decide(client)["calibrator"]["version"] != first,
               what="the rewritten artifact in force")
    assert decide(client)["calibrator"]["method"] == "isotonic"


def test_a_config_that_breaks_the_loader_is_refused_and_a_later_edit_applied(
    live: tuple[Path, dict[str, Any], openai.OpenAI], caplog: pytest.LogCaptureFixture
) -> None:
    path, config, client = live
    base = str(client.base_url).removesuffix("/v1/")
    # Nested past Python's recursion limit: this used to kill the watcher with RecursionError,
    # after which no edit was ever applied again.
    temporary = path.with_suffix(".tmp")  # replaced whole: one version, one failure
    temporary.write_text("version: 1\ntenants: " + "[" * 5000 + "]" * 5000 + "\n")
    os.replace(temporary, path)
    wait_until(lambda: "config reload rejected" in caplog.text, what="the rejection logged")
    assert f"{path}:2: nested more than" in caplog.text
    assert decide(client)["decision"] == "answer"  # the old config is still in force
    failures = 'basguard_config_reloads_total{result="failure"} 1.0'
    assert failures in httpx.get(f"{base}/metrics").text
    # Revoke the key: the next valid edit must still be applied.
    config["tenants"]["enforcer"]["api_keys"] = [{"sha256": "ab" * 32}]
    write_config(path, config)

    def revoked() -> bool:
        try:
            decide(client)
        except openai.AuthenticationError:
            return True
        return False

    wait_until(revoked, what="the key revoked by the later edit")


def failing_while_marked(source: Path) -> RuntimeState:
    """build_runtime, but failing as a bug would while the file ends with ``# boom ...``."""
    marker = source.read_text().splitlines()[-1]
    if marker.startswith("# boom"):
        raise {"# boom type": TypeError, "# boom recursion": RecursionError}.get(
            marker, RuntimeError)("unexpected")
    return build_runtime(source)


def test_the_watcher_survives_any_exception_and_stops_cleanly(
    fake_upstream: tuple[FakeUpstream, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-upstream-secret-0123456789")
    path = tmp_path / "basguard.yaml"
    config = gateway_config(fake_upstream[1])
    write_config(path, config)
    results: list[ReloadResult] = []

    def on_reload(result: ReloadResult) -> None:
        results.append(result)
        if len(results) == 1:
            raise ValueError("a failing observer must not stop the watcher either")

    async def scenario() -> None:
        store = ConfigStore(path, build=failing_while_marked, on_reload=on_reload)
        watcher = asyncio.create_task(store.watch(0.01))
        for boom in ("# boom type", "# boom recursion", "# boom runtime"):
            before = len(results)
            temporary = path.with_suffix(".tmp")
            temporary.write_text(yaml.safe_dump(config) + boom + "\n")
            os.replace(temporary, path)
            await wait_until_async(lambda before=before: len(results) > before,  # type: ignore[misc]
                                   what=f"the reload of {boom!r} to be reported")
            assert not results[-1].applied and not watcher.done()
        config["tenants"]["enforcer"]["risk"] = {"threshold": 0.9}
        write_config(path, config)
        await wait_until_async(lambda: store.current.tenants["enforcer"].threshold == 0.9,
                               what="the valid edit applied")
        assert [r.applied for r in results] == [False, False, False, True]
        watcher.cancel()
        with pytest.raises(asyncio.CancelledError):  # nothing else: shutdown can clean up
            await watcher

    asyncio.run(scenario())
    assert "TypeError: unexpected" in caplog.text  # with its traceback
    assert "Traceback" in caplog.text


@pytest.mark.slow
def test_sighup_reloads_a_running_server(
    fake_upstream: tuple[FakeUpstream, str], tmp_path: Path
) -> None:
    path = tmp_path / "basguard.yaml"
    config = gateway_config(fake_upstream[1])
    write_config(path, config)
    metrics_key = "metrics-key-0123456789abcdef"
    env = {"FAKE_UPSTREAM_KEY": "sk-x", "BASGUARD_RELOAD_INTERVAL_SECONDS": "0",
           "BASGUARD_STORE": str(tmp_path / "decisions.sqlite3"),
           "BASGUARD_METRICS_KEY": metrics_key}
    with serve_process(["--config", str(path)], env=env, log=tmp_path / "server.log") as server:
        ready = f"{server.url}/readyz"

        def tenants() -> list[str]:
            try:
                # The tenants are part of the detail only the metrics key sees.
                headers = {"authorization": f"Bearer {metrics_key}"}
                return list(httpx.get(ready, headers=headers, timeout=1).json()["tenants"])
            except httpx.HTTPError:
                return []

        server.wait_ready("/readyz")  # bounded generously, and shows the output if it fails
        assert "enforcer" in tenants()
        del config["tenants"]["annotator"]
        write_config(path, config)
        # Nothing to wait for: this checks that nothing happens. A poller, were one running,
        # would have reloaded within this.
        time.sleep(0.3)
        assert "annotator" in tenants()  # file polling is off: only SIGHUP reloads
        server.process.send_signal(signal.SIGHUP)
        server.wait_until(lambda: "annotator" not in tenants(), what="the SIGHUP reload")
        # The reload is in the server's output, beside uvicorn's lines (it used to be silent).
        server.wait_until(lambda: f"INFO:     basguard.reload: config reloaded from {path}"
                          in server.output(), what="the reload in the server's output")
        assert server.stop() == 0, server.output()


@pytest.mark.slow
def test_a_bad_config_fails_the_start(tmp_path: Path) -> None:
    path = tmp_path / "basguard.yaml"
    path.write_text("version: 1\nmodels: {}\ntenants: {}\n")
    result = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "serve", "--config", str(path)],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )
    assert result.returncode == 2
    assert f"{path}:2: models" in result.stderr
