"""``basguard policy check``: validate a policy file and summarise each tenant's risk."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .loader import KeyLines, PolicyError, PolicyProblem, load_yaml_located
from .schema import PolicyFile

__all__ = [
    "PolicyCheck",
    "TenantSummary",
    "check_policy_file",
    "format_policy_summary",
    "missing_calibrator_problems",
]


@dataclass(frozen=True)
class TenantSummary:
    """A tenant's effective risk and behaviour."""

    name: str
    risk_form: str
    wrong_answer_cost: float
    abstain_cost: float
    threshold: float
    mode: str
    on_missing_confidence: str
    calibrators: dict[str | None, Path]


@dataclass(frozen=True)
class PolicyCheck:
    """The result of checking a policy file: tenants, and warnings that are not errors."""

    policy: PolicyFile
    tenants: list[TenantSummary]
    warnings: list[str]


def missing_calibrator_problems(
    policy: PolicyFile, path: Path, lines: KeyLines
) -> list[PolicyProblem]:
    """A problem, at its line, for each referenced calibrator artifact that is not a file."""
    problems = []
    for tenant, artifacts in policy.calibrator_paths(path.parent).items():
        for model, artifact in artifacts.items():
            if artifact.is_file():
                continue
            where = ("models", model) if model else ("default",)
            key = ("tenants", tenant, "calibrators", *where)
            problems.append(
                PolicyProblem(
                    str(path), lines.line_of(key),
                    f"{'.'.join(key)}: calibrator artifact {str(artifact)!r} does not exist "
                    "(paths are relative to the policy file)",
                )
            )
    return problems


def check_policy_file(path: str | Path) -> PolicyCheck:
    """Validate a policy file, including that its calibrator artifacts exist.

    Raises
    ------
    PolicyError
        With every problem found, each located by file and line.
    """
    file_path = Path(path)
    policy, lines = load_yaml_located(file_path, PolicyFile)
    problems = missing_calibrator_problems(policy, file_path, lines)
    if problems:
        raise PolicyError(problems)
    warnings = [
        f"tenant {name!r}: environment variable {key.env} is not set here; "
        "the gateway will refuse to start without it"
        for name, tenant in policy.tenants.items()
        for key in tenant.api_keys
        if key.env and key.env not in os.environ
    ]
    summaries = [
        TenantSummary(
            name=name,
            risk_form=tenant.risk.form,
            wrong_answer_cost=tenant.profile.wrong_answer_cost,
            abstain_cost=tenant.profile.abstain_cost,
            threshold=tenant.threshold,
            mode=tenant.mode,
            on_missing_confidence=tenant.on_missing_confidence,
            calibrators=policy.calibrator_paths(file_path.parent)[name],
        )
        for name, tenant in policy.tenants.items()
    ]
    return PolicyCheck(policy, summaries, warnings)


def format_policy_summary(tenants: Sequence[TenantSummary]) -> str:
    """A table of each tenant's effective threshold and behaviour."""
    rows = [("tenant", "risk", "λ wrong", "a abstain", "threshold", "mode", "no confidence",
             "calibrators")]
    for t in tenants:
        calibrators = ", ".join(
            f"{model or 'default'}={path.name}" for model, path in t.calibrators.items()
        ) or "none (uncalibrated token_prob)"
        rows.append((
            t.name, t.risk_form, f"{t.wrong_answer_cost:g}", f"{t.abstain_cost:g}",
            f"{t.threshold:.4f}", t.mode, t.on_missing_confidence, calibrators,
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
