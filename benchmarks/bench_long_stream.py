"""CPU per long streamed answer: basguard (enforce, buffered) here and in another checkout.

``bench_gateway.py`` streams short answers (a few events each), where what a stream costs per
event hardly shows. This streams 200-token answers (the fake upstream's ``pad_tokens``, every
token confident, so the answer is replayed whole after its decision: about 200 events) one at
a time through basguard from this checkout and from ``--variant`` (a checkout to compare with,
such as the commit before a change), alternating over ``--rounds``, and prints the CPU each
server process spent per stream (from ``/proc``: user and kernel), with the medians.

    python benchmarks/bench_long_stream.py --variant /path/to/other/checkout [--streams 200]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import httpx
from bench_gateway import KEY, UPSTREAM, basguard, server, write_basguard_config
from provenance import REPOSITORY, provenance

from proxy.tools.local_model import free_port

BODY = {
    "model": "fake", "stream": True, "max_tokens": 300, "logprobs": True, "top_logprobs": 5,
    "messages": [{"role": "user", "content": json.dumps({"fake": {
        "content": "Paris", "logprobs": [-0.01], "pad_tokens": 200, "pad_logprob": -0.0001}})}],
}


def process_cpu(pid: int) -> float:
    """Seconds of CPU (user and kernel) process ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_per_stream(url: str, pid: int, streams: int) -> tuple[float, int]:
    """µs of the server's CPU per stream, and the events of the last one."""
    with httpx.Client(headers={"authorization": f"Bearer {KEY}"}, timeout=30) as client:
        for _ in range(20):  # warm up
            client.post(f"{url}/v1/chat/completions", json=BODY).read()
        started = process_cpu(pid)
        for _ in range(streams):
            response = client.post(f"{url}/v1/chat/completions", json=BODY)
            if response.status_code != 200 or b"[DONE]" not in response.content:
                raise RuntimeError(f"a stream failed: {response.content[:300]!r}")
        return (process_cpu(pid) - started) / streams * 1e6, response.content.count(b"data: ")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", type=Path, required=True)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    figures: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as running:
        up_port = free_port()
        upstream = running.enter_context(
            server([sys.executable, "-c", UPSTREAM.format(port=up_port)], up_port))
        config = write_basguard_config(Path(tmp), upstream.url, "enforce")
        served = {}
        for name, checkout in (("this checkout", REPOSITORY), ("variant", args.variant)):
            target = basguard(checkout, config, Path(tmp) / f"{len(served)}.sqlite3")
            served[name] = running.enter_context(server(
                target.command, target.port, target.env, target.ready_path, target.cwd))
        for _ in range(args.rounds):
            for name, gateway in served.items():
                micros, events = cpu_per_stream(gateway.url, gateway.pid, args.streams)
                figures.setdefault(name, []).append(micros)
    print(provenance())
    print(f"variant: {args.variant}; {args.streams} streams of {events} events a round, "
          f"{args.rounds} rounds; CPU of the server per stream, µs")
    for name, runs in figures.items():
        print(f"{name:<16} median {statistics.median(runs):7.0f}   runs "
              + " ".join(f"{run:.0f}" for run in runs))
    ratio = statistics.median(figures["this checkout"]) / statistics.median(figures["variant"])
    print(f"this checkout / variant: {ratio:.2f}x")


if __name__ == "__main__":
    main(sys.argv[1:])
