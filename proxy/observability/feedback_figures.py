"""The decision store's feedback totals summed by bounded labels, for the scrape-time gauges.

Pure: rows in, sums out. The store keeps its totals by the tenant, model and segment each decision
was made with; the gauges label them with what the current config names (anything else counts as
``other``), so several rows can add up to one series.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from proxy.observability.labels import BIN_LABELS, OTHER
from proxy.store import OUTCOMES, FeedbackTotal, SegmentTotal

__all__ = ["FeedbackFigures", "Sums", "feedback_figures", "segment_outcomes"]

Sums = dict[tuple[str, ...], float]
"""A figure summed per label values (tenant, model, ...)."""


@dataclass(frozen=True)
class FeedbackFigures:
    """The labelled decisions' figures, each summed per its gauge's label values."""

    outcomes: Sums
    """Decisions by (tenant, model, outcome), every outcome of a (tenant, model) present."""
    utility: Sums
    """Realized utility by (tenant, model)."""
    bas_sum: Sums
    """BAS by (tenant, model), of the decisions made with a confidence."""
    bas_count: Sums
    """Decisions made with a confidence, by (tenant, model)."""
    bins: Sums
    """Decisions by (tenant, model, bin, correct), both ``correct`` values of a bin present."""
    bin_confidence: Sums
    """Confidences summed by (tenant, model, bin)."""


def feedback_figures(
    totals: Iterable[FeedbackTotal], tenant_label: Callable[[str], str],
    model_label: Callable[[str], str],
) -> FeedbackFigures:
    """``totals`` summed under their bounded tenant and model labels, zeros filled in.

    The zeros matter: PromQL drops a series missing on one side of a division or subtraction, so
    rates and calibration gaps would silently lose outcomes and bins.
    """
    outcomes: defaultdict[tuple[str, ...], float] = defaultdict(float)
    utility: defaultdict[tuple[str, ...], float] = defaultdict(float)
    bas_sum: defaultdict[tuple[str, ...], float] = defaultdict(float)
    bas_count: defaultdict[tuple[str, ...], float] = defaultdict(float)
    bins: defaultdict[tuple[str, ...], float] = defaultdict(float)
    bin_confidence: defaultdict[tuple[str, ...], float] = defaultdict(float)
    for total in totals:
        pair = (tenant_label(total.tenant), model_label(total.model))
        outcomes[(*pair, total.outcome)] += total.decisions
        utility[pair] += total.utility_sum
        if total.bin < 0:
            continue  # decided without confidence: no BAS, no reliability bin
        bas_sum[pair] += total.bas_sum
        bas_count[pair] += total.decisions
        correct = "true" if total.outcome.endswith("_correct") else "false"
        bins[(*pair, BIN_LABELS[total.bin], correct)] += total.decisions
        bin_confidence[(*pair, BIN_LABELS[total.bin])] += total.confidence_sum
    for tenant_model in {key[:2] for key in outcomes}:
        for outcome in OUTCOMES:
            outcomes[(*tenant_model, outcome)] += 0.0
    for tenant_model_bin in bin_confidence:
        for correct in ("true", "false"):
            bins[(*tenant_model_bin, correct)] += 0.0
    return FeedbackFigures(dict(outcomes), dict(utility), dict(bas_sum), dict(bas_count),
                           dict(bins), dict(bin_confidence))


def segment_outcomes(
    totals: Iterable[SegmentTotal], tenant_label: Callable[[str], str],
    segment_label: Callable[[str, str], str],
) -> Sums:
    """Labelled decisions by (tenant, segment, outcome), every outcome present (zeros included).

    A tenant no longer configured is left out: its segments are not known either.
    """
    counts: defaultdict[tuple[str, ...], float] = defaultdict(float)
    for total in totals:
        tenant = tenant_label(total.tenant)
        if tenant == OTHER:
            continue
        counts[(tenant, segment_label(total.tenant, total.segment), total.outcome)] += (
            total.decisions)
    for tenant, segment in {key[:2] for key in counts}:
        for outcome in OUTCOMES:
            counts[(tenant, segment, outcome)] += 0.0
    return dict(counts)
