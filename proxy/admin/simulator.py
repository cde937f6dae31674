"""The policy simulator: ``basguard policy simulate`` on a tenant's stored decisions, with the
threshold or the costs the console's controls set, and the result as a risk card.

The computation is :mod:`proxy.analysis.policy_simulate` and :mod:`policies.simulate`, as the
command runs them: the replay from the store, the candidates (the configured policy, the presets
and the one asked for) and the bootstrap.
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from policies.schema import RiskPolicy
from policies.simulate import Candidate, Simulation, simulate
from proxy.admin.models import SimulationReport
from proxy.analysis.policy_card import CardInputs, write_card
from proxy.analysis.policy_simulate import (
    ConfiguredPolicy,
    Replay,
    candidates_for,
    replay_from_store,
    simulation_json,
    under_risk_limit,
)
from proxy.errors import InvalidRequest
from proxy.runtime.state import RuntimeState
from proxy.store import DecisionStore
from proxy.usage import UsageError

__all__ = ["SimulationRequest", "policy_card_zip", "run_simulation"]

CONSOLE_BOOTSTRAP = 500
"""Resamples for the intervals: a slider move should answer in about a second."""


@dataclass(frozen=True)
class SimulationRequest:
    """What the controls set: the threshold, or the costs (the threshold then follows from
    them), or both (the threshold priced at those costs)."""

    tenant: str
    model: str | None = None
    threshold: float | None = None
    wrong_answer_cost: float | None = None
    abstain_cost: float | None = None
    since_days: float | None = None
    bootstrap: int = CONSOLE_BOOTSTRAP


def _configured(state: RuntimeState, tenant: str, model: str | None) -> ConfiguredPolicy:
    """The tenant's policy as served on ``model`` (its risk limit's threshold where it has one)."""
    runtime = state.tenants[tenant]
    configured = ConfiguredPolicy(
        Candidate("configured", runtime.threshold, runtime.wrong_answer_cost,
                  runtime.abstain_cost, "configured"),
        f"{state.path.name}, tenant {tenant!r} ({state.config.tenants[tenant].risk.form})")
    return under_risk_limit(configured, runtime.risk_limits, model)


def simulated_candidate(request: SimulationRequest, configured: Candidate) -> Candidate:
    """The policy the controls describe (the configured one when they are untouched)."""
    wrong = request.wrong_answer_cost
    withhold = request.abstain_cost
    if request.threshold is None and wrong is None and withhold is None:
        return configured
    if request.threshold is None:
        return Candidate.from_costs(
            f"costs {wrong if wrong is not None else configured.wrong_answer_cost:g}/"
            f"{withhold or 0.0:g}",
            wrong if wrong is not None else configured.wrong_answer_cost, withhold or 0.0)
    wrong = configured.wrong_answer_cost if wrong is None else wrong
    withhold = configured.abstain_cost if withhold is None else withhold
    return Candidate(f"t={request.threshold:g}", request.threshold, wrong, withhold, "grid")


def run_simulation(
    decisions: DecisionStore, state: RuntimeState, request: SimulationRequest,
) -> tuple[SimulationReport, Simulation, Candidate]:
    """Replay the tenant's stored decisions (blocking: call it in a thread)."""
    configured = _configured(state, request.tenant, request.model)
    try:
        replay: Replay = replay_from_store(
            decisions, request.tenant, model=request.model,
            since_seconds=None if request.since_days is None else request.since_days * 86400,
            configured=configured)
    except UsageError as exc:
        raise InvalidRequest(str(exc), param="tenant") from None
    chosen = simulated_candidate(request, configured.candidate)
    reference, candidates = candidates_for(
        replay.configured, presets=True, thresholds=[],
        costs=[] if chosen is configured.candidate else [chosen])
    sim = simulate(replay.data, candidates, reference=reference, bootstrap=request.bootstrap)
    report = SimulationReport.model_validate({**simulation_json(sim, replay),
                                              "simulated": chosen.name})
    return report, sim, chosen


def _risk(request: SimulationRequest, chosen: Candidate) -> RiskPolicy:
    if request.threshold is not None:
        return RiskPolicy(threshold=min(chosen.threshold, 0.999))
    return RiskPolicy(wrong_answer_cost=chosen.wrong_answer_cost,
                      abstain_cost=chosen.abstain_cost)


def policy_card_zip(
    decisions: DecisionStore, state: RuntimeState, request: SimulationRequest, *, who: str,
) -> tuple[str, bytes]:
    """The tenant's risk card (``basguard policy card``) with the simulated policy in place of
    the configured one, as a zip of its Markdown and figures (blocking: call it in a thread)."""
    configured = _configured(state, request.tenant, request.model)
    chosen = simulated_candidate(request, configured.candidate)
    tenants = dict(state.config.tenants)
    tenants[request.tenant] = tenants[request.tenant].model_copy(
        update={"risk": _risk(request, chosen)})
    policy = state.config.model_copy(update={"tenants": tenants})
    note = (f"The policy on this card is the one simulated in the ops console by {who}: "
            f"threshold {chosen.threshold:.3f} (wrong answer {chosen.wrong_answer_cost:g}, "
            f"abstention {chosen.abstain_cost:g}); the config in force has "
            f"{configured.candidate.threshold:.3f}. It is a proposal until the config says so.")
    inputs = CardInputs(
        request.tenant, state.path, policy, decisions.location,
        None if request.since_days is None else request.since_days * 86400, note=note,
        generator="the basguard ops console")
    with tempfile.TemporaryDirectory(prefix="basguard-card-") as directory:
        try:
            card = write_card(inputs, Path(directory))
        except UsageError as exc:
            raise InvalidRequest(str(exc), param="tenant") from None
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(Path(directory).iterdir()):
                archive.write(path, path.name)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{card.stem}-simulated-{stamp}.zip", buffer.getvalue()
