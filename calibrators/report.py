"""Calibration reports: a BAS-paper-style table and figures for each data file.

For each file the raw confidence is compared with an ``auto`` calibrator's out-of-fold
predictions (grouped k-fold), so every calibrated figure is measured on rows the calibrator was
not fitted on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .dataset import read_calibration_data
from .evaluation import raw_confidence, raw_summary
from .selection import AUTO, DEFAULT_FOLDS, Progress, candidates_for, fit_calibrator
from .signals import ScoreSpec

__all__ = ["FileReport", "format_markdown_table", "report_file", "steps_for"]


@dataclass(frozen=True)
class FileReport:
    """Raw and out-of-fold calibrated figures of one file, and where its figures were saved."""

    name: str
    n: int
    accuracy: float
    raw_score: str
    selected: str
    raw: dict[str, float]
    calibrated: dict[str, float]
    reliability_png: str
    utility_png: str


def steps_for(scores: Sequence[ScoreSpec], n_folds: int = DEFAULT_FOLDS) -> int:
    """Progress steps of one file: a fit per ``auto`` candidate and fold, then the final fit."""
    return len(candidates_for(scores, AUTO)) * n_folds + 1


def report_file(
    path: str | Path,
    *,
    scores: Sequence[ScoreSpec],
    label: str,
    group: str | None,
    out_dir: Path,
    n_folds: int = DEFAULT_FOLDS,
    progress: Progress | None = None,
) -> FileReport:
    """Cross-validate ``auto`` on one file and draw its figures into ``out_dir``."""
    data = read_calibration_data(path, scores=scores, label=label, group=group)
    best = fit_calibrator(data, method=AUTO, n_folds=n_folds, progress=progress).selected
    assert best.oof is not None  # the selected candidate is always one that fitted
    spec, raw = raw_summary(data)
    _, raw_p = raw_confidence(data)
    stem = Path(path).name.removesuffix(".jsonl")
    confidences = {f"calibrated out-of-fold: {best.candidate.name}": best.oof}
    if raw_p is not None:
        confidences = {f"raw {spec.field}": raw_p, **confidences}
    out_dir.mkdir(parents=True, exist_ok=True)
    reliability_png = f"{stem}-reliability.png"
    utility_png = f"{stem}-utility.png"
    from .plots import plot_reliability, plot_utility_curve  # matplotlib loads only to plot

    plot_reliability(confidences, data.correct, out_dir / reliability_png, title=stem)
    plot_utility_curve(confidences, data.correct, out_dir / utility_png, title=stem)
    return FileReport(
        name=stem,
        n=data.n_rows,
        accuracy=float(data.correct.mean()),
        raw_score=str(spec),
        selected=best.candidate.name,
        raw=raw,
        calibrated=best.summary,
        reliability_png=reliability_png,
        utility_png=utility_png,
    )


def _cell(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.3f}"


def format_markdown_table(reports: Sequence[FileReport]) -> str:
    """The BAS paper's table: accuracy, BAS, ECE and AURC, raw and calibrated out-of-fold."""
    header = (
        "| data | n | accuracy | BAS raw | BAS calibrated | ECE raw | ECE calibrated "
        "| AURC raw | AURC calibrated | calibrator (auto) |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    )
    rows = []
    for r in reports:
        raw, cal = r.raw, r.calibrated
        rows.append(
            f"| {r.name} | {r.n} | {r.accuracy:.3f} "
            f"| {_cell(raw.get('bas'))} | {_cell(cal['bas'])} "
            f"| {_cell(raw.get('ece'))} | {_cell(cal['ece'])} "
            f"| {_cell(raw.get('aurc'))} | {_cell(cal['aurc'])} | {r.selected} |"
        )
    return header + "\n".join(rows) + "\n"
