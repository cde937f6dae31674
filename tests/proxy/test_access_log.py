"""The access log of ``basguard serve``: one line per request, plain or JSON, off by a setting."""

from __future__ import annotations

import asyncio
import gc
import json
import weakref
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from proxy.http.access_log import AccessLog, StdoutLines
from proxy.http.protocol import (
    ConnectionLimits,
    GatewayHttpProtocol,
    GatewayServerState,
    ServerConfig,
)
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import TENANT_KEYS, openai_only_config, write_config
from tests.support.loopback import serve_process

QUESTION = {"model": "fake", "messages": [{"role": "user", "content": "What is 2 + 2?"}]}


def traffic(url: str) -> str:
    """An answered request, a wrong key, a wrong path and a stream; returns the decision id."""
    good = httpx.post(f"{url}/v1/chat/completions", json=QUESTION, timeout=30,
                      headers={"Authorization": f"Bearer {TENANT_KEYS['enforcer']}"})
    assert good.status_code == 200
    wrong_key = httpx.post(f"{url}/v1/chat/completions", json=QUESTION, timeout=30,
                           headers={"Authorization": "Bearer not-a-key-of-anyone-here"})
    assert wrong_key.status_code == 401
    assert httpx.get(f"{url}/nothing", timeout=30).status_code == 404
    with httpx.stream("POST", f"{url}/v1/chat/completions", json={**QUESTION, "stream": True},
                      timeout=30, headers={"Authorization":
                                           f"Bearer {TENANT_KEYS['annotator']}"}) as stream:
        assert stream.status_code == 200 and b"[DONE]" in b"".join(stream.iter_bytes())
    return str(good.headers["x-basguard-id"])


def serve_and_log(tmp_path: Path, upstream_url: str, setting: str | None) -> tuple[str, str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = write_config(tmp_path, openai_only_config(upstream_url))
    env = {"FAKE_UPSTREAM_KEY": "sk-x",
           **({"BASGUARD_ACCESS_LOG": setting} if setting is not None else {})}
    with serve_process(["--config", str(path), "--store", str(tmp_path / "d.sqlite3")],
                       env=env, log=tmp_path / "server.log") as server:
        server.wait_ready()
        decision_id = traffic(server.url)
        assert server.stop() == 0, server.output()
        return server.output(), decision_id


@pytest.mark.parametrize("setting", [None, "plain", "true"])
def test_every_request_gets_one_plain_line_by_default(
    fake_upstream: tuple[FakeUpstream, str], tmp_path: Path, setting: str | None
) -> None:
    output, decision_id = serve_and_log(tmp_path, fake_upstream[1], setting)
    lines = [line for line in output.splitlines() if '"POST /v1/' in line or '"GET /nothing' in line]
    assert len(lines) == 4, output
    answered, refused, missing, streamed = lines
    assert ' 127.0.0.1 "POST /v1/chat/completions" 200 ' in answered
    assert answered.endswith(f" tenant=enforcer decision=answer id={decision_id}")
    assert refused.endswith(' "POST /v1/chat/completions" 401 ' + refused.split(" 401 ")[1])
    assert refused.endswith(" error=invalid_api_key") and "tenant=" not in refused
    assert '"GET /nothing" 404 ' in missing and missing.endswith(" error=not_found")
    # annotate streams its decision in the last event: the headers name only the tenant.
    assert " 200 " in streamed and streamed.endswith(" tenant=annotator")
    assert TENANT_KEYS["enforcer"] not in output and "What is 2 + 2" not in output
    assert '"GET /healthz" 200 ' in output  # the readiness polls: every request is a line


def test_json_lines_parse_and_off_writes_none(
    fake_upstream: tuple[FakeUpstream, str], tmp_path: Path
) -> None:
    output, decision_id = serve_and_log(tmp_path / "json", fake_upstream[1], "json")
    records = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    v1 = [r for r in records if r["path"] != "/healthz"]
    assert [(r["method"], r["status"], r["tenant"], r["decision"], r["error"]) for r in v1] == [
        ("POST", 200, "enforcer", "answer", None),
        ("POST", 401, None, None, "invalid_api_key"),
        ("GET", 404, None, None, "not_found"),
        ("POST", 200, "annotator", None, None),
    ]
    assert v1[0]["id"] == decision_id and v1[0]["client"] == "127.0.0.1"
    assert all(r["duration_ms"] > 0 and r["bytes"] > 0 for r in v1)
    assert all(set(r) == {"time", "client", "method", "path", "status", "duration_ms", "bytes",
                          "tenant", "decision", "id", "error"} for r in records)
    quiet, _ = serve_and_log(tmp_path / "off", fake_upstream[1], "off")
    assert "/v1/chat/completions" not in quiet and "/healthz" not in quiet


@pytest.mark.parametrize(("given", "read"), [
    ("plain", "plain"), ("JSON", "json"), ("off", "off"), ("true", "plain"), ("false", "off"),
    ("0", "off"), (True, "plain"), (False, "off"),
])
def test_the_setting_reads_its_old_yes_no_form(given: object, read: str, tmp_path: Path) -> None:
    from proxy.runtime.settings import ServerSettings

    assert ServerSettings(config=tmp_path / "c.yaml", access_log=given).access_log == read  # type: ignore[arg-type]


def test_an_unknown_access_log_format_fails_the_start(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from proxy.runtime.settings import ServerSettings

    with pytest.raises(ValidationError, match="access_log"):
        ServerSettings(config=tmp_path / "c.yaml", access_log="loud")  # type: ignore[arg-type]


def test_lines_written_in_one_loop_turn_go_out_together_and_in_order(
        capsys: pytest.CaptureFixture[str]) -> None:
    sink = StdoutLines()
    sink("outside a loop: at once")
    assert capsys.readouterr().out == "outside a loop: at once\n"

    async def one_turn() -> str:
        for index in range(3):
            sink(f"line {index}")
        held = capsys.readouterr().out  # nothing yet: the flush waits for the turn's end
        await asyncio.sleep(0)
        return held

    assert asyncio.run(one_turn()) == ""
    assert capsys.readouterr().out == "line 0\nline 1\nline 2\n"


def test_a_client_that_leaves_before_its_answer_is_logged_as_499(
    fake_upstream: tuple[FakeUpstream, str], tmp_path: Path
) -> None:
    # The route answers 499 to a client already gone; the log sees it though nothing is sent.
    path = write_config(tmp_path, openai_only_config(fake_upstream[1]))
    slow = {"model": "fake", "messages": [
        {"role": "user", "content": json.dumps({"fake": {"delay": 1.5}})}]}
    with serve_process(["--config", str(path), "--store", str(tmp_path / "d.sqlite3")],
                       env={"FAKE_UPSTREAM_KEY": "sk-x"}, log=tmp_path / "server.log") as server:
        server.wait_ready()
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{server.url}/v1/chat/completions", json=slow, timeout=0.5,
                       headers={"Authorization": f"Bearer {TENANT_KEYS['enforcer']}"})
        assert server.stop() == 0, server.output()
        output = server.output()
    [line] = [line for line in output.splitlines() if '"POST /v1/chat/completions"' in line]
    assert ' "POST /v1/chat/completions" 499 ' in line and line.split()[-1] == "0B", line


def test_the_log_reads_status_size_decision_and_error_code_from_what_is_sent() -> None:
    # Any ASGI server (here a test client): the fields come from the messages the app sends.


    async def answered(request: object) -> JSONResponse:
        return JSONResponse({"ok": True}, headers={"x-basguard-tenant": "t",
                                                   "x-basguard-decision": "answer",
                                                   "x-basguard-id": "bg-1"})

    async def refused(request: object) -> JSONResponse:
        return JSONResponse({"error": {"code": "invalid_api_key"}}, status_code=401)

    lines: list[str] = []
    app = AccessLog(Starlette(routes=[Route("/a", answered), Route("/r", refused)]),
                    sink=lines.append)
    with TestClient(app) as client:
        assert client.get("/a").status_code == 200
        assert client.get("/r").status_code == 401
    assert lines[0].endswith(' "GET /a" 200 ' + lines[0].split(" 200 ")[1])
    assert lines[0].endswith(" 11B tenant=t decision=answer id=bg-1")
    assert ' "GET /r" 401 ' in lines[1] and lines[1].endswith(" error=invalid_api_key")


def test_a_finished_request_is_freed_without_the_garbage_collector() -> None:
    # Nothing the gateway puts in a request's scope may lead back to it (the response cycle
    # holds the scope): a request that ended is freed by reference counting, even on a
    # connection that stays open, rather than left with its body for the cyclic garbage
    # collector.

    cycles: list[weakref.ref[object]] = []

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        cycles.append(weakref.ref(send.__self__))  # type: ignore[attr-defined]
        await receive()  # type: ignore[operator]
        await send({"type": "http.response.start", "status": 200,  # type: ignore[operator]
                    "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"{}"})  # type: ignore[operator]

    async def two_requests() -> None:
        config = ServerConfig(
            app, limits=ConnectionLimits(max_header_bytes=8192, header_timeout_seconds=10,
                                         max_connections=10, body_timeout_seconds=10,
                                         body_min_rate_bytes_per_second=1,
                                         body_rate_window_seconds=5),
            shutdown_grace_seconds=1, lifespan="off", log_level="warning")
        config.load()
        loop = asyncio.get_running_loop()
        state = GatewayServerState()
        server = await loop.create_server(
            lambda: GatewayHttpProtocol(config, state, {}, loop), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n\r\n{}"
        for _ in range(2):
            writer.write(request)
            await reader.readuntil(b"\r\n\r\n{}")
        await asyncio.sleep(0.05)
        assert len(cycles) == 2
        assert cycles[0]() is None  # the first request's cycle, while the connection is open
        writer.close()
        server.close()
        await server.wait_closed()

    gc.disable()
    try:
        asyncio.run(two_requests())
    finally:
        gc.enable()
