"""What relaying the Realtime API's WebSocket through basguard costs.

In one run, against the fake upstream's ``/v1/realtime`` (it echoes binary messages), each
server in its own process:

- **direct**: the client talks to the upstream itself (the baseline);
- **basguard**: through ``basguard serve`` (one worker), which relays every message both ways.

Prints, for messages of 1 KiB and 6.4 KiB (100 ms of 24 kHz 16-bit audio in base64, what a
Realtime client streams) and 64 KiB:

- the round-trip time of one message at a time on one session, p50 and p99, and what basguard
  adds;
- messages per second with ``--sessions`` sessions sending at once (each waits for its echo),
  and basguard's CPU time per relayed message (each round trip is two relays);
- basguard's resident memory with ``--idle`` idle sessions open against none: the cost of a
  session.

Run: python benchmarks/bench_realtime.py [--messages N] [--sessions N] [--idle N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from websockets.asyncio.client import ClientConnection, connect

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gateway import (
    KEY,
    cpu_seconds,
    server,
    write_basguard_config,
)
from bench_large_reply import rss_mib

from proxy.tools.local_model import free_port

UPSTREAM = """
import uvicorn
from tests.support.fake_upstream import FakeUpstream
uvicorn.run(FakeUpstream(record=False).app(), host="127.0.0.1", port={port}, log_level="error",
            ws="websockets-sansio", ws_max_size=64 * 1024 * 1024)
"""
SIZES = {"1 KiB": 1024, "6.4 KiB (100 ms audio)": 6554, "64 KiB": 65536}


def ws_url(http_url: str) -> str:
    return http_url.replace("http://", "ws://") + "/v1/realtime?model=fake"


async def open_session(url: str) -> ClientConnection:
    socket = await connect(url, additional_headers={"authorization": f"Bearer {KEY}"},
                           max_size=None, compression=None, open_timeout=60)
    created = json.loads(await socket.recv())
    assert created["type"] == "session.created", created
    return socket


async def round_trips(url: str, size: int, count: int) -> list[float]:
    """Seconds per echo of one ``size``-byte message, one at a time on one session."""
    payload = b"a" * size
    socket = await open_session(url)
    try:
        for _ in range(20):  # warm-up
            await socket.send(payload)
            await socket.recv()
        times = []
        for _ in range(count):
            started = time.perf_counter()
            await socket.send(payload)
            await socket.recv()
            times.append(time.perf_counter() - started)
        return times
    finally:
        await socket.close()


async def throughput(url: str, size: int, count: int, sessions: int,
                     pid: int | None) -> tuple[float, float]:
    """Round trips per second over ``sessions`` sessions at once, and the CPU seconds process
    ``pid`` spent per relayed message (two per round trip)."""
    payload = b"a" * size
    sockets = [await open_session(url) for _ in range(sessions)]

    async def run(socket: ClientConnection) -> None:
        for _ in range(count):
            await socket.send(payload)
            await socket.recv()

    try:
        cpu_before = cpu_seconds(pid) if pid else 0.0
        started = time.perf_counter()
        await asyncio.gather(*(run(socket) for socket in sockets))
        elapsed = time.perf_counter() - started
        cpu = (cpu_seconds(pid) - cpu_before) if pid else float("nan")
    finally:
        await asyncio.gather(*(socket.close() for socket in sockets))
    total = count * sessions
    return total / elapsed, cpu / (2 * total)


async def idle_memory(url: str, pid: int, sessions: int) -> tuple[float, float]:
    """basguard's RSS (MiB) before and with ``sessions`` idle sessions open."""
    before = rss_mib(pid)
    sockets = [await open_session(url) for _ in range(sessions)]
    try:
        await asyncio.sleep(1)
        return before, rss_mib(pid)
    finally:
        await asyncio.gather(*(socket.close() for socket in sockets))


def p99(values: list[float]) -> float:
    return sorted(values)[max(0, round(0.99 * len(values)) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=2000,
                        help="round trips per size for the latency rows")
    parser.add_argument("--sessions", type=int, default=16,
                        help="sessions sending at once for the throughput rows")
    parser.add_argument("--idle", type=int, default=200, help="idle sessions for the memory row")
    args = parser.parse_args()
    python = sys.executable
    with tempfile.TemporaryDirectory() as tmp, server(
        [python, "-c", UPSTREAM.format(port=(up_port := free_port()))], up_port
    ) as upstream:
        config = write_basguard_config(Path(tmp), upstream.url, "enforce")
        document = json.loads(config.read_text())
        document["tenants"]["bench"]["default_model"] = "fake"
        config.write_text(json.dumps(document))
        port = free_port()
        with server([python, "-m", "proxy.cli", "serve", "--config", str(config),
                     "--port", str(port)], port,
                    {"BASGUARD_RELOAD_INTERVAL_SECONDS": "0",
                     "BASGUARD_STORE": str(Path(tmp) / "d.sqlite3"),
                     "BASGUARD_WEBSOCKET_MAX_MESSAGE_BYTES": str(64 * 1024 * 1024)},
                    ready_path="/healthz") as gateway:
            asyncio.run(report(ws_url(upstream.url), ws_url(gateway.url), gateway.pid, args))


async def report(direct: str, relayed: str, pid: int, args: argparse.Namespace) -> None:
    print(f"one session, one message at a time, {args.messages} round trips per size; "
          f"{args.sessions} sessions at once for round trips/s")
    print("| message | direct p50 / p99 (ms) | through basguard p50 / p99 (ms) | added p50 "
          "| direct round trips/s | basguard round trips/s | ratio "
          "| basguard CPU per relayed message (µs) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, size in SIZES.items():
        straight = await round_trips(direct, size, args.messages)
        through = await round_trips(relayed, size, args.messages)
        rate_direct, _ = await throughput(direct, size, args.messages // 4, args.sessions, None)
        rate_relayed, cpu = await throughput(relayed, size, args.messages // 4, args.sessions,
                                             pid)
        d50, r50 = statistics.median(straight) * 1e3, statistics.median(through) * 1e3
        print(f"| {name} | {d50:.3f} / {p99(straight) * 1e3:.3f} | {r50:.3f} / "
              f"{p99(through) * 1e3:.3f} | +{r50 - d50:.3f} ms | {rate_direct:,.0f} | "
              f"{rate_relayed:,.0f} | {rate_relayed / rate_direct:.2f}x | {cpu * 1e6:.0f} |")
    before, during = await idle_memory(relayed, pid, args.idle)
    print(f"\nbasguard RSS: {before:.1f} MiB with no session, {during:.1f} MiB with {args.idle} "
          f"idle sessions: {(during - before) * 1024 / args.idle:.1f} KiB per session")


if __name__ == "__main__":
    main()
