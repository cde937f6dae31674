"""Confidence signals on real traffic: SmolLM2 through basguard, one table per signal set.

For each shipped question set (``data/questions/``), in one run:

1. ``basguard collect --tenant signals``: the first N questions go through basguard (shadow
   mode) to SmolLM2-135M under llama.cpp, with every signal enabled at once (logprobs,
   consistency with K samples, verbalized, and the same SmolLM2 as judge), so each record holds
   every feature and what its signal calls cost;
2. the questions are split in half as ``real_questions.py`` does (stratified, one question is
   one group); for each signal set below, ``auto`` is fitted on one half and judged on the
   other;
3. on the held-out half, the demo's explorer tenant (casual profile: answer iff p ≥ its
   threshold) is scored against always and never answering.

Signal sets (rows): each signal alone, all combined, and "no logprobs": consistency and
verbalized without any logprob-derived feature, as in front of a model that returns none.

A held-out answer whose record lacks a feature of the row (a verbalized reply that could not be
parsed, a call that timed out) is withheld, as ``on_missing_confidence: abstain`` does; AUROC and
ECE are over the answers that have every feature, BAS and the rule's figures over all of them.
Extra calls are the row's signal calls per request. The added latency p50 is the median, over
held-out requests, of the signals' measured time after the answer (all signals ran together),
apportioned to the row's signals by their share of the calls' seconds: llama.cpp answers one
call at a time, so here the calls queue; a provider serving them concurrently adds about the
longest one.

Questions go through ``collect`` in chunks of 25, each kept as it is done (``--keep DIR``): the
same command resumes a stopped run, and a second one with ``--reverse`` (its own model, last
chunk first) shares the work; ``--records DIR`` prints the table from what is kept so far. The
records hold each failed signal call's detail (a verbalized reply's start), and each chunk's
line says how many calls of each signal were ok or garbage.

Run: python benchmarks/real_signals.py [--limit N] [--samples K] [--sets triviaqa,college-cs]
         [--keep DIR] [--reverse] [--records DIR]
"""

from __future__ import annotations

import argparse
import collections
import itertools
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import yaml

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

from heldout_calibration import halves, predict  # noqa: E402  (this folder is on sys.path)
from real_questions import QUESTION_SETS, SETS, rule_row  # noqa: E402

from calibrators.dataset import calibration_data_from_records  # noqa: E402
from calibrators.errors import DataError  # noqa: E402
from calibrators.json_lines import json_objects  # noqa: E402
from calibrators.metrics import accuracy, auroc, bas, expected_calibration_error  # noqa: E402
from calibrators.selection import fit_calibrator  # noqa: E402
from calibrators.signals import ScoreSpec  # noqa: E402
from policies.profiles import PRESETS  # noqa: E402
from policies.utility import realized_utility  # noqa: E402
from proxy.signals.registry import FEATURE_KINDS, FEATURE_SIGNALS  # noqa: E402
from proxy.tools.collect import read_questions, run_collect  # noqa: E402
from proxy.tools.demo import write_demo_config  # noqa: E402
from proxy.tools.local_model import run_local_model  # noqa: E402

TENANT = "signals"
PROFILE = "casual"  # the demo's explorer tenant
#: Questions per collect pass; each pass's records are kept at once (a stopped run resumes).
CHUNK = 25
#: A chunk whose records file changed this recently is being written by another run.
CLAIM_SECONDS = 300
VERBALIZED_MAX_TOKENS = 16
LOGPROBS = ("token_prob", "min_token_prob", "first_token_prob", "mean_topk_margin", "token_count")
CONSISTENCY = ("agreement", "distinct_answers", "sample_similarity")
#: Row name to the features its calibrator may read.
ROWS: Mapping[str, tuple[str, ...]] = {
    "logprobs only": LOGPROBS,
    "consistency only": (*CONSISTENCY, "sample_token_prob"),
    "verbalized only": ("verbalized_prob",),
    "judge only": ("judge_prob",),
    "all combined": (*LOGPROBS, *CONSISTENCY, "sample_token_prob", "verbalized_prob",
                     "judge_prob"),
    # The samples' mean token probability needs logprobs too: stripped with them.
    "no logprobs": (*CONSISTENCY, "verbalized_prob"),
}


def signals_config(directory: Path, model_url: str, samples: int) -> Path:
    """The demo config plus a tenant that enables every signal, the local SmolLM2 judging."""
    config = yaml.safe_load(write_demo_config(directory, model_url).read_text(encoding="utf-8"))
    config["tenants"][TENANT] = {
        "api_keys": [{"env": "BASGUARD_BENCH_SIGNALS_KEY"}],
        "risk": {"profile": PROFILE},
        "confidence": {
            "signals": ["logprobs", "consistency", "verbalized", "judge"],
            "consistency": {"samples": samples},
            # A percentage or a verdict takes a few tokens; the default 32 mostly buys rambling.
            "verbalized": {"max_tokens": VERBALIZED_MAX_TOKENS},
            "judge": {"model": "smollm2"},
            # llama.cpp answers one call at a time: a call may queue behind the request's others.
            "timeout_seconds": 90,
        },
    }
    path = directory / "basguard-signals.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def cost(record: Mapping[str, Any], features: Sequence[str]) -> tuple[int, float]:
    """The row's extra calls for this request, and the added seconds apportioned to them."""
    signals = {FEATURE_SIGNALS[name] for name in features}
    costs = record.get("signal_costs") or {"calls": [], "seconds": 0.0}
    calls = [c for c in costs["calls"] if c["model"] is not None]
    mine = [c for c in calls if c["signal"] in signals]
    total = sum(c["seconds"] for c in calls)
    share = sum(c["seconds"] for c in mine) / total if total > 0 else 0.0
    return len(mine), float(costs["seconds"]) * share


def judge_row(records: list[dict[str, Any]], fit_ids: set[str], features: Sequence[str]) -> str:
    """The row's cells after its name: fit on ``fit_ids``' records, judged on the others."""
    specs = [ScoreSpec(name, FEATURE_KINDS[name]) for name in features]
    complete = [r for r in records if all(name in r for name in features)]
    fit_records = [r for r in complete if r["group"] in fit_ids]
    held_out = [r for r in records if r["group"] not in fit_ids]
    try:
        fit_part = calibration_data_from_records(fit_records, source="fit half", scores=specs,
                                                 label="correct", group="group")
        calibrator = fit_calibrator(fit_part).calibrator
    except DataError:  # calibrate's minimums (rows, questions of each class) not met
        right = sum(r["correct"] for r in fit_records)
        return f"too few labels (fit half: {right} right, {len(fit_records) - right} wrong) |"
    correct = np.array([bool(r["correct"]) for r in held_out])
    scored = np.array([all(name in r for name in features) for r in held_out])
    p = np.zeros(len(held_out))  # missing features: withheld, as on_missing_confidence: abstain
    if scored.any():
        eval_part = calibration_data_from_records(
            [r for r, s in zip(held_out, scored, strict=True) if s], source="held-out half",
            scores=specs, label="correct", group="group")
        p[scored] = predict(calibrator, eval_part)
    preset = PRESETS[PROFILE]
    answer = scored & (p >= preset.threshold)
    rule = rule_row("", answer, correct, preset.wrong_answer_cost, preset.abstain_cost)
    # rule_row's cells: abstention rate, over-, under-abstention, utility per question.
    abstention, over, under, utility = (cell.strip() for cell in rule.split("|")[2:6])
    always, never = (float(np.mean(realized_utility(
        correct, np.full_like(correct, answered), wrong_answer_cost=preset.wrong_answer_cost,
        abstain_cost=preset.abstain_cost))) for answered in (True, False))
    calls, seconds = zip(*(cost(r, features) for r in held_out), strict=True)
    return (f"{int(scored.sum())} | {auroc(p[scored], correct[scored]):.3f} | "
            f"{bas(p, correct):+.4f} | "
            f"{expected_calibration_error(p[scored], correct[scored]):.3f} | {abstention} | "
            f"{over} | {under} | {utility} | {always:+.3f} | {never:+.3f} | "
            f"{np.mean(calls):.1f} | {np.median(seconds):.2f} |")


def table(studied: Mapping[str, list[dict[str, Any]]]) -> list[str]:
    lines = ["| set | held-out (accuracy) | signals | scored | AUROC | BAS | ECE | abstention | "
             "over-abstention | under-abstention | utility | always answer | never answer | "
             "extra calls | added latency p50 (s) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, records in studied.items():
        # One split per set, on every record, so each row is judged on the same questions.
        # halves() splits on labels and groups only: a constant stands in for the scores.
        everything = calibration_data_from_records(
            [{"group": r["group"], "correct": r["correct"], "split": 0.5} for r in records],
            source=name, scores=[ScoreSpec("split", FEATURE_KINDS["token_prob"])],
            label="correct", group="group")
        group_ids = list(dict.fromkeys(r["group"] for r in records))  # numbered as first seen
        fit_part, eval_part = halves(everything)
        fit_ids = {group_ids[g] for g in np.unique(fit_part.groups)}
        held = f"{eval_part.n_rows} ({accuracy(eval_part.correct):.2f})"
        for row, features in ROWS.items():
            lines.append(f"| {name} | {held} | {row} | {judge_row(records, fit_ids, features)}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=500, help="questions per set")
    parser.add_argument("--samples", type=int, default=5, help="consistency samples (k)")
    parser.add_argument("--sets", default=",".join(SETS),
                        help=f"comma-separated, from {', '.join(SETS)}")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="a folder to keep the records in")
    parser.add_argument("--reverse", action="store_true",
                        help="collect each set's last chunk first (a second run sharing --keep)")
    parser.add_argument("--records", type=Path,
                        help="a --keep folder of an earlier run: print its table, run no model")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.sets.split(",") if name.strip()]
    if unknown := sorted(set(chosen) - set(SETS)):
        parser.error(f"unknown sets {unknown}; shipped: {', '.join(SETS)}")
    if args.records is not None:
        studied = {name: kept_records(args.records, name) for name in chosen}
        for name, records in studied.items():
            print(f"{name}: {len(records)} answers kept; {garbage_summary(records)}")
    else:
        studied = collect_sets(chosen, args.limit, args.samples, args.threads, args.keep,
                               reverse=args.reverse)
    sizes = ", ".join(f"{name} {len(records)}" for name, records in studied.items())
    samples = max((sum(c["signal"] == "consistency" and c["model"] is not None
                       for c in r.get("signal_costs", {}).get("calls", []))
                   for records in studied.values() for r in records), default=0)
    print(f"\nSmolLM2-135M (llama.cpp) through basguard collect: {sizes} questions, "
          f"consistency k = {samples}; explorer tenant ({PROFILE}, answers from p ≥ "
          f"{PRESETS[PROFILE].threshold:.3f}); utility per held-out question.\n")
    print("\n".join(table(studied)))


def kept_records(keep: Path, name: str) -> list[dict[str, Any]]:
    """A set's kept records: its whole file, or (a run still going or stopped) its chunks."""
    whole = keep / f"{name}.signals.jsonl"
    if whole.exists():
        return read_records(whole)
    return [record for part in sorted((keep / f"{name}.chunks").glob("*.jsonl"))
            for record in read_records(part)]


def read_records(path: Path) -> list[dict[str, Any]]:
    return [record for _, record in json_objects(path)]


def collect_sets(chosen: Sequence[str], limit: int, samples: int, threads: int,
                 keep: Path | None, chunk: int = CHUNK,
                 reverse: bool = False) -> dict[str, list[dict[str, Any]]]:
    """Each set's records from ``collect`` passes through the local SmolLM2.

    Questions go through in chunks of ``chunk``, each chunk's records kept in its own file
    (``NAME.chunks/START.jsonl`` under ``keep``): a run that stops (killed, machine restarted)
    is resumed by the same command, which skips the chunks already written. A chunk another
    run is writing (its ``.partial`` file changed in the last minutes) is skipped too, so a
    second run with ``reverse`` (last chunk first) shares the work, each with its own model.
    """
    studied: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp, run_local_model(
        threads=threads, log=Path(tmp) / "llama.log"
    ) as model_url:
        config = signals_config(Path(tmp), model_url, samples)
        for name in chosen:
            root = keep or Path(tmp)
            chunks = root / f"{name}.chunks"
            chunks.mkdir(parents=True, exist_ok=True)
            questions = list(itertools.islice(read_questions(QUESTION_SETS / f"{name}.csv"),
                                              limit))
            written = correct = failed = 0
            starts = range(0, len(questions), chunk)
            for start in reversed(starts) if reverse else starts:
                part = chunks / f"{start:05d}.jsonl"
                if part.exists() or _claimed(part):  # kept by an earlier run, or being written
                    continue
                asked = Path(tmp) / f"{name}.{start:05d}.questions.jsonl"
                asked.write_bytes(b"".join(
                    orjson.dumps({"id": q.id, "question": q.question, "answers": list(q.answers)})
                    + b"\n" for q in questions[start:start + chunk]))
                collected = run_collect(config, asked, part, "smollm2", tenant=TENANT)
                written += collected.written
                correct += collected.correct
                failed += collected.failed
                print(f"{name}: questions {start + 1}-{start + chunk}: {collected.written} "
                      f"answers, {collected.correct} correct, {collected.failed} failed; "
                      f"{garbage_summary(read_records(part))}", flush=True)
            parts = [chunks / f"{start:05d}.jsonl" for start in starts]
            if all(part.exists() for part in parts):
                out = root / f"{name}.signals.jsonl"
                out.write_bytes(b"".join(part.read_bytes() for part in parts))
            studied[name] = kept_records(root, name)
            print(f"{name}: {len(studied[name])} answers kept ({written} new, {correct} of them "
                  f"correct, {failed} failed); {garbage_summary(studied[name])}", flush=True)
    return studied


def _claimed(part: Path) -> bool:
    """Whether another run is writing ``part`` (collect appends a record every question)."""
    partial = part.with_name(part.name + ".partial")
    try:
        return time.time() - partial.stat().st_mtime < CLAIM_SECONDS
    except FileNotFoundError:
        return False


def garbage_summary(records: Sequence[Mapping[str, Any]]) -> str:
    """Each signal's calls by result (ok, garbage, timeout, error), over ``records``."""
    counts: dict[str, collections.Counter[str]] = {}
    for record in records:
        for call in (record.get("signal_costs") or {}).get("calls", []):
            counts.setdefault(call["signal"], collections.Counter())[call["result"]] += 1
    return "; ".join(f"{signal} " + ", ".join(f"{n} {result}" for result, n in sorted(c.items()))
                     for signal, c in sorted(counts.items())) or "no signal calls"

if __name__ == "__main__":
    main()
