"""Does one large upstream reply hold up everyone else's requests?

One client asks for a non-streamed reply of several MiB, dense with logprobs (the worst case:
tens of thousands of small JSON objects); meanwhile another client sends small requests one
after another. Reported: the large request's duration, and the small requests' latency while it
ran (median, p99, worst). Measured in one run against three basguard servers, one worker each:

- process offload (as shipped): replies over ``offload_reply_bytes`` are parsed, judged and
  encoded in the worker's offload process (``proxy.judging.offload``);
- thread offload (``offload_processes: 0``, the previous release): parsed and encoded on the
  event loop, judged (features, decisions, logprob trimming) in a worker thread;
- all on the event loop: the thread offload disabled too.

orjson holds the GIL while it parses or encodes, so a thread frees the loop only while judging;
the process frees it for all three steps. Also reported: the resident memory of each server
worker and of its offload process. With ``--api responses`` the large reply is a Responses API
one (``POST /v1/responses``, the small requests stay chat's); there "thread offload" is also what
the Responses API did before its large replies went to the process.

Run: python benchmarks/bench_large_reply.py [--tokens N ...] [--rounds N] [--api responses]
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gateway import BODY, KEY, UPSTREAM, server, write_basguard_config

from proxy.tools.local_model import free_port

SERVE = """
import sys
import proxy.services.guarded
proxy.services.guarded.OFFLOAD_BYTES = {thread_bytes}
from proxy.cli.main import main
if __name__ == "__main__":  # the offload's spawned process imports this script too
    sys.exit(main(["serve", "--config", {config!r}, "--port", "{port}"]))
"""

NEVER = "1 << 60"
SERVERS = {
    # name: (OFFLOAD_BYTES for the thread, BASGUARD_OFFLOAD_PROCESSES)
    "process offload (shipped)": ("1_048_576", "1"),
    "thread offload (before)": ("1_048_576", "0"),
    "all on the event loop": (NEVER, "0"),
}


ENDPOINTS = {"chat": "/v1/chat/completions", "responses": "/v1/responses"}


def large_body(tokens: int, api: str = "chat") -> dict[str, object]:
    # The fake repeats the two tokens and their logprobs: a short request, a long reply.
    directive = {"fake": {"content": "abcd", "logprobs": [-0.1, -0.2], "repeat": tokens // 2}}
    if api == "responses":
        return {"model": "large", "max_output_tokens": tokens, "input": json.dumps(directive),
                "include": ["message.output_text.logprobs"], "top_logprobs": 5}
    return {**BODY, "model": "large", "max_tokens": tokens, "messages": [
        {"role": "user", "content": json.dumps(directive)}]}


@dataclass
class Measured:
    large_seconds: list[float]
    small_ms: list[float]
    quiet_ms: list[float]
    """Small requests with no large one running: this machine's noise floor."""
    worker_rss_mib: float
    offload_rss_mib: list[float]


def _large(url: str, headers: dict[str, str], tokens: int, api: str,
           outcome: dict[str, object], done: threading.Event) -> None:
    # http.client reads the body in C, without the GIL: a pure-Python client reading several
    # MiB would hold up this process's small-request loop and be counted as the gateway's.
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=300)
    started = time.perf_counter()
    try:
        connection.request("POST", ENDPOINTS[api], json.dumps(large_body(tokens, api)),
                           {**headers, "content-type": "application/json"})
        response = connection.getresponse()
        response.read()
        outcome["status"] = response.status
    finally:
        connection.close()
        outcome["seconds"] = time.perf_counter() - started
        done.set()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def measure(url: str, pid: int, tokens: int, rounds: int, api: str) -> Measured:
    """Large-request seconds, and small-request latencies (ms) while one ran."""
    headers = {"authorization": f"Bearer {KEY}"}
    durations: list[float] = []
    latencies: list[float] = []
    with httpx.Client(base_url=url, headers=headers, timeout=300) as small:
        # Warm up: the offload process starts with the first large reply.
        httpx.post(f"{url}{ENDPOINTS[api]}", json=large_body(tokens, api), headers=headers,
                   timeout=300).raise_for_status()
        quiet: list[float] = []
        for _ in range(500):
            started = time.perf_counter()
            small.post("/v1/chat/completions", json=BODY).raise_for_status()
            quiet.append((time.perf_counter() - started) * 1000)
        for _ in range(rounds):
            done = threading.Event()
            outcome: dict[str, object] = {}
            thread = threading.Thread(target=_large,
                                      args=(url, headers, tokens, api, outcome, done))
            thread.start()
            while not done.is_set():
                started = time.perf_counter()
                small.post("/v1/chat/completions", json=BODY).raise_for_status()
                latencies.append((time.perf_counter() - started) * 1000)
            thread.join()
            if outcome.get("status") != 200:
                raise RuntimeError(f"the large request failed with {outcome.get('status')}")
            durations.append(float(outcome["seconds"]))  # type: ignore[arg-type]
    return Measured(durations, latencies, quiet, rss_mib(pid),
                    [rss_mib(c) for c in children(pid)])


def p99(values: list[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def sizes(upstream: str, config: Path, token_counts: list[int]) -> None:
    """Per reply size: how long the worker's event loop stops for a reply handled in the
    worker (parse, judge, encode), against the offload's round trip and the loop's longest
    pause meanwhile. Where the first passes the second is where offloading starts to pay."""
    import asyncio

    from proxy.judging.offload import ReplyOffload
    from proxy.judging.replies import ReplyJudging
    from proxy.runtime.state import build_runtime
    from proxy.signals.base import SignalRequest
    from proxy.wire.chat import ChatFormat

    tenant = build_runtime(config).authenticate(f"Bearer {KEY}")
    plan = tenant.signal_plan_for("large")

    def judging_of(body: dict[str, object]) -> ReplyJudging:
        return ReplyJudging(
            ChatFormat, "large", plan, SignalRequest("large", ChatFormat, body, plan.wanted),
            tenant.calibrator_for("large"), tenant.terms_for("large"), tenant.on_missing_confidence,
            tenant.mode == "enforce", tenant.abstention_message, *ChatFormat.requested_logprobs(
                body), None)

    def in_worker(raw: bytes, judging: ReplyJudging) -> float:
        started = time.perf_counter()
        document = orjson.loads(raw)
        judging.judge(ChatFormat.check_reply(document, "large"))
        orjson.dumps(document)
        return (time.perf_counter() - started) * 1000

    async def offloaded(offload: ReplyOffload, raw: bytes,
                        judging: ReplyJudging) -> tuple[float, float]:
        longest = 0.0
        done = False

        async def ticker() -> None:
            nonlocal longest
            while not done:
                before = time.perf_counter()
                await asyncio.sleep(0.001)
                longest = max(longest, time.perf_counter() - before - 0.001)

        ticking = asyncio.ensure_future(ticker())
        await asyncio.sleep(0.01)
        started = time.perf_counter()
        await offload.judge(raw, judging)
        elapsed = time.perf_counter() - started
        done = True
        await ticking
        return elapsed * 1000, longest * 1000

    async def run() -> list[tuple[int, float, float, float]]:
        offload = ReplyOffload(processes=1, min_bytes=0)
        rows = []
        try:
            for tokens in token_counts:
                body = large_body(tokens)
                raw = httpx.post(f"{upstream}/v1/chat/completions", json=body, timeout=300).content
                judging = judging_of(body)
                await offload.judge(raw, judging)  # starts the pool, warms it up
                here = min(in_worker(raw, judging) for _ in range(5))
                there = [await offloaded(offload, raw, judging) for _ in range(5)]
                rows.append((len(raw), here, min(t for t, _ in there),
                             statistics.median(p for _, p in there)))
        finally:
            await offload.aclose()
        return rows

    print(f"\n{'reply KiB':>10} {'in worker: loop stops ms':>25} {'offload: round trip ms':>23} "
          f"{'longest loop pause ms':>22}")
    for size, here, there, pause in asyncio.run(run()):
        print(f"{size / 1024:>10.0f} {here:>25.1f} {there:>23.1f} {pause:>22.1f}")
    print()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, nargs="+", default=[40_000],
                        help="tokens of the large reply (several: one table each)")
    parser.add_argument("--rounds", type=int, default=3, help="large requests per server")
    parser.add_argument("--offload-reply-bytes", type=int, default=None,
                        help="the process offload's threshold (default: the shipped one)")
    parser.add_argument("--api", choices=sorted(ENDPOINTS), default="chat",
                        help="the large reply's API (the small requests are chat's)")
    parser.add_argument("--sizes", type=int, nargs="*", default=None, metavar="TOKENS",
                        help="instead: time one reply of each size in the worker and offloaded "
                        "(e.g. --sizes 50 200 1000 4000), to choose offload_reply_bytes")
    args = parser.parse_args()
    python = sys.executable
    # Two fake upstreams: the one building the large reply stalls its own event loop for a
    # while, which must not be counted against the gateway's small requests.
    with tempfile.TemporaryDirectory() as tmp, server(
        [python, "-c", UPSTREAM.format(port=(up_port := free_port()))], up_port
    ) as upstream, server(
        [python, "-c", UPSTREAM.format(port=(large_port := free_port()))], large_port
    ) as large_upstream:
        path = write_basguard_config(Path(tmp), upstream.url, "enforce")
        config = json.loads(path.read_text())
        config["models"]["large"] = {"base_url": f"{large_upstream.url}/v1",
                                     "max_response_bytes": 256 * 1_048_576,
                                     "timeout_seconds": 300}
        path.write_text(json.dumps(config))
        if args.sizes is not None:
            sizes(large_upstream.url, path, args.sizes or [50, 200, 1000, 4000, 16000])
            return
        for tokens in args.tokens:
            # What the upstream sends basguard for the large request (the fake ignores the model).
            reply_bytes = len(httpx.post(f"{large_upstream.url}{ENDPOINTS[args.api]}",
                                         json=large_body(tokens, args.api), timeout=300).content)
            rows: dict[str, Measured] = {}
            for name, (thread_bytes, processes) in SERVERS.items():
                print(f"{tokens} tokens: measuring {name} ...", flush=True)
                port = free_port()
                script = SERVE.format(thread_bytes=thread_bytes, config=str(path), port=port)
                env = {"BASGUARD_RELOAD_INTERVAL_SECONDS": "0",
                       "BASGUARD_OFFLOAD_PROCESSES": processes,
                       "BASGUARD_STORE": str(Path(tmp) / f"{port}.sqlite3")}
                if args.offload_reply_bytes is not None:
                    env["BASGUARD_OFFLOAD_REPLY_BYTES"] = str(args.offload_reply_bytes)
                with server([python, "-c", script], port, env) as served:
                    rows[name] = measure(served.url, served.pid, tokens, args.rounds, args.api)
            report(tokens, reply_bytes, args.rounds, rows, args.api)


def report(tokens: int, reply_bytes: int, rounds: int, rows: dict[str, Measured],
           api: str = "chat") -> None:
    print(f"\nlarge reply ({ENDPOINTS[api]}): {tokens} tokens with logprobs, "
          f"{reply_bytes / 1_048_576:.2f} MiB from the upstream; {rounds} rounds per server\n")
    print(f"{'server':<28} {'large s':>8} {'small n':>8} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'max ms':>7} {'>100ms':>7} {'quiet p99/max':>14} {'worker MiB':>11} "
          f"{'offload MiB':>12}")
    for name, m in rows.items():
        offload = ", ".join(f"{r:.0f}" for r in m.offload_rss_mib) or "-"
        slow = sum(1 for ms in m.small_ms if ms > 100)
        quiet = f"{p99(m.quiet_ms):.0f}/{max(m.quiet_ms):.0f}"
        print(f"{name:<28} {statistics.median(m.large_seconds):>8.2f} {len(m.small_ms):>8} "
              f"{statistics.median(m.small_ms):>7.1f} {p99(m.small_ms):>7.1f} "
              f"{max(m.small_ms):>7.1f} {slow:>7} {quiet:>14} {m.worker_rss_mib:>11.0f} "
              f"{offload:>12}")
    shipped, thread, loop = rows.values()
    print(f"\nworst small-request latency, process / thread: "
          f"{max(shipped.small_ms) / max(thread.small_ms):.2f}; process / all on the loop: "
          f"{max(shipped.small_ms) / max(loop.small_ms):.2f}")
    print(f"p99 small-request latency, process / thread: "
          f"{p99(shipped.small_ms) / p99(thread.small_ms):.2f}; process / all on the loop: "
          f"{p99(shipped.small_ms) / p99(loop.small_ms):.2f}")
    ratio = statistics.median(shipped.large_seconds) / statistics.median(thread.large_seconds)
    print(f"large request, process / thread: {ratio:.2f}\n")


if __name__ == "__main__":
    main()
