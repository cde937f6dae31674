"""Large non-streamed replies judged in the offload process (:mod:`proxy.judging.offload`).

Two gateways on loopback in front of the same fake upstream: one sends every reply above 1 KiB
to its offload process, the other handles every reply in the worker (``offload_processes: 0``).
Whatever the reply, both must answer the same: status, decision headers and body (bar the ids
and timestamps each request gets anew). Then the pool's failures: a process that dies with a
reply in hand, one that dies idle, a client that leaves, a server that stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import ValidationError

import proxy.judging.offload
from proxy.cli.main import main
from proxy.judging.offload import ReplyOffload, judge_reply
from proxy.judging.replies import ReplyJudging
from proxy.runtime.settings import ServerSettings
from proxy.runtime.state import build_runtime
from proxy.signals.base import SignalRequest
from proxy.wire.chat import ChatFormat
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import TENANT_KEYS, gateway_config, serve_gateway
from tests.support.loopback import serve_process
from tests.support.processes import (
    HEAVY_MODULES,
    children,
    offload_processes,
    wait_until_exited,
)
from tests.support.waiting import wait_until_async

SMALLEST_OFFLOADED = 1024
CONFIDENT = {"content": "Par is", "logprobs": [-0.01, -0.02]}
UNSURE = {"content": "Lyo ns", "logprobs": [-1.5, -2.5]}


VERBAL_KEY = "key-verbal-0123456789abcdef"


def openai_config(upstream_url: str) -> dict[str, Any]:
    config = gateway_config(upstream_url)
    for name in ("keyed", "via-litellm"):  # no key to set, no litellm to load
        del config["models"][name]
    config["models"]["fake"]["timeout_seconds"] = 60
    # A signal that makes a call, which needs the answers before the judgement.
    config["tenants"]["verbal"] = {
        "api_keys": [{"sha256": hashlib.sha256(VERBAL_KEY.encode()).hexdigest()}],
        "risk": {"threshold": 0.5}, "on_missing_confidence": "answer",
        "confidence": {"signals": ["verbalized"], "timeout_seconds": 1.5}}
    return config


@pytest.fixture(scope="module")
def gateways(
    fake_upstream: tuple[FakeUpstream, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """(offloading every reply above 1 KiB, handling every reply in the worker)."""
    config = openai_config(fake_upstream[1])
    with serve_gateway(tmp_path_factory.mktemp("offloading"), config,
                       offload_processes=1, offload_reply_bytes=SMALLEST_OFFLOADED) as offloading, \
            serve_gateway(tmp_path_factory.mktemp("in-worker"), config,
                          offload_processes=0) as in_worker:
        yield offloading, in_worker


def chat(directive: dict[str, Any], **options: Any) -> dict[str, Any]:
    return {"model": "fake", **options,
            "messages": [{"role": "user", "content": json.dumps({"fake": directive})}]}


def post(url: str, tenant: str, body: dict[str, Any], endpoint: str = "chat/completions",
         timeout: float = 120) -> httpx.Response:
    key = VERBAL_KEY if tenant == "verbal" else TENANT_KEYS[tenant]
    return httpx.post(f"{url}/v1/{endpoint}", json=body, timeout=timeout,
                      headers={"authorization": f"Bearer {key}"})


def comparable(response: httpx.Response) -> tuple[int, dict[str, str], Any]:
    """Status, decision headers and body, without what differs on every request."""
    document = response.json()
    if response.status_code == 200:
        del document["id"], document["created"], document["basguard"]["id"]
        signals = document["basguard"].get("signals")
        if signals:  # how long the calls took
            del signals["seconds"]
            for call in signals["calls"]:
                del call["seconds"]
    headers = {k: v for k, v in response.headers.items()
               if k.startswith("x-basguard-") and k != "x-basguard-id"}
    return response.status_code, headers, document


@pytest.fixture
def offloaded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the gateways hand to an offload pool (a spy on the hand-over, in this process)."""
    calls: list[str] = []
    for name in ("answers", "judge"):
        original = getattr(ReplyOffload, name)

        async def spy(self: ReplyOffload, *args: Any, _name: str = name,
                      _original: Any = original) -> Any:
            calls.append(_name)
            return await _original(self, *args)

        monkeypatch.setattr(ReplyOffload, name, spy)
    return calls


CASES = {
    "confident, logprobs asked for": (
        "enforcer", chat({**CONFIDENT, "repeat": 200}, logprobs=True, top_logprobs=2)),
    "unsure, withheld": ("enforcer", chat({**UNSURE, "repeat": 200})),
    "unsure, annotated": ("annotator", chat({**UNSURE, "repeat": 200}, logprobs=True)),
    "two choices, one withheld": ("enforcer", chat(
        {"choices": [CONFIDENT, UNSURE], "repeat": 150}, n=2, logprobs=True, top_logprobs=1)),
    "all withheld, as an error": ("refuser", chat({**UNSURE, "repeat": 200})),
    "no logprobs, as an error": ("strict", chat({**CONFIDENT, "repeat": 200,
                                                "omit_logprobs": True})),
    "several MiB of logprobs": (
        "enforcer", chat({**CONFIDENT, "repeat": 8000}, logprobs=True, top_logprobs=5)),
    "an invalid shape": ("enforcer", chat({**CONFIDENT, "repeat": 200,
                                           "malformed": "message_not_object"})),
    "not JSON": ("enforcer", chat({**CONFIDENT, "repeat": 200, "malformed": "truncated"})),
    "a signal that makes a call": ("verbal", {"model": "fake", "messages": [
        {"role": "system", "content": json.dumps({"fake": {**UNSURE, "repeat": 200}})},
        {"role": "user", "content": json.dumps({"fake": {"followup": {"content": "85%"}}})
         + "\nWhat is the capital of France?"}]}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_large_reply_is_answered_as_in_the_worker(
    gateways: tuple[str, str], offloaded: list[str], case: str
) -> None:
    offloading, in_worker = gateways
    tenant, body = CASES[case]
    answer = post(offloading, tenant, body)
    assert offloaded[-1:] == ["judge"], "the reply was not offloaded"
    if tenant == "verbal":
        assert offloaded == ["answers", "judge"]
        assert answer.json()["basguard"]["confidence"] == pytest.approx(0.85)
    reference = post(in_worker, tenant, body)
    assert len(offloaded) <= 2, "the in-worker gateway offloaded"
    assert comparable(answer) == comparable(reference)
    if answer.status_code == 200:
        # The decision is the body's last member, as the worker sets it.
        assert list(answer.json()) == list(reference.json())
        assert answer.content.endswith(b"}}")


def test_the_legacy_completions_endpoint_too(
    gateways: tuple[str, str], offloaded: list[str]
) -> None:
    offloading, in_worker = gateways
    body = {"model": "fake", "logprobs": 2,
            "prompt": json.dumps({"fake": {**UNSURE, "repeat": 200}})}
    answer = post(offloading, "annotator", body, "completions")
    assert answer.status_code == 200
    assert offloaded == ["judge"]
    assert comparable(answer) == comparable(post(in_worker, "annotator", body, "completions"))


def test_a_reply_below_the_threshold_stays_in_the_worker(
    gateways: tuple[str, str], offloaded: list[str]
) -> None:
    offloading, in_worker = gateways
    body = chat({**CONFIDENT, "repeat": 1})
    answer = post(offloading, "enforcer", body)
    assert answer.status_code == 200
    assert len(answer.content) < SMALLEST_OFFLOADED and offloaded == []
    assert comparable(answer) == comparable(post(in_worker, "enforcer", body))


def die_in_the_pool(*args: object) -> None:
    """Stands in for the judgement: a reply whose processing kills the pool's process."""
    os._exit(70)


def test_a_process_dying_with_a_reply_in_hand_fails_that_reply_with_a_logged_500(
    gateways: tuple[str, str], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture
) -> None:
    offloading, _ = gateways
    body = chat({**CONFIDENT, "repeat": 200})
    assert post(offloading, "enforcer", body).status_code == 200
    before = offload_processes()
    monkeypatch.setattr(proxy.judging.offload, "judge_reply", die_in_the_pool)
    failed = post(offloading, "enforcer", body)
    assert failed.status_code == 500
    assert failed.json()["error"]["code"] == "internal_error"
    assert "a reply offload process died" in caplog.text
    monkeypatch.undo()
    wait_until_exited(before, what="the dead pool")
    again = post(offloading, "enforcer", body)
    assert again.status_code == 200, again.text
    assert offload_processes().isdisjoint(before), "the dead pool was reused"


def test_a_process_that_died_idle_costs_no_request(gateways: tuple[str, str]) -> None:
    offloading, in_worker = gateways
    body = chat({**UNSURE, "repeat": 200})
    assert post(offloading, "enforcer", body).status_code == 200
    before = offload_processes()
    for pid in before:
        os.kill(pid, signal.SIGKILL)
    wait_until_exited(before, what="the killed pool")
    answered = post(offloading, "enforcer", body)
    assert comparable(answered) == comparable(post(in_worker, "enforcer", body))
    assert offload_processes() and offload_processes().isdisjoint(before)


def test_a_client_that_leaves_does_not_break_the_pool(
    gateways: tuple[str, str], upstream: FakeUpstream
) -> None:
    offloading, _ = gateways
    body = chat({**CONFIDENT, "repeat": 8000}, logprobs=True, top_logprobs=5)
    assert post(offloading, "enforcer", body).status_code == 200
    before = offload_processes()
    with contextlib.suppress(httpx.TimeoutException):
        post(offloading, "enforcer", body, timeout=0.2)
    assert post(offloading, "enforcer", body).status_code == 200
    assert offload_processes() == before


def sleep_then_pid(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def start_then_sleep(started: Path, seconds: float) -> int:
    """A job that shows it is running (``started`` exists), then holds its process."""
    started.touch()
    return sleep_then_pid(seconds)


@pytest.mark.slow
def test_cancelling_a_job_drops_it_if_waiting_and_leaves_the_pool_working(
    tmp_path: Path
) -> None:
    marker = tmp_path / "ran"

    async def scenario() -> None:
        offload = ReplyOffload(processes=1, min_bytes=SMALLEST_OFFLOADED)
        try:
            first = await offload.run(os.getpid)
            busy_started = tmp_path / "busy started"
            busy = asyncio.ensure_future(offload.run(start_then_sleep, busy_started, 3.0))
            # The pool hands its processes' queue up to processes + 1 jobs ahead: those run.
            handed = [asyncio.ensure_future(offload.run(sleep_then_pid, 0.0)) for _ in range(2)]
            waiting = asyncio.ensure_future(offload.run(Path.touch, marker))
            # All four were submitted together, before the first could start.
            await wait_until_async(busy_started.exists, what="the busy job to start")
            waiting.cancel()
            assert await busy == first
            assert await asyncio.gather(*handed) == [first, first]
            with pytest.raises(asyncio.CancelledError):
                await waiting
            # A job cancelled while it runs finishes there; the pool goes on.
            running_started = tmp_path / "running started"
            running = asyncio.ensure_future(offload.run(start_then_sleep, running_started, 0.5))
            await wait_until_async(running_started.exists, what="the job to start running")
            running.cancel()
            assert await offload.run(os.getpid) == first
        finally:
            await offload.aclose()

    asyncio.run(scenario())
    assert not marker.exists()


def test_the_pool_process_stays_lean_and_judges_as_the_worker(
    fake_upstream: tuple[FakeUpstream, str], tmp_path: Path
) -> None:
    """What the child imports to judge (the server's main module aside: spawn imports it,
    and tests/proxy/test_server.py keeps ``proxy.cli.main`` lean)."""
    path = tmp_path / "basguard.yaml"
    path.write_text(yaml.safe_dump(openai_config(fake_upstream[1])))
    state = build_runtime(path)
    tenant = state.authenticate(f"Bearer {TENANT_KEYS['enforcer']}")
    body = chat({**UNSURE, "repeat": 3}, logprobs=True)
    plan = tenant.signal_plan_for("fake")
    judging = ReplyJudging(
        ChatFormat, "fake", plan, SignalRequest("fake", ChatFormat, body, plan.wanted),
        tenant.calibrator_for("fake"), tenant.terms_for("fake"), tenant.on_missing_confidence,
        True, tenant.abstention_message, True, 0, None)
    reply = {"id": "x", "object": "chat.completion", "created": 1, "model": "fake",
             "choices": [{"index": 0, "message": {"role": "assistant", "content": "Lyo ns"},
                          "logprobs": {"content": [
                              {"token": t, "logprob": lp, "bytes": None, "top_logprobs": []}
                              for t, lp in (("Lyo", -1.5), (" ns", -2.5))]},
                          "finish_reason": "stop"}],
             "basguard": "the upstream's own"}
    raw = json.dumps(reply).encode()

    async def in_the_pool() -> tuple[Any, list[str]]:
        offload = ReplyOffload(processes=1, min_bytes=SMALLEST_OFFLOADED)
        try:
            judged = await offload.judge(raw, judging)
            modules = await offload.run(eval, "sorted(__import__('sys').modules)")
            return judged, modules
        finally:
            await offload.aclose()

    judged, modules = asyncio.run(in_the_pool())
    assert [m for m in HEAVY_MODULES if m in modules] == []
    here = judge_reply(raw, judging)
    assert judged == here
    assert [o.decision for o in judged.outcomes] == ["abstain"]
    document = json.loads(judged.encoded)
    assert "basguard" not in document
    assert document["choices"][0]["message"]["content"] == tenant.abstention_message


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("BASGUARD_OFFLOAD_PROCESSES", "-1", "offload_processes"),
    ("BASGUARD_OFFLOAD_PROCESSES", "17", "offload_processes"),
    ("BASGUARD_OFFLOAD_PROCESSES", "two", "offload_processes"),
    ("BASGUARD_OFFLOAD_REPLY_BYTES", "100", "offload_reply_bytes"),
])
def test_bad_offload_settings_fail_the_start(
    variable: str, value: str, message: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(variable, value)
    assert main(["serve", "--config", str(tmp_path / "never-read.yaml")]) == 2
    assert f"invalid setting {message}" in capsys.readouterr().err


def test_offload_settings_have_safe_defaults_and_descriptions(tmp_path: Path) -> None:
    settings = ServerSettings(config=tmp_path / "c.yaml")
    assert (settings.offload_processes, settings.offload_reply_bytes) == (1, 131_072)
    for name in ("offload_processes", "offload_reply_bytes"):
        assert ServerSettings.model_fields[name].description
    with pytest.raises(ValidationError):
        ServerSettings(config=tmp_path / "c.yaml", offload_reply_bytes=0)


@pytest.mark.slow
def test_a_stop_drains_a_large_reply_then_ends_the_pool(
    fake_upstream: tuple[FakeUpstream, str], tmp_path: Path
) -> None:
    """SIGTERM to the server and its pool at once (as systemd sends it to the whole group):
    the large reply in flight is still judged and answered, then the pool is shut down."""
    path = tmp_path / "basguard.yaml"
    path.write_text(yaml.safe_dump(openai_config(fake_upstream[1])))
    env = {"BASGUARD_RELOAD_INTERVAL_SECONDS": "0", "BASGUARD_OFFLOAD_REPLY_BYTES": "1024"}
    with serve_process(["--config", str(path), "--store", str(tmp_path / "d.sqlite3")],
                       env=env, log=tmp_path / "server.log") as server:
        server.wait_ready()
        body = chat({**UNSURE, "repeat": 200})
        assert post(server.url, "enforcer", body).status_code == 200, server.output()
        pool = children(server.process.pid)
        assert pool, server.output()
        delayed = chat({**UNSURE, "repeat": 200, "delay": 1.0})
        answers: list[httpx.Response] = []
        sender = threading.Thread(target=lambda: answers.append(
            post(server.url, "enforcer", delayed)))
        sender.start()
        server.wait_until(lambda: fake_upstream[0].delaying > 0,
                          what="the delayed request to reach the upstream")
        for pid in (server.process.pid, *pool):
            os.kill(pid, signal.SIGTERM)
        assert server.stop() == 0, server.output()
        sender.join(timeout=120)
        assert answers[0].status_code == 200, server.output()
        assert "offload process died" not in server.output()
        assert answers[0].json()["basguard"]["decision"] == "abstain"
        wait_until_exited(pool, what="the pool, with its server")
