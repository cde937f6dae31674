"""``basguard parity``: one tenant's abstention rates per segment, from the decision store."""

from __future__ import annotations

import math
import time
from typing import Any

from policies.parity import RATES, ParityReport, parity
from proxy.store import DecisionStore
from proxy.usage import UsageError

__all__ = ["format_parity", "parity_from_store", "parity_json"]

_TITLES = {"abstention": "abstention rate", "over_abstention": "over-abstention",
           "under_abstention": "under-abstention"}
SIGNIFICANCE = 0.05


def parity_from_store(
    store: DecisionStore, tenant: str, *, since_seconds: float | None = None,
    min_labels: int = 30, permutations: int = 2000, seed: int = 0, now: float | None = None,
) -> ParityReport:
    """Parity over ``tenant``'s decisions (all, or those of the last ``since_seconds``)."""
    since = None if since_seconds is None else (now or time.time()) - since_seconds
    decisions = store.tenant_decisions(tenant, since=since)
    if not decisions:
        raise UsageError(f"{store.path}: no decisions of tenant {tenant!r}"
                         + (" in that window" if since is not None else ""))
    return parity(
        [d.segment for d in decisions], [d.answered for d in decisions],
        [None if d.correct is None else float(d.correct) for d in decisions],
        [d.id for d in decisions],
        min_labels=min_labels, permutations=permutations, seed=seed)


def _pct(value: float) -> str:
    return "  n/a" if not math.isfinite(value) else f"{100 * value:5.1f}"


def _with_interval(value: float, interval: tuple[float, float]) -> str:
    if not math.isfinite(value):
        return f"{'n/a':>21}"
    return f"{_pct(value)}% [{_pct(interval[0])}, {_pct(interval[1])}]"


def verdict(report: ParityReport, rate: str) -> str:
    """One line: the largest gap of ``rate`` and whether chance explains it."""
    gap = report.gaps[rate]
    title = _TITLES[rate]
    if gap.highest is None or gap.lowest is None:
        return (f"{title}: fewer than two segments with at least {report.min_labels} "
                f"{'decisions' if rate == 'abstention' else 'labelled decisions'}: no gap to test")
    if not report.permutations:
        return (f"{title}: largest gap {100 * gap.gap:.1f} points ({gap.highest} over "
                f"{gap.lowest}); not tested")
    beyond = gap.p_value < SIGNIFICANCE
    return (f"{title}: largest gap {100 * gap.gap:.1f} points ({gap.highest} over {gap.lowest}, "
            f"{gap.compared} segments compared); permutation p = {gap.p_value:.4f}: "
            + ("LARGER than chance would give" if beyond else "within what chance gives")
            + f" (at {SIGNIFICANCE})")


def format_parity(report: ParityReport, tenant: str) -> str:
    """The table ``basguard parity`` prints."""
    lines = [
        f"parity of tenant {tenant!r} across segments (95 % Wilson intervals; over- and "
        "under-abstention are shares of labelled decisions)",
        "",
        f"{'segment':<16} {'decisions':>9} {'labelled':>8}  {'abstention rate':<22} "
        f"{'over-abstention':<22} {'under-abstention':<22}",
    ]
    for seg in report.segments:
        note = "" if seg.enough else f"  too few labels (< {report.min_labels})"
        lines.append(
            f"{seg.segment:<16} {seg.decisions:>9} {seg.labelled:>8}  "
            + "  ".join(f"{_with_interval(seg.rate(r), seg.interval(r)):<22}" for r in RATES)
            + note)
    lines.append("")
    lines += [verdict(report, rate) for rate in RATES]
    lines.append(f"(permutation test: segments shuffled across requests {report.permutations} "
                 f"times, seed {report.seed}; the largest gap is recomputed in each shuffle)")
    return "\n".join(lines) + "\n"


def parity_json(report: ParityReport, tenant: str) -> dict[str, Any]:
    def finite(value: float) -> float | None:
        return value if math.isfinite(value) else None

    return {
        "tenant": tenant,
        "min_labels": report.min_labels,
        "test": {"method": "permutation of segments across requests, statistic: largest gap",
                 "permutations": report.permutations, "seed": report.seed,
                 "significance": SIGNIFICANCE},
        "segments": [
            {"segment": s.segment, "decisions": s.decisions, "labelled": s.labelled,
             "enough_labels": s.enough,
             **{rate: {"rate": finite(s.rate(rate)),
                       "interval": [finite(v) for v in s.interval(rate)]} for rate in RATES}}
            for s in report.segments
        ],
        "gaps": {
            rate: {"gap": finite(g.gap), "highest": g.highest, "lowest": g.lowest,
                   "p_value": finite(g.p_value), "compared": g.compared,
                   "beyond_chance": (g.p_value < SIGNIFICANCE) if math.isfinite(g.p_value)
                   else None}
            for rate, g in report.gaps.items()
        },
    }
