"""Hostile connections against legitimate traffic: slowloris and a huge header.

In one run, against the same basguard app and fake upstream, serves:

- ``plain uvicorn``: the app under ``uvicorn.run`` with its defaults (what ``serve`` was);
- ``basguard serve``: our server with its default limits.

and for each, while legitimate chat completions run one after another on fresh connections:

1. ``slowloris``: ``--sockets`` connections each send a partial request head, then one more
   header byte every second, for ``--seconds``;
2. ``64 MiB header``: one connection sends a request whose header is 64 MiB.

It prints, per server and attack: legitimate requests sent, failed, their p50/p99 latency; how
many attack sockets the server still held open at the end; and for the huge header how long
until the server refused it.

Run: python benchmarks/bench_connections.py [--sockets 3000] [--seconds 20]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import yaml

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

from proxy.tools.local_model import free_port  # noqa: E402
from tests.support.waiting import wait_until  # noqa: E402

KEY = "bench-key-0123456789abcdef"
UPSTREAM = """
import uvicorn
from tests.support.fake_upstream import FakeUpstream
uvicorn.run(FakeUpstream(record=False).app(), host="127.0.0.1", port={port}, log_level="error")
"""
PLAIN = """
import uvicorn
from proxy.http.app import create_app_from_environment
uvicorn.run(create_app_from_environment(), host="127.0.0.1", port={port}, log_level="warning")
"""
CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError("the server exited")
        return httpx.get(url + "/healthz", timeout=1).status_code == 200

    wait_until(ready, what="the server to start", timeout=120, interval=0.1,
               ignoring=(httpx.HTTPError,))


def legitimate(
    url: str, stop: threading.Event, latencies: list[float], failures: list[str]
) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        try:
            with httpx.Client(timeout=30) as fresh:
                response = fresh.post(url + "/v1/chat/completions", json=CHAT,
                                      headers={"authorization": f"Bearer {KEY}"})
            if response.status_code == 200:
                latencies.append(time.perf_counter() - started)
            else:
                failures.append(str(response.status_code))
        except httpx.HTTPError as exc:
            failures.append(type(exc).__name__)


def slowloris(port: int, count: int, seconds: float) -> int:
    """Open ``count`` partial heads and trickle them; returns how many the server kept open."""
    sockets: list[socket.socket] = []
    for _ in range(count):
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
            sockets.append(sock)
        except OSError:
            break
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(1)
        for sock in sockets:
            with contextlib.suppress(OSError):  # a socket the server closed
                sock.send(b"x")
    alive = 0
    for sock in sockets:
        try:
            sock.setblocking(False)
            data = sock.recv(1)  # b"" or an answer: the server closed or refused it
            alive += 0 if data is not None else 1
        except BlockingIOError:
            alive += 1  # nothing to read: still held open
        except OSError:
            pass
        sock.close()
    return alive


def huge_header(port: int, size: int) -> tuple[float, str]:
    """Send a ``size``-byte header; seconds until the server answered or closed, and what."""
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        chunk = b"a" * 65536
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: ")
            for _ in range(size // len(chunk)):
                sock.sendall(chunk)
            sock.sendall(b"\r\n\r\n")
        except OSError:
            pass  # refused mid-send
        try:
            answer = sock.recv(200)
        except OSError:
            answer = b""
    status = answer.split(b"\r\n", 1)[0].decode(errors="replace") or "closed"
    return time.perf_counter() - started, status


def attack_run(url: str, port: int, attack: str, args: argparse.Namespace) -> dict[str, object]:
    stop = threading.Event()
    latencies: list[float] = []
    failures: list[str] = []
    client = threading.Thread(target=legitimate, args=(url, stop, latencies, failures))
    client.start()
    result: dict[str, object] = {}
    try:
        if attack == "slowloris":
            result["held"] = slowloris(port, args.sockets, args.seconds)
        else:
            seconds, status = huge_header(port, 64 * 2**20)
            result["refused_after_s"] = f"{seconds:.2f} ({status})"
            time.sleep(2)
    finally:
        stop.set()
        client.join()
    ordered = sorted(latencies) or [float("nan")]
    result.update(sent=len(latencies) + len(failures), failed=len(failures),
                  p50_ms=statistics.median(ordered) * 1000,
                  p99_ms=ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000)
    return result


def limit_files(limit: int | None) -> Callable[[], None] | None:
    if limit is None:
        return None
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sockets", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--file-limit", type=int,
                        help="run each server under this open-file limit (soft and hard)")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this client holds the sockets
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-connections-") as tmp:
        directory = Path(tmp)
        upstream_port = free_port()
        upstream = subprocess.Popen([sys.executable, "-c", UPSTREAM.format(port=upstream_port)],
                                    cwd=REPOSITORY)
        config = directory / "basguard.yaml"
        config.write_text(yaml.safe_dump({
            "version": 1,
            "models": {"fake": {"base_url": f"http://127.0.0.1:{upstream_port}/v1"}},
            "tenants": {"bench": {
                "api_keys": [{"sha256": hashlib.sha256(KEY.encode()).hexdigest()}],
                "risk": {"threshold": 0.5},
            }},
        }))
        env = {**os.environ, "BASGUARD_CONFIG": str(config),
               "BASGUARD_STORE": str(directory / "d.sqlite3"),
               "BASGUARD_RELOAD_INTERVAL_SECONDS": "0"}
        try:
            for name in ("plain uvicorn", "basguard serve"):
                port = free_port()
                command = ([sys.executable, "-c", PLAIN.format(port=port)]
                           if name == "plain uvicorn" else
                           [sys.executable, "-m", "proxy.cli", "serve", "--port", str(port)])
                server = subprocess.Popen(command, cwd=REPOSITORY, env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          preexec_fn=limit_files(args.file_limit))
                url = f"http://127.0.0.1:{port}"
                try:
                    wait_ready(url, server)
                    for attack in ("slowloris", "64 MiB header"):
                        rows.append((name, attack, attack_run(url, port, attack, args)))
                finally:
                    server.terminate()
                    server.wait(timeout=60)
        finally:
            upstream.terminate()
            upstream.wait(timeout=20)
    limit = f"open-file limit {args.file_limit}" if args.file_limit else f"open-file limit {hard}"
    print(f"\n{args.sockets} slowloris sockets for {args.seconds:g} s; legitimate requests one "
          f"at a time on fresh connections; server {limit}; load average "
          f"{os.getloadavg()[0]:.1f}\n")
    print("| server | attack | legit sent | failed | p50 ms | p99 ms | attack sockets held "
          "| 64 MiB header refused after |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for name, attack, r in rows:
        print(f"| {name} | {attack} | {r['sent']} | {r['failed']} | {r['p50_ms']:.1f} "
              f"| {r['p99_ms']:.1f} | {r.get('held', '–')} | {r.get('refused_after_s', '–')} |")


if __name__ == "__main__":
    main()
