"""Abstention parity across segments: rates with intervals, the largest gap, and a permutation test.

Per segment, over its decisions: the abstention rate (withheld / decisions); over its labelled
decisions: over-abstention (withheld but correct / labelled) and under-abstention (answered but
wrong / labelled), each with a Wilson score 95 % interval (Wilson 1927; Brown, Cai & DasGupta
2001 recommend it over the normal interval for small counts and rates near 0 or 1).

The largest gap is the highest segment rate minus the lowest, among segments with enough data.
Whether it is larger than chance would give is a permutation test (Good 2005, ch. 3): the
segments are shuffled across requests (a request's choices stay together, and segment sizes in
requests are kept), the largest gap is recomputed each time, and the p-value is the share of
shuffles with a gap at least as large, ``(1 + #{gap* >= gap}) / (1 + shuffles)``. Taking the
maximum over segments in every shuffle accounts for having picked the two extreme segments,
which a two-proportion test between them would not.

Pure functions: arrays in, numbers out; randomness only from the given seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "DEFAULT_PERMUTATIONS",
    "RATES",
    "ParityReport",
    "RateGap",
    "SegmentRates",
    "parity",
    "wilson_interval",
]

DEFAULT_PERMUTATIONS = 2000
RATES = ("abstention", "over_abstention", "under_abstention")
_Z95 = 1.959963984540054


def wilson_interval(successes: float, trials: float, *, z: float = _Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion.

    Parameters
    ----------
    successes, trials : float
        Counts, ``0 <= successes <= trials``.
    z : float
        The normal quantile (1.96 for 95 %).

    Returns
    -------
    tuple of float
        ``(centre ∓ half) / (1 + z²/n)`` with ``centre = p̂ + z²/2n`` and
        ``half = z √(p̂(1 − p̂)/n + z²/4n²)``; ``(nan, nan)`` for no trials.
    """
    if trials <= 0:
        return math.nan, math.nan
    p = successes / trials
    z2 = z * z
    denominator = 1.0 + z2 / trials
    centre = p + z2 / (2 * trials)
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials))
    # At 0 and n successes the ends are exactly 0 and 1; the formula leaves rounding there.
    low = 0.0 if successes <= 0 else max(0.0, (centre - half) / denominator)
    high = 1.0 if successes >= trials else min(1.0, (centre + half) / denominator)
    return low, high


@dataclass(frozen=True)
class SegmentRates:
    """One segment's counts and rates (NaN where there is nothing to divide by)."""

    segment: str
    decisions: int
    abstained: int
    labelled: int
    over: int
    """Withheld, and labelled correct."""
    under: int
    """Answered, and labelled wrong."""
    enough: bool
    """At least ``min_labels`` labelled decisions: its labelled rates count towards the gaps."""

    def rate(self, name: str) -> float:
        numerator, denominator = self._counts(name)
        return numerator / denominator if denominator else math.nan

    def interval(self, name: str) -> tuple[float, float]:
        return wilson_interval(*self._counts(name))

    def _counts(self, name: str) -> tuple[int, int]:
        if name == "abstention":
            return self.abstained, self.decisions
        if name == "over_abstention":
            return self.over, self.labelled
        if name == "under_abstention":
            return self.under, self.labelled
        raise ValueError(f"unknown rate {name!r}; expected one of {', '.join(RATES)}")


@dataclass(frozen=True)
class RateGap:
    """The largest gap of one rate between segments, and its permutation p-value."""

    rate: str
    highest: str | None
    lowest: str | None
    gap: float
    p_value: float
    compared: int
    """Segments with enough data to compare."""


@dataclass(frozen=True)
class ParityReport:
    """Per-segment rates, the largest gap of each rate, and how the test was run."""

    segments: list[SegmentRates]
    gaps: dict[str, RateGap]
    min_labels: int
    permutations: int
    seed: int


def _per_segment(segment_of_group: NDArray[np.int64], counts: NDArray[np.float64],
                 n_segments: int) -> NDArray[np.float64]:
    """Sum each count column over the groups of each segment: shape (n_segments, columns)."""
    return np.stack([np.bincount(segment_of_group, weights=counts[:, j], minlength=n_segments)
                     for j in range(counts.shape[1])], axis=1)


_COLUMNS = {"abstention": (1, 0), "over_abstention": (3, 2), "under_abstention": (4, 2)}


def _range(sums: NDArray[np.float64], eligible: NDArray[np.bool_], rate: str) -> float:
    numerator, denominator = _COLUMNS[rate]
    rates = sums[eligible, numerator] / sums[eligible, denominator]
    return float(rates.max() - rates.min()) if rates.size >= 2 else math.nan


def parity(
    segments: Sequence[str],
    answered: Sequence[bool],
    correct: Sequence[float | None],
    groups: Sequence[str],
    *,
    min_labels: int = 30,
    permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = 0,
) -> ParityReport:
    """Abstention, over- and under-abstention per segment, and the largest gaps.

    Parameters
    ----------
    segments : sequence of str
        Each decision's segment (one per request: every choice of a group shares it).
    answered : sequence of bool
        Each decision as made.
    correct : sequence of float or None
        1/0 (or True/False) when labelled, None when not.
    groups : sequence of str
        The request each decision belongs to: permutations move requests, not choices.
    min_labels : int, default=30
        A segment needs this many decisions (for the abstention rate) or labelled decisions
        (for over- and under-abstention) to count towards that rate's gap.
    permutations : int, default=2000
        Shuffles for the p-values (0: no test, NaN p-values).
    seed : int, default=0

    Returns
    -------
    ParityReport
    """
    n = len(segments)
    if not (len(answered) == len(correct) == len(groups) == n):
        raise ValueError("segments, answered, correct and groups must have one length")
    names = sorted(set(segments))
    counts, segment_of_group = _request_counts(segments, answered, correct, groups, names)
    sums = _per_segment(segment_of_group, counts, len(names))
    rates = [
        SegmentRates(name, int(sums[i, 0]), int(sums[i, 1]), int(sums[i, 2]), int(sums[i, 3]),
                     int(sums[i, 4]), bool(sums[i, 2] >= min_labels))
        for i, name in enumerate(names)
    ]
    eligible = {
        "abstention": sums[:, 0] >= min_labels,
        "over_abstention": sums[:, 2] >= min_labels,
        "under_abstention": sums[:, 2] >= min_labels,
    }
    observed = {rate: _range(sums, eligible[rate], rate) for rate in RATES}
    exceed = _exceedances(counts, segment_of_group, len(names), eligible, observed,
                          permutations=permutations, seed=seed)
    gaps = {rate: _rate_gap(rate, rates, eligible[rate], observed[rate], exceed[rate],
                            permutations) for rate in RATES}
    return ParityReport(rates, gaps, min_labels, permutations, seed)


def _request_counts(
    segments: Sequence[str], answered: Sequence[bool], correct: Sequence[float | None],
    groups: Sequence[str], names: Sequence[str],
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Per request (group, sorted by name): decisions, abstained, labelled, over-abstained and
    under-abstained; and the index in ``names`` of each request's segment."""
    segment_ids = {name: i for i, name in enumerate(names)}
    group_names = sorted(set(groups))
    group_ids = {name: i for i, name in enumerate(group_names)}
    counts = np.zeros((len(group_names), 5))
    segment_of_group = np.zeros(len(group_names), dtype=np.int64)
    for segment, was_answered, label, group in zip(segments, answered, correct, groups,
                                                   strict=True):
        g = group_ids[group]
        segment_of_group[g] = segment_ids[segment]
        row = counts[g]
        row[0] += 1
        row[1] += not was_answered
        if label is not None and not (isinstance(label, float) and math.isnan(label)):
            row[2] += 1
            row[3] += (not was_answered) and bool(label)
            row[4] += was_answered and not bool(label)
    return counts, segment_of_group


def _exceedances(
    counts: NDArray[np.float64], segment_of_group: NDArray[np.int64], n_segments: int,
    eligible: dict[str, NDArray[np.bool_]], observed: dict[str, float], *,
    permutations: int, seed: int,
) -> dict[str, int]:
    """Per rate, how many shuffles of the segments across requests give a gap at least the
    observed one: the permutation test's count ``#{gap* >= gap}``."""
    exceed = dict.fromkeys(RATES, 0)
    rng = np.random.default_rng(seed)
    for _ in range(permutations):
        shuffled = _per_segment(rng.permutation(segment_of_group), counts, n_segments)
        for rate in RATES:
            if not math.isnan(observed[rate]):
                # A permutation can leave an eligible segment without labels: its rate is
                # undefined there, so it is left out of that shuffle's range.
                keep = eligible[rate] & (shuffled[:, _COLUMNS[rate][1]] > 0)
                gap = _range(shuffled, keep, rate)
                exceed[rate] += bool(gap >= observed[rate] - 1e-12)
    return exceed


def _rate_gap(rate: str, rates: Sequence[SegmentRates], eligible: NDArray[np.bool_],
              observed: float, exceed: int, permutations: int) -> RateGap:
    """The highest and lowest eligible segments of one rate, its gap and its p-value
    ``(1 + #{gap* >= gap}) / (1 + shuffles)``."""
    candidates = [r for r, ok in zip(rates, eligible.tolist(), strict=True) if ok]
    values = [r.rate(rate) for r in candidates]
    highest = candidates[int(np.argmax(values))].segment if len(values) >= 2 else None
    lowest = candidates[int(np.argmin(values))].segment if len(values) >= 2 else None
    p_value = ((1 + exceed) / (1 + permutations)
               if permutations and not math.isnan(observed) else math.nan)
    return RateGap(rate, highest, lowest, observed, p_value, len(candidates))
