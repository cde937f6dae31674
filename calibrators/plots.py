"""Figures for calibration reports: reliability diagrams and utility-versus-threshold curves."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI

import matplotlib.pyplot as plt
import numpy as np
from numpy.typing import NDArray

from .metrics import reliability_bins, utility_curve

__all__ = ["plot_reliability", "plot_utility_curve"]

Confidences = Mapping[str, NDArray[np.float64]]


def plot_reliability(
    confidences: Confidences,
    correct: NDArray[np.bool_],
    path: Path,
    *,
    title: str,
    n_bins: int = 10,
) -> None:
    """Observed accuracy against mean confidence per equal-width bin, one line per confidence."""
    fig, ax = plt.subplots(figsize=(5, 5), dpi=110)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    for label, p in confidences.items():
        bins = reliability_bins(p, correct, n_bins=n_bins)
        filled = bins.count > 0
        ax.plot(
            bins.mean_predicted[filled], bins.accuracy[filled], marker="o", markersize=4,
            label=label,
        )
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="observed accuracy", title=title)
    ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_utility_curve(
    confidences: Confidences, correct: NDArray[np.bool_], path: Path, *, title: str
) -> None:
    """Mean realized utility per request against the risk threshold t (wrong costs t/(1−t))."""
    thresholds = np.linspace(0.0, 0.99, 100)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    curves = {label: utility_curve(p, correct, thresholds) for label, p in confidences.items()}
    for label, curve in curves.items():
        ax.plot(thresholds, curve, label=label)
    ax.axhline(0.0, color="grey", linewidth=1)
    ax.set(
        xlabel="risk threshold t (answer iff p ≥ t; a wrong answer costs t/(1−t))",
        ylabel="realized utility per request",
        title=title,
    )
    # Near t = 1 a wrong answer costs ~100: clip the axis so the useful range stays readable.
    lowest = min(float(curve.min()) for curve in curves.values())
    ax.set_ylim(max(min(lowest, -1.0), -5.0), 1.0)
    ax.legend(loc="lower left", fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
