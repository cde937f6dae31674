"""``basguard policy card``: a tenant's risk card, in Markdown with its figures, for sign-off.

A card states, in a fixed order a reviewer can check: what the tenant is for and who owns it;
its costs and threshold and why the one follows from the other; its risk limit, what each
certificate proves and what the audit sample says of it live; which calibrator turns the
model's signals into P(correct), what it was trained on and how it cross-validated; what the
policy is expected to do at its threshold on the calibrator's data; with a decision store, what
it does on live traffic (labels, BAS, over- and under-abstention, drift, parity across
segments); its known limits; and when and from what the card was made.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from calibrators.artifact import FittedCalibrator, StoreQuery, load_artifact
from calibrators.dataset import CalibrationData, read_calibration_data
from calibrators.errors import CalibrationError
from calibrators.signals import parse_score_spec
from policies.parity import ParityReport
from policies.schema import PolicyFile, TenantPolicy
from policies.simulate import Candidate, ReplayData, Simulation, simulate
from proxy.analysis.parity import format_parity, parity_from_store, verdict
from proxy.analysis.policy_simulate import Replay, plot_simulation, replay_from_store
from proxy.analysis.risk_card import risk_limit_section
from proxy.runtime.check import check_config_file
from proxy.runtime.state import UNCALIBRATED, uncalibrated_calibrator
from proxy.store import (
    DecisionStore,
    DriftWindow,
    FeedbackTotal,
    StoreLocation,
    StoreLocationError,
    parse_store_location,
)
from proxy.store.feedback import OUTCOMES
from proxy.usage import UsageError

__all__ = ["CardInputs", "write_card"]

DRIFT_WINDOW = 500
DRIFT_MIN_LABELS = 50
DRIFT_MAX_GAP = 0.1
CARD_BOOTSTRAP = 1000
LOW_COVERAGE = 0.05
"""Answering fewer than this share of the calibration questions is called out as a limit."""
FEW_TRAINING_ROWS = 300
"""Fewer rows than this: the card warns that the calibrator's curve rests on little data."""


@dataclass(frozen=True)
class CardInputs:
    """What a card is made from."""

    tenant: str
    config_path: Path
    policy: PolicyFile
    store: str | StoreLocation | None = None
    """A decision store's location (a SQLite path, sqlite:/// or postgresql:// URL)."""
    since_seconds: float | None = None
    note: str | None = None
    """Said under the title: e.g. that the card shows a simulated policy, not the configured."""
    generator: str = "`basguard policy card`"
    """What made the card, as its first line names it."""


@dataclass(frozen=True)
class _Calibration:
    """One calibrator of the tenant, and its training data if it could be found and matched."""

    model: str | None
    """None: the default calibrator."""
    path: Path | None
    """None: no artifact (the uncalibrated confidence)."""
    calibrator: FittedCalibrator
    data: CalibrationData | None
    data_note: str


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pct(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{100 * value:.1f} %"


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _interval(low: float, high: float, digits: int = 3) -> str:
    return f"[{_num(low, digits)}, {_num(high, digits)}]"


def _threshold_reason(policy: TenantPolicy) -> str:
    profile = policy.profile
    lam, a, t = profile.wrong_answer_cost, profile.abstain_cost, profile.threshold
    if policy.risk.threshold is not None:
        return (f"The threshold {t:.3f} is stated directly; it is the optimal threshold of a "
                f"wrong answer costing λ = t / (1 − t) = {lam:.3f} with free abstention.")
    return (f"Answering earns p − (1 − p)·λ and withholding −a, so answering pays iff "
            f"p ≥ (λ − a) / (1 + λ) = ({lam:g} − {a:g}) / (1 + {lam:g}) = {t:.3f}.")


def _find_training_data(calibrator: FittedCalibrator, near: Sequence[Path],
                        store: str | StoreLocation | None
                        ) -> tuple[CalibrationData | None, str]:
    """The calibrator's training rows, read from its recorded source if the fingerprint matches:
    files near the artifact or the config, or the decision store it was fitted from."""
    training = calibrator.training
    if training is None:
        return None, "the calibrator was not fitted (no training data)"
    if training.store is not None:
        return _read_store_training(calibrator, training.store, store)
    tried: list[str] = []
    for source in training.sources:
        for base in (Path.cwd(), *near):
            for candidate in (base / source, base / Path(source).name):
                if str(candidate) in tried or not candidate.is_file():
                    continue
                tried.append(str(candidate))
                data = _read_matching(candidate, calibrator)
                if data is not None:
                    return data, f"`{candidate}` (its fingerprint matches the artifact's)"
    found = (f"found {', '.join(f'`{t}`' for t in tried)} but its rows do not match the "
             "fingerprint" if tried else "did not find it")
    return None, (f"the artifact records its training data as {', '.join(training.sources)} "
                  f"(fingerprint `{training.fingerprint}`) but holds no rows; basguard {found}. "
                  "To state expected figures, keep that file next to the artifact or the config")


def _read_store_training(calibrator: FittedCalibrator, query: StoreQuery,
                         given: str | StoreLocation | None
                         ) -> tuple[CalibrationData | None, str]:
    """The labelled decisions a ``--from-store`` fit read, from the store the card is given."""
    training = calibrator.training
    assert training is not None
    fitted = (f"the labelled decisions of tenant `{query.tenant}` on model `{query.model}` in "
              f"the decision store `{query.location}`, labelled by "
              f"{datetime.fromtimestamp(query.labelled_until, UTC).isoformat(timespec='seconds')}")
    if given is None:
        return None, (f"the calibrator was fitted on {fitted}; generate the card with `--store` "
                      "naming that store to state expected figures")
    location = _store_location(given)
    store = DecisionStore(location, retention_seconds=None)
    try:
        data = store.labelled_data(
            query.tenant, query.model, [parse_score_spec(text) for text in training.scores],
            prefix=query.prefix, labelled_until=query.labelled_until)
    except CalibrationError:
        data = None  # none of those decisions left (retention), or their features changed
    finally:
        store.close()
    if data is not None and data.fingerprint() == training.fingerprint:
        return data, f"{fitted} (read from `{location}`; the fingerprint matches the artifact's)"
    return None, (f"the calibrator was fitted on {fitted}, but `{location}` no longer holds "
                  f"those rows (fingerprint `{training.fingerprint}`): decisions purged by "
                  "retention, relabelled since, or another store")


def _read_matching(path: Path, calibrator: FittedCalibrator) -> CalibrationData | None:
    training = calibrator.training
    assert training is not None
    specs = [parse_score_spec(text) for text in training.scores]
    for group in ("group", None):
        try:
            data = read_calibration_data(path, scores=specs, label=training.label, group=group)
        except CalibrationError:
            continue
        if data.fingerprint() == training.fingerprint:
            return data
    return None


def _out_of_fold(calibration: _Calibration) -> tuple[NDArray[np.float64], str]:
    """Confidences on the training rows: out-of-fold as in the fit, else in-sample (said)."""
    from calibrators.selection import candidates_for, cross_validate

    data = calibration.data
    assert data is not None
    cv = calibration.calibrator.cross_validation
    if cv is not None:
        chosen = [c for c in candidates_for(data.specs) if c.name == cv.selected]
        if chosen:
            (result,) = cross_validate(data, chosen, n_folds=cv.folds)
            if result.oof is not None:
                return result.oof, (f"out-of-fold predictions of {cv.selected} (grouped "
                                    f"{cv.folds}-fold cross-validation, as in the fit)")
    columns = [data.specs.index(spec) for spec in calibration.calibrator.features]
    return (calibration.calibrator.predict(data.scores[:, columns]),
            "in-sample predictions of the fitted calibrator (optimistic)")


def _calibrations(inputs: CardInputs, policy: TenantPolicy) -> list[_Calibration]:
    base = inputs.config_path.parent
    refs = policy.calibrators.paths()
    if not refs:
        return [_Calibration(None, None, UNCALIBRATED, None,
                             "no calibrator: the raw token probability is read as P(correct)")]
    calibrations = []
    for model, written in refs.items():
        path = base / written
        calibrator = load_artifact(path)
        data, note = _find_training_data(calibrator, [path.parent, base], inputs.store)
        calibrations.append(_Calibration(model, path, calibrator, data, note))
    return calibrations


def _purpose(inputs: CardInputs, policy: TenantPolicy) -> list[str]:
    missing = "not stated: add `{}:` to the tenant's policy"
    return [
        "## Purpose and owner", "",
        f"- **Purpose:** {policy.description or missing.format('description')}",
        f"- **Owner:** {policy.owner or missing.format('owner')}",
        f"- **Mode:** `{policy.mode}`" + {
            "enforce": " (low-confidence answers are withheld)",
            "annotate": " (answers pass; the decision is attached; nothing is withheld)",
            "shadow": " (answers pass; the decision is only recorded; nothing is withheld)",
        }[policy.mode],
        "- **Withheld answers:** "
        + ("an error (HTTP 422 `answer_withheld`)" if policy.abstain_action == "error"
           else f"the message “{policy.abstention_message}”"), "",
    ]


def _costs(policy: TenantPolicy) -> list[str]:
    profile = policy.profile
    form = policy.risk.form
    stated = {"custom": "explicit costs", "threshold": "an explicit threshold"}.get(
        form, f"the `{form}` preset ({profile.description})")
    return [
        "## Costs and threshold", "",
        f"- **Stated as:** {stated}",
        f"- **Cost of a wrong answer (λ):** {profile.wrong_answer_cost:g} correct answers",
        f"- **Cost of withholding an answer (a):** {profile.abstain_cost:g} correct answers",
        f"- **Threshold:** answer iff calibrated P(correct) ≥ **{profile.threshold:.3f}**",
        f"- **Why:** {_threshold_reason(policy)}", "",
    ]


def _calibrator_section(calibration: _Calibration) -> list[str]:
    c = calibration.calibrator
    title = "default" if calibration.model is None else f"model `{calibration.model}`"
    lines = [f"### Calibrator ({title})", ""]
    if calibration.path is None:
        return [*lines, f"- {calibration.data_note}; it is **not calibrated**: the threshold "
                "compares against a raw model score.", ""]
    lines += [
        f"- **Artifact:** `{calibration.path}` (version `{c.version}`, created "
        f"{c.created_at.isoformat()})",
        f"- **Method:** `{c.method}`",
        f"- **Features read:** {', '.join(f'`{s}`' for s in c.features)}",
    ]
    t = c.training
    if t is not None:
        lines += [
            f"- **Training data:** {t.rows} rows ({t.positives} correct, "
            f"{_pct(t.positives / t.rows)}), {t.groups} groups (questions), label `{t.label}`",
            f"- **Sources:** {', '.join(f'`{s}`' for s in t.sources)}",
            f"- **Data fingerprint:** `{t.fingerprint}`",
            f"- **Scores offered to the fit:** {', '.join(f'`{s}`' for s in t.scores)}",
        ]
    cv = c.cross_validation
    if cv is not None:
        selected = next((x for x in cv.candidates if x.name == cv.selected), None)
        lines += ["", f"Cross-validation: grouped {cv.folds}-fold, selected by out-of-fold "
                  f"{cv.criterion.upper()}: **{cv.selected}**.", "",
                  "| candidate | BAS | ECE | Brier | AUROC | fold BAS range |",
                  "|---|---|---|---|---|---|"]
        ranked = sorted((x for x in cv.candidates if x.error is None),
                        key=lambda x: -(x.oof.get("bas") or -math.inf))
        shown = ranked[:5] + ([selected] if selected is not None and selected not in ranked[:5]
                              else [])
        for x in shown:
            folds = (f"{min(x.fold_bas):.3f} to {max(x.fold_bas):.3f}" if x.fold_bas else "n/a")
            mark = " (selected)" if x.name == cv.selected else ""
            lines.append(f"| {x.name}{mark} | {_num(x.oof.get('bas'))} | "
                         f"{_num(x.oof.get('ece'))} | {_num(x.oof.get('brier'))} | "
                         f"{_num(x.oof.get('auroc'))} | {folds} |")
        failed = [x for x in cv.candidates if x.error is not None]
        if failed:
            lines.append(f"\n{len(failed)} candidate(s) could not be fitted.")
    return [*lines, ""]


def _expected_section(calibration: _Calibration, policy: TenantPolicy, out_dir: Path,
                      stem: str) -> tuple[list[str], Simulation | None]:
    lines = ["### Expected at the threshold, on the calibrator's data", ""]
    if calibration.data is None:
        return [*lines, f"Not available: {calibration.data_note}.", ""], None
    confidence, how = _out_of_fold(calibration)
    data = calibration.data
    profile = policy.profile
    configured = Candidate("configured", profile.threshold, profile.wrong_answer_cost,
                           profile.abstain_cost, "configured")
    groups = [str(g) for g in data.groups.tolist()]
    replay = ReplayData.from_lists(confidence.tolist(), [False] * data.n_rows,
                                   data.correct.astype(float).tolist(), groups)
    sim = simulate(replay, [configured], reference=configured, bootstrap=CARD_BOOTSTRAP)
    (row,) = sim.results
    figure = out_dir / f"{stem}-expected.png"
    plot_simulation(sim, figure, title=f"expected on the calibrator's data ({data.n_rows} rows)")
    lines += [
        f"From {calibration.data_note}; {how}. Intervals: 95 % bootstrap over whole groups.", "",
        "| coverage | accuracy when answered | over-abstention | under-abstention | "
        "utility per request | BAS |",
        "|---|---|---|---|---|---|",
        f"| {_pct(row.coverage)} | {_pct(row.accuracy_answered)} | {_pct(row.over_abstention)}"
        f" | {_pct(row.under_abstention)} | {_num(row.utility)} "
        f"{_interval(row.utility_interval.low, row.utility_interval.high)} | {_num(sim.bas)} |",
        "",
        f"On these rows the utility-optimal threshold is {_num(sim.optimum.threshold)}; the "
        f"configured one is {sim.optimum.distance:+.3f} from it "
        f"{_interval(sim.optimum.distance_interval.low, sim.optimum.distance_interval.high)}.",
        "", f"![utility and abstention against the threshold]({figure.name})", "",
    ]
    return lines, sim


def _store_location(given: str | StoreLocation) -> StoreLocation:
    """The store's location (its password masked when shown); a SQLite file must exist."""
    try:
        location = given if isinstance(given, StoreLocation) else parse_store_location(given)
    except StoreLocationError as exc:
        raise UsageError(str(exc)) from None
    if location.path is not None and not location.path.is_file():
        raise UsageError(f"{location}: no decision store here")
    return location


@dataclass(frozen=True)
class _LiveFigures:
    """What the card reads from the decision store about one tenant."""

    location: StoreLocation
    totals: list[FeedbackTotal]
    drift: list[DriftWindow]
    replay: Replay | None
    """None: the tenant has no decisions in the store."""
    parity: ParityReport | None
    min_labels: int


def _serving_versions(policy: TenantPolicy, calibrations: Sequence[_Calibration]
                      ) -> dict[str | None, str]:
    """Per public model (None: any other), the version of the calibrator the config serves."""
    versions = {c.model: c.calibrator.version for c in calibrations if c.path is not None}
    versions.setdefault(None, uncalibrated_calibrator(policy.confidence).version)
    return versions


def _live_section(inputs: CardInputs, policy: TenantPolicy, out_dir: Path,
                  limits: list[str], calibrations: Sequence[_Calibration]) -> list[str]:
    """The live figures from the decision store; their limits are added to ``limits``."""
    lines = ["## Live figures", ""]
    if inputs.store is None:
        return [*lines, "Not included: generate the card with `--store` to add the labelled "
                "decisions' figures, drift and parity.", ""]
    live = _read_live(inputs, policy, calibrations)
    lines += [f"From `{live.location}`, every labelled decision of the tenant (the last "
              "label of each counts).", ""]
    lines += _labelled_lines(live.totals, limits)
    lines += _drift_lines(live.drift, limits)
    if live.replay is not None and live.replay.data.labelled.any():
        lines += _what_if_lines(live.replay, inputs.tenant, out_dir)
    lines += _parity_lines(policy, live, inputs.tenant, limits)
    return lines


def _read_live(inputs: CardInputs, policy: TenantPolicy,
               calibrations: Sequence[_Calibration]) -> _LiveFigures:
    """Everything the live section shows, read in one visit to the store."""
    assert inputs.store is not None
    location = _store_location(inputs.store)
    segments = policy.segments
    min_labels = segments.min_labels if segments is not None else 30
    store = DecisionStore(location, retention_seconds=None)
    try:
        totals = [t for t in store.feedback_totals() if t.tenant == inputs.tenant]
        versions = _serving_versions(policy, calibrations)
        drift = store.drift(DRIFT_WINDOW, tenant=inputs.tenant, count_earlier=True,
                            serving=lambda _, model: versions.get(model, versions[None]))
        has_decisions = bool(store.tenant_decisions(inputs.tenant))
        replay = (replay_from_store(store, inputs.tenant, model=None,
                                    since_seconds=inputs.since_seconds, configured=None)
                  if has_decisions else None)
        parity = (parity_from_store(store, inputs.tenant, since_seconds=inputs.since_seconds,
                                    min_labels=min_labels) if has_decisions else None)
    finally:
        store.close()
    return _LiveFigures(location, totals, drift, replay, parity, min_labels)


def _labelled_lines(totals: list[FeedbackTotal], limits: list[str]) -> list[str]:
    """The labelled decisions' BAS, over- and under-abstention and realized utility."""
    counts = {outcome: sum(t.decisions for t in totals if t.outcome == outcome)
              for outcome in OUTCOMES}
    labelled = sum(counts.values())
    if not labelled:
        limits.append("No live labels: nothing yet shows how the policy does on real traffic.")
        return ["No labelled decisions yet: live figures need labels (`POST /v1/feedback`, "
                "or `basguard review label`).", ""]
    scored = [t for t in totals if t.bin >= 0]
    bas_count = sum(t.decisions for t in scored)
    bas = sum(t.bas_sum for t in scored) / bas_count if bas_count else math.nan
    utility = sum(t.utility_sum for t in totals) / labelled
    return [
        "| labelled | live BAS | over-abstention | under-abstention | realized utility "
        "per request |", "|---|---|---|---|---|",
        f"| {labelled} | {_num(bas)} | {_pct(counts['abstained_correct'] / labelled)} "
        f"({counts['abstained_correct']}) | {_pct(counts['answered_wrong'] / labelled)} "
        f"({counts['answered_wrong']}) | {_num(utility)} |", "",
    ]


def _drift_lines(drift: list[DriftWindow], limits: list[str]) -> list[str]:
    """Each model's latest drift check: mean P(correct) against accuracy."""
    lines = ["### Latest drift check", ""]
    if not drift:
        lines += ["No labelled decisions with a confidence: no drift check yet.", ""]
    for window in drift:
        earlier = (f" ({window.earlier_labels} labels of decisions made under earlier "
                   "calibrators are not compared)" if window.earlier_labels else "")
        if not window.decisions:
            lines.append(f"- `{window.model}`: no labels yet of decisions made under calibrator "
                         f"`{window.calibrator_version}`, the one configured{earlier}: no "
                         "drift check until it has some")
            continue
        if window.decisions < DRIFT_MIN_LABELS:
            state = f"not enough labels for a verdict (fewer than {DRIFT_MIN_LABELS})"
        elif abs(window.gap) > DRIFT_MAX_GAP:
            state = "**DRIFT**: " + ("overconfident" if window.gap > 0 else "underconfident")
            limits.append(f"The calibrator for `{window.model}` has drifted (gap "
                          f"{window.gap:+.3f}): refit it with `basguard calibrate fit "
                          "--from-store`.")
        else:
            state = f"within ±{DRIFT_MAX_GAP}"
        lines.append(f"- `{window.model}`: over the latest {window.decisions} labels of "
                     f"decisions made under calibrator `{window.calibrator_version}`, mean "
                     f"P(correct) {window.mean_confidence:.3f} against accuracy "
                     f"{window.accuracy:.3f} (gap {window.gap:+.3f}): {state}{earlier}")
    return [*lines, ""]


def _what_if_lines(replay: Replay, tenant: str, out_dir: Path) -> list[str]:
    """The threshold in force replayed on the live labels, against the optimal one."""
    ref = replay.configured
    assert ref is not None
    sim = simulate(replay.data, [ref.candidate], reference=ref.candidate,
                   bootstrap=CARD_BOOTSTRAP)
    row, opt = sim.results[0], sim.optimum
    figure = out_dir / f"{tenant}-live.png"
    plot_simulation(sim, figure, title=f"{tenant}: live labelled decisions")
    return ["### What-if on live labels", "",
            f"At the threshold in force ({ref.candidate.threshold:.3f}) the replayed "
            f"utility is {_num(row.utility)} "
            f"{_interval(row.utility_interval.low, row.utility_interval.high)} per "
            "request; the utility-optimal threshold on these labels is "
            f"{_num(opt.threshold)} ({opt.distance:+.3f} "
            f"{_interval(opt.distance_interval.low, opt.distance_interval.high)}). "
            "See `basguard policy simulate` for other candidates.", "",
            f"![live utility and abstention against the threshold]({figure.name})", ""]


def _parity_lines(policy: TenantPolicy, live: _LiveFigures, tenant: str,
                  limits: list[str]) -> list[str]:
    """Abstention parity across the tenant's segments, and the gaps a test finds."""
    lines = ["### Parity across segments", ""]
    parity = live.parity
    if policy.segments is None:
        limits.append("No `segments:` section: whether the guard refuses some groups of "
                      "users more than others is not measured.")
        return [*lines, "No segments are configured: every request counts as `other`, so "
                "parity cannot be measured.", ""]
    if parity is None:
        return [*lines, "No decisions of this tenant in the store yet: no parity figures.", ""]
    few = [s.segment for s in parity.segments if not s.enough]
    if few:
        limits.append(f"Segments with fewer than {live.min_labels} labelled decisions (no "
                      f"parity verdict on their labelled rates): {', '.join(few)}.")
    for rate in ("abstention", "over_abstention"):
        gap = parity.gaps[rate]
        if math.isfinite(gap.p_value) and gap.p_value < 0.05:
            limits.append(f"Parity: {verdict(parity, rate)}.")
    return [*lines, "```", format_parity(parity, tenant).rstrip(), "```", ""]


def _limits(policy: TenantPolicy, calibrations: list[_Calibration]) -> list[str]:
    limits = []
    action = {
        "abstain": "the answer is withheld (counted as `no_confidence`)",
        "answer": "the answer is passed on unguarded",
        "error": "the request fails with an error",
    }[policy.on_missing_confidence]
    for c in calibrations:
        where = "default" if c.model is None else f"model `{c.model}`"
        features = ", ".join(f"`{name}`" for name in c.calibrator.feature_names)
        limits.append(
            f"{where}: the calibrator needs {features}; when any is missing (a provider "
            "without logprobs, a signal call that failed or timed out), "
            f"`on_missing_confidence: {policy.on_missing_confidence}` applies: {action}.")
        if c.path is None:
            limits.append("No calibrator: P(correct) is a raw model score, not a calibrated "
                          "probability, so the threshold's meaning is uncertain.")
        elif c.calibrator.training is not None and c.calibrator.training.rows < FEW_TRAINING_ROWS:
            limits.append(f"{where}: the calibrator was fitted on {c.calibrator.training.rows} "
                          f"rows (fewer than {FEW_TRAINING_ROWS}): its curve, and the expected "
                          "figures, are uncertain.")
        if c.data is None and c.path is not None:
            limits.append(f"{where}: expected figures are missing ({c.data_note}).")
    if policy.mode != "enforce":
        limits.append(f"Mode `{policy.mode}`: nothing is withheld from users; the figures "
                      "describe what enforcing would do.")
    limits.append("Expected figures come from the calibration data, whose questions may not "
                  "be like the tenant's traffic; live figures cover labelled decisions only, "
                  "and which decisions get labelled is itself a choice.")
    return limits


def _risk_limit(inputs: CardInputs, policy: TenantPolicy,
                notes: list[str]) -> tuple[list[str], list[str]]:
    """The risk-limit section (certificates checked as ``policy check`` checks them), and the
    certificates as sources."""
    limits = (check_config_file(inputs.config_path).limits.get(inputs.tenant, {})
              if policy.risk.limited else {})
    sources = list(dict.fromkeys(
        f"- risk certificate: `{limit.certificate_path}` (version "
        f"`{limit.certificate_version}`)" for limit in limits.values()
        if limit.certificate is not None))
    if inputs.store is None or not limits:
        return risk_limit_section(policy, inputs.tenant, limits, None, notes), sources
    store = DecisionStore(_store_location(inputs.store), retention_seconds=None)
    try:
        return risk_limit_section(policy, inputs.tenant, limits, store, notes), sources
    finally:
        store.close()


def write_card(inputs: CardInputs, out_dir: Path, *, now: datetime | None = None) -> Path:
    """Write ``<tenant>-risk-card.md`` and its PNGs into ``out_dir``; returns the card's path."""
    if inputs.tenant not in inputs.policy.tenants:
        raise UsageError(f"{inputs.config_path}: no tenant {inputs.tenant!r}; configured: "
                         f"{', '.join(sorted(inputs.policy.tenants))}")
    policy = inputs.policy.tenants[inputs.tenant]
    out_dir.mkdir(parents=True, exist_ok=True)
    generated = (now or datetime.now(UTC)).replace(microsecond=0)
    calibrations = _calibrations(inputs, policy)
    lines = [f"# Risk card: tenant `{inputs.tenant}`", "",
             f"Generated {generated.isoformat()} by {inputs.generator} from "
             f"`{inputs.config_path}` (sha256 `{_sha256(inputs.config_path)[:16]}`)"
             + (f" and the decision store `{_store_location(inputs.store)}`" if inputs.store
                else "")
             + ".", ""]
    if inputs.note is not None:
        lines += [f"> {inputs.note}", ""]
    lines += _purpose(inputs, policy)
    lines += _costs(policy)
    risk_notes: list[str] = []
    risk_lines, certificates = _risk_limit(inputs, policy, risk_notes)
    lines += risk_lines
    lines += ["## Calibration", ""]
    low_coverage: list[str] = []
    for number, calibration in enumerate(calibrations):
        lines += _calibrator_section(calibration)
        stem = f"{inputs.tenant}-{'default' if calibration.model is None else number}"
        expected, expected_sim = _expected_section(calibration, policy, out_dir, stem)
        lines += expected
        if expected_sim is not None and expected_sim.results[0].coverage < LOW_COVERAGE:
            low_coverage.append(
                f"On the calibrator's data the policy answers "
                f"{_pct(expected_sim.results[0].coverage)} of questions: with this model and "
                "calibrator, the tenant gets (almost) nothing but withheld answers.")
    limits = _limits(policy, calibrations) + low_coverage + risk_notes
    lines += _live_section(inputs, policy, out_dir, limits, calibrations)
    lines += ["## Known limits", ""] + [f"- {limit}" for limit in limits] + [""]
    sources = [f"- policy: `{inputs.config_path}` (sha256 `{_sha256(inputs.config_path)}`)"]
    sources += [f"- calibrator: `{c.path}` (version `{c.calibrator.version}`)"
                for c in calibrations if c.path is not None]
    sources += certificates
    if inputs.store is not None:
        window = ("all decisions kept" if inputs.since_seconds is None
                  else f"decisions of the last {inputs.since_seconds / 86400:g} days")
        sources.append(f"- decision store: `{_store_location(inputs.store)}` ({window}; read at "
                       f"{generated.isoformat()})")
    lines += ["## Generated from", "", *sources, "",
              "## Sign-off", "", "| role | name | decision | date |", "|---|---|---|---|",
              "| policy owner | | | |", "| risk / compliance reviewer | | | |", ""]
    card = out_dir / f"{inputs.tenant}-risk-card.md"
    card.write_text("\n".join(lines), encoding="utf-8")
    return card

