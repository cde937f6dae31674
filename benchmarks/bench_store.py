"""What recording a decision costs the request path, and how fast the store writes.

Measured in one run:

- the request path: ``DecisionStore.decided`` (a deque append) per decision, against the baseline
  of writing the same row synchronously (an INSERT and a COMMIT per decision, WAL mode, the same
  pragmas), which is what storing on the request path would cost;
- the writer: decisions per second from the first append until ``close()`` has written them all.

    python3 benchmarks/bench_store.py [--decisions 100000]
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path

from proxy.decision import ChoiceOutcome
from proxy.runtime import UNCALIBRATED, TenantRuntime
from proxy.serving import DecisionRecord
from proxy.store import DecisionStore, _insert, _rows

TENANT = TenantRuntime(
    name="bench", mode="enforce", threshold=0.633, wrong_answer_cost=2.0, abstain_cost=0.1,
    abstention_message="no", abstain_action="message", on_missing_confidence="abstain",
    default_calibrator=UNCALIBRATED,
)
FEATURES = {"mean_logprob": -0.21, "token_prob": 0.81, "sum_logprob": -1.7, "min_token_prob": 0.3,
            "first_token_prob": 0.9, "token_count": 8.0, "mean_topk_entropy": 0.4,
            "mean_topk_margin": 2.1}


def records(n: int) -> list[DecisionRecord]:
    made = []
    for i in range(n):
        p = (i % 100) / 100
        outcome = ChoiceOutcome(0, p >= TENANT.threshold, p, None, FEATURES)
        abstained = {} if outcome.answer else {0: "The capital of Australia is Sydney."}
        made.append(DecisionRecord(f"bg-{i:024x}", TENANT, "gpt-4o-mini", [outcome], "platt",
                                   "0123456789ab", abstained,
                                   "What is the capital of Australia?" if abstained else None))
    return made


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--decisions", type=int, default=100_000)
    args = parser.parse_args()
    batch = records(args.decisions)
    with tempfile.TemporaryDirectory() as tmp:
        store = DecisionStore(Path(tmp) / "queued.sqlite3", retention_seconds=None,
                              max_queued=args.decisions + 1)
        started = time.perf_counter()
        for record in batch:
            store.decided(record)
        enqueued = time.perf_counter() - started
        store.close()
        written = time.perf_counter() - started

        synchronous_n = min(args.decisions, 5_000)  # a commit each: slow, so fewer
        db = sqlite3.connect(Path(tmp) / "sync.sqlite3", isolation_level=None)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        schema_source = DecisionStore(Path(tmp) / "sync.sqlite3", retention_seconds=None)
        schema_source.close()
        started = time.perf_counter()
        for record in batch[:synchronous_n]:
            db.execute("BEGIN IMMEDIATE")
            _insert(db, list(_rows(record)))
            db.execute("COMMIT")
        synchronous = (time.perf_counter() - started) / synchronous_n
        db.close()

    per_decision = enqueued / args.decisions
    print(f"decisions: {args.decisions}")
    print(f"request path, queued (DecisionStore.decided): {per_decision * 1e6:8.2f} µs/decision")
    print(f"request path, synchronous INSERT + COMMIT:    {synchronous * 1e6:8.2f} µs/decision")
    print(f"queued / synchronous:                         {per_decision / synchronous:8.3f}x")
    print(f"writer throughput (batched transactions):     "
          f"{args.decisions / written:8.0f} decisions/s")


if __name__ == "__main__":
    main()
