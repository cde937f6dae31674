"""Single-row calibrator prediction: the cost the gateway pays per response.

Fits each method on a shipped real data file, then times ``FittedCalibrator.predict_one`` (the
request path) against scikit-learn's own single-row ``predict`` of a fitted
``IsotonicRegression`` and ``LogisticRegression`` measured in the same run. Target: <= 20 µs.

Run: python benchmarks/bench_calibrator_predict.py
"""

from __future__ import annotations

import timeit
from pathlib import Path

from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from calibrators.dataset import read_calibration_data
from calibrators.selection import candidates_for, fit_calibrator
from calibrators.signals import parse_score_spec

DATA = (
    Path(__file__).resolve().parents[1]
    / "data/calibration/rankcal_gpt-3.5-turbo_nq-open_T1.0_first1500q.jsonl"
)
SCORES = ("token_prob", "mean_logprob", "sum_logprob", "agreement")
TARGET_MICROSECONDS = 20.0


def microseconds_per_call(call: object, number: int = 20_000) -> float:
    timer = timeit.Timer(call)  # type: ignore[arg-type]
    best = min(timer.repeat(repeat=5, number=number))
    return best / number * 1e6


def main() -> None:
    specs = [parse_score_spec(s) for s in SCORES]
    data = read_calibration_data(DATA, scores=specs, label="correct", group="group")
    row = data.scores[123].tolist()
    X = data.scores
    y = data.correct

    iso = IsotonicRegression(out_of_bounds="clip").fit(X[:, 0], y)
    logistic = LogisticRegression().fit(X, y)
    one_col, one_row = X[123:124, 0], X[123:124]
    baselines = {
        "sklearn IsotonicRegression.predict (1 row)": microseconds_per_call(
            lambda: iso.predict(one_col)),
        "sklearn LogisticRegression.predict_proba (1 row)": microseconds_per_call(
            lambda: logistic.predict_proba(one_row)),
    }
    print(f"single-row predict on {DATA.name} ({data.n_rows} rows), best of 5 x 20,000 calls")
    print(f"{'calibrator':<52} {'µs/call':>8}  {'vs sklearn isotonic':>19}")
    reference = baselines["sklearn IsotonicRegression.predict (1 row)"]
    for name, micros in baselines.items():
        print(f"{name:<52} {micros:8.2f}  {reference / micros:18.1f}x")
    seen = set()
    for candidate in candidates_for(data.specs):
        if candidate.method in seen:
            continue
        seen.add(candidate.method)
        calibrator = fit_calibrator(data, method=candidate.method, n_folds=2).calibrator
        features = [row[data.specs.index(spec)] for spec in calibrator.features]
        micros = microseconds_per_call(lambda c=calibrator, f=features: c.predict_one(f))
        verdict = "ok" if micros <= TARGET_MICROSECONDS else "OVER TARGET"
        label = f"basguard {calibrator.method}({', '.join(calibrator.feature_names)})"
        print(f"{label:<52} {micros:8.2f}  {reference / micros:18.1f}x  {verdict}")
    print(f"target: <= {TARGET_MICROSECONDS:.0f} µs per single-row prediction")


if __name__ == "__main__":
    main()
