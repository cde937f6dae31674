"""Risk limits on the shipped real data: does a certified threshold keep its promise? At what cost?

For each file and several limits A (chosen between the error rate of the model's most confident
answers and its overall error rate, so that each is neither trivial nor impossible), C = 0.95, over
many random splits of the questions (groups never straddle parts):

1. fit a calibrator (``calibrate fit --method auto``) on 30 % of the questions,
2. certify on 30 % exactly as ``basguard calibrate certify`` does (one row per question),
3. measure on the remaining 40 %, every row, as traffic would see it.

Columns: how often the test error among answered exceeds A (the guarantee allows 5 % up to
sampling noise; the noise of a finite test part adds to it), the mean answer rate and test error
at the certified threshold, how often nothing was certified, the answer rate of the best threshold
chosen with hindsight on the test part that meets A, their ratio, and the cost-optimal threshold
alone for the tenant whose wrong answer costs ``λ = (1 - A) / A`` (answer iff p >= 1 - A).

Run: python benchmarks/bench_risk_limit.py [--splits N]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from provenance import REPOSITORY, provenance

from calibrators.certification import certify_calibrator
from calibrators.dataset import CalibrationData, read_calibration_data
from calibrators.selection import fit_calibrator
from calibrators.signals import parse_score_spec
from policies.risk_control import selective_error_curve
from policies.utility import optimal_threshold

SHIPPED = REPOSITORY / "data" / "calibration"
NQ = "token_prob,mean_logprob,sum_logprob,agreement"
CONFIDENCE = 0.95
FIT, CERTIFY = 0.3, 0.3  # the rest is the test part

# file, score fields, limits A between the top answers' error rate and the overall one
CASES = [
    ("chembench_gpt-4o-2024-08-06_tokenprob.jsonl", "token_prob", (0.05, 0.1, 0.2)),
    ("chembench_claude3.5_verbalized.jsonl", "verbalized", (0.15, 0.2, 0.3)),
    ("chembench_gpt-4o_verbalized.jsonl", "verbalized", (0.3, 0.35)),
    ("chembench_llama-3.1-8b-instruct_tokenprob.jsonl", "token_prob", (0.35, 0.4, 0.5)),
    ("rankcal_gpt-3.5-turbo_nq-open_T1.0_first1500q.jsonl", NQ, (0.25, 0.3, 0.4)),
    ("rankcal_Llama-2-7b-chat-hf_nq-open_T1.0_first1500q.jsonl", NQ, (0.5, 0.6)),
]


@dataclass(frozen=True)
class Outcome:
    answer_rate: float
    error_rate: float | None
    limit: float

    @property
    def exceeds(self) -> bool:
        return self.error_rate is not None and self.error_rate > self.limit


def rates_at(p: NDArray[np.float64], correct: NDArray[np.bool_], threshold: float | None,
             limit: float) -> Outcome:
    if threshold is None:
        return Outcome(0.0, None, limit)
    answered = p >= threshold
    error = float(1.0 - correct[answered].mean()) if answered.any() else None
    return Outcome(float(answered.mean()), error, limit)


def hindsight_answer_rate(p: NDArray[np.float64], correct: NDArray[np.bool_],
                          limit: float) -> float:
    """Largest answer rate of any threshold whose test error among answered is within A."""
    curve = selective_error_curve(p, correct)
    within = np.flatnonzero(curve.errors <= limit * curve.answered)
    return float(curve.answered[within[-1]] / p.size) if within.size else 0.0


def split(data: CalibrationData, seed: int) -> tuple[CalibrationData, ...]:
    groups = np.random.default_rng(seed).permutation(np.unique(data.groups))
    cuts = [round(FIT * groups.size), round((FIT + CERTIFY) * groups.size)]
    parts = np.split(groups, cuts)
    return tuple(data.subset(np.isin(data.groups, part)) for part in parts)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=100)
    args = parser.parse_args(argv)
    print(f"# risk limits, C = {CONFIDENCE}, {args.splits} group splits "
          f"(fit {FIT:.0%} / certify {CERTIFY:.0%} / test {1 - FIT - CERTIFY:.0%})")
    print(f"{provenance()}\n")
    print("| data | base error | A | test error > A | certified: answer rate | test error "
          "| none certified | hindsight answer rate | ratio | cost-only (p ≥ 1−A): answer rate "
          "| its test error > A |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, fields, limits in CASES:
        specs = [parse_score_spec(field) for field in fields.split(",")]
        data = read_calibration_data(SHIPPED / name, scores=specs, label="correct", group="group")
        results: dict[float, list[tuple[Outcome, float, Outcome, bool]]] = {a: [] for a in limits}
        for seed in range(args.splits):
            fit_part, certify_part, test_part = split(data, seed)
            calibrator = fit_calibrator(fit_part).calibrator
            columns = [data.specs.index(spec) for spec in calibrator.features]
            p_test = calibrator.predict(test_part.scores[:, columns])
            for limit in limits:
                outcome = certify_calibrator(
                    calibrator, certify_part, max_error_rate=limit, confidence=CONFIDENCE,
                    group_field="group", seed=seed,
                )
                threshold = outcome.certification.threshold
                cost = optimal_threshold(wrong_answer_cost=(1.0 - limit) / limit)
                results[limit].append((
                    rates_at(p_test, test_part.correct, threshold, limit),
                    hindsight_answer_rate(p_test, test_part.correct, limit),
                    rates_at(p_test, test_part.correct, cost, limit),
                    threshold is None,
                ))
        base = 1.0 - float(data.correct.mean())
        for limit, rows in results.items():
            certified = [r[0] for r in rows]
            hindsight = float(np.mean([r[1] for r in rows]))
            answer = float(np.mean([o.answer_rate for o in certified]))
            errors = [o.error_rate for o in certified if o.error_rate is not None]
            cost = [r[2] for r in rows]
            print(
                f"| {Path(name).stem} | {base:.3f} | {limit:.2f} "
                f"| {np.mean([o.exceeds for o in certified]):.1%} | {answer:.3f} "
                f"| {np.mean(errors) if errors else float('nan'):.3f} "
                f"| {np.mean([r[3] for r in rows]):.0%} | {hindsight:.3f} "
                f"| {answer / hindsight if hindsight else float('nan'):.2f} "
                f"| {np.mean([o.answer_rate for o in cost]):.3f} "
                f"| {np.mean([o.exceeds for o in cost]):.1%} |",
                flush=True,
            )


if __name__ == "__main__":
    main(sys.argv[1:])
