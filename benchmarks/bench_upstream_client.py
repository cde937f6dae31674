"""CPU per upstream request: aiohttp's client against basguard's HTTP/1.1 client, in one run.

The upstream is the tests' wire-format fake (uvicorn, another process). The client process
sends the gateway benchmark's request (logprobs with 5 alternatives; a reply of about 1.2 KB)
one at a time and 32 at a time, with each client's settings as basguard used them: aiohttp with
one pooled session, a per-request timeout and the body read piece by piece under a size cap
(basguard before ``proxy/upstream/http1.py``), and :class:`proxy.upstream.http1.ConnectionPool`.
Rounds alternate between the clients; medians are shown. CPU is the client process's
(``time.process_time``), so the upstream's work is not counted.

    python benchmarks/bench_upstream_client.py [--requests 4000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import aiohttp
import orjson
import uvloop
from provenance import REPOSITORY, provenance

sys.path.insert(0, str(REPOSITORY))  # the tests' fake upstream and wait helper

from proxy.tools.local_model import free_port
from proxy.upstream.http1 import ConnectionPool, request_head
from tests.support.waiting import wait_until

BODY = {"model": "fake", "messages": [{"role": "user", "content": "What is the answer?"}],
        "max_tokens": 16, "logprobs": True, "top_logprobs": 5}
UPSTREAM = """
import uvicorn
from tests.support.fake_upstream import FakeUpstream
uvicorn.run(FakeUpstream(record=False).app(), host="127.0.0.1", port={port}, log_level="error")
"""
CAP = 8 * 1_048_576
Send = Callable[[], Awaitable[bytes]]


def aiohttp_client(session: aiohttp.ClientSession, url: str) -> Send:
    headers = {"content-type": "application/json", "authorization": "Bearer sk-bench"}

    async def send() -> bytes:
        async with session.post(url, data=orjson.dumps(BODY), headers=headers,
                                timeout=aiohttp.ClientTimeout(total=60, connect=5)) as response:
            pieces, size = [], 0
            async for piece in response.content.iter_chunked(65_536):
                size += len(piece)
                if size > CAP:
                    raise RuntimeError("too large")
                pieces.append(piece)
            return b"".join(pieces)
    return send


def http1_client(pool: ConnectionPool, url: str) -> Send:
    origin, head = request_head(url, {"authorization": "Bearer sk-bench"})

    async def send() -> bytes:
        response = await pool.send(origin, head, orjson.dumps(BODY), connect_timeout=5,
                                   deadline=pool.loop.time() + 60)
        try:
            return await response.read(CAP)
        finally:
            response.finish()
    return send


async def cpu_per_request(send: Send, requests: int, concurrency: int) -> float:
    """µs of this process's CPU per request, ``concurrency`` requests in flight."""
    async def worker(count: int) -> None:
        for _ in range(count):
            await send()

    await asyncio.gather(*(worker(100 // concurrency + 1) for _ in range(concurrency)))  # warm
    started = time.process_time()
    await asyncio.gather(*(worker(requests // concurrency) for _ in range(concurrency)))
    return (time.process_time() - started) / (requests // concurrency * concurrency) * 1e6


async def measure(url: str, requests: int, rounds: int) -> dict[tuple[str, int], list[float]]:
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=512, keepalive_timeout=30),
        skip_auto_headers=("User-Agent",))
    pool = ConnectionPool(limit=512, keepalive_seconds=30)
    clients = {"aiohttp": aiohttp_client(session, url), "basguard http1": http1_client(pool, url)}
    figures: dict[tuple[str, int], list[float]] = {}
    try:
        for _ in range(rounds):
            for concurrency in (1, 32):
                for name, send in clients.items():
                    figures.setdefault((name, concurrency), []).append(
                        await cpu_per_request(send, requests, concurrency))
    finally:
        await session.close()
        await pool.aclose()
    return figures


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    port = free_port()
    upstream = subprocess.Popen([sys.executable, "-c", UPSTREAM.format(port=port)],
                                cwd=REPOSITORY)
    try:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        wait_until(lambda: _answers(url), timeout=30, what="the fake upstream to start")
        figures = uvloop.run(measure(url, args.requests, args.rounds))
    finally:
        upstream.terminate()
        upstream.wait()
    print(provenance())
    print(f"{args.requests} requests a round, {args.rounds} rounds; median CPU of the client "
          "process, µs per request")
    print(f"{'client':<16}{'c=1':>8}{'c=32':>8}")
    for name in ("aiohttp", "basguard http1"):
        row = [statistics.median(figures[(name, c)]) for c in (1, 32)]
        print(f"{name:<16}{row[0]:8.1f}{row[1]:8.1f}")
    for concurrency in (1, 32):
        ratio = (statistics.median(figures[("basguard http1", concurrency)])
                 / statistics.median(figures[("aiohttp", concurrency)]))
        print(f"basguard http1 / aiohttp at c={concurrency}: {ratio:.2f}x")


def _answers(url: str) -> bool:
    import urllib.request
    try:
        with urllib.request.urlopen(urllib.request.Request(
                url, data=orjson.dumps(BODY), headers={"content-type": "application/json"}),
                timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


if __name__ == "__main__":
    main(sys.argv[1:])
