"""``basguard serve`` as a process: a lean start, connection limits over raw sockets, a drained stop.

Every test runs the real command (``python -m proxy.cli serve``) against the fake upstream and
talks to it over loopback sockets; raw sockets where the HTTP itself is the subject.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import TENANT_KEYS, openai_only_config, write_config
from tests.support.loopback import ServerProcess, serve_in_thread, serve_process
from tests.support.metrics import scrape
from tests.support.processes import HEAVY_MODULES
from tests.support.raw_http import envelope, read_until_closed
from tests.support.waiting import wait_until


def test_the_serving_path_loads_no_fitting_plotting_or_litellm(
    fake_upstream: tuple[FakeUpstream, str], tmp_path: Path
) -> None:
    """What a worker imports: the CLI module (re-imported by spawn), the server, the app."""
    path = write_config(tmp_path, openai_only_config(fake_upstream[1]))
    probe = (
        "import sys, proxy.cli.main, proxy.http.server\n"
        "from proxy.http.app import create_app\n"
        "from proxy.runtime.settings import ServerSettings\n"
        f"create_app(ServerSettings(config={str(path)!r}, store={str(tmp_path / 's.db')!r}))\n"
        f"print(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            env={**os.environ, "FAKE_UPSTREAM_KEY": "sk-x"}, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def limited_upstream() -> Iterator[FakeUpstream]:
    """The fake upstream of :func:`limited`, whose ``delaying`` count shows requests held."""
    fake = FakeUpstream()
    with serve_in_thread(fake.app()) as url:
        fake.url = url  # type: ignore[attr-defined]
        yield fake


@pytest.fixture(scope="module")
def limited(
    limited_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One ``serve`` process with small limits, so each is quick to reach."""
    directory = tmp_path_factory.mktemp("limited")
    path = write_config(directory, openai_only_config(limited_upstream.url))  # type: ignore[attr-defined]
    env = {"FAKE_UPSTREAM_KEY": "sk-x", "BASGUARD_RELOAD_INTERVAL_SECONDS": "0",
           "BASGUARD_MAX_HEADER_BYTES": "8192", "BASGUARD_HEADER_TIMEOUT_SECONDS": "1.5",
           "BASGUARD_MAX_CONCURRENT_REQUESTS": "2"}
    with serve_process(["--config", str(path), "--store", str(directory / "d.sqlite3")],
                       env=env, log=directory / "server.log") as server:
        server.wait_ready()
        yield server


def raw_exchange(server: ServerProcess, data: bytes, *, timeout: float = 30.0) -> bytes:
    """Send ``data`` on a fresh connection; everything the server sends until it closes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        # Refused mid-send (a too-large head): the answer is already waiting to be read.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        return read_until_closed(sock)


def test_an_oversized_head_gets_431_in_the_envelope(limited: ServerProcess) -> None:
    big = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 100_000 + b"\r\n\r\n"
    status, error = envelope(raw_exchange(limited, big))
    assert (status, error["code"]) == (431, "headers_too_large")


def test_a_head_under_the_limit_with_a_body_is_served(limited: ServerProcess) -> None:
    # The head is under the limit while head and body together are far over it.
    body = json.dumps({"model": "fake", "messages": [{"role": "user", "content": "x" * 3000}]})
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
               f"authorization: Bearer {TENANT_KEYS['lenient']}\r\n"
               f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n{body}")
    response = raw_exchange(limited, request.encode() + b"")
    assert response.startswith(b"HTTP/1.1 200"), response[:300]


def test_a_slow_head_is_closed_with_408(limited: ServerProcess) -> None:
    started = time.monotonic()
    status, error = envelope(raw_exchange(limited, b"GET /healthz HTTP/1.1\r\nhost: x\r\n"))
    assert (status, error["code"]) == (408, "request_timeout")
    assert time.monotonic() - started < 15  # the limit is 1.5 s; generous for a loaded machine


def test_a_silent_connection_is_closed_without_an_answer(limited: ServerProcess) -> None:
    assert raw_exchange(limited, b"") == b""


def test_keep_alive_requests_each_get_a_fresh_head_deadline(limited: ServerProcess) -> None:
    with httpx.Client(base_url=limited.url) as client:
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
            time.sleep(1.0)  # under the keep-alive timeout; two of these pass the head limit


@pytest.mark.slow
def test_idle_sockets_at_the_connection_limit_make_room_for_real_requests(
    fake_upstream: tuple[FakeUpstream, str], tmp_path: Path
) -> None:
    """Slowloris sockets fill all 16 connections; a client with a whole request still gets in.

    The head timeout is long (60 s), so only pushing out the oldest waiting socket can make room.
    """
    path = write_config(tmp_path, openai_only_config(fake_upstream[1]))
    env = {"FAKE_UPSTREAM_KEY": "sk-x", "BASGUARD_MAX_CONNECTIONS": "16",
           "BASGUARD_HEADER_TIMEOUT_SECONDS": "60"}
    with serve_process(["--config", str(path), "--store", str(tmp_path / "d.sqlite3")],
                       env=env, log=tmp_path / "server.log") as server:
        server.wait_ready()
        hostile: list[socket.socket] = []
        try:
            for _ in range(20):
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
                hostile.append(sock)
                with contextlib.suppress(OSError):  # already pushed out
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
            for _ in range(3):
                assert httpx.get(f"{server.url}/healthz", timeout=30).status_code == 200
            # The oldest was pushed out (well before its 60 s head deadline: the socket timeout
            # is 10 s), and told why if its head had arrived by then.
            answer = read_until_closed(hostile[0])
            if answer:
                status, error = envelope(answer)
                assert (status, error["code"]) == (408, "request_timeout")
        finally:
            for sock in hostile:
                sock.close()


@pytest.mark.parametrize("request_bytes", [
    b"NOT A REQUEST\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nbad header line\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
    b"GET /healthz HTTP/9.9\r\n\r\n",
], ids=["request-line", "header", "chunked", "version"])
def test_malformed_http_gets_400_in_the_envelope(
    limited: ServerProcess, request_bytes: bytes
) -> None:
    status, error = envelope(raw_exchange(limited, request_bytes))
    assert (status, error["code"]) == (400, "malformed_http")


def test_requests_beyond_the_concurrency_limit_get_503(
    limited: ServerProcess, limited_upstream: FakeUpstream
) -> None:
    body = {"model": "patient",
            "messages": [{"role": "user", "content": json.dumps({"fake": {"delay": 4}})}]}
    quick = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"authorization": f"Bearer {TENANT_KEYS['lenient']}"}
    held: list[int] = []

    def hold() -> None:
        held.append(httpx.post(f"{limited.url}/v1/chat/completions", json=body, headers=headers,
                               timeout=60).status_code)

    holders = [threading.Thread(target=hold) for _ in range(2)]
    for thread in holders:
        thread.start()
    try:
        # Both holders are inside the app, at the upstream.
        limited.wait_until(lambda: limited_upstream.delaying >= 2,
                           what="both holders at the upstream")
        response = httpx.post(f"{limited.url}/v1/chat/completions", json=quick,
                              headers=headers, timeout=60)
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "server_busy"
        assert response.headers["retry-after"] == "1"
        assert httpx.get(f"{limited.url}/healthz").status_code == 200  # probes are exempt
    finally:
        for thread in holders:
            thread.join()
    assert held == [200, 200]


@pytest.mark.slow
def test_two_workers_start_fast_and_both_apply_the_limits(
    fake_upstream: tuple[FakeUpstream, str], tmp_path: Path
) -> None:
    path = write_config(tmp_path, openai_only_config(fake_upstream[1]))
    env = {"FAKE_UPSTREAM_KEY": "sk-x", "BASGUARD_MAX_HEADER_BYTES": "8192",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    with serve_process(["--config", str(path), "--workers", "2",
                        "--store", str(tmp_path / "d.sqlite3")],
                       env=env, log=tmp_path / "server.log") as server:
        server.wait_ready()
        big = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 20_000 + b"\r\n\r\n"
        for _ in range(6):  # fresh connections: both workers take some
            status, _ = envelope(raw_exchange(server, big))
            assert status == 431
        assert server.stop() == 0, server.output()
        assert "died" not in server.output()  # no worker missed its health check


@pytest.mark.slow
def test_sigterm_ends_open_streams_with_an_error_event_then_exits_0(
    fake_upstream: tuple[FakeUpstream, str], tmp_path: Path
) -> None:
    """A stop drains: a stream past the grace period ends with ``shutting_down`` and [DONE]."""
    path = write_config(tmp_path, openai_only_config(fake_upstream[1]))
    store = tmp_path / "d.sqlite3"
    grace = 2.0
    env = {"FAKE_UPSTREAM_KEY": "sk-x", "BASGUARD_RELOAD_INTERVAL_SECONDS": "0",
           "BASGUARD_SHUTDOWN_GRACE_SECONDS": str(grace)}
    headers = {"authorization": f"Bearer {TENANT_KEYS['annotator']}"}
    with serve_process(["--config", str(path), "--store", str(store)],
                       env=env, log=tmp_path / "server.log") as server:
        server.wait_ready()
        decided = httpx.post(f"{server.url}/v1/chat/completions", headers=headers, json={
            "model": "patient", "messages": [{"role": "user", "content": "hi"}]}).json()
        endless = {"content": " ".join(["w"] * 150), "logprobs": [-0.1] * 150,
                   "stream_delay": 0.25}
        body = {"model": "patient", "stream": True,
                "messages": [{"role": "user", "content": json.dumps({"fake": endless})}]}
        # Work whose response has not started at the deadline gets a 503 envelope instead:
        # a slow non-streamed answer, and an enforce-mode stream still buffering its answer.
        slow = {"model": "patient",
                "messages": [{"role": "user", "content": json.dumps({"fake": {"delay": 60}})}]}
        buffering = {**body, "stream": True}
        unstarted: list[httpx.Response] = []
        enforcer = {"authorization": f"Bearer {TENANT_KEYS['enforcer']}"}

        def unfinished(payload: dict[str, Any]) -> None:
            unstarted.append(httpx.post(f"{server.url}/v1/chat/completions", json=payload,
                                        headers=enforcer, timeout=60))

        fake = fake_upstream[0]
        asked_before = len(fake.received)
        waiting = [threading.Thread(target=unfinished, args=(p,)) for p in (slow, buffering)]
        for thread in waiting:
            thread.start()
        events: list[str] = []
        with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body,
                          headers=headers, timeout=60) as response:
            assert response.status_code == 200, response.read()
            lines = response.iter_lines()
            for line in lines:  # the stream is running
                if line.startswith("data: "):
                    events.append(line)
                    break
            server.wait_until(lambda: len(fake.received) >= asked_before + 3,
                              what="all three requests at the upstream")
            stopped = time.monotonic()
            server.process.send_signal(15)
            events += [line for line in lines if line.startswith("data: ")]
        status = server.stop(timeout=grace + 30)
        took = time.monotonic() - stopped
        for thread in waiting:
            thread.join()
    assert status == 0, server.output()
    assert events[-1] == "data: [DONE]"
    error = json.loads(events[-2].removeprefix("data: "))["error"]
    assert (error["type"], error["code"]) == ("service_unavailable", "shutting_down")
    assert grace <= took < grace + 20
    assert len(unstarted) == 2
    for refused in unstarted:
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "shutting_down"
    assert len(events) > 4  # it streamed through the grace period, not cut at the signal
    with sqlite3.connect(store) as db:
        stored = {row[0] for row in db.execute("SELECT id FROM decisions")}
    assert decided["basguard"]["id"] in stored


def worker_pids(master: int) -> list[int]:
    """The worker processes ``serve --workers`` started (not multiprocessing's helpers)."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [int(pid) for pid in children
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def running(pid: int) -> bool:
    """Whether ``pid`` is alive (a zombie, dead and not yet reaped, is not)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_process_can_ask_for_a_signal_when_its_parent_dies() -> None:
    """In a child process: prctl must work here, or only the once-a-second check would guard."""
    probe = ("import os; from proxy.http.parent_watch import parent_gone, signal_on_parent_death\n"
             "print(signal_on_parent_death(), parent_gone(os.getppid()), parent_gone(-1))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.split() == ["True", "False", "True"]


@pytest.mark.slow
def test_workers_exit_when_the_master_is_killed_and_a_restart_serves(
    fake_upstream: tuple[FakeUpstream, str], tmp_path: Path
) -> None:
    """kill -9 of the master (what a container runtime does) leaves no worker holding the port."""
    path = write_config(tmp_path, openai_only_config(fake_upstream[1]))
    argv = ["--config", str(path), "--workers", "2", "--store", str(tmp_path / "d.sqlite3")]
    env = {"FAKE_UPSTREAM_KEY": "sk-x", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    workers: list[int] = []
    try:
        with serve_process(argv, env=env, log=tmp_path / "first.log") as first:
            first.wait_ready()

            def both_workers() -> list[int]:
                found = worker_pids(first.process.pid)
                return found if len(found) >= 2 else []

            workers = first.wait_until(both_workers, what="both workers")
            first.process.kill()
            first.process.wait()
            # The workers must notice within 10 s (the bound is what this test checks).
            wait_until(lambda: not any(running(pid) for pid in workers),
                       what=f"workers {workers} to exit after their master", timeout=10,
                       output=first.output)
        with serve_process(argv, env=env, log=tmp_path / "second.log", port=first.port) as second:
            second.wait_ready()
            assert httpx.get(f"{second.url}/v1/models", timeout=30, headers={
                "authorization": f"Bearer {TENANT_KEYS['lenient']}"}).status_code == 200
            assert second.stop() == 0, second.output()
    finally:
        for pid in workers:  # never leave an orphan holding the port
            with contextlib.suppress(OSError):
                os.kill(pid, 9)


def test_refused_connections_are_counted_by_reason(limited: ServerProcess) -> None:
    def refused() -> dict[str, float]:
        samples = scrape(limited.url)
        return {dict(labels)["reason"]: value for (name, labels), value in samples.items()
                if name == "basguard_connections_refused_total"}

    before = refused()
    big = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 100_000 + b"\r\n\r\n"
    assert envelope(raw_exchange(limited, big))[0] == 431
    assert envelope(raw_exchange(limited, b"NOT A REQUEST\r\n\r\n"))[0] == 400
    after = refused()
    assert after["headers_too_large"] == before["headers_too_large"] + 1
    assert after["malformed_http"] == before["malformed_http"] + 1
    assert after["server_busy"] == before["server_busy"]
