"""The console's figures as inline SVG: a reliability diagram and the simulator's curves.

Pure functions: numbers in, markup out; every text escaped. Each figure has a title and a
description for screen readers, and the numbers it draws are also in the page's tables.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from proxy.admin.models import ReliabilityBin

__all__ = ["curve_svg", "reliability_svg"]

_W, _H = 320, 240
_LEFT, _RIGHT, _TOP, _BOTTOM = 54, 12, 12, 36


def _x(value: float, width: int = _W) -> float:
    return _LEFT + value * (width - _LEFT - _RIGHT)


def _y(value: float, low: float = 0.0, high: float = 1.0, height: int = _H) -> float:
    span = (high - low) or 1.0
    return height - _BOTTOM - (value - low) / span * (height - _TOP - _BOTTOM)


def _axes(width: int, height: int, x_label: str, y_label: str,
          y_ticks: Sequence[tuple[float, str]], low: float, high: float) -> list[str]:
    parts = [f'<rect x="{_LEFT}" y="{_TOP}" width="{width - _LEFT - _RIGHT}" '
             f'height="{height - _TOP - _BOTTOM}" class="frame"/>']
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = _x(tick, width)
        parts.append(f'<text x="{x:.1f}" y="{height - _BOTTOM + 14}" class="tick" '
                     f'text-anchor="middle">{tick:g}</text>')
    for value, label in y_ticks:
        y = _y(value, low, high, height)
        parts.append(f'<text x="{_LEFT - 4}" y="{y + 3:.1f}" class="tick" '
                     f'text-anchor="end">{escape(label)}</text>')
    parts.append(f'<text x="{(_LEFT + width - _RIGHT) / 2:.1f}" y="{height - 4}" class="label" '
                 f'text-anchor="middle">{escape(x_label)}</text>')
    parts.append(f'<text x="12" y="{(_TOP + height - _BOTTOM) / 2:.1f}" class="label" '
                 f'text-anchor="middle" transform="rotate(-90 12 '
                 f'{(_TOP + height - _BOTTOM) / 2:.1f})">{escape(y_label)}</text>')
    return parts


def reliability_svg(bins: Sequence[ReliabilityBin], *, title: str) -> str:
    """Observed accuracy against mean confidence per bin, the diagonal being perfect
    calibration; each point's area grows with its bin's labelled decisions."""
    filled = [b for b in bins if b.decisions and b.mean_confidence is not None]
    total = sum(b.decisions for b in filled)
    description = (f"{total} labelled decisions in {len(filled)} confidence bins. " + "; ".join(
        f"confidence {b.low:g}-{b.high:g}: {b.decisions} labelled, "
        f"{100 * b.correct / b.decisions:.0f} % correct" for b in filled)
        if filled else "No labelled decisions with a confidence yet.")
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {_H}" role="img" '
             f'class="figure reliability"><title>{escape(title)}</title>'
             f'<desc>{escape(description)}</desc>']
    parts += _axes(_W, _H, "mean confidence", "share correct",
                   [(v, f"{v:g}") for v in (0.0, 0.5, 1.0)], 0.0, 1.0)
    parts.append(f'<line x1="{_x(0):.1f}" y1="{_y(0):.1f}" x2="{_x(1):.1f}" y2="{_y(1):.1f}" '
                 'class="diagonal"/>')
    points = []
    for b in filled:
        assert b.mean_confidence is not None
        accuracy = b.correct / b.decisions
        radius = 2.5 + 6.0 * math.sqrt(b.decisions / total)
        x, y = _x(b.mean_confidence), _y(accuracy)
        points.append((x, y))
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{radius:.1f}" class="bin">'
                     f'<title>{b.low:g}-{b.high:g}: {b.decisions} labelled, '
                     f'{100 * accuracy:.0f} % correct</title></circle>')
    if len(points) > 1:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        parts.append(f'<polyline points="{path}" class="observed"/>')
    if not filled:
        parts.append(f'<text x="{_x(0.5):.1f}" y="{_y(0.5):.1f}" text-anchor="middle" '
                     'class="empty">no labels yet</text>')
    parts.append("</svg>")
    return "".join(parts)


def _polyline(xs: Sequence[float], ys: Sequence[float | None], low: float, high: float,
              width: int, height: int, css: str) -> str:
    """One line per run of defined values (a gap where the figure is undefined)."""
    runs: list[list[str]] = [[]]
    for x, y in zip(xs, ys, strict=True):
        if y is None or not math.isfinite(y):
            runs.append([])
            continue
        runs[-1].append(f"{_x(x, width):.1f},{_y(y, low, high, height):.1f}")
    return "".join(f'<polyline points="{" ".join(run)}" class="{css}"/>'
                   for run in runs if len(run) > 1)


def curve_svg(
    thresholds: Sequence[float], utility: Sequence[float | None],
    coverage: Sequence[float | None], *, configured: float, simulated: float,
    optimum: float | None, title: str,
) -> str:
    """Utility per request (reference costs) and coverage against the threshold, with the
    configured, simulated and utility-optimal thresholds marked."""
    width, height = 640, 280
    defined = [u for u in utility if u is not None and math.isfinite(u)]
    low, high = (min(defined), max(defined)) if defined else (-1.0, 1.0)
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    pad = (high - low) * 0.05
    low, high = low - pad, high + pad
    marks = [("configured", configured), ("simulated", simulated)]
    if optimum is not None and math.isfinite(optimum):
        marks.append(("optimum", optimum))
    description = ("Realized utility per labelled request at the configured costs (solid) and "
                   "the share of decisions answered (dashed, right scale 0 to 1) against the "
                   "threshold; " + ", ".join(f"{name} threshold {value:.2f}"
                                             for name, value in marks) + ".")
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
             f'role="img" class="figure curve"><title>{escape(title)}</title>'
             f'<desc>{escape(description)}</desc>']
    ticks = [(low + (high - low) * k / 4, f"{low + (high - low) * k / 4:+.2f}") for k in range(5)]
    parts += _axes(width, height, "threshold", "utility / request", ticks, low, high)
    parts.append(_polyline(thresholds, utility, low, high, width, height, "utility"))
    scaled = [None if c is None else low + c * (high - low) for c in coverage]
    parts.append(_polyline(thresholds, scaled, low, high, width, height, "coverage"))
    for row, (name, value) in enumerate(marks):
        x = _x(value, width)
        parts.append(f'<line x1="{x:.1f}" y1="{_TOP}" x2="{x:.1f}" y2="{height - _BOTTOM}" '
                     f'class="mark {name}"><title>{name} {value:.3f}</title></line>')
        # A legend in the top right corner, clear of the lines it names.
        y = _TOP + 14 + 13 * row
        parts.append(f'<line x1="{width - _RIGHT - 130}" y1="{y - 4}" '
                     f'x2="{width - _RIGHT - 116}" y2="{y - 4}" class="mark {name}"/>')
        parts.append(f'<text x="{width - _RIGHT - 112}" y="{y}" class="tick {name}">'
                     f'{name} {value:.2f}</text>')
    parts.append(f'<text x="{_LEFT + 6}" y="{height - _BOTTOM - 6}" class="tick">'
                 'solid: utility; dashed: share answered (0 to 1)</text>')
    parts.append("</svg>")
    return "".join(parts)
