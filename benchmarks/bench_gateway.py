"""What basguard adds to a request: latency, throughput and time to first byte.

Measured in one run, with the same fake upstream and the same load generator, one worker each:

- the upstream alone (the fake OpenAI-compatible server of the tests, no delay);
- a bare passthrough proxy (Starlette + one pooled httpx client, nothing else);
- basguard in ``enforce`` mode with a fitted calibrator (the SmolLM2 demo calibrator);
- the LiteLLM proxy in front of the same upstream (skipped if ``litellm[proxy]`` is missing).

Prints added latency p50/p99 at concurrency 1 (medians of ``--repeats`` runs), throughput at
concurrency 32, and the streamed time-to-first-byte overhead in ``annotate`` mode. Each server
runs in its own process. The load generator is ``wrk`` (Debian package ``wrk``): a Python client
tops out near 400 requests/s on this machine and would measure itself. Time to first byte is
timed from Python, one request at a time, identically for every target.

Every client request asks for logprobs with 5 alternatives, so the upstream does the same work
for every target and "added" measures the proxy alone (basguard needs logprobs in any case).

Run: python benchmarks/bench_gateway.py [--seconds N] [--repeats N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

from proxy.local_model import free_port  # noqa: E402

KEY = "bench-key-0123456789abcdef"  # at least MIN_API_KEY_LENGTH characters
BODY = {"model": "fake", "messages": [{"role": "user", "content": "What is the answer?"}],
        "max_tokens": 16, "logprobs": True, "top_logprobs": 5}
WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
"""

UPSTREAM = """
import uvicorn
from tests.proxy.fake_upstream import FakeUpstream
uvicorn.run(FakeUpstream(record=False).app(), host="127.0.0.1", port={port}, log_level="error")
"""

PASSTHROUGH = """
import httpx, uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

client = httpx.AsyncClient(limits=httpx.Limits(max_connections=512, max_keepalive_connections=128))

async def forward(request):
    upstream = await client.post("{upstream}/v1/chat/completions", content=await request.body(),
                                 headers={{"content-type": "application/json"}})
    return Response(upstream.content, status_code=upstream.status_code,
                    media_type="application/json")

app = Starlette(routes=[Route("/v1/chat/completions", forward, methods=["POST"])])
uvicorn.run(app, host="127.0.0.1", port={port}, log_level="error")
"""


@contextmanager
def server(command: list[str], port: int, env: dict[str, str] | None = None,
           ready_path: str = "/v1/models") -> Iterator[str]:
    process = subprocess.Popen(command, cwd=REPOSITORY, env={**os.environ, **(env or {})},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{command[:4]} exited with {process.returncode}")
            try:
                httpx.get(url + ready_path, headers={"authorization": f"Bearer {KEY}"}, timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{command[:4]} did not start") from None
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


@dataclass(frozen=True)
class WrkResult:
    p50_ms: float
    p99_ms: float
    requests_per_second: float


def _milliseconds(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, key: str, *, connections: int, seconds: float, directory: Path) -> WrkResult:
    script = directory / f"post-{connections}.lua"
    script.write_text(WRK_SCRIPT.format(body=json.dumps(BODY), key=key))
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
               f"{url}/v1/chat/completions"]
    subprocess.run([*command[:3], "-d2s", *command[4:]], capture_output=True, check=True)  # warm-up
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in output or "Socket errors" in output:
        raise RuntimeError(f"wrk saw errors against {url}:\n{output}")
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    assert p50 and p99 and rps, output
    return WrkResult(_milliseconds(p50[1]), _milliseconds(p99[1]), float(rps[1]))


def ttfb_ms(url: str, key: str, n: int) -> list[float]:
    headers = {"authorization": f"Bearer {key}"}
    samples = []
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        for i in range(n + 20):
            started = time.perf_counter()
            with client.stream("POST", "/v1/chat/completions", json={**BODY, "stream": True}) as r:
                pieces = r.iter_raw()
                next(pieces)
                elapsed = (time.perf_counter() - started) * 1000
                for _ in pieces:
                    pass
            if i >= 20:
                samples.append(elapsed)
    return samples


def write_basguard_config(directory: Path, upstream: str, mode: str) -> Path:
    shutil.copy(REPOSITORY / "proxy/demo_files/smollm2-calibrator.json", directory / "cal.json")
    config = {
        "version": 1,
        "models": {"fake": {"base_url": f"{upstream}/v1"}},
        "tenants": {"bench": {
            "api_keys": [{"sha256": hashlib.sha256(KEY.encode()).hexdigest()}],
            "risk": {"profile": "balanced"}, "mode": mode,
            "calibrators": {"default": "cal.json"},
        }},
    }
    path = directory / f"basguard-{mode}.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run")
    parser.add_argument("--streams", type=int, default=300, help="streamed requests timed")
    parser.add_argument("--repeats", type=int, default=3,
                        help="concurrency-1 runs per target; their median is reported")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("this benchmark needs wrk: apt-get install wrk")
    python = sys.executable
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp, server(
        [python, "-c", UPSTREAM.format(port=(up_port := free_port()))], up_port
    ) as upstream:
        targets: dict[str, tuple[list[str], int, dict[str, str]]] = {}
        targets["upstream alone"] = ([], up_port, {})
        port = free_port()
        targets["bare passthrough (Starlette + httpx)"] = (
            [python, "-c", PASSTHROUGH.format(port=port, upstream=upstream)], port, {})
        for mode in ("enforce", "annotate"):
            port = free_port()
            config = write_basguard_config(Path(tmp), upstream, mode)
            targets[f"basguard ({mode})"] = (
                [python, "-m", "proxy.cli", "serve", "--config", str(config), "--port",
                 str(port)], port, {"BASGUARD_RELOAD_INTERVAL_SECONDS": "0",
                                    # every decision is stored, as in production
                                    "BASGUARD_STORE": str(Path(tmp) / f"{mode}.sqlite3")})
        if shutil.which("litellm"):
            port = free_port()
            litellm_config = Path(tmp) / "litellm.yaml"
            litellm_config.write_text(json.dumps({
                "model_list": [{"model_name": "fake", "litellm_params": {
                    "model": "openai/fake-model", "api_base": f"{upstream}/v1", "api_key": "x"}}],
                "general_settings": {"master_key": f"sk-{KEY}"},
                "litellm_settings": {"telemetry": False},
            }))
            targets["LiteLLM proxy"] = (
                ["litellm", "--config", str(litellm_config), "--port", str(port),
                 "--num_workers", "1"], port,
                {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"})
        for name, (command, port, env) in targets.items():
            print(f"measuring {name} ...", flush=True)
            if command:
                context = server(command, port, env, ready_path="/health/liveliness"
                                 if name == "LiteLLM proxy" else "/v1/models")
            else:
                context = _already(upstream)
            key = f"sk-{KEY}" if name == "LiteLLM proxy" else KEY
            with context as url:
                # Latency is the median of a few runs: one stall of the shared machine inside
                # a single run can move its p99 by tens of milliseconds.
                runs = [wrk(url, key, connections=1, seconds=args.seconds, directory=Path(tmp))
                        for _ in range(args.repeats)]
                single = WrkResult(statistics.median(r.p50_ms for r in runs),
                                   statistics.median(r.p99_ms for r in runs),
                                   statistics.median(r.requests_per_second for r in runs))
                loaded = wrk(url, key, connections=32, seconds=args.seconds, directory=Path(tmp))
                stream = ttfb_ms(url, key, args.streams) if name in (
                    "upstream alone", "basguard (annotate)") else []
            results[name] = {
                "p50": single.p50_ms, "p99": single.p99_ms, "rps": loaded.requests_per_second,
                "ttfb": statistics.median(stream) if stream else float("nan"),
            }
    report(results)


@contextmanager
def _already(url: str) -> Iterator[str]:
    yield url


def report(results: dict[str, dict[str, float]]) -> None:
    base = results["upstream alone"]
    print()
    print(f"{'target':<38} {'p50 ms':>7} {'p99 ms':>7} {'added p50':>10} {'added p99':>10} "
          f"{'req/s c=32':>11}")
    for name, r in results.items():
        added50 = r["p50"] - base["p50"] if name != "upstream alone" else 0.0
        added99 = r["p99"] - base["p99"] if name != "upstream alone" else 0.0
        print(f"{name:<38} {r['p50']:7.3f} {r['p99']:7.3f} {added50:10.3f} {added99:10.3f} "
              f"{r['rps']:11.0f}")
    guard = results["basguard (enforce)"]
    bare = results["bare passthrough (Starlette + httpx)"]
    added_guard = guard["p50"] - base["p50"]
    added_bare = bare["p50"] - base["p50"]
    print()
    print(f"basguard added latency p50: {added_guard:.3f} ms (target <= 1 ms)")
    print(f"basguard / bare passthrough added latency: {added_guard / added_bare:.2f}x "
          f"(target <= 1.5x)")
    if "LiteLLM proxy" in results:
        ratio = guard["rps"] / results["LiteLLM proxy"]["rps"]
        print(f"basguard / LiteLLM proxy throughput at c=32: {ratio:.1f}x (target >= 10x)")
    ttfb = results["basguard (annotate)"]["ttfb"] - base["ttfb"]
    print(f"streaming time-to-first-byte overhead (annotate): {ttfb:.3f} ms")


if __name__ == "__main__":
    main()
