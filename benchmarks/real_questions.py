"""Real traffic: SmolLM2 answers real TriviaQA and MMLU questions through basguard.

For each shipped question set (``data/questions/``), in one run:

1. ``basguard collect``: the first N questions go through basguard (shadow mode) to SmolLM2-135M
   under llama.cpp, and each answer is graded against the set's accepted answer;
2. the questions are split in half (stratified; one question is one group), ``auto`` is fitted
   on one half and judged on the other;
3. on the held-out half, each demo tenant's rule (answer iff p >= its threshold) is scored
   against the two guardrails that need no confidence: always answer and never answer. The
   over-abstention rate is the share of questions withheld although the answer was right, the
   under-abstention rate the share answered although wrong.

Prints one Markdown table per step; the README carries them.

Run: python benchmarks/real_questions.py [--questions N] [--threads N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

from heldout_calibration import halves, predict  # noqa: E402  (this folder is on sys.path)

from calibrators.dataset import CalibrationData, read_calibration_data  # noqa: E402
from calibrators.metrics import accuracy, auroc, bas, expected_calibration_error  # noqa: E402
from calibrators.selection import fit_calibrator  # noqa: E402
from calibrators.signals import parse_score_spec  # noqa: E402
from policies.profiles import PRESETS  # noqa: E402
from policies.utility import realized_utility  # noqa: E402
from proxy.tools.collect import run_collect  # noqa: E402
from proxy.tools.demo import write_demo_config  # noqa: E402
from proxy.tools.local_model import run_local_model  # noqa: E402

QUESTION_SETS = REPOSITORY / "data" / "questions"
SETS = ("triviaqa", "college-cs", "college-biology", "clinical-knowledge")
SCORES = ("token_prob", "min_token_prob", "first_token_prob", "mean_topk_margin:real",
          "token_count:real")
TENANTS = {"explorer": "casual", "clinic": "critical"}


def rule_row(name: str, answer: np.ndarray, correct: np.ndarray, wrong_cost: float,
             abstain_cost: float) -> str:
    utility = realized_utility(correct, answer, wrong_answer_cost=wrong_cost,
                               abstain_cost=abstain_cost)
    over = float(np.mean(~answer & correct))
    under = float(np.mean(answer & ~correct))
    return (f"| {name} | {np.mean(~answer):.2f} | {over:.3f} | {under:.3f} | "
            f"{float(np.mean(utility)):+.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--questions", type=int, default=300, help="per set (TriviaQA has 10k)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    specs = [parse_score_spec(s) for s in SCORES]
    studied: dict[str, tuple[CalibrationData, np.ndarray]] = {}
    with tempfile.TemporaryDirectory() as tmp, run_local_model(
        threads=args.threads, log=Path(tmp) / "llama.log"
    ) as model_url:
        config = write_demo_config(Path(tmp), model_url)
        for name in SETS:
            records = Path(tmp) / f"{name}.jsonl"
            run_collect(config, QUESTION_SETS / f"{name}.csv", records, "smollm2",
                        limit=args.questions)
            data = read_calibration_data(records, scores=specs, label="correct", group="group")
            fit_part, eval_part = halves(data)
            calibrator = fit_calibrator(fit_part).calibrator
            studied[name] = (eval_part, predict(calibrator, eval_part))
            print(f"{name}: {data.n_rows} answers, {calibrator.method}", flush=True)

    print("\n| set | held-out answers | accuracy | AUROC | BAS | ECE |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (data, p) in studied.items():
        print(f"| {name} | {data.n_rows} | {accuracy(data.correct):.3f} | "
              f"{auroc(p, data.correct):.3f} | {bas(p, data.correct):+.4f} | "
              f"{expected_calibration_error(p, data.correct):.3f} |")
    for name, (data, p) in studied.items():
        correct = data.correct.astype(bool)
        print(f"\n{name} (held-out):\n")
        print("| rule | abstention rate | over-abstention | under-abstention | utility per "
              "question |")
        print("|---|---:|---:|---:|---:|")
        for tenant, profile in TENANTS.items():
            preset = PRESETS[profile]
            threshold = preset.threshold
            for rule, answer in ((f"{tenant}: basguard, p ≥ {threshold:.3f}", p >= threshold),
                                 (f"{tenant}: always answer", np.ones_like(correct)),
                                 (f"{tenant}: never answer", np.zeros_like(correct))):
                print(rule_row(rule, answer, correct, preset.wrong_answer_cost,
                               preset.abstain_cost))


if __name__ == "__main__":
    main()
