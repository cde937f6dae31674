"""Does one large upstream reply hold up everyone else's requests?

One client asks for a reply of several MiB, dense with logprobs (the worst case: tens of
thousands of small JSON objects); meanwhile another client sends small requests one after
another. Reported: the large request's duration, and the small requests' latency while it ran
(median and worst). Measured in one run against two basguard servers, one worker each:

- as shipped: replies over ``proxy.serving.OFFLOAD_BYTES`` are judged (confidence features,
  decisions, logprob trimming) in a worker thread;
- the baseline: the same server with the offload disabled, everything on the event loop.

orjson holds the GIL while it parses or serialises, so those two steps still pause the loop
in both (bounded by the model's ``max_response_bytes``); the difference is the judging.

Run: python benchmarks/bench_large_reply.py [--tokens N] [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gateway import BODY, KEY, UPSTREAM, server, write_basguard_config

from proxy.local_model import free_port

SERVE = """
import sys
import proxy.serving
proxy.serving.OFFLOAD_BYTES = {offload}
from proxy.cli import main
sys.exit(main(["serve", "--config", {config!r}, "--port", "{port}"]))
"""


def large_body(tokens: int) -> dict[str, object]:
    directive = {"fake": {"content": "ab" * tokens, "logprobs": [-0.1] * tokens}}
    return {**BODY, "max_tokens": tokens, "messages": [
        {"role": "user", "content": json.dumps(directive)}]}


def _large(url: str, headers: dict[str, str], tokens: int, outcome: dict[str, object],
           done: threading.Event) -> None:
    started = time.perf_counter()
    response = httpx.post(f"{url}/v1/chat/completions", json=large_body(tokens),
                          headers=headers, timeout=300)
    outcome["seconds"] = time.perf_counter() - started
    outcome["status"] = response.status_code
    done.set()


def measure(url: str, tokens: int, rounds: int) -> tuple[float, list[float]]:
    """Median large-request seconds, and small-request latencies (ms) while one ran."""
    headers = {"authorization": f"Bearer {KEY}"}
    durations: list[float] = []
    latencies: list[float] = []
    with httpx.Client(base_url=url, headers=headers, timeout=300) as small:
        for _ in range(rounds):
            done = threading.Event()
            outcome: dict[str, object] = {}
            thread = threading.Thread(target=_large, args=(url, headers, tokens, outcome, done))
            thread.start()
            while not done.is_set():
                started = time.perf_counter()
                small.post("/v1/chat/completions", json=BODY).raise_for_status()
                latencies.append((time.perf_counter() - started) * 1000)
            thread.join()
            if outcome["status"] != 200:
                raise RuntimeError(f"the large request failed with {outcome['status']}")
            durations.append(float(outcome["seconds"]))  # type: ignore[arg-type]
    return statistics.median(durations), latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=40_000, help="tokens of the large reply")
    parser.add_argument("--rounds", type=int, default=3, help="large requests per server")
    args = parser.parse_args()
    python = sys.executable
    rows = {}
    with tempfile.TemporaryDirectory() as tmp, server(
        [python, "-c", UPSTREAM.format(port=(up_port := free_port()))], up_port
    ) as upstream:
        # What the upstream sends basguard for the large request (the fake ignores the model).
        reply_bytes = len(httpx.post(f"{upstream}/v1/chat/completions",
                                     json=large_body(args.tokens), timeout=300).content)
        path = write_basguard_config(Path(tmp), upstream, "enforce")
        config = json.loads(path.read_text())
        config["models"]["fake"]["max_response_bytes"] = 256 * 1_048_576
        path.write_text(json.dumps(config))
        for name, offload in (("offloaded (as shipped)", "1_048_576"),
                              ("on the event loop (baseline)", "1 << 60")):
            print(f"measuring {name} ...", flush=True)
            port = free_port()
            command = [python, "-c", SERVE.format(offload=offload, config=str(path), port=port)]
            with server(command, port, {"BASGUARD_RELOAD_INTERVAL_SECONDS": "0",
                                        "BASGUARD_STORE": str(Path(tmp) / f"{port}.sqlite3")}
                        ) as url:
                rows[name] = measure(url, args.tokens, args.rounds)
    print(f"\nlarge reply: {args.tokens} tokens with logprobs, {reply_bytes / 1_048_576:.1f} MiB "
          f"from the upstream; {args.rounds} rounds per server\n")
    print(f"{'server':<30} {'large (s)':>10} {'small n':>8} {'small p50 ms':>13} "
          f"{'small max ms':>13}")
    for name, (seconds, latencies) in rows.items():
        print(f"{name:<30} {seconds:>10.2f} {len(latencies):>8} "
              f"{statistics.median(latencies):>13.1f} {max(latencies):>13.1f}")
    (_, shipped), (_, baseline) = rows.values()
    print(f"\nworst small-request latency, shipped / baseline: "
          f"{max(shipped) / max(baseline):.2f}")


if __name__ == "__main__":
    main()
