"""What basguard adds to a request: latency, throughput and time to first byte.

Measured in one run, with the same fake upstream and the same load generator, one worker each:

- the upstream alone (the fake OpenAI-compatible server of the tests, no delay);
- a bare passthrough proxy (Starlette + one pooled httpx client, nothing else);
- a bare aiohttp passthrough (aiohttp's server + one pooled aiohttp client session, on uvloop as
  basguard is): the floor of a plain Python proxy, and the baseline of basguard's targets;
- basguard in ``enforce`` and ``annotate`` mode with a fitted calibrator (the SmolLM2 demo
  calibrator), and any ``--variant`` checkouts of basguard (a candidate patch, say);
- the LiteLLM proxy in front of the same upstream (skipped if ``litellm[proxy]`` is missing).

Prints added latency p50/p99 at concurrency 1 and throughput at concurrency 32, each the median
of ``--repeats`` runs, the server's CPU time per request at concurrency 32 (steadier than the
request rate on a shared machine), with basguard's ratios against the aiohttp passthrough
(targets: added p50 <= 1.5x, throughput >= 0.8x), and the streamed time-to-first-byte overhead
in ``annotate`` mode. Each server runs in its own process; all of them are started first and
the runs are interleaved round by round (every target once per round), so a change in the load
of the shared machine falls on every target alike rather than on whichever ran last. The load
generator is ``wrk`` (Debian package ``wrk``): a Python client tops out near 400 requests/s on
this machine and would measure itself. Time to first byte is timed from Python, one request at
a time, identically for every target.

Every client request asks for logprobs with 5 alternatives, so the upstream does the same work
for every target and "added" measures the proxy alone (basguard needs logprobs in any case).

Run: python benchmarks/bench_gateway.py [--seconds N] [--repeats N] [--no-litellm]
         [--variant NAME=CHECKOUT ...] [--setting-variant NAME=BASGUARD_SETTING=VALUE ...]

A server's own output (uvicorn's lines, basguard's access log) goes to /dev/null.
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
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

from proxy.tools.local_model import free_port  # noqa: E402
from tests.support.waiting import wait_until  # noqa: E402

KEY = "bench-key-0123456789abcdef0123456789"  # long enough for any minimum key length
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
from tests.support.fake_upstream import FakeUpstream
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

# What a plain Python proxy costs at least: aiohttp's C-accelerated server and client, one
# pooled session with the same connector settings as basguard's, uvloop as basguard runs on,
# no access log (basguard's bench run has uvicorn's at the default, INFO).
AIOHTTP_PASSTHROUGH = """
import aiohttp, uvloop
from aiohttp import web

HEADERS = {{"content-type": "application/json"}}

async def session(app):
    app["session"] = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=512, keepalive_timeout=30),
        skip_auto_headers=("User-Agent",))
    yield
    await app["session"].close()

async def forward(request):
    async with request.app["session"].post("{upstream}/v1/chat/completions",
                                           data=await request.read(), headers=HEADERS) as up:
        if up.content_type != "text/event-stream":
            return web.Response(body=await up.read(), status=up.status,
                                content_type="application/json")
        # A stream is relayed as it comes, piece by piece.
        response = web.StreamResponse(status=up.status,
                                      headers={{"content-type": "text/event-stream"}})
        await response.prepare(request)
        async for piece in up.content.iter_any():
            await response.write(piece)
        await response.write_eof()
        return response

app = web.Application()
app.cleanup_ctx.append(session)
app.router.add_post("/v1/chat/completions", forward)
web.run_app(app, host="127.0.0.1", port={port}, access_log=None, print=None,
            loop=uvloop.new_event_loop())
"""

UPSTREAM_ALONE = "upstream alone"
STARLETTE = "bare passthrough (Starlette + httpx)"
AIOHTTP = "bare passthrough (aiohttp)"
ENFORCE = "basguard (enforce)"
ANNOTATE = "basguard (annotate)"
LITELLM = "LiteLLM proxy"


@dataclass
class Target:
    command: list[str]  # empty: the upstream itself, already running
    port: int
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = REPOSITORY
    ready_path: str = "/v1/models"
    key: str = KEY


@dataclass(frozen=True)
class Served:
    url: str
    pid: int


@contextmanager
def server(command: list[str], port: int, env: dict[str, str] | None = None,
           ready_path: str = "/v1/models", cwd: Path = REPOSITORY) -> Iterator[Served]:
    process = subprocess.Popen(command, cwd=cwd, env={**os.environ, **(env or {})},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(process, url, ready_path)
        yield Served(url, process.pid)
    finally:
        process.terminate()
        process.wait(timeout=20)


def wait_until_serving(process: subprocess.Popen[bytes], url: str, ready_path: str) -> None:
    """Poll ``url`` until it answers (any status: the passthroughs have no such route)."""

    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        httpx.get(url + ready_path, headers={"authorization": f"Bearer {KEY}"}, timeout=1)
        return True

    wait_until(answers, what=f"{process.args!r} to start", timeout=120, interval=0.2,
               ignoring=(httpx.HTTPError,))


@dataclass(frozen=True)
class WrkResult:
    p50_ms: float
    p99_ms: float
    requests_per_second: float
    requests: int = 0
    cpu_us_per_request: float = float("nan")
    """CPU time (user + system, all threads) the server process spent per request: unlike the
    request rate, barely moved by other processes competing for the machine's cores."""
    system_us_per_request: float = float("nan")
    """The part of it spent in the kernel: socket reads and writes, epoll, and (on loopback)
    the TCP stack's delivery of what the process writes."""


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time so far of process ``pid`` and its live descendants (a server
    that runs its workers as child processes)."""
    return sum(cpu_times(pid))


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds so far of process ``pid`` and its live descendants."""
    stats: dict[int, tuple[int, float, float]] = {}  # pid: (parent, user, system seconds)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue  # exited meanwhile
            tick = os.sysconf("SC_CLK_TCK")
            stats[int(entry.name)] = (int(fields[1]), int(fields[11]) / tick,
                                      int(fields[12]) / tick)
    tree: set[int] = set()
    grown = {pid}
    while grown:
        tree |= grown
        grown = {child for child, (parent, _, _) in stats.items()
                 if parent in tree and child not in tree}
    members = [stats[member] for member in tree if member in stats]
    return sum(m[1] for m in members), sum(m[2] for m in members)


def _milliseconds(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, key: str, *, connections: int, seconds: float, directory: Path,
        warm_up: bool = True, strict: bool = True, pid: int | None = None,
        stream: bool = False) -> WrkResult:
    """``wrk`` posting :data:`BODY` (streamed: with ``"stream": true``) for ``seconds``."""
    script = directory / f"post-{connections}{'-stream' if stream else ''}.lua"
    body = {**BODY, "stream": True} if stream else BODY
    script.write_text(WRK_SCRIPT.format(body=json.dumps(body), key=key))
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
               f"{url}/v1/chat/completions"]
    if warm_up:
        subprocess.run([*command[:3], "-d2s", *command[4:]], capture_output=True, check=True)
    user_before, system_before = cpu_times(pid) if pid else (0.0, 0.0)
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    user_after, system_after = cpu_times(pid) if pid else (float("nan"), float("nan"))
    user, system = user_after - user_before, system_after - system_before
    if strict and ("Non-2xx" in output or "Socket errors" in output):
        raise RuntimeError(f"wrk saw errors against {url}:\n{output}")
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    done = re.search(r"^\s+(\d+) requests in", output, re.M)
    assert p50 and p99 and rps and done, output
    requests = max(int(done[1]), 1)
    return WrkResult(_milliseconds(p50[1]), _milliseconds(p99[1]), float(rps[1]), int(done[1]),
                     (user + system) * 1e6 / requests, system * 1e6 / requests)


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
    shutil.copy(REPOSITORY / "proxy/tools/demo_files/smollm2-calibrator.json",
                directory / "cal.json")
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


def basguard(checkout: Path, config: Path, store: Path,
             settings: dict[str, str] | None = None) -> Target:
    """basguard from ``checkout`` (this one, or a variant's) serving ``config``, with
    ``settings`` (``BASGUARD_*`` variables) on top of its defaults."""
    port = free_port()
    return Target(
        [sys.executable, "-m", "proxy.cli", "serve", "--config", str(config),
         "--port", str(port)],
        port,
        # Every decision is stored, as in production.
        {"BASGUARD_RELOAD_INTERVAL_SECONDS": "0", "BASGUARD_STORE": str(store),
         "PYTHONPATH": str(checkout), **(settings or {})},
        cwd=checkout,
    )


def targets(upstream: str, up_port: int, tmp: Path, args: argparse.Namespace) -> dict[str, Target]:
    python = sys.executable
    found = {UPSTREAM_ALONE: Target([], up_port)}
    port = free_port()
    found[STARLETTE] = Target([python, "-c", PASSTHROUGH.format(port=port, upstream=upstream)],
                              port)
    port = free_port()
    found[AIOHTTP] = Target(
        [python, "-c", AIOHTTP_PASSTHROUGH.format(port=port, upstream=upstream)], port)
    for mode in ("enforce", "annotate"):
        config = write_basguard_config(tmp, upstream, mode)
        found[f"basguard ({mode})"] = basguard(REPOSITORY, config, tmp / f"{mode}.sqlite3")
    for name, checkout in args.variant:
        config = write_basguard_config(tmp, upstream, "enforce")
        found[f"basguard ({name})"] = basguard(checkout, config, tmp / f"{name}.sqlite3")
    for name, variable, value in args.setting_variant:
        config = write_basguard_config(tmp, upstream, "enforce")
        found[f"basguard ({name})"] = basguard(REPOSITORY, config, tmp / f"{name}.sqlite3",
                                               {variable: value})
    if shutil.which("litellm") and not args.no_litellm:
        port = free_port()
        litellm_config = tmp / "litellm.yaml"
        litellm_config.write_text(json.dumps({
            "model_list": [{"model_name": "fake", "litellm_params": {
                "model": "openai/fake-model", "api_base": f"{upstream}/v1", "api_key": "x"}}],
            "general_settings": {"master_key": f"sk-{KEY}"},
            "litellm_settings": {"telemetry": False},
        }))
        found[LITELLM] = Target(
            ["litellm", "--config", str(litellm_config), "--port", str(port),
             "--num_workers", "1"], port,
            {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"},
            ready_path="/health/liveliness", key=f"sk-{KEY}")
    return found


def _variant(text: str) -> tuple[str, Path]:
    name, _, checkout = text.partition("=")
    path = Path(checkout).resolve()
    if not name or not any((path / "proxy" / cli).is_file() for cli in ("cli.py", "cli/main.py")):
        raise argparse.ArgumentTypeError(f"expected NAME=CHECKOUT of basguard, got {text!r}")
    return name, path


def _setting_variant(text: str) -> tuple[str, str, str]:
    name, _, setting = text.partition("=")
    variable, _, value = setting.partition("=")
    if not name or not variable.startswith("BASGUARD_") or not value:
        raise argparse.ArgumentTypeError(
            f"expected NAME=BASGUARD_SETTING=VALUE, got {text!r}")
    return name, variable, value


STREAMED = (UPSTREAM_ALONE, AIOHTTP, ENFORCE, ANNOTATE)
"""The targets also measured with streamed requests (the variants too): the Starlette
passthrough buffers what it relays and the LiteLLM proxy is measured plain only."""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run")
    parser.add_argument("--streams", type=int, default=300, help="streamed requests timed")
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds; each target's figures are the medians of its runs")
    parser.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM proxy")
    parser.add_argument("--quick", action="store_true",
                        help="only the upstream, the aiohttp passthrough, basguard (enforce) and "
                             "the variants; no time to first byte")
    parser.add_argument("--variant", type=_variant, action="append", default=[],
                        metavar="NAME=CHECKOUT",
                        help="also measure basguard (enforce) run from another checkout, such "
                             "as this one with a candidate patch applied")
    parser.add_argument("--setting-variant", type=_setting_variant, action="append", default=[],
                        metavar="NAME=BASGUARD_SETTING=VALUE",
                        help="also measure basguard (enforce) from this checkout with one "
                             "setting changed, e.g. access-log-off=BASGUARD_ACCESS_LOG=off")
    parser.add_argument("--profile", type=int, default=0, metavar="SECONDS",
                        help="then profile basguard (enforce) and each variant for SECONDS, "
                             "plain and streamed: CPU per request by part (needs py-spy; see "
                             "profile_gateway.py)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("this benchmark needs wrk: apt-get install wrk")
    if args.profile and shutil.which("py-spy") is None:
        sys.exit("--profile needs py-spy: pip install py-spy")
    print(f"load average before: {_load()}", flush=True)
    single: dict[str, list[WrkResult]] = {}
    loaded: dict[str, list[WrkResult]] = {}
    streamed: dict[str, list[WrkResult]] = {}
    ttfb: dict[str, float] = {}
    profiles: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as running, server(
        [sys.executable, "-c", UPSTREAM.format(port=(up_port := free_port()))], up_port
    ) as upstream:
        served: dict[str, Served] = {}
        found = targets(upstream.url, up_port, Path(tmp), args)
        if args.quick:
            found = {name: target for name, target in found.items()
                     if name not in (STARLETTE, ANNOTATE, LITELLM)}
        for name, target in found.items():
            print(f"starting {name} ...", flush=True)
            served[name] = upstream if not target.command else running.enter_context(server(
                target.command, target.port, target.env, target.ready_path, target.cwd))
        variants = [f"basguard ({name})" for name, *_ in (*args.variant, *args.setting_variant)]
        for round_ in range(args.repeats):
            print(f"round {round_ + 1} of {args.repeats} (load average {_load()}) ...", flush=True)
            for name, target in found.items():
                # Latency is the median of the rounds: one stall of the shared machine inside
                # a single run can move its p99 by tens of milliseconds.
                runs_of = [(1, False, single), (32, False, loaded)]
                if name in STREAMED or name in variants:
                    runs_of.append((32, True, streamed))
                for connections, stream, runs in runs_of:
                    runs.setdefault(name, []).append(wrk(
                        served[name].url, target.key, connections=connections,
                        seconds=args.seconds, directory=Path(tmp), warm_up=round_ == 0,
                        pid=served[name].pid, stream=stream))
        for name in (UPSTREAM_ALONE, ANNOTATE) if ANNOTATE in found else ():
            ttfb[name] = statistics.median(ttfb_ms(served[name].url, KEY, args.streams))
        # The figures first: a profile that fails cannot lose them.
        print(f"load average after: {_load()}")
        report(_medians(single, loaded, ttfb), _medians(streamed, streamed, ttfb),
               spread={name: (min(r.requests_per_second for r in runs),
                              max(r.requests_per_second for r in runs))
                       for name, runs in loaded.items()})
        if args.profile:
            from profile_gateway import profile

            for name in (ENFORCE, *variants):
                for stream in (False, True):
                    print(f"profiling {name}{' streamed' if stream else ''} ...", flush=True)
                    profiles[f"{name}{', streamed' if stream else ''}"] = profile(
                        served[name].url, served[name].pid, seconds=args.profile, rate=250,
                        directory=Path(tmp), stream=stream)
    if profiles:
        from profile_gateway import Profile, print_profile

        for title, found_profile in profiles.items():
            assert isinstance(found_profile, Profile)
            print()
            print_profile(title, found_profile, top=12)


def _medians(single: dict[str, list[WrkResult]], loaded: dict[str, list[WrkResult]],
             ttfb: dict[str, float]) -> dict[str, dict[str, float]]:
    return {
        name: {
            "p50": statistics.median(r.p50_ms for r in single[name]),
            "p99": statistics.median(r.p99_ms for r in single[name]),
            "rps": statistics.median(r.requests_per_second for r in loaded[name]),
            "cpu": statistics.median(r.cpu_us_per_request for r in loaded[name]),
            "sys": statistics.median(r.system_us_per_request for r in loaded[name]),
            "ttfb": ttfb.get(name, float("nan")),
        }
        for name in loaded if name in single
    }


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


#: Issue #26's targets for basguard (enforce) against the aiohttp passthrough, in one run.
CPU_RATIO_TARGET = 1.5
THROUGHPUT_RATIO_TARGET = 0.65


def report(results: dict[str, dict[str, float]], streamed: dict[str, dict[str, float]],
           spread: dict[str, tuple[float, float]]) -> None:
    base = results[UPSTREAM_ALONE]
    floor = results[AIOHTTP]
    floor_added = floor["p50"] - base["p50"]
    print()
    print("c=1: latency percentiles of one connection; c=32: 32 connections. CPU: of the "
          "server process, per request at c=32 (of which in the kernel).")
    print(f"{'target':<38} {'p50 ms':>7} {'p99 ms':>7} {'added p50':>10} {'added p99':>10} "
          f"{'req/s c=32':>11} {'(min-max)':>11} {'CPU us/req':>11} {'(kernel)':>9} "
          f"{'added p50/aio':>14} {'req/s /aio':>11} {'CPU /aio':>9}")
    for name, r in results.items():
        is_base = name == UPSTREAM_ALONE
        added50 = 0.0 if is_base else r["p50"] - base["p50"]
        added99 = 0.0 if is_base else r["p99"] - base["p99"]
        low, high = spread[name]
        ratio50 = "" if is_base else f"{added50 / floor_added:.2f}x"
        ratio_rps = "" if is_base else f"{r['rps'] / floor['rps']:.2f}x"
        ratio_cpu = "" if is_base else f"{r['cpu'] / floor['cpu']:.2f}x"
        print(f"{name:<38} {r['p50']:7.3f} {r['p99']:7.3f} {added50:10.3f} {added99:10.3f} "
              f"{r['rps']:11.0f} {f'{low:.0f}-{high:.0f}':>11} {r['cpu']:11.0f} "
              f"{r['sys']:9.0f} {ratio50:>14} {ratio_rps:>11} {ratio_cpu:>9}")
    if streamed:
        stream_floor = streamed[AIOHTTP]
        print()
        print("streamed requests (\"stream\": true), c=32:")
        print(f"{'target':<38} {'req/s c=32':>11} {'CPU us/req':>11} {'(kernel)':>9} "
              f"{'req/s /aio':>11} {'CPU /aio':>9}")
        for name, r in streamed.items():
            is_base = name == UPSTREAM_ALONE
            ratio_rps = "" if is_base else f"{r['rps'] / stream_floor['rps']:.2f}x"
            ratio_cpu = "" if is_base else f"{r['cpu'] / stream_floor['cpu']:.2f}x"
            print(f"{name:<38} {r['rps']:11.0f} {r['cpu']:11.0f} {r['sys']:9.0f} "
                  f"{ratio_rps:>11} {ratio_cpu:>9}")
    guard = results[ENFORCE]
    added_guard = guard["p50"] - base["p50"]
    print()
    print(f"basguard added latency p50: {added_guard:.3f} ms (target <= 1 ms); "
          f"{added_guard / floor_added:.2f}x the aiohttp passthrough's")
    print(f"basguard / aiohttp passthrough, CPU per request: {guard['cpu'] / floor['cpu']:.2f}x "
          f"(target <= {CPU_RATIO_TARGET}x); throughput at c=32: "
          f"{guard['rps'] / floor['rps']:.2f}x (target >= {THROUGHPUT_RATIO_TARGET}x)")
    if streamed:
        guard, floor = streamed[ENFORCE], streamed[AIOHTTP]
        print(f"streamed, the same: CPU per request {guard['cpu'] / floor['cpu']:.2f}x; "
              f"throughput at c=32 {guard['rps'] / floor['rps']:.2f}x")
    if STARLETTE in results:
        bare = results[STARLETTE]
        print(f"basguard / Starlette+httpx passthrough added latency p50: "
              f"{added_guard / (bare['p50'] - base['p50']):.2f}x")
    if LITELLM in results:
        ratio = results[ENFORCE]["rps"] / results[LITELLM]["rps"]
        print(f"basguard / LiteLLM proxy throughput at c=32: {ratio:.1f}x (target >= 10x)")
    if ANNOTATE in results:
        ttfb = results[ANNOTATE]["ttfb"] - base["ttfb"]
        print(f"streaming time-to-first-byte overhead (annotate): {ttfb:.3f} ms")


if __name__ == "__main__":
    main()
