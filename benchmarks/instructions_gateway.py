"""Instructions per request: what a request costs a server, whatever else the machine runs.

CPU time per request (``bench_gateway.py``) moves with the load of a shared machine: caches,
frequency and the scheduler's choices are shared. The count of instructions a server executes
per request does not. This runs each target under valgrind's callgrind (``apt-get install
valgrind``), warms it up with instrumentation off, then counts the user-space instructions of
the server process (every thread) over a fixed number of requests, plain and streamed, sent by
an asyncio client over ``--connections`` keep-alive connections.

The targets are the bare aiohttp passthrough and basguard (enforce, the demo calibrator, the
store and metrics on), as ``bench_gateway.py`` runs them, plus any ``--variant NAME=CHECKOUT``
(a candidate patch). Kernel work (socket reads and writes, the loopback TCP stack) is not
counted: ``bench_gateway.py`` reports it apart, as the kernel's share of the CPU.

Run: python benchmarks/instructions_gateway.py [--requests N] [--variant NAME=CHECKOUT ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gateway import (
    AIOHTTP,
    AIOHTTP_PASSTHROUGH,
    BODY,
    ENFORCE,
    KEY,
    REPOSITORY,
    UPSTREAM,
    Target,
    _variant,
    basguard,
    server,
    write_basguard_config,
)

from proxy.tools.local_model import free_port


async def send(url: str, *, requests: int, connections: int, stream: bool) -> int:
    """Send ``requests`` requests over ``connections`` connections; returns the failures."""
    body = json.dumps({**BODY, "stream": True} if stream else BODY).encode()
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    left = requests
    failures = 0
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one_connection() -> None:
            nonlocal left, failures
            while left > 0:
                left -= 1
                async with session.post(f"{url}/v1/chat/completions", data=body,
                                        headers=headers) as response:
                    await response.read()
                    failures += response.status != 200

        await asyncio.gather(*(one_connection() for _ in range(connections)))
    return failures


def callgrind(pid: int, *arguments: str) -> str:
    return subprocess.run(["callgrind_control", *arguments, str(pid)], capture_output=True,
                          text=True, check=True).stdout


def count(target: Target, out: Path, *, requests: int, connections: int,
          warm_up: int) -> dict[bool, float]:
    """Instructions per request of ``target``, plain (False) and streamed (True)."""
    command = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
               f"--callgrind-out-file={out}.%p", *target.command]
    per_request: dict[bool, float] = {}
    with server(command, target.port, target.env, target.ready_path, target.cwd) as served:
        url = served.url
        pid = served.pid  # valgrind runs the program in its own process
        for stream in (False, True):
            asyncio.run(send(url, requests=warm_up, connections=connections, stream=stream))
            callgrind(pid, "--instr=on")
            callgrind(pid, "--zero")
            failures = asyncio.run(send(url, requests=requests, connections=connections,
                                        stream=stream))
            if failures:
                raise RuntimeError(f"{failures} of {requests} requests failed against {url}")
            callgrind(pid, "--dump")
            callgrind(pid, "--instr=off")
            per_request[stream] = _dumped_instructions(out.parent, pid) / requests
    return per_request


def _dumped_instructions(directory: Path, pid: int) -> float:
    """The instructions in callgrind's latest dump of ``pid`` (counted since the zeroing)."""
    dumps = sorted(directory.glob(f"callgrind.out.{pid}.*"), key=lambda p: p.stat().st_mtime)
    if not dumps:
        raise RuntimeError(f"callgrind wrote no dump for {pid} in {directory}")
    text = dumps[-1].read_text(errors="replace")
    match = re.search(r"^(?:totals|summary):\s*(\d+)", text, re.M)
    if match is None:
        raise RuntimeError(f"no totals in {dumps[-1]}")
    return float(match[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000, help="requests counted")
    parser.add_argument("--warm-up", type=int, default=300, help="requests before counting")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--variant", type=_variant, action="append", default=[],
                        metavar="NAME=CHECKOUT")
    args = parser.parse_args()
    if shutil.which("callgrind_control") is None:
        sys.exit("this benchmark needs valgrind: apt-get install valgrind")
    found: dict[str, dict[bool, float]] = {}
    with tempfile.TemporaryDirectory() as tmp_name, server(
        [sys.executable, "-c", UPSTREAM.format(port=(up_port := free_port()))], up_port
    ) as upstream:
        tmp = Path(tmp_name)
        port = free_port()
        targets = {AIOHTTP: Target([sys.executable, "-c", AIOHTTP_PASSTHROUGH.format(
            port=port, upstream=upstream.url)], port)}
        config = write_basguard_config(tmp, upstream.url, "enforce")
        targets[ENFORCE] = basguard(REPOSITORY, config, tmp / "enforce.sqlite3")
        for name, checkout in args.variant:
            targets[f"basguard ({name})"] = basguard(checkout, config, tmp / f"{name}.sqlite3")
        for name, target in targets.items():
            print(f"counting {name} ...", flush=True)
            found[name] = count(target, tmp / "callgrind.out", requests=args.requests,
                                connections=args.connections, warm_up=args.warm_up)
    floor = found[AIOHTTP]
    print()
    print(f"user-space instructions per request ({args.requests} requests, "
          f"{args.connections} connections)")
    print(f"{'target':<38} {'plain':>12} {'/aio':>6} {'streamed':>12} {'/aio':>6}")
    for name, counts in found.items():
        print(f"{name:<38} {counts[False]:12,.0f} {counts[False] / floor[False]:6.2f} "
              f"{counts[True]:12,.0f} {counts[True] / floor[True]:6.2f}")


if __name__ == "__main__":
    main()
