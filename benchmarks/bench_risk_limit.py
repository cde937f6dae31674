"""Risk limits on the shipped real data: does a certified threshold keep its promise? At what cost?

For each file and several limits A (chosen between the error rate of the model's most confident
answers and its overall error rate, so that each is neither trivial nor impossible), C = 0.95, over
many random splits of the questions (groups never straddle parts):

1. fit a calibrator (``calibrate fit --method auto``) on 20 % of the questions,
2. certify on 30 % exactly as ``basguard calibrate certify`` does (one row per question; the
   calibrator's training curve chooses where testing starts),
3. measure on the remaining 50 %, every row, as traffic would see it.

Columns:

* how often the error among answered on the unseen test part exceeds A. The guarantee is about
  the true rate; the test part's own sampling noise adds to it (see the docs);
* the same, exactly: the certify and test parts together are taken as the population, the
  certify sample is drawn from it with replacement (one random answer per drawn question), and
  the true error among answered is that of the whole population: the guarantee allows 5 %;
* the mean answer rate and test error at the certified threshold, and how often nothing was
  certified;
* the answer rate of the best threshold chosen with hindsight on the test part that meets A, and
  the ratio;
* what an oracle would expect to answer that knows the population's error curve (the certify and
  test parts together) and spends the certify part's labels on one exact binomial test at the
  threshold that maximises answer rate times the chance of passing, and its ratio to the
  hindsight answer rate: where the oracle keeps less than half, no single test with these labels
  can;
* the labelled questions it would take to certify half that answer rate, were the test part's
  rates at that threshold those of the population (median over the splits; "–" when that
  threshold's error is not below A);
* the answer rate when 30 % of the labels choose the start instead (calibrators from before fits
  recorded their training curve);
* the cost-optimal threshold alone for the tenant whose wrong answer costs ``λ = (1 - A) / A``
  (answer iff p >= 1 - A): its answer rate and how often its test error exceeds A.

Run: python benchmarks/bench_risk_limit.py [--splits N]
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from provenance import REPOSITORY, provenance
from scipy.stats import binom

from calibrators.certification import certify_calibrator, start_curve
from calibrators.dataset import CalibrationData, read_calibration_data
from calibrators.selection import fit_calibrator
from calibrators.signals import parse_score_spec
from policies.risk_control import (
    SelectiveErrorCurve,
    certify_selective_risk,
    labels_needed,
    selective_error_curve,
)
from policies.utility import optimal_threshold

SHIPPED = REPOSITORY / "data" / "calibration"
NQ = "token_prob,mean_logprob,sum_logprob,agreement"
CONFIDENCE = 0.95
FIT, CERTIFY = 0.2, 0.3  # the rest is the test part

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


@dataclass(frozen=True)
class SplitResult:
    certified: Outcome
    true_exceeds: bool
    hindsight: float
    oracle: float
    labels_for_half: float
    held_out_start: float
    cost_only: Outcome


def rates_at(p: NDArray[np.float64], correct: NDArray[np.bool_], threshold: float | None,
             limit: float) -> Outcome:
    if threshold is None:
        return Outcome(0.0, None, limit)
    answered = p >= threshold
    error = float(1.0 - correct[answered].mean()) if answered.any() else None
    return Outcome(float(answered.mean()), error, limit)


def hindsight(p: NDArray[np.float64], correct: NDArray[np.bool_], limit: float
              ) -> tuple[float, float]:
    """The largest answer rate of any threshold whose test error among answered is within A,
    and the labelled questions that would certify half of it at the test part's rates there."""
    curve = selective_error_curve(p, correct)
    within = np.flatnonzero(curve.errors <= limit * curve.answered)
    if not within.size:
        return 0.0, math.inf
    best = curve.answered[within[-1]]
    half = int(np.searchsorted(curve.answered, best / 2))
    answered, errors = curve.answered[half], curve.errors[half]
    needed = labels_needed(max_error_rate=limit, confidence=CONFIDENCE,
                           observed_error_rate=errors / answered)
    return best / p.size, math.inf if needed is None else needed / (answered / p.size)


def pass_probability(labels: int, answer_rate: float, error_rate: float, limit: float) -> float:
    """The chance that ``labels`` independent questions pass the exact binomial test of "error
    among answers <= A" at a threshold answering ``answer_rate`` with ``error_rate`` wrong."""
    answered = np.arange(labels + 1)
    # Most errors that pass with n answers: the largest k with P(Binomial(n, A) <= k) <= δ.
    delta = 1.0 - CONFIDENCE
    most = binom.ppf(delta, answered, limit)
    most = np.where(binom.cdf(most, answered, limit) <= delta, most, most - 1)
    passes = np.where(most >= 0, binom.cdf(most, answered, error_rate), 0.0)
    return float(np.sum(binom.pmf(answered, labels, answer_rate) * passes))


def oracle_answer_rate(p: NDArray[np.float64], correct: NDArray[np.bool_], labels: int,
                       limit: float) -> float:
    """The largest expected answer rate of one exact test at one threshold, chosen knowing the
    population ``p``, ``correct`` (at 200 thresholds, evenly spread in answers)."""
    curve = selective_error_curve(p, correct).thinned(200)
    best = 0.0
    for answered, errors in zip(curve.answered, curve.errors, strict=True):
        rate, error = answered / p.size, errors / answered
        if error < limit:
            best = max(best, rate * pass_probability(labels, rate, error, limit))
    return best


def true_exceeds(p: NDArray[np.float64], correct: NDArray[np.bool_],
                 rows_of: list[NDArray[np.intp]], curve: SelectiveErrorCurve | None, draws: int,
                 limit: float, seed: int) -> bool:
    """Certify on ``draws`` questions drawn with replacement from a population (``p``,
    ``correct``; ``rows_of`` each question's rows), one random answer each, the start chosen
    from ``curve``; does the certified threshold's error among answered on the whole population
    exceed A?"""
    rng = np.random.default_rng(seed)
    picks = np.array([rng.choice(rows_of[g]) for g in rng.integers(0, len(rows_of), draws)])
    result = certify_selective_risk(p[picks], correct[picks], max_error_rate=limit,
                                    confidence=CONFIDENCE, start_curve=curve)
    return rates_at(p, correct, result.threshold, limit).exceeds


def rows_by_group(groups: NDArray[np.generic]) -> list[NDArray[np.intp]]:
    """The row indices of each distinct group."""
    _, group_of = np.unique(groups, return_inverse=True)
    return np.split(np.argsort(group_of, kind="stable"), np.cumsum(np.bincount(group_of))[:-1])


def split(data: CalibrationData, seed: int) -> tuple[CalibrationData, ...]:
    groups = np.random.default_rng(seed).permutation(np.unique(data.groups))
    cuts = [round(FIT * groups.size), round((FIT + CERTIFY) * groups.size)]
    parts = np.split(groups, cuts)
    return tuple(data.subset(np.isin(data.groups, part)) for part in parts)


def run_split(data: CalibrationData, limits: tuple[float, ...], seed: int
              ) -> dict[float, SplitResult]:
    fit_part, certify_part, test_part = split(data, seed)
    calibrator = fit_calibrator(fit_part).calibrator
    assert calibrator.training is not None and calibrator.training.curve is not None
    without_curve = replace(calibrator, training=calibrator.training.model_copy(
        update={"curve": None}))
    columns = [data.specs.index(spec) for spec in calibrator.features]
    p_test = calibrator.predict(test_part.scores[:, columns])
    pool = data.subset(~np.isin(data.groups, fit_part.groups))
    p_pool = calibrator.predict(pool.scores[:, columns])
    pool_rows = rows_by_group(pool.groups)
    curve = start_curve(calibrator)
    results = {}
    for limit in limits:
        certified = certify_calibrator(
            calibrator, certify_part, max_error_rate=limit, confidence=CONFIDENCE,
            group_field="group", seed=seed,
        ).certification
        held_out = certify_calibrator(
            without_curve, certify_part, max_error_rate=limit, confidence=CONFIDENCE,
            group_field="group", seed=seed,
        ).certification
        best, for_half = hindsight(p_test, test_part.correct, limit)
        cost = optimal_threshold(wrong_answer_cost=(1.0 - limit) / limit)
        results[limit] = SplitResult(
            certified=rates_at(p_test, test_part.correct, certified.threshold, limit),
            true_exceeds=true_exceeds(p_pool, pool.correct, pool_rows, curve, certified.labels,
                                      limit, seed),
            hindsight=best,
            oracle=oracle_answer_rate(p_pool, pool.correct, certified.labels, limit),
            labels_for_half=for_half,
            held_out_start=rates_at(p_test, test_part.correct, held_out.threshold,
                                    limit).answer_rate,
            cost_only=rates_at(p_test, test_part.correct, cost, limit),
        )
    return results


def row(name: str, base: float, labels: int, limit: float, rows: list[SplitResult]) -> str:
    answer = float(np.mean([r.certified.answer_rate for r in rows]))
    errors = [r.certified.error_rate for r in rows if r.certified.error_rate is not None]
    best = float(np.mean([r.hindsight for r in rows]))
    oracle = float(np.mean([r.oracle for r in rows]))
    for_half = float(np.median([r.labels_for_half for r in rows]))
    return (
        f"| {Path(name).stem} | {base:.3f} | {labels} | {limit:.2f} "
        f"| {np.mean([r.certified.exceeds for r in rows]):.1%} "
        f"| {np.mean([r.true_exceeds for r in rows]):.1%} | {answer:.3f} "
        f"| {np.mean(errors) if errors else float('nan'):.3f} "
        f"| {np.mean([r.certified.error_rate is None for r in rows]):.0%} | {best:.3f} "
        f"| {answer / best if best else float('nan'):.2f} "
        f"| {oracle:.3f} | {oracle / best if best else float('nan'):.2f} "
        f"| {'–' if math.isinf(for_half) else f'{for_half:,.0f}'} "
        f"| {np.mean([r.held_out_start for r in rows]):.3f} "
        f"| {np.mean([r.cost_only.answer_rate for r in rows]):.3f} "
        f"| {np.mean([r.cost_only.exceeds for r in rows]):.1%} |"
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=100)
    args = parser.parse_args(argv)
    print(f"# risk limits, C = {CONFIDENCE}, {args.splits} group splits "
          f"(fit {FIT:.0%} / certify {CERTIFY:.0%} / test {1 - FIT - CERTIFY:.0%})")
    print(f"{provenance()}\n")
    print("| data | base error | labels | A | test error > A | true error > A "
          "| certified: answer rate | test error | none certified | hindsight answer rate "
          "| ratio | oracle: answer rate | oracle ratio | labels for half "
          "| held-out start: answer rate "
          "| cost-only (p ≥ 1−A): answer rate | its test error > A |")
    print("|---|" + "---:|" * 16)
    for name, fields, limits in CASES:
        specs = [parse_score_spec(field) for field in fields.split(",")]
        data = read_calibration_data(SHIPPED / name, scores=specs, label="correct", group="group")
        results: dict[float, list[SplitResult]] = {limit: [] for limit in limits}
        for seed in range(args.splits):
            for limit, result in run_split(data, limits, seed).items():
                results[limit].append(result)
        base = 1.0 - float(data.correct.mean())
        labels = round(CERTIFY * np.unique(data.groups).size)
        for limit, rows in results.items():
            print(row(name, base, labels, limit, rows), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
