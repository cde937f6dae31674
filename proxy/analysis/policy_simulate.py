"""``basguard policy simulate``: load decisions, replay them (:mod:`policies.simulate`), report.

The decisions come from the decision store (one tenant's, optionally one model's, over a recent
window) or from a records file (``basguard collect``'s JSON Lines). The math is in
:mod:`policies.simulate`; this module reads, prints, writes JSON and draws the figure.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from calibrators.artifact import FittedCalibrator
from calibrators.dataset import parse_label
from calibrators.errors import DataError
from calibrators.json_lines import json_objects
from policies.simulate import (
    Candidate,
    ReplayData,
    Simulation,
    live_realized_utility_per_request,
    preset_candidates,
)
from proxy.store import DecisionStore
from proxy.store.feedback import StoredDecision
from proxy.usage import UsageError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from proxy.runtime.risk_limits import ModelRiskLimit

__all__ = [
    "NOTHING_ANSWERED",
    "ConfiguredPolicy",
    "LiveFigure",
    "Replay",
    "format_simulation",
    "parse_costs",
    "parse_since",
    "parse_thresholds",
    "plot_simulation",
    "replay_from_records",
    "replay_from_store",
    "simulation_figure",
    "simulation_json",
    "under_risk_limit",
]

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str) -> float:
    """``30m``, ``12h``, ``7d``, ``2w`` as seconds."""
    match = _DURATION.match(text.strip())
    if match is None or float(match.group(1)) <= 0:
        raise UsageError(f"--since {text!r}: give a duration such as 30m, 12h, 7d or 2w")
    return float(match.group(1)) * _SECONDS[match.group(2)]


def parse_costs(text: str) -> Candidate:
    """``λ`` or ``λ/a`` (a wrong answer's and an abstention's cost) as a candidate."""
    parts = text.split("/")
    try:
        values = [float(part) for part in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or not all(math.isfinite(v) and v >= 0 for v in values):
        raise UsageError(f"--costs {text!r}: give LAMBDA or LAMBDA/A, non-negative numbers "
                         "(e.g. 4/0.1)")
    wrong, withhold = values[0], (values[1] if len(values) == 2 else 0.0)
    return Candidate.from_costs(f"costs {wrong:g}/{withhold:g}", wrong, withhold)


def parse_thresholds(text: str) -> list[float]:
    """``0.5,0.6`` or a range ``0.5:0.9:0.1`` (start, stop inclusive, step)."""
    try:
        if ":" in text:
            start, stop, step = (float(part) for part in text.split(":"))
            if step <= 0 or stop < start:
                raise ValueError
            count = math.floor((stop - start) / step + 1e-9) + 1
            values = [round(start + i * step, 10) for i in range(count)]
        else:
            values = [float(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"--thresholds {text!r}: give T1,T2,... or START:STOP:STEP") from None
    if not values or not all(0.0 <= v <= 1.0 for v in values):
        raise UsageError(f"--thresholds {text!r}: thresholds are in [0, 1]")
    return values


@dataclass(frozen=True)
class ConfiguredPolicy:
    """The policy the replay is compared with, and where it came from."""

    candidate: Candidate
    source: str
    """E.g. ``config basguard.yaml`` or ``the latest stored decision``."""


NOTHING_ANSWERED = math.nextafter(1.0, math.inf)
"""A threshold no probability reaches: what a risk limit without a certified threshold serves."""


def under_risk_limit(configured: ConfiguredPolicy,
                     limits: Mapping[str, ModelRiskLimit] | Mapping[str | None, ModelRiskLimit],
                     model: str | None) -> ConfiguredPolicy:
    """``configured`` as the gateway serves it under the tenant's risk limit on ``model``.

    A limited tenant answers iff ``p >= max(cost, certified)``, and nothing while uncertified
    (:meth:`proxy.runtime.state.TenantRuntime.terms_for`): that threshold, not the cost one, is
    what a replay must compare with. Without a model, the limit every model of the tenant shares;
    where their thresholds differ, the cost threshold, and the source says so.
    """
    by_model: dict[str | None, ModelRiskLimit] = {m: limit for m, limit in limits.items()}
    if not by_model:
        return configured
    if model is None:
        chosen = list(by_model.values())
    else:
        found = by_model.get(model, by_model.get(None))  # a policy file's limit has no model
        chosen = [] if found is None else [found]
    if not chosen:
        return configured
    if len({limit.threshold for limit in chosen}) > 1:
        return ConfiguredPolicy(configured.candidate, f"{configured.source}; its risk limit "
                                "answers from a different threshold on each model: replay one "
                                "model to compare with it")
    limit = chosen[0]
    cost = configured.candidate.threshold
    if limit.threshold is None:
        return ConfiguredPolicy(replace(configured.candidate, threshold=NOTHING_ANSWERED),
                                f"{configured.source}, under its risk limit: uncertified, it "
                                "answers nothing")
    return ConfiguredPolicy(
        replace(configured.candidate, threshold=limit.threshold),
        f"{configured.source}, under its risk limit: answers iff p >= {limit.threshold:.3f}, "
        f"the larger of the cost threshold {cost:.3f} and the certified "
        f"{limit.certified_threshold:.3f}")


@dataclass(frozen=True)
class LiveFigure:
    """The live metric's realized utility per request over the replayed labelled decisions."""

    utility_per_request: float
    labelled: int
    changed: int
    """Decisions the configured threshold decides differently from how they were decided."""


@dataclass(frozen=True)
class Replay:
    """Decisions ready for :func:`policies.simulate.simulate`, and what describes them."""

    data: ReplayData
    source: str
    configured: ConfiguredPolicy | None
    live: LiveFigure | None = None


def replay_from_store(
    store: DecisionStore, tenant: str, *, model: str | None, since_seconds: float | None,
    configured: ConfiguredPolicy | None, now: float | None = None,
) -> Replay:
    """One tenant's decisions from the store; each request (decision id) is a group."""
    since = None if since_seconds is None else (now or time.time()) - since_seconds
    decisions = store.tenant_decisions(tenant, model=model, since=since)
    where = f"{store.path} (tenant {tenant!r}" + (f", model {model!r}" if model else "") + (
        f", since {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(since))})" if since
        else ")")
    if not decisions:
        raise UsageError(f"{where}: no decisions to replay")
    if configured is None:
        latest = decisions[-1]
        configured = ConfiguredPolicy(
            Candidate("configured", latest.threshold, latest.wrong_answer_cost,
                      latest.abstain_cost, "configured"),
            "the latest stored decision")
    data = ReplayData.from_lists(
        [d.confidence for d in decisions], [d.answered for d in decisions],
        [None if d.correct is None else float(d.correct) for d in decisions],
        [d.id for d in decisions])
    return Replay(data, where, configured, _live_figure(decisions, configured.candidate))


def _live_figure(decisions: Sequence[StoredDecision], configured: Candidate) -> LiveFigure:
    labelled = sorted((d for d in decisions if d.correct is not None),
                      key=lambda d: (d.labelled_at or 0.0, d.id, d.choice))
    utility = live_realized_utility_per_request(
        [bool(d.correct) for d in labelled], [d.answered for d in labelled],
        [d.wrong_answer_cost for d in labelled], [d.abstain_cost for d in labelled])
    changed = sum(1 for d in decisions if d.confidence is not None
                  and (d.confidence >= configured.threshold) != d.answered)
    return LiveFigure(utility, len(labelled), changed)



def _number(path: Path, line: int, record: dict[str, Any], name: str) -> float | None:
    value = record.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DataError(path, f"{name!r} must be a finite number", line=line)
    return float(value)


def replay_from_records(
    path: Path, *, calibrator: FittedCalibrator | None, configured: ConfiguredPolicy | None,
    missing_answers: bool = False, calibrator_first: bool = True,
) -> Replay:
    """Decisions from a records file, one JSON object per line.

    Each record's confidence is ``calibrator`` applied to its score fields (as the gateway
    would), or its ``confidence`` field: with ``calibrator_first`` (a calibrator named on the
    command line) the calibrator wins; otherwise (the tenant's, from its config) a record's
    own ``confidence``, as exported decisions carry, wins. ``correct`` (0/1, true/false) is the
    label; missing or null leaves the record unlabelled. ``group`` (else ``id``) groups records
    for the bootstrap. A record without confidence keeps its ``decision`` field (``answer`` or
    ``abstain``), else ``missing_answers`` (the tenant's ``on_missing_confidence: answer``).
    """
    confidence: list[float | None] = []
    answered: list[bool] = []
    correct: list[float | None] = []
    groups: list[str] = []
    for line, record in json_objects(path):
        p: float | None
        if calibrator is not None and (calibrator_first or "confidence" not in record):
            features = {name: _number(path, line, record, name)
                        for name in calibrator.feature_names}
            missing = [name for name, v in features.items() if v is None]
            p = None if missing else calibrator.predict_features(
                {name: float(v) for name, v in features.items() if v is not None})
        else:
            p = _number(path, line, record, "confidence")
            if p is None and "confidence" not in record:
                raise DataError(path, "no 'confidence' field: give --calibrator (or --config "
                                "and --tenant) to compute it from the record's scores",
                                line=line)
        if p is not None and not 0.0 <= p <= 1.0:
            raise DataError(path, f"confidence {p} is outside [0, 1]", line=line)
        label_value = record.get("correct")
        label = None if label_value is None else parse_label(label_value)
        if label_value is not None and label is None:
            raise DataError(path, "'correct' must be 0/1 or true/false (or null: unlabelled)",
                            line=line)
        decision = record.get("decision")
        if decision not in (None, "answer", "abstain"):
            raise DataError(path, "'decision' must be \"answer\" or \"abstain\"", line=line)
        group = record.get("group", record.get("id", f"line {line}"))
        confidence.append(p)
        answered.append(decision == "answer" if decision is not None else missing_answers)
        correct.append(None if label is None else float(label))
        groups.append(str(group))
    if not confidence:
        raise DataError(path, "no records to replay")
    data = ReplayData.from_lists(confidence, answered, correct, groups)
    return Replay(data, str(path), configured)


def candidates_for(
    configured: ConfiguredPolicy | None, *, presets: bool, thresholds: Sequence[float],
    costs: Sequence[Candidate],
) -> tuple[Candidate, list[Candidate]]:
    """The reference policy and every candidate to replay (the configured one first)."""
    reference = (configured.candidate if configured is not None
                 else Candidate.from_costs("reference: balanced", 2.0, 0.1, kind="reference"))
    listed = [configured.candidate] if configured is not None else []
    if presets:
        listed += preset_candidates()
    listed += list(costs)
    listed += [Candidate(f"t={t:g}", t, reference.wrong_answer_cost, reference.abstain_cost,
                         "grid") for t in thresholds]
    return reference, listed


def _cell(value: float, digits: int = 3) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"


def _signed(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:+.3f}"


def _distance_verdict(sim: Simulation) -> str:
    interval = sim.optimum.distance_interval
    if not (math.isfinite(interval.low) and math.isfinite(interval.high)):
        return "no interval for the distance (no bootstrap, or no labels)"
    if interval.low <= 0.0 <= interval.high:
        return ("the distance's interval includes 0: these labels do not show that the "
                "configured threshold should move")
    direction = "lower" if interval.low > 0 else "higher"
    return (f"the distance's interval excludes 0: on these labels a {direction} threshold "
            "would have earned more (check with more labels before changing it)")


def format_simulation(sim: Simulation, replay: Replay) -> str:
    """The table ``policy simulate`` prints, and the lines about the optimum and the live figure."""
    ref = sim.reference
    origin = ("configured policy, from " + replay.configured.source if replay.configured
              else "no configured policy given: the balanced preset")
    lines = [
        f"replayed {sim.decisions} decisions from {replay.source}: {sim.labelled} labelled, "
        f"{sim.decisions - sim.labelled} unlabelled (coverage only), {sim.without_confidence} "
        f"without confidence (kept as decided), {sim.groups} groups",
        f"reference costs: wrong answer {ref.wrong_answer_cost:g}, abstention "
        f"{ref.abstain_cost:g} ({origin})",
        f"BAS of these confidences: {_cell(sim.bas)} (the same for every candidate: BAS "
        "integrates over thresholds)",
        "",
        f"{'candidate':<22} {'thresh':>6} {'λ/a':>10} {'cover':>6} {'acc@ans':>7} "
        f"{'over':>6} {'under':>6} {'U/req (own costs)':>26} {'U/req (reference)':>26}",
    ]
    for r in sim.results:
        c = r.candidate
        own = (f"{_signed(r.utility)} [{_signed(r.utility_interval.low)}, "
               f"{_signed(r.utility_interval.high)}]")
        at_ref = (f"{_signed(r.reference_utility)} [{_signed(r.reference_utility_interval.low)}, "
                  f"{_signed(r.reference_utility_interval.high)}]")
        costs = f"{c.wrong_answer_cost:g}/{c.abstain_cost:g}"
        lines.append(
            f"{c.name[:22]:<22} {c.threshold:>6.3f} {costs:>10} "
            f"{_cell(r.coverage):>6} {_cell(r.accuracy_answered):>7} {_cell(r.over_abstention):>6} "
            f"{_cell(r.under_abstention):>6} {own:>26} {at_ref:>26}")
    opt = sim.optimum
    lines += [
        "",
        "intervals: percentile bootstrap 95 % over "
        f"{sim.bootstrap} resamples of whole groups (seed {sim.seed})",
        f"utility-optimal threshold on these labels (reference costs): {_cell(opt.threshold)} "
        f"(U/req {_signed(opt.utility)}); the configured {ref.threshold:.3f} is "
        f"{_signed(opt.distance)} from it [{_signed(opt.distance_interval.low)}, "
        f"{_signed(opt.distance_interval.high)}] and leaves {_cell(opt.regret)} U/req "
        f"[{_cell(opt.regret_interval.low)}, {_cell(opt.regret_interval.high)}] on the table "
        "(in-sample: the optimum is fitted to these same labels, so it flatters itself)",
        _distance_verdict(sim),
    ]
    if replay.live is not None:
        lines.append(
            f"live metric over these {replay.live.labelled} labelled decisions (as decided, at "
            f"their stored costs): {_signed(replay.live.utility_per_request)} U/req; "
            f"{replay.live.changed} decisions would be decided differently at the configured "
            "threshold")
    return "\n".join(lines) + "\n"


def simulation_json(sim: Simulation, replay: Replay) -> dict[str, Any]:
    """Everything the table says, as JSON (NaN as null)."""
    def finite(value: float) -> float | None:
        return value if math.isfinite(value) else None

    document: dict[str, Any] = {
        "source": replay.source,
        "decisions": sim.decisions,
        "labelled": sim.labelled,
        "without_confidence": sim.without_confidence,
        "groups": sim.groups,
        "bootstrap": {"resamples": sim.bootstrap, "seed": sim.seed, "level": 0.95,
                      "method": "percentile, resampling whole groups"},
        "bas": finite(sim.bas),
        "reference": {
            "name": sim.reference.name, "threshold": sim.reference.threshold,
            "wrong_answer_cost": sim.reference.wrong_answer_cost,
            "abstain_cost": sim.reference.abstain_cost,
            "source": replay.configured.source if replay.configured else None,
        },
        "candidates": [r.as_json() for r in sim.results],
        "optimum": sim.optimum.as_json(),
        "curve": {
            "threshold": sim.grid.tolist(),
            "reference_utility_per_request": [finite(v) for v in sim.grid_utility.tolist()],
            "coverage": [finite(v) for v in sim.grid_coverage.tolist()],
            "over_abstention": [finite(v) for v in sim.grid_over_abstention.tolist()],
            "under_abstention": [finite(v) for v in sim.grid_under_abstention.tolist()],
        },
    }
    if replay.live is not None:
        document["configured_live"] = {
            "realized_utility_per_request": finite(replay.live.utility_per_request),
            "labelled": replay.live.labelled,
            "decided_differently_at_configured_threshold": replay.live.changed,
            "how": "each labelled decision as decided, at the costs stored with it, summed with "
                   "policies.utility.realized_utility_scalar as the store's feedback totals are "
                   "(basguard_feedback_realized_utility_sum / labelled decisions)",
        }
    return document


def plot_simulation(sim: Simulation, path: Path, *, title: str) -> None:
    """Utility (reference costs) and abstention rate against the threshold, as a PNG.

    The configured threshold is a vertical line; each preset is a marker on the utility curve
    at its threshold. matplotlib is imported here, never on the serving path.
    """
    import matplotlib.pyplot as plt

    fig = simulation_figure(sim, title=title)
    try:
        fig.savefig(path)
    finally:
        plt.close(fig)


def simulation_figure(sim: Simulation, *, title: str) -> Figure:
    """The figure of :func:`plot_simulation`, not yet saved (the caller closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(7.5, 7.5),
                                      layout="constrained")
    try:
        top.plot(sim.grid, sim.grid_utility, color="tab:blue", label="realized utility / request")
        top.set_ylabel("utility per request\n(reference costs)")
        bottom.plot(sim.grid, 1.0 - sim.grid_coverage, color="tab:red",
                    label="abstention rate (of all decisions)")
        bottom.plot(sim.grid, sim.grid_over_abstention, color="tab:orange", linestyle="--",
                    label="over-abstention (withheld, correct; of labelled)")
        bottom.plot(sim.grid, sim.grid_under_abstention, color="tab:purple", linestyle=":",
                    label="under-abstention (answered, wrong; of labelled)")
        bottom.set_ylabel("share")
        bottom.set_xlabel("answer threshold (answer iff P(correct) ≥ threshold)")
        bottom.set_ylim(-0.02, 1.02)
        for axes in (top, bottom):
            axes.axvline(sim.reference.threshold, color="black", linewidth=1,
                         label=f"configured {sim.reference.threshold:.3f}" if axes is top else None)
            if math.isfinite(sim.optimum.threshold):
                axes.axvline(sim.optimum.threshold, color="tab:green", linewidth=1,
                             linestyle="--",
                             label=f"optimal here {sim.optimum.threshold:.3f}"
                             if axes is top else None)
        for result in sim.results:
            if result.candidate.kind != "preset":
                continue
            t = result.candidate.threshold
            y = float(np.interp(t, sim.grid, sim.grid_utility))
            top.plot([t], [y], marker="o", color="tab:gray")
            top.annotate(result.candidate.name, (t, y), textcoords="offset points",
                         xytext=(0, 6), ha="center", fontsize="x-small")
        top.set_title(title, fontsize="medium")
        # One legend for both panels, below them in the figure's own layout: inside an axes it
        # covered the curves wherever it was put.
        handles, labels = [], []
        for axes in (top, bottom):
            more_handles, more_labels = axes.get_legend_handles_labels()
            handles += more_handles
            labels += more_labels
        fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize="small",
                   frameon=False)
    except BaseException:
        plt.close(fig)
        raise
    return fig
