"""The decision store on SQLite and on PostgreSQL: the request path, the writer, the gateway.

Measured in one run:

1. Per decision, on ``DecisionStore.decided`` (CPU time of the calling thread, so that waiting
   for a core or the GIL on a shared machine is left out), for each backend: the queue alone
   (``store_journal: false``) and the queue plus the crash journal (the default); and the
   baselines of a bare ``deque.append`` and of a synchronous INSERT + COMMIT per decision on
   SQLite, which is what storing on the request path would cost.
2. The writer's throughput, per backend: decisions per second from the first append until
   ``close()`` has written them all (multi-row INSERTs, one transaction per batch).
3. Retention on PostgreSQL (``--retention ROWS``): deleting ROWS expired decisions in one
   ``DELETE`` against the store's small batches, while another connection labels expired
   decisions (the writer of another replica): the longest such label waits for the delete's
   row locks, for the whole statement in one transaction, for one batch in the other.
4. The gateway's added latency, per backend: ``basguard serve`` with a SQLite store and with a
   PostgreSQL store in front of the same fake upstream, and the upstream alone, each measured
   by ``wrk`` at concurrency 1 (p50 and p99) and 32 (requests/s), interleaved round by round
   so that the load of the shared machine falls on each alike. Added = basguard - upstream
   alone. Target: PostgreSQL's added p50 within 10 % of SQLite's.

PostgreSQL runs with its durable defaults (fsync, synchronous commit) on a temporary cluster
of the machine's own binaries (the tests' ``tests/support/postgres_cluster.py``), unless
``--postgres URL`` names one; SQLite runs as the store does (WAL, synchronous NORMAL).

    python3 benchmarks/bench_store.py [--decisions 100000] [--seconds 10] [--repeats 3]
        [--postgres URL] [--dir DIR]
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))
sys.path.insert(0, str(REPOSITORY / "benchmarks"))

from bench_gateway import (  # noqa: E402
    KEY,
    UPSTREAM,
    WrkResult,
    basguard,
    server,
    write_basguard_config,
    wrk,
)

from proxy.judging.decision import ChoiceOutcome, DecisionRecord  # noqa: E402
from proxy.runtime.state import UNCALIBRATED, TenantRuntime  # noqa: E402
from proxy.store import DecisionStore, open_backend  # noqa: E402
from proxy.store.backend import Session  # noqa: E402
from proxy.store.queries import insert_rows, transaction  # noqa: E402
from proxy.store.rows import decision_rows  # noqa: E402
from proxy.store.writer import DEFAULT_TEXT_LIMITS  # noqa: E402
from proxy.tools.local_model import free_port  # noqa: E402

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


def enqueue(location: Path | str, batch: list[DecisionRecord], *,
            journal: Path | None) -> tuple[float, float]:
    """CPU seconds per decision the request path spent, and decisions/s the writer sustained.

    The writer runs as in the gateway, in its own thread, taking turns for the GIL; so the
    request path is timed in CPU time of its own thread (``time.thread_time``), which leaves
    out the turns it waited (the writer's share, and other processes on a shared machine).
    """
    store = DecisionStore(location, retention_seconds=None, max_queued=len(batch) + 1,
                          max_queued_bytes=1 << 40, journal=journal)
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
    session = open_backend(path).connect()
    started = time.thread_time()
    for record in batch:
        with transaction(session):
            insert_rows(session, decision_rows(record, DEFAULT_TEXT_LIMITS))
    session.close()
    return (time.thread_time() - started) / len(batch)


@contextmanager
def postgres(given: str | None) -> Iterator[tuple[str, str]]:
    """A URL factory's first URL and a description: a fresh schema per use."""
    if given is not None:
        yield given, "given"
        return
    from tests.support.postgres_cluster import running_cluster

    with running_cluster(durable=True) as cluster:
        yield cluster.url(), "temporary cluster, fsync and synchronous_commit on"


def fresh(url: str, name: str) -> str:
    """``url`` with its tables in a new schema ``name`` (dropped first if it exists)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        admin.execute(f"CREATE SCHEMA {name}")
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{name}"


def writer_figures(args: argparse.Namespace, batch: list[DecisionRecord], pg: str,
                   tmp: Path) -> dict[str, tuple[float, float]]:
    """Backend and journal to (request-path seconds per decision, writer decisions/s)."""
    runs: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
    # Alternate the four, twice, and keep each one's best: the machine is shared.
    for run in range(2):
        for journal in (False, True):
            suffix = "journal" if journal else "queue"
            sqlite = tmp / f"{suffix}{run}.sqlite3"
            runs[f"sqlite, {suffix}"].append(enqueue(
                sqlite, batch, journal=sqlite.with_name(sqlite.name + ".journal") if journal
                else None))
            runs[f"postgresql, {suffix}"].append(enqueue(
                fresh(pg, f"bench_{suffix}{run}"), batch,
                journal=tmp / f"pg-journal-{suffix}{run}" if journal else None))
    return {name: (min(r[0] for r in found), max(r[1] for r in found))
            for name, found in runs.items()}


def retention_figures(pg: str, rows: int) -> dict[str, tuple[float, list[float]]]:
    """Way to (seconds to delete ``rows``, each concurrent label's seconds)."""
    from proxy.store.postgres import PURGE_BATCH

    record = records(1)[0]
    template = decision_rows(record, DEFAULT_TEXT_LIMITS)[0]
    figures = {}
    for way in ("one DELETE", f"batches of {PURGE_BATCH}"):
        url = fresh(pg, "bench_retention")
        DecisionStore(url, retention_seconds=None).close()
        backend = open_backend(url)
        session = backend.connect()
        for start in range(0, rows, 20_000):
            with transaction(session):
                # The template's every column but the id and created_at (index 16).
                insert_rows(session, [(f"bg-old-{i}", *template[1:16], 100.0 + i, *template[17:])
                                      for i in range(start, min(rows, start + 20_000))])
        labeller = backend.connect()
        done = threading.Event()
        waits: list[float] = []

        thread = threading.Thread(target=_label_expired, args=(labeller, rows, done, waits))
        thread.start()
        time.sleep(0.2)
        began = time.perf_counter()
        if way == "one DELETE":
            with transaction(session):
                session.execute("DELETE FROM decisions WHERE created_at < ?", (1e12,))
        else:
            more = True
            while more:
                _, more = backend.purge(session, 1e12, budget_seconds=0.2)
        took = time.perf_counter() - began
        done.set()
        thread.join()
        for opened in (session, labeller):
            opened.close()
        backend.close()
        figures[way] = (took, sorted(waits))
    return figures


def _label_expired(labeller: Session, rows: int, done: threading.Event,
                   waits: list[float]) -> None:
    """Label expired decisions until ``done``, timing each label (another replica's writer)."""
    i = 0
    while not done.is_set() and i < rows:
        began = time.perf_counter()
        with transaction(labeller):
            labeller.execute("UPDATE decisions SET correct = 1, labelled_at = 1.0 "
                             "WHERE id = ? AND choice = 0", (f"bg-old-{i}",))
        waits.append(time.perf_counter() - began)
        # Oldest first, as the delete goes: a label meets the rows it has just deleted (one
        # DELETE: locked until it commits; a batch: until the batch commits).
        i += 97


def gateway_figures(args: argparse.Namespace, pg: str, tmp: Path) -> dict[str, dict[str, float]]:
    upstream_port = free_port()
    config = write_basguard_config(tmp, f"http://127.0.0.1:{upstream_port}", "enforce")
    targets = {
        "sqlite": basguard(REPOSITORY, config, tmp / "gateway.sqlite3"),
        "postgresql": basguard(REPOSITORY, config, tmp / "unused.sqlite3"),
    }
    targets["postgresql"].env["BASGUARD_STORE"] = fresh(pg, "bench_gateway")
    targets["postgresql"].env["BASGUARD_STORE_JOURNAL_DIR"] = str(tmp / "gateway-pg-journal")
    single: dict[str, list[WrkResult]] = collections.defaultdict(list)
    loaded: dict[str, list[WrkResult]] = collections.defaultdict(list)
    with ExitStack() as running:
        upstream = running.enter_context(server(
            [sys.executable, "-c", UPSTREAM.format(port=upstream_port)], upstream_port))
        served = {"upstream alone": upstream}
        for name, target in targets.items():
            print(f"starting basguard ({name}) ...", flush=True)
            served[name] = running.enter_context(server(
                target.command, target.port, target.env, "/readyz", target.cwd))
        for round_ in range(args.repeats):
            print(f"round {round_ + 1} of {args.repeats} ...", flush=True)
            for name, target in served.items():
                for connections, found in ((1, single), (32, loaded)):
                    found[name].append(wrk(
                        target.url, KEY, connections=connections, seconds=args.seconds,
                        directory=tmp, warm_up=round_ == 0, pid=target.pid))
    return {name: {"p50": statistics.median(r.p50_ms for r in single[name]),
                   "p99": statistics.median(r.p99_ms for r in single[name]),
                   "rps": statistics.median(r.requests_per_second for r in loaded[name]),
                   "cpu": statistics.median(r.cpu_us_per_request for r in loaded[name])}
            for name in single}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--decisions", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run")
    parser.add_argument("--repeats", type=int, default=3, help="gateway rounds (medians)")
    parser.add_argument("--postgres", help="a PostgreSQL URL (default: a temporary cluster)")
    parser.add_argument("--no-gateway", action="store_true", help="skip the gateway figures")
    parser.add_argument("--retention", type=int, default=200_000,
                        help="expired decisions to delete on PostgreSQL (0: skip)")
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    batch = records(args.decisions)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp_name, \
            postgres(args.postgres) as (pg, described):
        tmp = Path(tmp_name)
        writers = writer_figures(args, batch, pg, tmp)
        floor = min(bare_append(batch) for _ in range(3))
        sync = synchronous(tmp / "sync.sqlite3", batch[:min(args.decisions, 5_000)])
        retention = retention_figures(pg, args.retention) if args.retention else {}
        gateway = None if args.no_gateway else gateway_figures(args, pg, tmp)

    print(f"\ndecisions: {args.decisions}; PostgreSQL: {described}")
    print(f"request path, bare deque.append:                {floor * 1e6:8.2f} µs/decision")
    print(f"request path, synchronous SQLite INSERT+COMMIT: {sync * 1e6:8.2f} µs/decision")
    print(f"{'backend, queue':<28} {'request path':>14} {'writer':>18}")
    for name, (cpu, rate) in writers.items():
        print(f"{name:<28} {cpu * 1e6:>9.2f} µs/d {rate:>12.0f} d/s")
    ratio = writers["postgresql, journal"][1] / writers["sqlite, journal"][1]
    print(f"writer throughput, PostgreSQL / SQLite (journal): {ratio:.2f}x")
    if retention:
        print(f"\nretention on PostgreSQL, {args.retention} expired decisions, while another "
              "connection labels expired ones:")
        for way, (took, waits) in retention.items():
            p50, p99 = (waits[int(q * (len(waits) - 1))] * 1000 for q in (0.5, 0.99))
            print(f"  {way:<20} deleted in {took:6.2f} s; labels meanwhile: {len(waits):5d}, "
                  f"p50 {p50:6.1f} ms, p99 {p99:7.1f} ms, longest {waits[-1] * 1000:7.1f} ms")
    if gateway is None:
        return
    base = gateway["upstream alone"]
    print(f"\n{'gateway':<16} {'p50 ms':>8} {'p99 ms':>8} {'added p50':>10} {'added p99':>10} "
          f"{'req/s @32':>10} {'CPU µs/req':>11}")
    for name, figures in gateway.items():
        print(f"{name:<16} {figures['p50']:>8.3f} {figures['p99']:>8.3f} "
              f"{figures['p50'] - base['p50']:>10.3f} {figures['p99'] - base['p99']:>10.3f} "
              f"{figures['rps']:>10.0f} {figures['cpu']:>11.0f}")
    added = {name: gateway[name]["p50"] - base["p50"] for name in ("sqlite", "postgresql")}
    ratio = added["postgresql"] / added["sqlite"]
    verdict = "met" if ratio <= 1.10 else "NOT met"
    print(f"added p50, PostgreSQL / SQLite: {ratio:.3f}x (target <= 1.10x: {verdict})")


if __name__ == "__main__":
    main()
