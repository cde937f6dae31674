"""Streaming without the wait, on real traffic: deciding on the first K tokens or the whole answer.

One run, SmolLM2-135M under llama.cpp on this machine:

1. ``basguard collect --prefix-tokens 1,4,8,16,32``: the first N questions of TriviaQA and of an
   MMLU set (clinical knowledge) go through basguard (shadow mode); each record holds the
   full-answer features and the same features over the first K tokens (``token_prob@16``...);
2. the questions of both sets are split in half (stratified; one question is one group); for
   each K and for the full answer, ``auto`` is fitted on one half and judged on the other:
   AUROC, BAS, and, under the ``casual`` profile (λ = 1, a = 0.25, answer iff p ≥ 0.375), the
   abstention rate and the realized utility per question, on both sets pooled and per set.
   SmolLM2 answers about 6 % of these questions right, so the sizes that fit in 20 minutes of a
   loaded machine leave a handful of right answers per half: ``--min-groups`` lowers the
   fit's minimum of right (and wrong) answers from the CLI's 5 (default here 2), and the
   figures are correspondingly noisy;
3. a real ``basguard serve`` in front of the same model, with three tenants on those
   calibrators: ``enforce`` with a stream gate at K = 16, ``enforce`` buffered, and
   ``annotate``. Held-out TriviaQA questions are streamed to each (in turn, so load falls on
   all three alike) with ``max_tokens`` 256 and no short-answer instruction, and the time to
   the first content token is measured at the client (httpx, the SSE lines); the client then
   closes the stream (basguard cancels the generation). Medians over the requests.

Target (issue 11): at K = 16, gated TTFT within 1.5x annotate's, and utility per question within
0.01 of the full-answer decision.

Run: nice -n 5 python benchmarks/real_stream_gate.py [--trivia N] [--mmlu N] [--requests N]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import yaml
from sklearn.model_selection import StratifiedGroupKFold

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

from calibrators.artifact import FittedCalibrator, save_artifact  # noqa: E402
from calibrators.dataset import CalibrationData, calibration_data_from_records  # noqa: E402
from calibrators.errors import CalibrationError  # noqa: E402
from calibrators.json_lines import json_objects  # noqa: E402
from calibrators.methods import IdentityCalibrator  # noqa: E402
from calibrators.metrics import auroc, bas  # noqa: E402
from calibrators.prefix import prefix_feature  # noqa: E402
from calibrators.selection import fit_calibrator  # noqa: E402
from calibrators.signals import ScoreSpec, parse_score_spec  # noqa: E402
from policies.profiles import PRESETS  # noqa: E402
from policies.utility import realized_utility  # noqa: E402
from proxy.tools.collect import run_collect  # noqa: E402
from proxy.tools.local_model import MODEL_ALIAS, run_local_model  # noqa: E402
from tests.support.waiting import wait_until  # noqa: E402

QUESTION_SETS = REPOSITORY / "data" / "questions"
SETS = {"TriviaQA": "triviaqa.csv", "MMLU clinical": "clinical-knowledge.csv"}
PREFIXES = (1, 4, 8, 16, 32)
GATE_K = 16
SCORES = ("token_prob", "min_token_prob", "first_token_prob", "mean_topk_margin:real",
          "token_count:real")
PROFILE = "casual"
KEYS = {"gated": "bench-gated-key-0123456789", "buffered": "bench-buffered-key-0123456789",
        "annotate": "bench-annotate-key-0123456789"}


def specs_for(k: int | None) -> list[ScoreSpec]:
    specs = [parse_score_spec(s) for s in SCORES]
    return specs if k is None else [ScoreSpec(prefix_feature(s.field, k), s.kind) for s in specs]


def usable(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records holding every feature of every variant (a one-token prefix may lack the top-k
    margin when that token came with fewer than two alternatives)."""
    fields = {spec.field for k in (None, *PREFIXES) for spec in specs_for(k)}
    return [r for r in records if fields <= r.keys()]


def split(records: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    labels = np.array([r["correct"] for r in records], dtype=bool)
    ids: dict[str, int] = {}
    groups = np.array([ids.setdefault(str(r["group"]), len(ids)) for r in records])
    splitter = StratifiedGroupKFold(n_splits=2, shuffle=True, random_state=0)
    fit_rows, eval_rows = next(splitter.split(np.zeros(len(records)), labels, groups=groups))
    return fit_rows, eval_rows


def data(records: list[dict[str, Any]], k: int | None, source: str) -> CalibrationData:
    return calibration_data_from_records(records, source=source, scores=specs_for(k),
                                         label="correct", group="group")


def figures(p: np.ndarray, correct: np.ndarray) -> dict[str, float]:
    profile = PRESETS[PROFILE]
    answer = p >= profile.threshold
    utility = realized_utility(correct, answer, wrong_answer_cost=profile.wrong_answer_cost,
                               abstain_cost=profile.abstain_cost)
    both = 0 < correct.sum() < correct.size
    return {"auroc": auroc(p, correct) if both else float("nan"),
            "bas": bas(p, correct), "abstention": float(np.mean(~answer)),
            "utility": float(np.mean(utility)), "n": int(correct.size),
            "accuracy": float(np.mean(correct))}


def judge(records: list[dict[str, Any]], k: int | None, rows: tuple[np.ndarray, np.ndarray],
          sets: np.ndarray, min_groups: int) -> tuple[dict[str, dict[str, float]], Any]:
    """Fit on one half, judge on the other: figures (pooled and per set) and the calibrator."""
    whole = data(records, k, "collected")
    fit_part, eval_part = whole.subset(rows[0]), whole.subset(rows[1])
    try:
        calibrator = fit_calibrator(fit_part, min_rows=20,
                                    min_groups_per_class=min_groups).calibrator
    except CalibrationError as exc:
        # Too few right answers to fit: the uncalibrated geometric-mean token probability.
        print(f"  K={k}: not fitted ({exc}); token_prob uncalibrated", flush=True)
        calibrator = FittedCalibrator(IdentityCalibrator(), (whole.specs[0],))
    columns = [eval_part.specs.index(spec) for spec in calibrator.features]
    p = calibrator.predict(eval_part.scores[:, columns])
    correct = eval_part.correct.astype(bool)
    held_sets = sets[rows[1]]
    found = {"both": figures(p, correct)}
    for name in SETS:
        mine = held_sets == name
        found[name] = figures(p[mine], correct[mine])
    return found, calibrator


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_config(directory: Path, model_url: str) -> Path:
    def tenant(name: str, **policy: Any) -> dict[str, Any]:
        return {"api_keys": [{"sha256": hashlib.sha256(KEYS[name].encode()).hexdigest()}],
                "risk": {"profile": PROFILE}, "calibrators": {"default": "full.json"},
                **policy}

    config = {
        "version": 1,
        "models": {MODEL_ALIAS: {"base_url": model_url, "timeout_seconds": 600}},
        "tenants": {
            "gated": tenant("gated", stream_gate={"decide_after_tokens": GATE_K,
                                                  "calibrator": f"prefix{GATE_K}.json"}),
            "buffered": tenant("buffered"),
            "annotate": tenant("annotate", mode="annotate"),
        },
    }
    path = directory / "basguard.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def first_token_seconds(url: str, tenant: str, question: str) -> tuple[float, str]:
    """Seconds to the first content token of a stream, and the decision header (if any)."""
    body = {"model": MODEL_ALIAS, "stream": True, "max_tokens": 256, "temperature": 0,
            "messages": [{"role": "user", "content": question}]}
    started = time.perf_counter()
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=600,
                      headers={"authorization": f"Bearer {KEYS[tenant]}"}) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = orjson.loads(line[6:])
            if any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or []):
                # Leaving now closes the stream: basguard cancels the generation.
                return (time.perf_counter() - started,
                        response.headers.get("x-basguard-decision", "-"))
    raise RuntimeError(f"a {tenant} stream ended without any content")


def metric_sum(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


def measure_ttft(directory: Path, model_url: str, questions: list[str],
                 requests: int) -> tuple[dict[str, list[float]], list[str], str]:
    config = serve_config(directory, model_url)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (directory / "serve.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "proxy.cli", "serve", "--config", str(config),
         "--port", str(port), "--store", str(directory / "decisions.sqlite3")],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ})
    try:
        def ready() -> bool:
            if server.poll() is not None:
                raise RuntimeError((directory / "serve.log").read_text())
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200

        wait_until(ready, what="basguard to start", timeout=120, interval=0.2,
                   ignoring=(httpx.HTTPError,))
        times: dict[str, list[float]] = {tenant: [] for tenant in KEYS}
        gated_decisions = []
        order = list(KEYS)
        for i, question in enumerate(questions[:requests]):
            # Rotated, so that no mode always runs first (or right after a long generation).
            for tenant in order[i % 3:] + order[:i % 3]:
                seconds, decision = first_token_seconds(url, tenant, question)
                times[tenant].append(seconds)
                if tenant == "gated":
                    gated_decisions.append(decision)
            print(f"  ttft request {i + 1}/{requests}: " + ", ".join(
                f"{t} {times[t][-1]:.2f} s" for t in KEYS), flush=True)
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        return times, gated_decisions, metrics
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    # The defaults took 34 minutes on 2 cores at a load average of 12 (another real-model
    # benchmark running): about 27 s a TriviaQA question, 10 s an MMLU one.
    parser.add_argument("--trivia", type=int, default=25, help="TriviaQA questions collected")
    parser.add_argument("--mmlu", type=int, default=70, help="MMLU questions collected")
    parser.add_argument("--requests", type=int, default=4, help="TTFT requests per mode")
    parser.add_argument("--max-tokens", type=int, default=32, help="collect's max_tokens")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-groups", type=int, default=2,
                        help="least right (and wrong) questions in the fitting half")
    args = parser.parse_args()
    began = time.perf_counter()
    rows: list[tuple[str, str, dict[str, float]]] = []
    fitted: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp, run_local_model(
        threads=args.threads, log=Path(tmp) / "llama.log"
    ) as model_url:
        directory = Path(tmp)
        collect_config = directory / "collect.yaml"
        collect_config.write_text(yaml.safe_dump({
            "version": 1, "models": {MODEL_ALIAS: {"base_url": model_url,
                                                   "timeout_seconds": 600}},
            "tenants": {"collect": {"api_keys": [{"env": "UNUSED_BENCH_KEY"}],
                                    "risk": {"profile": PROFILE}}}}))
        records: list[dict[str, Any]] = []
        for name, file in SETS.items():
            out = directory / f"{file}.jsonl"
            limit = args.trivia if name == "TriviaQA" else args.mmlu
            started = time.perf_counter()
            run_collect(collect_config, QUESTION_SETS / file, out, MODEL_ALIAS, limit=limit,
                        prefix_tokens=PREFIXES, max_tokens=args.max_tokens)
            found = usable([record for _, record in json_objects(out)])
            for record in found:
                record["set"], record["group"] = name, f"{name}:{record['group']}"
            records.extend(found)
            print(f"{name}: {len(found)} usable records, {sum(r['correct'] for r in found)} "
                  f"right, in {time.perf_counter() - started:.0f} s", flush=True)
        halves = split(records)
        sets = np.array([r["set"] for r in records])
        for k in (*PREFIXES, None):
            found_figures, calibrator = judge(records, k, halves, sets, args.min_groups)
            fitted["full" if k is None else str(k)] = (
                f"{calibrator.method}({', '.join(calibrator.feature_names)})")
            for name, f in found_figures.items():
                rows.append((name, "full" if k is None else str(k), f))
            if k in (GATE_K, None):
                save_artifact(calibrator, directory / (
                    "full.json" if k is None else f"prefix{GATE_K}.json"))
        held_out_questions = [records[i]["question"] for i in halves[1]
                              if records[i]["set"] == "TriviaQA"]
        times, gated_decisions, metrics = measure_ttft(directory, model_url,
                                                       held_out_questions, args.requests)

    print(f"\nHeld-out half of both sets (fitted on the other half, pooled); `{PROFILE}` "
          f"profile (answer iff p ≥ {PRESETS[PROFILE].threshold:.3f}).\n")
    print("| set | decided on | held-out answers | accuracy | AUROC | BAS | abstention rate | "
          "utility per question | Δ utility vs full |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    full = {name: f for name, decided, f in rows if decided == "full"}
    for name, decided, f in sorted(rows, key=lambda row: ["both", *SETS].index(row[0])):
        label = "whole answer" if decided == "full" else f"first {decided} tokens"
        shown = "both sets" if name == "both" else name
        print(f"| {shown} | {label} | {f['n']} | {f['accuracy']:.3f} | {f['auroc']:.3f} | "
              f"{f['bas']:+.4f} | {f['abstention']:.2f} | {f['utility']:+.3f} | "
              f"{f['utility'] - full[name]['utility']:+.3f} |")
    print("\ncalibrators: " + "; ".join(f"{k}: {name}" for k, name in fitted.items()))
    median = {tenant: statistics.median(values) for tenant, values in times.items()}
    print(f"\nTime to first token, max_tokens 256, median of {len(times['gated'])} held-out "
          "TriviaQA questions per mode (client side, through basguard serve):\n")
    print("| mode | median TTFT (s) | × annotate |")
    print("|---|---:|---:|")
    for tenant, label in (("gated", f"enforce, stream gate K = {GATE_K}"),
                          ("buffered", "enforce, buffered"), ("annotate", "annotate")):
        print(f"| {label} | {median[tenant]:.2f} | {median[tenant] / median['annotate']:.2f} |")
    answered = sum(d == "answer" for d in gated_decisions)
    print(f"\ngated decisions: {answered} answered, {len(gated_decisions) - answered} abstained; "
          f"upstream streams cancelled by the gate: "
          f"{metric_sum(metrics, 'basguard_stream_gate_cancellations_total'):.0f}, tokens saved "
          f"(max_tokens - received): "
          f"{metric_sum(metrics, 'basguard_stream_gate_tokens_saved_total'):.0f}")
    pooled = {decided: f for name, decided, f in rows if name == "both"}
    ratio = median["gated"] / median["annotate"]
    gaps = {name: abs(f["utility"] - full[name]["utility"])
            for name, decided, f in rows if decided == str(GATE_K)}
    print(f"\ntarget at K = {GATE_K}: TTFT ≤ 1.5× annotate: {ratio:.2f}× "
          f"({'met' if ratio <= 1.5 else 'not met'}); utility within 0.01 of the whole answer: "
          + ", ".join(f"{name} {gap:.3f} ({'met' if gap <= 0.01 else 'not met'})"
                      for name, gap in gaps.items()))
    print(f"(pooled AUROC at K = {GATE_K}: {pooled[str(GATE_K)]['auroc']:.3f}, whole answer "
          f"{pooled['full']['auroc']:.3f}; run took {time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
