"""``basguard policy check``: validate a policy file and summarise each tenant's risk.

The CLI front end lives in the gateway (``proxy.cli.main``); this module gives it the result to
print. Whether an artifact is a valid calibrator needs the calibrators package, which policies
must not import, so here only its existence is checked.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import PolicyError, PolicyProblem
from .loader import KeyLines, load_yaml_located
from .schema import MIN_API_KEY_LENGTH, PolicyFile

__all__ = [
    "PolicyCheck",
    "TenantSummary",
    "check_policy_file",
    "format_policy_summary",
    "missing_calibrator_problems",
    "missing_certificate_problems",
    "short_key_problems",
    "summarize_tenants",
    "unset_key_warnings",
]


@dataclass(frozen=True)
class TenantSummary:
    """A tenant's effective risk and behaviour, as ``basguard policy check`` shows it."""

    name: str
    #: The preset's name, ``"custom"`` (explicit costs) or ``"threshold"``.
    profile: str
    wrong_answer_cost: float
    abstain_cost: float
    threshold: float
    mode: str
    abstain_action: str
    on_missing_confidence: str
    #: Artifact per model name (``None`` for the default), resolved against the file's directory.
    calibrators: dict[str | None, Path]
    #: The risk limit's A and C (None: no limit), and what a proven breach does.
    max_error_rate: float | None = None
    confidence: float | None = None
    on_breach: str = "alert"
    #: Certificate per model name (``None`` for the default), resolved like the calibrators.
    certificates: dict[str | None, Path] | None = None
    #: The share of decisions marked for labelling.
    audit_rate: float = 0.0

    @property
    def limit(self) -> str:
        """The risk limit in a few characters: ``≤ 2% wrong at 95%``, or ``none``."""
        if self.max_error_rate is None or self.confidence is None:
            return "none"
        return f"≤ {100 * self.max_error_rate:g}% wrong at {100 * self.confidence:g}%"


@dataclass(frozen=True)
class PolicyCheck:
    """The result of checking a policy file: tenants, and warnings that are not errors."""

    policy: PolicyFile
    tenants: list[TenantSummary]
    warnings: list[str]
    #: The line of every key, to locate problems found later (an artifact that fails to load).
    lines: KeyLines


def missing_calibrator_problems(
    policy: PolicyFile, path: Path, lines: KeyLines
) -> list[PolicyProblem]:
    """A problem, at the line of its reference, for each calibrator artifact that is not a file.

    Parameters
    ----------
    policy : PolicyFile
        The validated policy (or a subclass, such as the gateway's config).
    path : Path
        The policy file; artifact paths are relative to its directory.
    lines : KeyLines
        The line of every key, from :func:`policies.loader.load_yaml_located`.

    Returns
    -------
    list of PolicyProblem
        Empty when every referenced artifact exists.
    """
    return _missing_files(policy.calibrator_paths(path.parent), ("calibrators",),
                          "calibrator artifact", "", path, lines)


def missing_certificate_problems(
    policy: PolicyFile, path: Path, lines: KeyLines
) -> list[PolicyProblem]:
    """A problem, at the line of its reference, for each risk certificate that is not a file.

    Parameters
    ----------
    policy : PolicyFile
        The validated policy (or a subclass, such as the gateway's config).
    path : Path
        The policy file; certificate paths are relative to its directory.
    lines : KeyLines
        The line of every key.

    Returns
    -------
    list of PolicyProblem
        Empty when every referenced certificate exists.
    """
    return _missing_files(policy.certificate_paths(path.parent), ("risk", "certificates"),
                          "risk certificate",
                          "; `basguard calibrate certify ... -o FILE` writes one", path, lines)


def _missing_files(
    files: Mapping[str, Mapping[str | None, Path]], section: tuple[str, ...], what: str,
    hint: str, path: Path, lines: KeyLines,
) -> list[PolicyProblem]:
    """A problem for each of a tenant's ``files`` (per model; None: its default) that is not a
    file, at the line of its key under ``tenants.<tenant>.<section>``."""
    problems = []
    for tenant, per_model in files.items():
        for model, file in per_model.items():
            if file.is_file():
                continue
            where = ("models", model) if model is not None else ("default",)
            key = ("tenants", tenant, *section, *where)
            state = "is not a file" if file.exists() else "does not exist"
            problems.append(PolicyProblem(
                str(path), lines.line_of(key),
                f"{'.'.join(key)}: {what} {str(file)!r} {state} (paths are relative to the "
                f"policy file's directory{hint})",
            ))
    return problems


def short_key_problems(
    policy: PolicyFile, path: Path, lines: KeyLines, environ: Mapping[str, str]
) -> list[PolicyProblem]:
    """A problem, at the key's line, for each ``env:`` key set to fewer than 16 characters.

    Parameters
    ----------
    policy : PolicyFile
        The validated policy (or a subclass, such as the gateway's config).
    path : Path
        The policy file, as problems name it.
    lines : KeyLines
        The line of every key, from :func:`policies.loader.load_yaml_located`.
    environ : mapping of str to str
        Where the keys are read. Surrounding whitespace is not part of a key.

    Returns
    -------
    list of PolicyProblem
        Empty when every set key has at least :data:`~policies.schema.MIN_API_KEY_LENGTH`
        characters; unset keys are :func:`unset_key_warnings`' business. No key is quoted.
    """
    problems = []
    for name, tenant in policy.tenants.items():
        for i, key in enumerate(tenant.api_keys):
            value = environ.get(key.env, "").strip() if key.env is not None else ""
            if 0 < len(value) < MIN_API_KEY_LENGTH:
                problems.append(PolicyProblem(
                    str(path),
                    lines.line_of(("tenants", name, "api_keys", i)),
                    f"tenants.{name}.api_keys.{i}: the key in {key.env} has {len(value)} "
                    f"characters; keys need at least {MIN_API_KEY_LENGTH} "
                    "(e.g. `openssl rand -hex 24`)",
                ))
    return problems


def unset_key_warnings(policy: PolicyFile, environ: Mapping[str, str]) -> list[str]:
    """A warning for each ``env:`` key whose variable is unset or empty in ``environ``.

    Not an error: the check may run where the gateway's secrets are not, but the gateway
    refuses to start without them.
    """
    return [
        f"tenant {name!r}: environment variable {key.env} is not set here; "
        "the gateway will refuse to start without it"
        for name, tenant in policy.tenants.items()
        for key in tenant.api_keys
        if key.env is not None and not environ.get(key.env, "").strip()
    ]


def check_policy_file(
    path: str | Path, *, environ: Mapping[str, str] | None = None
) -> PolicyCheck:
    """Validate a policy file, including that its calibrator artifacts exist.

    Parameters
    ----------
    path : str or Path
        The YAML policy file.
    environ : mapping of str to str, optional
        Where ``env:`` keys are looked up for warnings; defaults to ``os.environ``.

    Returns
    -------
    PolicyCheck
        The policy, a summary per tenant (in file order) and warnings (unset key variables).

    Raises
    ------
    PolicyError
        With every problem found, each located by file and line.
    """
    file_path = Path(path)
    env = os.environ if environ is None else environ
    policy, lines = load_yaml_located(file_path, PolicyFile)
    problems = [*missing_calibrator_problems(policy, file_path, lines),
                *missing_certificate_problems(policy, file_path, lines),
                *short_key_problems(policy, file_path, lines, env)]
    if problems:
        raise PolicyError(problems)
    warnings = unset_key_warnings(policy, env)
    return PolicyCheck(policy, summarize_tenants(policy, file_path), warnings, lines)


def summarize_tenants(policy: PolicyFile, path: Path) -> list[TenantSummary]:
    """Each tenant's effective risk and behaviour, in file order.

    Parameters
    ----------
    policy : PolicyFile
        The validated policy (or a subclass, such as the gateway's config).
    path : Path
        The file it came from; calibrator paths are resolved against its directory.

    Returns
    -------
    list of TenantSummary
        One per tenant.
    """
    artifacts = policy.calibrator_paths(path.parent)
    certificates = policy.certificate_paths(path.parent)
    summaries = []
    for name, tenant in policy.tenants.items():
        profile = tenant.profile
        summaries.append(
            TenantSummary(
                name=name,
                profile=tenant.risk.form,
                wrong_answer_cost=profile.wrong_answer_cost,
                abstain_cost=profile.abstain_cost,
                threshold=profile.threshold,
                mode=tenant.mode,
                abstain_action=tenant.abstain_action,
                on_missing_confidence=tenant.on_missing_confidence,
                calibrators=artifacts[name],
                max_error_rate=tenant.risk.max_error_rate,
                confidence=tenant.risk.confidence,
                on_breach=tenant.risk.on_breach,
                certificates=certificates[name],
                audit_rate=tenant.audit_rate,
            )
        )
    return summaries


def format_policy_summary(
    tenants: Sequence[TenantSummary], signals: Mapping[str, str] | None = None
) -> str:
    """A plain-text table of each tenant's effective threshold and behaviour.

    Parameters
    ----------
    tenants : sequence of TenantSummary
        From :func:`check_policy_file` or :func:`summarize_tenants`.
    signals : mapping of str to str, optional
        Per tenant, the confidence signals its calibrators read, as text; shown as a last
        column when given (reading artifacts is the caller's: policies cannot load them).

    Returns
    -------
    str
        A header and one row per tenant, columns aligned with spaces, no trailing newline. The
        ``risk limit`` and ``audit`` columns are shown when some tenant has a limit or an
        audit rate; ``threshold`` is the cost-optimal one (a limit may raise it per model).
    """
    # The risk limit and audit columns appear once some tenant has one.
    limits = any(t.max_error_rate is not None or t.audit_rate for t in tenants)
    rows = [("tenant", "profile", "λ wrong", "a abstain", "threshold", "mode", "no confidence",
             *(("risk limit", "audit") if limits else ()), "calibrators",
             *(("signals",) if signals is not None else ()))]
    for t in tenants:
        calibrators = ", ".join(
            f"{model or 'default'}={path}" for model, path in t.calibrators.items()
        ) or "none (uncalibrated)"
        # In enforce mode an abstention can be a message or an error; say which.
        mode = f"{t.mode} ({t.abstain_action})" if t.mode == "enforce" else t.mode
        rows.append((
            t.name, t.profile, f"{t.wrong_answer_cost:g}", f"{t.abstain_cost:g}",
            f"{t.threshold:.4f}", mode, t.on_missing_confidence,
            *((t.limit, f"{100 * t.audit_rate:g}%" if t.audit_rate else "none") if limits
              else ()),
            calibrators,
            *((signals.get(t.name, ""),) if signals is not None else ()),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
