"""CPU per guarded request on the logprobs-only path, this tree against a baseline tree.

The confidence signals are wired into serving; a tenant that runs only the logprobs signal must
cost what it did before. This times ``GuardedCompletions.complete`` in-process (an instant
upstream stub returning a 40-token reply with 5 alternatives per token, the demo calibrator),
so only basguard's own work is measured, and runs the same script under each source tree in
turn (subprocesses, alternating, ``--rounds`` times), printing each round's µs per request and
the median ratio.

Run: python benchmarks/bench_serving_path.py --baseline /path/to/main/checkout [--n 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
CONFIG = """\
version: 1
models:
  m: {base_url: "http://127.0.0.1:9/v1"}
tenants:
  t:
    api_keys: [{sha256: "%s"}]
    risk: {threshold: 0.5}
    calibrators: {default: cal.json}
"""


def _reply() -> dict[str, Any]:
    content = [{"token": f" w{i}", "logprob": -0.1 - 0.01 * i,
                "top_logprobs": [{"token": f" a{j}", "logprob": -0.1 - j} for j in range(5)]}
               for i in range(40)]
    return {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant",
                                                 "content": "".join(c["token"] for c in content)},
                         "logprobs": {"content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 40, "total_tokens": 50}}


def _measure(n: int) -> float:
    """µs per request under the tree on sys.path (run in a child process)."""
    import copy
    import shutil

    from proxy.runtime.state import build_runtime
    from proxy.services.completions import GuardedCompletions
    from proxy.upstream.target import UpstreamReply
    from proxy.wire.chat import ChatFormat

    reply = _reply()

    class Instant:
        async def complete(self, target: Any, endpoint: Any, body: Any) -> UpstreamReply:
            return UpstreamReply(copy.deepcopy(reply), 10_000)

        async def aclose(self) -> None:
            return None

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "basguard.yaml"
        path.write_text(CONFIG % ("ab" * 32))
        shutil.copy(HERE / "proxy" / "tools" / "demo_files" / "smollm2-calibrator.json",
                    Path(directory) / "cal.json")
        state = build_runtime(path, {})
    tenant = state.tenants["t"]
    service = GuardedCompletions({"openai": Instant()})  # type: ignore[dict-item]
    body = {"model": "m", "messages": [{"role": "user", "content": "What is it?"}]}

    async def run() -> float:
        for _ in range(200):  # warm-up
            await service.complete(state, tenant, ChatFormat, body)
        started = time.perf_counter()
        for _ in range(n):
            await service.complete(state, tenant, ChatFormat, body)
        return (time.perf_counter() - started) / n * 1e6

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", type=Path, required=True, help="baseline source tree")
    parser.add_argument("--n", type=int, default=3000, help="requests per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_measure(args.n)))
        return
    trees = {"baseline": args.baseline.resolve(), "this tree": HERE}
    results: dict[str, list[float]] = {name: [] for name in trees}
    for _ in range(args.rounds):
        for name, tree in trees.items():
            env = {**os.environ, "PYTHONPATH": str(tree), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
            out = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--child", "--n", str(args.n),
                 "--baseline", str(tree)], env=env, cwd=tree, check=True, capture_output=True,
                text=True).stdout
            results[name].append(json.loads(out.strip().splitlines()[-1]))
    for name, values in results.items():
        print(f"{name:<10} µs/request: " + ", ".join(f"{v:.0f}" for v in values)
              + f"  (median {statistics.median(values):.0f})")
    ratios = [t / b for t, b in zip(results["this tree"], results["baseline"], strict=True)]
    print(f"this tree / baseline, per round: {', '.join(f'{r:.2f}' for r in ratios)}; "
          f"median {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
