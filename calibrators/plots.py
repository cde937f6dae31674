"""Figures for calibration reports: reliability diagrams and utility-versus-threshold curves."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from numpy.typing import NDArray

from .metrics import reliability_bins, utility_curve

__all__ = ["plot_reliability", "plot_utility_curve", "reliability_figure", "utility_figure"]

Confidences = Mapping[str, NDArray[np.float64]]


LEGEND_WIDTH = 48
"""Characters per legend line: a multi-score calibrator's name is wrapped, not cut off."""


def plot_reliability(
    confidences: Confidences,
    correct: NDArray[np.bool_],
    path: Path,
    *,
    title: str,
    n_bins: int = 10,
) -> None:
    """Observed accuracy against mean confidence per equal-width bin, one line per confidence."""
    _save(reliability_figure(confidences, correct, title=title, n_bins=n_bins), path)


def reliability_figure(
    confidences: Confidences, correct: NDArray[np.bool_], *, title: str, n_bins: int = 10
) -> Figure:
    """The reliability diagram of :func:`plot_reliability`, not yet saved.

    Below it, how many answers fall in each bin, per curve, with the number written on each
    bar: a point that stands on 3 answers is noise, one on 300 is not.
    """
    fig, (ax, counts) = plt.subplots(2, 1, sharex=True, figsize=(5, 7.2), dpi=110,
                                     height_ratios=(3, 1), layout="constrained")
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1,
            label="perfect calibration")
    width = 1.0 / n_bins / (len(confidences) + 1)
    edges = np.linspace(0.0, 1.0, n_bins + 1)[:-1]
    for series, (label, p) in enumerate(confidences.items()):
        bins = reliability_bins(p, correct, n_bins=n_bins)
        filled = bins.count > 0
        (line,) = ax.plot(
            bins.mean_predicted[filled], bins.accuracy[filled], marker="o", markersize=4,
            label=_wrapped(label),
        )
        x = edges + width * (series + 1)
        bars = counts.bar(x, bins.count, width=width, color=line.get_color())
        counts.bar_label(bars, labels=[f"{int(n)}" if n else "" for n in bins.count],
                         fontsize="xx-small", padding=1)
    # A little room beyond [0, 1]: a point at 0 or 1 accuracy is drawn whole.
    ax.set(xlim=(0, 1), ylim=(-0.03, 1.03), ylabel="observed accuracy", title=_wrapped(title))
    counts.set(xlabel="confidence", ylabel="answers per bin")
    counts.set_ylim(0, max(1.0, counts.get_ylim()[1]) * 1.2)  # room for the numbers
    _legend_below(fig)
    return fig


def plot_utility_curve(
    confidences: Confidences, correct: NDArray[np.bool_], path: Path, *, title: str
) -> None:
    """Mean realized utility per request against the risk threshold t (wrong costs t/(1−t))."""
    _save(utility_figure(confidences, correct, title=title), path)


def utility_figure(confidences: Confidences, correct: NDArray[np.bool_], *, title: str) -> Figure:
    """The utility curve of :func:`plot_utility_curve`, not yet saved."""
    thresholds = np.linspace(0.0, 0.99, 100)
    fig, ax = plt.subplots(figsize=(6, 5), dpi=110, layout="constrained")
    curves = {label: utility_curve(p, correct, thresholds) for label, p in confidences.items()}
    for label, curve in curves.items():
        ax.plot(thresholds, curve, label=_wrapped(label))
    ax.axhline(0.0, color="grey", linewidth=1)
    ax.set(
        xlabel="risk threshold t (answer iff p ≥ t; a wrong answer costs t/(1−t))",
        ylabel="realized utility per request",
        title=_wrapped(title),
    )
    # Near t = 1 a wrong answer costs ~100: clip the axis so the useful range stays readable.
    lowest = min(float(curve.min()) for curve in curves.values())
    ax.set_ylim(max(min(lowest, -1.0), -5.0), 1.0)
    _legend_below(fig)
    return fig


def _wrapped(text: str) -> str:
    return "\n".join(textwrap.wrap(text, LEGEND_WIDTH, break_on_hyphens=False)) or text


def _legend_below(fig: Figure) -> None:
    # Below the axes, in the figure's own layout: it can neither hide the curves nor, however
    # long a calibrator's name, run off the figure.
    fig.legend(loc="outside lower center", fontsize="small", frameon=False)


def _save(fig: Figure, path: Path) -> None:
    try:
        fig.savefig(path)
    finally:
        plt.close(fig)
