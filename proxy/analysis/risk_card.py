"""The risk-limit section of a tenant's risk card (``basguard policy card``).

What the tenant promises ("at most A wrong among the answers, with confidence C"), what each
model's certificate proves (its threshold, the labels behind it, the answer rate it implies),
the threshold in force, the audit sample, and with a decision store what the audit sample's
labels say of the limit now (the live bound).
"""

from __future__ import annotations

from collections.abc import Mapping

from policies.schema import TenantPolicy
from proxy.runtime.risk_limits import ModelRiskLimit, live_limits
from proxy.store import DecisionStore

__all__ = ["risk_limit_section"]


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def risk_limit_section(
    policy: TenantPolicy, tenant: str, limits: Mapping[str | None, ModelRiskLimit],
    store: DecisionStore | None, known_limits: list[str],
) -> list[str]:
    """The section's Markdown lines; what the reader must know goes to ``known_limits`` too."""
    lines = ["## Risk limit", ""]
    audit = (f"{100 * policy.audit_rate:g} % of decisions, drawn at random, answered and "
             "withheld alike, are marked for labelling (`audit_rate`)" if policy.audit_rate
             else "none (`audit_rate` is 0): no labels can certify or watch a limit")
    risk = policy.risk
    if risk.max_error_rate is None or risk.confidence is None:
        return [*lines, "No risk limit: the threshold follows from the costs alone and promises "
                "nothing about how often an answer is wrong.", "", f"- **Audit sample:** {audit}",
                ""]
    lines += [
        f"- **Limit:** at most **{100 * risk.max_error_rate:g} %** of the answers wrong, with "
        f"**{100 * risk.confidence:g} %** confidence over the labelled data it was certified on "
        "(exchangeable with traffic: same model, calibrator and kind of question)",
        f"- **On a proven breach:** `{risk.on_breach}`" + (
            " (every answer on the model is withheld until a new certificate is loaded)"
            if risk.on_breach == "abstain" else " (the alert fires; answers go on)"),
        f"- **Audit sample:** {audit}", "",
        "| model | certificate | certified threshold | labels | tested: answered, wrong | "
        "bound | answer rate on its data | answers iff p ≥ |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model, limit in limits.items():
        name = "default" if model is None else f"`{model}`"
        certificate = limit.certificate
        if certificate is None or limit.threshold is None:
            shown = "none" if certificate is None else f"`{limit.certificate_path}`"
            lines.append(f"| {name} | {shown} | not certified | "
                         f"{0 if certificate is None else certificate.labels} | | | | "
                         "**answers nothing** |")
            known_limits.append(f"Risk limit, {name}: {limit.uncertified_reason()}.")
            continue
        tested = certificate.tested
        lines.append(
            f"| {name} | `{limit.certificate_path}` (version `{certificate.version}`, "
            f"{certificate.created_at.date().isoformat()}) | {certificate.threshold:.4f} | "
            f"{certificate.labels} | {tested.answered}, {tested.errors} of {tested.labels} | "
            f"{_pct(certificate.upper_bound or 1.0)} | {_pct(certificate.answer_rate)} | "
            f"{limit.threshold:.4f} |")
    lines += ["", "The threshold in force is the larger of the cost threshold "
              f"({policy.profile.threshold:.4f}) and the certified one.", ""]
    if store is not None:
        lines += _live(tenant, limits, store, known_limits)
    return lines


def _live(tenant: str, limits: Mapping[str | None, ModelRiskLimit], store: DecisionStore,
          known_limits: list[str]) -> list[str]:
    named = {model: limit for model, limit in limits.items() if model is not None}
    live = live_limits({tenant: named}, store.audit_totals())
    lines = ["### Watched live (the audit sample)", ""]
    if not live:
        return [*lines, "No certified model to watch.", ""]
    lines += ["| model | audited answers labelled | wrong | error rate at most | at least | "
              "verdict |", "|---|---|---|---|---|---|"]
    for watched in live:
        bound = watched.bound
        verdict = "**BREACHED**" if bound.breached else "within the limit so far"
        if bound.breached:
            known_limits.append(f"Risk limit on `{watched.model}` breached: the audit sample "
                                f"proves more than {100 * watched.limit.max_error_rate:g} % "
                                "wrong among the answers; re-certify.")
        lines.append(f"| `{watched.model}` | {bound.labels} | {bound.errors} | "
                     f"{_pct(bound.upper)} | {_pct(bound.lower)} | {verdict} |")
    lines += ["", "Bounds are anytime-valid (a confidence sequence at the limit's confidence): "
              "they may be read after every label. Only audited decisions made under the "
              "certificate in force count.", ""]
    return lines
