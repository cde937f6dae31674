"""``basguard policy check``: what a policy file or a gateway config would do, before serving it.

A file with ``models:`` is a gateway config and is checked as ``serve`` loads it (the config
schema, its calibrators, key lengths), except that an unset environment variable is a warning:
the check may run where the secrets are not. Any other file is a tenant policy file. Either way
the report names each tenant's threshold and the confidence signals its calibrators read, and
for a tenant with a risk limit, per model, the certified threshold, the labels behind it, the
answer rate it implies and the threshold in force (or that the tenant answers nothing there).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from calibrators.artifact import FittedCalibrator, load_artifact
from calibrators.errors import ArtifactError
from policies.check import PolicyCheck, TenantSummary, check_policy_file, summarize_tenants
from policies.loader import PolicyError, PolicyProblem, read_yaml_text
from policies.located_yaml import KeyPath, compose_located
from policies.schema import PolicyFile
from proxy.runtime.risk_limits import ModelRiskLimit, RiskLimitLoad, load_risk_limits
from proxy.runtime.state import UNCALIBRATED, TenantRuntime, check_runtime
from proxy.upstream.target import UpstreamTarget

__all__ = ["ConfigCheck", "check_config_file", "format_models", "format_risk_limits", "plural"]


@dataclass(frozen=True)
class ConfigCheck:
    """What ``policy check`` reports about one file."""

    tenants: list[TenantSummary]
    #: Per tenant, the signals its calibrators read, e.g. ``"token_prob"`` or
    #: ``"default: token_prob; gpt-4o: token_prob, mean_logprob"``.
    signals: dict[str, str]
    #: The upstream models of a gateway config; empty for a policy file.
    models: dict[str, UpstreamTarget]
    warnings: list[str]
    #: The validated file (a gateway config is a PolicyFile too).
    policy: PolicyFile
    #: Per tenant with a risk limit, per model (None: a policy file's default), its limit.
    limits: dict[str, dict[str | None, ModelRiskLimit]] = field(default_factory=dict)

    @property
    def is_gateway_config(self) -> bool:
        return bool(self.models)


def check_config_file(path: Path, environ: Mapping[str, str] | None = None) -> ConfigCheck:
    """Check a gateway config or a policy file as ``serve`` would load it.

    Raises
    ------
    PolicyError
        With every problem found, located by file and line, artifacts that cannot be loaded
        included.
    """
    env = os.environ if environ is None else environ
    data, _ = compose_located(read_yaml_text(path), display_name=str(path))
    if "models" in data:
        state, warnings = check_runtime(path, env)
        limits: dict[str, dict[str | None, ModelRiskLimit]] = {}
        for name, runtime in state.tenants.items():
            if runtime.risk_limits:
                limits[name] = {model: limit for model, limit in runtime.risk_limits.items()}
        return ConfigCheck(
            tenants=summarize_tenants(state.config, path),
            signals={name: _plans(tenant) for name, tenant in state.tenants.items()},
            models=dict(state.models),
            warnings=warnings,
            policy=state.config,
            limits=limits,
        )
    check = check_policy_file(path, environ=env)
    signals = {}
    problems: list[PolicyProblem] = []
    limits = {}
    warnings = list(check.warnings)
    for tenant in check.tenants:
        # Existence is checked by the policy package; whether each artifact is a valid
        # calibrator needs the calibrators package, which only this layer may combine.
        loaded: dict[str | None, FittedCalibrator] = {}
        for model, file in tenant.calibrators.items():
            try:
                loaded[model] = load_artifact(file)
            except ArtifactError as exc:
                where = ("models", model) if model is not None else ("default",)
                line = check.lines.line_of(("tenants", tenant.name, "calibrators", *where))
                problems.append(PolicyProblem(str(path), line, str(exc)))
        default = loaded.pop(None, UNCALIBRATED)
        per_model = {m: c for m, c in loaded.items() if m}
        signals[tenant.name] = _signals(default, per_model)
        policy = check.policy.tenants[tenant.name]
        if policy.risk.limited:
            load = _policy_file_limits(path, check, tenant.name, default, per_model, problems)
            limits[tenant.name] = load.limits
            warnings.extend(load.warnings)
    if problems:
        raise PolicyError(problems)
    return ConfigCheck(check.tenants, signals, {}, warnings, check.policy, limits)


def _policy_file_limits(
    path: Path, check: PolicyCheck, tenant: str, default: FittedCalibrator,
    per_model: Mapping[str, FittedCalibrator], problems: list[PolicyProblem],
) -> RiskLimitLoad:
    """A policy file's tenant's limits: it names no models, so its default and the models its
    calibrators and certificates name."""
    policy = check.policy.tenants[tenant]

    def report(key: KeyPath, message: str) -> None:
        problems.append(PolicyProblem(str(path), check.lines.line_of(key), message))

    def calibrator_for(model: str | None) -> FittedCalibrator:
        return default if model is None else per_model.get(model, default)

    named = sorted({*per_model, *(m for m in policy.risk.certificate_paths() if m is not None)})
    return load_risk_limits(
        tenant, policy, models=[None, *named], calibrator_for=calibrator_for,
        own_calibrator=lambda model: model in per_model,
        resolve=lambda written: path.parent / written, problem=report,
    )


def _plans(tenant: TenantRuntime) -> str:
    """Per model (grouped when alike): the signals run, the features read, the extra calls.

    E.g. ``consistency: agreement (+5 calls/request)``; a signal enabled but not read by the
    calibrator is listed as ``(not run: ...)``.
    """
    by_text: dict[str, list[str]] = {}
    for model, plan in tenant.signal_plans.items():
        run = ", ".join(s.name for s in plan.to_run) or "none"
        idle = [s.name for s in plan.enabled if s not in plan.to_run]
        text = (f"{run}: {', '.join(tenant.calibrator_for(model).feature_names)} "
                f"(+{plan.extra_calls()} calls/request)")
        if idle:
            text += f" (not run: {', '.join(idle)})"
        by_text.setdefault(text, []).append(model)
    if len(by_text) <= 1:
        return next(iter(by_text), "")
    return "; ".join(f"{', '.join(models)}: {text}" for text, models in by_text.items())


def _signals(default: FittedCalibrator, per_model: Mapping[str, FittedCalibrator]) -> str:
    """The score fields read, per model where a model has its own calibrator."""
    if not per_model:
        return ", ".join(default.feature_names)
    parts = [f"default: {', '.join(default.feature_names)}"]
    parts += [f"{model}: {', '.join(c.feature_names)}" for model, c in per_model.items()]
    return "; ".join(parts)


def format_risk_limits(limits: Mapping[str, Mapping[str | None, ModelRiskLimit]]) -> str:
    """Per tenant and model, the risk limit and what its certificate proves, one line each."""
    lines = []
    for tenant, per_model in limits.items():
        for model, limit in per_model.items():
            where = f"{tenant} / {'default' if model is None else model}"
            certificate = limit.certificate
            if limit.threshold is None or certificate is None:
                lines.append(f"{where}: ANSWERS NOTHING: {limit.uncertified_reason()}")
                continue
            tested = certificate.tested
            lines.append(
                f"{where}: {limit.describe()}; certified threshold "
                f"{certificate.threshold:.4f} on {certificate.labels} labels ({tested.answered} "
                f"of {tested.labels} tested answered, {tested.errors} wrong, bound "
                f"{certificate.upper_bound or 1.0:.1%}), answer rate {certificate.answer_rate:.1%} "
                f"on its data; answers iff p >= {limit.threshold:.4f} (cost threshold "
                f"{limit.cost_threshold:.4f}); on breach: {limit.on_breach}; certificate "
                f"{limit.certificate_path} (version {certificate.version})")
    return "\n".join(lines)


def format_models(models: Mapping[str, UpstreamTarget]) -> str:
    """A plain-text table of the upstream models: public name, provider, upstream name, URL."""
    rows = [("model", "provider", "upstream model", "base url", "timeout")]
    rows += [
        (name, target.provider, target.model, target.base_url or "(provider default)",
         f"{target.timeout_seconds:g} s")
        for name, target in models.items()
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def plural(count: int, noun: str) -> str:
    """``1 tenant``, ``2 tenants``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
