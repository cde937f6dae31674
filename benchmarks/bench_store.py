"""What recording a decision costs the request path, with and without the crash journal.

Measured in one run, per decision, on ``DecisionStore.decided``:

- the queue alone (``store_journal: false``): build the rows (texts cut to the limits, features
  as JSON), count their bytes, append them under a lock;
- the queue and the crash journal (the default): the same plus ``orjson.dumps`` of the rows and
  one ``os.write`` to the journal segment;
- the former request path, a bare ``deque.append`` of the record (rows were built on the writer
  thread), as a floor;
- the baseline of writing the same row synchronously (an INSERT and a COMMIT per decision, WAL
  mode, the same pragmas), which is what storing on the request path would cost.

Request-path figures are CPU time of the calling thread (``time.thread_time``): on a shared
machine, wall time would mostly measure waiting for a core or for the GIL. And the writer:
decisions per second from the first append until ``close()`` has written them all (with the
journal: rotating and deleting its segments as it commits).

    python3 benchmarks/bench_store.py [--decisions 100000] [--dir DIR]

``--dir`` puts the store and journal on a given filesystem (default: a temporary directory).
"""

from __future__ import annotations

import argparse
import collections
import sqlite3
import tempfile
import time
from pathlib import Path

from proxy.decision import ChoiceOutcome
from proxy.decision_rows import decision_rows
from proxy.journal import journal_dir
from proxy.runtime import UNCALIBRATED, TenantRuntime
from proxy.serving import DecisionRecord
from proxy.store import DEFAULT_TEXT_LIMITS, DecisionStore, _insert

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


def enqueue(path: Path, batch: list[DecisionRecord], *, journal: bool) -> tuple[float, float]:
    """CPU seconds per decision the request path spent, and decisions/s the writer sustained.

    The writer runs as in the gateway, in its own thread, taking turns for the GIL; so the
    request path is timed in CPU time of its own thread (``time.thread_time``), which leaves
    out the turns it waited (the writer's share, and other processes on a shared machine).
    """
    store = DecisionStore(path, retention_seconds=None, max_queued=len(batch) + 1,
                          max_queued_bytes=1 << 40,
                          journal=journal_dir(path) if journal else None)
    started, cpu_started = time.perf_counter(), time.thread_time()
    for record in batch:
        store.decided(record)
    enqueued = time.thread_time() - cpu_started
    store.close()
    written = time.perf_counter() - started
    assert store.dropped == 0 and store.write_failures == 0
    return enqueued / len(batch), len(batch) / written


def bare_append(batch: list[DecisionRecord]) -> float:
    pending: collections.deque[DecisionRecord] = collections.deque()
    started = time.thread_time()
    for record in batch:
        pending.append(record)
    return (time.thread_time() - started) / len(batch)


def synchronous(path: Path, batch: list[DecisionRecord]) -> float:
    DecisionStore(path, retention_seconds=None).close()  # the schema
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    started = time.thread_time()
    for record in batch:
        db.execute("BEGIN IMMEDIATE")
        _insert(db, decision_rows(record, DEFAULT_TEXT_LIMITS))
        db.execute("COMMIT")
    db.close()
    return (time.thread_time() - started) / len(batch)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--decisions", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    batch = records(args.decisions)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        # Alternate the two, twice, and keep each one's best: the machine is shared.
        plain_runs, journal_runs = [], []
        for run in range(2):
            plain_runs.append(enqueue(Path(tmp) / f"plain{run}.sqlite3", batch, journal=False))
            journal_runs.append(enqueue(Path(tmp) / f"journal{run}.sqlite3", batch,
                                        journal=True))
        plain, plain_rate = min(plain_runs)
        journalled, journal_rate = min(journal_runs)
        floor = min(bare_append(batch) for _ in range(3))
        sync = synchronous(Path(tmp) / "sync.sqlite3", batch[:min(args.decisions, 5_000)])

    print(f"decisions: {args.decisions}")
    print(f"request path, bare deque.append (before):       {floor * 1e6:8.2f} µs/decision")
    print(f"request path, queue only (store_journal false): {plain * 1e6:8.2f} µs/decision")
    print(f"request path, queue + crash journal (default):  {journalled * 1e6:8.2f} µs/decision")
    print(f"request path, synchronous INSERT + COMMIT:      {sync * 1e6:8.2f} µs/decision")
    print(f"journal / queue only:                           {journalled / plain:8.2f}x")
    print(f"journal / synchronous:                          {journalled / sync:8.3f}x")
    print(f"writer throughput, queue only:                  {plain_rate:8.0f} decisions/s")
    print(f"writer throughput, with journal:                {journal_rate:8.0f} decisions/s")


if __name__ == "__main__":
    main()
