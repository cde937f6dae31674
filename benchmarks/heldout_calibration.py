"""Held-out check of ``auto`` calibration against scikit-learn's plain isotonic regression.

For each file: split the questions in half (stratified, never splitting a group), fit
``calibrate fit --method auto`` on one half and evaluate on the other, next to
``sklearn.isotonic.IsotonicRegression`` fitted on the same half on each single score (the best
one is reported). Also fits the multi-score ``binned_logistic`` where a file has several scores.

Run: python benchmarks/heldout_calibration.py [FILE:SCORE,SCORE ...]
(default: the shipped data in data/calibration/)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.model_selection import StratifiedGroupKFold

from calibrators.dataset import CalibrationData, read_calibration_data
from calibrators.metrics import bas, expected_calibration_error
from calibrators.selection import fit_calibrator
from calibrators.signals import parse_score_spec

SHIPPED = Path(__file__).resolve().parents[1] / "data" / "calibration"
NQ = "token_prob,mean_logprob,sum_logprob,agreement"
DEFAULT = [
    f"{SHIPPED}/rankcal_gpt-3.5-turbo_nq-open_T1.0_first1500q.jsonl:{NQ}",
    f"{SHIPPED}/rankcal_Llama-2-7b-chat-hf_nq-open_T1.0_first1500q.jsonl:{NQ}",
    f"{SHIPPED}/chembench_gpt-4o-2024-08-06_tokenprob.jsonl:token_prob",
    f"{SHIPPED}/chembench_llama-3.1-8b-instruct_tokenprob.jsonl:token_prob",
    f"{SHIPPED}/chembench_gpt-4o_verbalized.jsonl:verbalized",
    f"{SHIPPED}/chembench_claude3.5_verbalized.jsonl:verbalized",
]


def halves(data: CalibrationData) -> tuple[CalibrationData, CalibrationData]:
    splitter = StratifiedGroupKFold(n_splits=2, shuffle=True, random_state=0)
    fit_rows, eval_rows = next(splitter.split(data.scores, data.correct, groups=data.groups))
    return data.subset(fit_rows), data.subset(eval_rows)


def predict(calibrator: object, data: CalibrationData) -> np.ndarray:
    columns = [data.specs.index(spec) for spec in calibrator.features]  # type: ignore[attr-defined]
    return calibrator.predict(data.scores[:, columns])  # type: ignore[attr-defined, no-any-return]


def main(arguments: list[str]) -> None:
    print("| data | eval rows | auto | BAS auto | BAS best isotonic | Δ | ECE auto | "
          "BAS binned_logistic |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for argument in arguments or DEFAULT:
        path, _, fields = argument.rpartition(":")
        specs = [parse_score_spec(f) for f in fields.split(",")]
        data = read_calibration_data(path, scores=specs, label="correct", group="group")
        fit_part, eval_part = halves(data)
        outcome = fit_calibrator(fit_part)
        p = predict(outcome.calibrator, eval_part)
        auto_bas = bas(p, eval_part.correct)
        isotonic = max(
            bas(IsotonicRegression(out_of_bounds="clip").fit(fit_part.scores[:, j],
                fit_part.correct).predict(eval_part.scores[:, j]), eval_part.correct)
            for j in range(len(specs))
        )
        multi = "–"
        if len(specs) > 1:
            model = fit_calibrator(fit_part, method="binned_logistic").calibrator
            multi = f"{bas(predict(model, eval_part), eval_part.correct):.4f}"
        print(f"| {Path(path).stem} | {eval_part.n_rows} | {outcome.selected.candidate.name} "
              f"| {auto_bas:.4f} | {isotonic:.4f} | {auto_bas - isotonic:+.4f} "
              f"| {expected_calibration_error(p, eval_part.correct):.4f} | {multi} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
