"""Reading a million-row calibration file: peak memory and time against a naive reader.

Builds a 1,000,000-row JSON Lines file by resampling the shipped real NQ-open rows, then measures
with tracemalloc, in the same run, ``read_calibration_data`` (streams rows into typed arrays)
against the obvious baseline that parses every line into a dict first and builds arrays after.

Run: python benchmarks/bench_read_memory.py [--rows N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np

from calibrators.dataset import read_calibration_data
from calibrators.signals import parse_score_spec

SHIPPED = (
    Path(__file__).resolve().parents[1]
    / "data/calibration/rankcal_gpt-3.5-turbo_nq-open_T1.0_first1500q.jsonl"
)
SCORES = ("token_prob", "mean_logprob", "sum_logprob", "agreement")


def naive_read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with path.open() as handle:
        records = [json.loads(line) for line in handle]
    scores = np.array([[r[s] for s in SCORES] for r in records], dtype=np.float64)
    labels = np.array([bool(r["correct"]) for r in records])
    return scores, labels


def streamed_read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    specs = [parse_score_spec(s) for s in SCORES]
    data = read_calibration_data(path, scores=specs, label="correct", group="group")
    return data.scores, data.correct


def measure(read: Callable[[Path], object], path: Path) -> tuple[float, float]:
    tracemalloc.start()
    started = time.perf_counter()
    read(path)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20, elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    rows = parser.parse_args().rows
    lines = SHIPPED.read_text().splitlines()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "million.jsonl"
        picks = np.random.default_rng(0).integers(0, len(lines), size=rows)
        with path.open("w") as handle:
            for i in picks:
                handle.write(lines[i] + "\n")
        size_mb = path.stat().st_size / 2**20
        naive_mb, naive_s = measure(naive_read, path)
        stream_mb, stream_s = measure(streamed_read, path)
    print(f"{rows:,} rows, {size_mb:.0f} MiB of JSON Lines, 4 scores + label + group")
    print(f"{'reader':<40} {'peak MiB':>9} {'seconds':>8}")
    print(f"{'naive (parse all, then build arrays)':<40} {naive_mb:9.1f} {naive_s:8.2f}")
    print(f"{'basguard read_calibration_data':<40} {stream_mb:9.1f} {stream_s:8.2f}")
    print(f"peak memory ratio naive/basguard: {naive_mb / stream_mb:.1f}x; "
          f"speed ratio: {naive_s / stream_s:.1f}x")


if __name__ == "__main__":
    main()
