"""``basguard serve`` start-up: time to ready and memory per process, against a bare app.

In one run, for 1 and 2 workers, starts:

- the baseline: uvicorn serving a Starlette app with one ``/healthz`` route (the floor any
  Python ASGI server pays);
- ``basguard serve`` with OpenAI-compatible models only (the fake upstream).

Each start is timed from ``Popen`` to the moment every worker has finished its start-up (the
log's "Application startup complete" count reaches the worker count) and ``/healthz`` answers.
Then 40 chat completions go through basguard (20 /healthz for the baseline), on fresh
connections so every worker takes some, and each process's resident memory (VmRSS) is read
from /proc. Medians over ``--repeats`` starts; ratios are against the baseline of the same run.

Run: python benchmarks/bench_startup.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

from proxy.tools.local_model import free_port  # noqa: E402
from tests.support.waiting import wait_until  # noqa: E402

KEY = "bench-key-0123456789abcdef"
BARE = "bare uvicorn+Starlette"

HELLO = """
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

async def healthz(request):
    return Response(b'{"status":"ok"}', media_type="application/json")

app = Starlette(routes=[Route("/healthz", healthz)])
"""

UPSTREAM = """
import uvicorn
from tests.support.fake_upstream import FakeUpstream
uvicorn.run(FakeUpstream(record=False).app(), host="127.0.0.1", port={port}, log_level="error")
"""


@dataclass(frozen=True)
class Start:
    ready_seconds: float
    worker_rss_mib: list[float]
    parent_rss_mib: float | None


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def start_once(command: list[str], env: dict[str, str], workers: int, port: int,
               exercise: list[tuple[str, str, dict | None]], log: Path) -> Start:
    with log.open("wb") as out:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=REPOSITORY, env={**os.environ, **env},
                                   stdout=out, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            def ready() -> bool:
                if process.poll() is not None:
                    raise RuntimeError(f"{command} exited:\n{log.read_text()}")
                complete = log.read_text(errors="replace").count("Application startup complete")
                return (complete >= workers
                        and httpx.get(url + "/healthz", timeout=1).status_code == 200)

            # Polled often: the time it takes is the figure measured.
            wait_until(ready, what=f"{command} to be ready", timeout=180, interval=0.02,
                       output=log.read_text, ignoring=(httpx.HTTPError,))
            ready = time.perf_counter() - started
            for method, path, body in exercise:
                with httpx.Client(timeout=30) as fresh:  # a fresh connection per request
                    response = fresh.request(method, url + path, json=body,
                                             headers={"authorization": f"Bearer {KEY}"})
                    response.raise_for_status()
            if workers > 1:
                # Spawned workers run multiprocessing's spawn_main; the resource tracker does not.
                worker_pids = [c for c in children(process.pid)
                               if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
                assert len(worker_pids) == workers, worker_pids
                return Start(ready, [rss_mib(c) for c in worker_pids], rss_mib(process.pid))
            return Start(ready, [rss_mib(process.pid)], None)
        finally:
            process.terminate()
            process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    repeats = parser.parse_args().repeats
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        directory = Path(tmp)
        (directory / "hello_app.py").write_text(HELLO)
        upstream_port = free_port()
        upstream = subprocess.Popen([sys.executable, "-c", UPSTREAM.format(port=upstream_port)],
                                    cwd=REPOSITORY, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
        config = directory / "basguard.yaml"
        config.write_text(yaml.safe_dump({
            "version": 1,
            "models": {"fake": {"base_url": f"http://127.0.0.1:{upstream_port}/v1"}},
            "tenants": {"bench": {
                "api_keys": [{"sha256": hashlib.sha256(KEY.encode()).hexdigest()}],
                "risk": {"threshold": 0.5},
            }},
        }))
        chat = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
        try:
            wait_until(lambda: httpx.get(f"http://127.0.0.1:{upstream_port}/v1/models",
                                         timeout=1), what="the upstream to start",
                       interval=0.1, ignoring=(httpx.HTTPError,))
            python_path = os.environ.get("PYTHONPATH", "")
            rows = []
            for workers in (1, 2):
                results: dict[str, list[Start]] = {BARE: [], "basguard serve": []}
                for _ in range(repeats):
                    port = free_port()
                    results[BARE].append(start_once(
                        [sys.executable, "-m", "uvicorn", "hello_app:app", "--port", str(port),
                         "--workers", str(workers), "--log-level", "info"],
                        {"PYTHONPATH": os.pathsep.join([str(directory), python_path])},
                        workers, port, [("GET", "/healthz", None)] * 20,
                        directory / "hello.log"))
                    port = free_port()
                    results["basguard serve"].append(start_once(
                        [sys.executable, "-m", "proxy.cli", "serve", "--config", str(config),
                         "--port", str(port), "--workers", str(workers),
                         "--store", str(directory / f"d{workers}.sqlite3")],
                        {"BASGUARD_RELOAD_INTERVAL_SECONDS": "0"},
                        workers, port, [("POST", "/v1/chat/completions", chat)] * 40,
                        directory / "basguard.log"))
                for name, starts in results.items():
                    rows.append((name, workers,
                                 statistics.median(s.ready_seconds for s in starts),
                                 statistics.median(max(s.worker_rss_mib) for s in starts),
                                 statistics.median(
                                     statistics.mean(s.worker_rss_mib) for s in starts),
                                 statistics.median(s.parent_rss_mib or 0.0 for s in starts)))
        finally:
            upstream.terminate()
            upstream.wait(timeout=20)
    load = os.getloadavg()[0]
    print(f"\nstart-up, median of {repeats} starts each; load average {load:.1f} on "
          f"{os.cpu_count()} CPUs\n")
    print("| server | workers | ready (s) | × bare | worker RSS max (MiB) | × bare "
          "| supervisor RSS (MiB) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    base = {r[1]: r for r in rows if r[0] == BARE}
    for name, workers, ready, rss_max, _rss_mean, parent in rows:
        b = base[workers]
        print(f"| {name} | {workers} | {ready:.2f} | {ready / b[2]:.2f} | {rss_max:.1f} "
              f"| {rss_max / b[3]:.2f} | {parent:.1f} |" if workers > 1 else
              f"| {name} | {workers} | {ready:.2f} | {ready / b[2]:.2f} | {rss_max:.1f} "
              f"| {rss_max / b[3]:.2f} | – |")


if __name__ == "__main__":
    main()
