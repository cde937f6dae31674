"""``basguard policy check``: what a policy file or a gateway config would do, before serving it.

A file with ``models:`` is a gateway config and is checked as ``serve`` loads it (the config
schema, its calibrators, key lengths), except that an unset environment variable is a warning:
the check may run where the secrets are not. Any other file is a tenant policy file. Either way
the report names each tenant's threshold and the confidence signals its calibrators read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from calibrators.artifact import FittedCalibrator, load_artifact
from calibrators.errors import ArtifactError
from policies.check import TenantSummary, check_policy_file, summarize_tenants
from policies.loader import PolicyError, PolicyProblem, read_yaml_text
from policies.located_yaml import compose_located
from policies.schema import PolicyFile
from proxy.runtime.state import UNCALIBRATED, TenantRuntime, check_runtime
from proxy.upstream.target import UpstreamTarget

__all__ = ["ConfigCheck", "check_config_file", "format_models", "plural"]


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
        return ConfigCheck(
            tenants=summarize_tenants(state.config, path),
            signals={name: _plans(tenant) for name, tenant in state.tenants.items()},
            models=dict(state.models),
            warnings=warnings,
            policy=state.config,
        )
    check = check_policy_file(path, environ=env)
    signals = {}
    problems = []
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
        signals[tenant.name] = _signals(default, {m: c for m, c in loaded.items() if m})
    if problems:
        raise PolicyError(problems)
    return ConfigCheck(check.tenants, signals, {}, check.warnings, check.policy)


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
