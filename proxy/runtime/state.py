"""The gateway's runtime state: a loaded config with its tenants, keys, calibrators and models.

A :class:`RuntimeState` is immutable and built whole from the config file; a reload builds a new
one and swaps it in atomically, so a request that started on one state finishes on it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from calibrators.artifact import FittedCalibrator, load_artifact
from calibrators.methods import IdentityCalibrator
from calibrators.signals import ScoreKind, ScoreSpec
from policies.check import short_key_problems
from policies.confidence import ConfidenceConfig, SignalSettings
from policies.loader import KeyLines, PolicyError, PolicyProblem, load_yaml_located
from policies.located_yaml import KeyPath
from policies.schema import (
    MIN_API_KEY_LENGTH,
    DropInPolicy,
    MissingConfidencePolicy,
    Mode,
    TenantPolicy,
)
from proxy.errors import AuthenticationFailed
from proxy.judging.decision import DecisionTerms
from proxy.judging.stream_gate import StreamGate, load_stream_gate
from proxy.runtime.admin_access import AdminKeys, AdminPrincipal, key_digest
from proxy.runtime.bearer import bearer_key
from proxy.runtime.config import AdminAccess, GatewayConfig, ReviewerAccess, UpstreamModel
from proxy.runtime.risk_limits import ModelRiskLimit, load_risk_limits
from proxy.signals.base import ConfidenceSignal
from proxy.signals.registry import (
    SignalConfigError,
    SignalPlan,
    build_signals,
    plan_signals,
    uncalibrated_spec,
)
from proxy.upstream.target import UpstreamTarget

__all__ = [
    "UNCALIBRATED",
    "RuntimeState",
    "TenantRuntime",
    "build_runtime",
    "check_runtime",
    "file_signature",
    "uncalibrated_calibrator",
]

#: A fixed date keeps an uncalibrated calibrator's version the same across processes and
#: restarts (the version is a hash of the artifact, creation date included).
_UNCALIBRATED_CREATED_AT = datetime(2026, 1, 1, tzinfo=UTC)

#: Used when a tenant names no calibrator: the raw geometric-mean token probability.
UNCALIBRATED = FittedCalibrator(
    estimator=IdentityCalibrator(),
    features=(ScoreSpec("token_prob", ScoreKind.PROBABILITY),),
    created_at=_UNCALIBRATED_CREATED_AT,
)


def uncalibrated_calibrator(settings: SignalSettings) -> FittedCalibrator:
    """The confidence without a fitted calibrator: the first enabled signal's default feature
    (``token_prob`` for logprobs, ``agreement`` for consistency, ...), read as P(correct)."""
    spec = uncalibrated_spec(build_signals(settings))
    if spec == UNCALIBRATED.features[0]:
        return UNCALIBRATED
    return FittedCalibrator(
        estimator=IdentityCalibrator(), features=(spec,), created_at=_UNCALIBRATED_CREATED_AT
    )


#: The plan of a tenant without a ``confidence:`` section and without a calibrator.
_DEFAULT_PLAN = plan_signals(SignalSettings(), UNCALIBRATED.feature_names)


@dataclass(frozen=True)
class TenantRuntime:
    """A tenant's policy, resolved: threshold, behaviour and loaded calibrators."""

    name: str
    mode: Mode
    threshold: float
    wrong_answer_cost: float
    abstain_cost: float
    abstention_message: str
    abstain_action: str
    on_missing_confidence: MissingConfidencePolicy
    default_calibrator: FittedCalibrator
    model_calibrators: Mapping[str, FittedCalibrator] = field(default_factory=dict)
    signal_plans: Mapping[str, SignalPlan] = field(default_factory=dict)
    """Per public model name, the confidence signals to run (resolved at load)."""
    default_signal_plan: SignalPlan = _DEFAULT_PLAN
    """For a model without its own plan (the collector's tenant, tests)."""
    stream_gate: StreamGate | None = None
    """Decide streamed answers on their first K tokens (enforce mode); None: buffer them."""
    drop_in: DropInPolicy = field(default_factory=DropInPolicy)
    """Passthrough, tool calls, structured output and the shape of a withheld answer."""
    risk_limits: Mapping[str, ModelRiskLimit] = field(default_factory=dict)
    """Per public model, the tenant's risk limit and its certificate (empty: no limit)."""
    audit_rate: float = 0.0
    """The share of decisions drawn at random for labelling (the audit sample)."""

    def calibrator_for(self, model: str) -> FittedCalibrator:
        return self.model_calibrators.get(model, self.default_calibrator)

    def terms_for(self, model: str, *, audited: bool = False,
                  breached: bool = False) -> DecisionTerms:
        """What a request on ``model`` is decided by: the cost threshold, or under a risk
        limit ``max(cost, certified)`` (nothing answered while uncertified, or once
        ``breached`` under ``on_breach: abstain``); ``audited`` marks it for labelling."""
        limit = self.risk_limits.get(model)
        if limit is None:
            return DecisionTerms(self.threshold, audited=audited)
        return limit.terms(audited=audited, breached=breached)

    def signal_plan_for(self, model: str) -> SignalPlan:
        return self.signal_plans.get(model, self.default_signal_plan)


FileSignature = tuple[tuple[str, int, int], ...]


def file_signature(paths: tuple[Path, ...]) -> FileSignature:
    """(path, mtime, size) of each file: a cheap way to notice that one changed."""
    signature = []
    for path in paths:
        try:
            stat = path.stat()
            signature.append((str(path), stat.st_mtime_ns, stat.st_size))
        except (OSError, ValueError):  # ValueError: a NUL byte in the path
            signature.append((str(path), -1, -1))
    return tuple(signature)


@dataclass(frozen=True)
class RuntimeState:
    """Everything a request needs, loaded from one version of the config."""

    config: GatewayConfig
    path: Path
    tenants: Mapping[str, TenantRuntime]
    models: Mapping[str, UpstreamTarget]
    key_digests: tuple[tuple[bytes, str], ...]
    watched_files: tuple[Path, ...]
    signature: FileSignature
    warnings: tuple[str, ...] = ()
    """What is loaded but deserves a look, logged at start and at each reload: a risk limit
    that answers nothing on a model (no certificate, or one that certified nothing)."""
    admin: AdminKeys | None = None
    """The ops console's keys; None: the config has no ``admin:`` section."""

    def authenticate(self, authorization: str | None) -> TenantRuntime:
        """The tenant whose key is in ``Authorization: Bearer KEY``.

        Keys are compared as SHA-256 digests with :func:`hmac.compare_digest`, against every
        stored digest without stopping at a match, so timing reveals nothing about the keys.
        """
        key = bearer_key(authorization)
        if key is None:
            raise AuthenticationFailed(
                "missing API key: send it as 'Authorization: Bearer YOUR_KEY'"
            )
        if len(key) < MIN_API_KEY_LENGTH:
            # Before hashing: no configured digest (of "", of a short key) can ever match one.
            raise AuthenticationFailed("invalid API key")
        digest = hashlib.sha256(key.encode()).digest()
        found: str | None = None
        for stored, tenant in self.key_digests:
            if hmac.compare_digest(stored, digest):
                found = tenant
        if found is None:
            raise AuthenticationFailed("invalid API key")
        return self.tenants[found]


def build_runtime(
    path: Path, environ: Mapping[str, str] | None = None, *, require_tenant_keys: bool = True
) -> RuntimeState:
    """Load the config at ``path`` with everything it references.

    ``require_tenant_keys=False`` is for callers that never authenticate a tenant
    (``basguard collect``): a tenant key variable that is unset is then skipped, not an error.

    Raises
    ------
    PolicyError
        For any problem, located by file and line where possible: invalid config, an unset
        environment variable, or a calibrator artifact that cannot be loaded.
    """
    return _build(path, os.environ if environ is None else environ, unset_env_is_error=True,
                  require_tenant_keys=require_tenant_keys)[0]


def check_runtime(
    path: Path, environ: Mapping[str, str] | None = None
) -> tuple[RuntimeState, list[str]]:
    """What ``serve`` would load from ``path``, with unset environment variables as warnings.

    For ``basguard policy check``, which may run where the gateway's secrets are not. The
    state's tenants lack the keys whose variables are unset; it is for reading, not serving.

    Raises
    ------
    PolicyError
        For every problem :func:`build_runtime` would refuse, except unset variables.
    """
    return _build(path, os.environ if environ is None else environ, unset_env_is_error=False)


def _build(
    path: Path, env: Mapping[str, str], *, unset_env_is_error: bool,
    require_tenant_keys: bool = True,
) -> tuple[RuntimeState, list[str]]:
    # Signatures are taken before reading, so a change made while loading triggers a reload.
    signature = list(file_signature((path,)))
    config, lines = load_yaml_located(path, GatewayConfig)
    build = _StateBuild(path, lines, env, signature, unset_env_is_error=unset_env_is_error,
                        require_tenant_keys=require_tenant_keys)
    return build.state(config), build.warnings


class _StateBuild:
    """One build of a :class:`RuntimeState` from a validated config: it collects every problem
    (at its file:line) before failing, the warnings, and the files a reload watches."""

    def __init__(
        self, path: Path, lines: KeyLines, env: Mapping[str, str],
        signature: list[tuple[str, int, int]], *, unset_env_is_error: bool,
        require_tenant_keys: bool,
    ) -> None:
        self.path = path
        self.lines = lines
        self.env = env
        self.signature = signature
        self.unset_env_is_error = unset_env_is_error
        self.require_tenant_keys = require_tenant_keys
        self.problems: list[PolicyProblem] = []
        self.warnings: list[str] = []
        self.watched = [path]

    def state(self, config: GatewayConfig) -> RuntimeState:
        """The state, or :class:`PolicyError` listing every problem found on the way."""
        self.problems.extend(short_key_problems(config, self.path, self.lines, self.env))
        key_digests: list[tuple[bytes, str]] = []
        tenants: dict[str, TenantRuntime] = {}
        for name, policy in config.tenants.items():
            key_digests.extend(self.key_digests(name, policy))
            tenants[name] = self.tenant(name, policy, config)
        models = {public: self.upstream(public, upstream)
                  for public, upstream in config.models.items()}
        admin = (None if config.admin is None
                 else self.admin_keys(config.admin, {digest for digest, _ in key_digests}))
        if self.problems:
            raise PolicyError(self.problems)
        return RuntimeState(
            config=config,
            path=self.path,
            tenants=tenants,
            models=models,
            key_digests=tuple(key_digests),
            watched_files=tuple(self.watched),
            signature=tuple(self.signature),
            warnings=tuple(self.warnings),
            admin=admin,
        )

    def problem(self, key: KeyPath, message: str) -> None:
        self.problems.append(PolicyProblem(str(self.path), self.lines.line_of(key), message))

    def unset(self, key: KeyPath, message: str) -> None:
        """An environment variable the config names is not set: a problem, or for ``policy
        check`` (which may run where the secrets are not) a warning."""
        if self.unset_env_is_error:
            self.problem(key, message)
            return
        line = self.lines.line_of(key)
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        self.warnings.append(f"{where}: {message} here; the gateway will refuse to start "
                             "without it")

    def watch(self, relative: str) -> Path:
        """A file the config references, watched from now on for a reload."""
        path = self.path.parent / relative
        self.watched.append(path)
        self.signature.extend(file_signature((path,)))
        return path

    def key_digests(self, name: str, policy: TenantPolicy) -> list[tuple[bytes, str]]:
        """The SHA-256 digest of each of the tenant's keys that is set."""
        digests = []
        for i, key in enumerate(policy.api_keys):
            # Stripped as a presented key is: a key file's newline must not lock the tenant out.
            value = self.env.get(key.env, "").strip() if key.env is not None else ""
            if key.sha256 is not None:
                digests.append((bytes.fromhex(key.sha256), name))
            elif value:
                digest = hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()
                digests.append((digest, name))
            elif self.require_tenant_keys:
                self.unset(("tenants", name, "api_keys", i),
                           f"tenant {name!r}: environment variable {key.env} is not set")
        return digests

    def admin_keys(self, admin: AdminAccess, tenant_digests: set[bytes]) -> AdminKeys:
        """The console's key digests. A key that is also a tenant's (the same value in two
        variables) is a problem: a tenant key must never open /admin."""
        digests: list[tuple[bytes, AdminPrincipal]] = []
        accesses: list[tuple[str, ReviewerAccess, tuple[str, ...]]] = [
            ("admin", admin, ("admin",)),
            *((name, reviewer, ("admin", "reviewers", name))
              for name, reviewer in admin.reviewers.items())]
        for name, access, where in accesses:
            scope = None if access.tenants is None else frozenset(access.tenants)
            for i, key in enumerate(access.api_keys):
                at: KeyPath = (*where, "api_keys", i)
                if key.sha256 is not None:
                    digest = bytes.fromhex(key.sha256)
                else:
                    value = self.env.get(key.env or "", "").strip()
                    if not value:
                        if self.require_tenant_keys:
                            self.unset(at, f"{name}: environment variable {key.env} is not set")
                        continue
                    if len(value) < MIN_API_KEY_LENGTH:
                        self.problem(at, f"{name}: the key in {key.env} has {len(value)} "
                                     f"characters; keys need at least {MIN_API_KEY_LENGTH} "
                                     "(e.g. `openssl rand -hex 24`)")
                        continue
                    digest = key_digest(value)
                if digest in tenant_digests:
                    self.problem(at, f"{name}: this key is also a tenant's key; an admin or "
                                 "reviewer key must be its own")
                    continue
                digests.append((digest, AdminPrincipal(
                    name=name, key_id=digest[:4].hex(), tenants=scope,
                    can_promote=access is admin)))
        return AdminKeys(tuple(digests), session_seconds=admin.session_minutes * 60.0)

    def tenant(self, name: str, policy: TenantPolicy, config: GatewayConfig) -> TenantRuntime:
        calibrators = self.calibrators(name, policy)
        default_calibrator = calibrators.pop(None, None)
        stream_gate = self.stream_gate(name, policy)
        plans, per_model = _signal_plans(
            name, policy.confidence, default_calibrator, calibrators, config, self.problem
        )
        if default_calibrator is None:
            default_calibrator = uncalibrated_calibrator(policy.confidence)
        fallback = default_calibrator
        limits = load_risk_limits(
            name, policy, models=config.models,
            calibrator_for=lambda model: (per_model.get(model, fallback) if model is not None
                                          else fallback),
            own_calibrator=lambda model: model in calibrators,
            resolve=self.watch, problem=self.problem,
        )
        self.warnings.extend(limits.warnings)
        profile = policy.profile
        return TenantRuntime(
            name=name,
            mode=policy.mode,
            threshold=profile.threshold,
            wrong_answer_cost=profile.wrong_answer_cost,
            abstain_cost=profile.abstain_cost,
            abstention_message=policy.abstention_message,
            abstain_action=policy.abstain_action,
            on_missing_confidence=policy.on_missing_confidence,
            default_calibrator=default_calibrator,
            model_calibrators=per_model,
            signal_plans=plans,
            stream_gate=stream_gate,
            drop_in=policy,
            risk_limits={model: limit for model, limit in limits.limits.items()
                         if model is not None},
            audit_rate=policy.audit_rate,
        )

    def calibrators(self, name: str, policy: TenantPolicy) -> dict[str | None, FittedCalibrator]:
        """The tenant's calibrator artifacts that load, by model (None: the default)."""
        calibrators: dict[str | None, FittedCalibrator] = {}
        for model, artifact in policy.calibrators.paths().items():
            artifact_path = self.watch(artifact)
            where = ("models", model) if model else ("default",)
            try:
                calibrators[model] = load_artifact(artifact_path)
            except ValueError as exc:  # ArtifactError
                self.problem(("tenants", name, "calibrators", *where), str(exc))
        return calibrators

    def stream_gate(self, name: str, policy: TenantPolicy) -> StreamGate | None:
        if policy.stream_gate is None or policy.stream_gate.calibrator is None:
            return None
        gate_path = self.watch(policy.stream_gate.calibrator)
        try:
            return load_stream_gate(gate_path, policy.stream_gate.decide_after_tokens)
        except ValueError as exc:  # ArtifactError, or not a prefix calibrator for this K
            self.problem(("tenants", name, "stream_gate", "calibrator"), str(exc))
            return None

    def upstream(self, public: str, upstream: UpstreamModel) -> UpstreamTarget:
        api_key = None
        if upstream.api_key_env is not None:
            # A key file read into the variable keeps its newline: stripped, as tenants' are.
            api_key = (self.env.get(upstream.api_key_env) or "").strip() or None
            if api_key is None:
                self.unset(("models", public, "api_key_env"),
                           f"model {public!r}: environment variable {upstream.api_key_env} is "
                           "not set")
            elif not (api_key.isascii() and api_key.isprintable()):
                self.problem(("models", public, "api_key_env"),
                             f"model {public!r}: environment variable {upstream.api_key_env} "
                             "holds characters an HTTP header cannot carry (a line break, or "
                             "other than printable ASCII)")
        return UpstreamTarget(
            public_name=public,
            provider=upstream.provider,
            model=upstream.model or public,
            base_url=upstream.base_url.rstrip("/") if upstream.base_url else None,
            api_key=api_key,
            timeout_seconds=upstream.timeout_seconds,
            top_logprobs=upstream.top_logprobs,
            max_response_bytes=upstream.max_response_bytes,
            organization=upstream.organization,
            project=upstream.project,
        )


_Report = Callable[[KeyPath, str], None]
"""Where a build's problems go: the key path the problem is at, and the message."""


def _signal_plans(
    tenant: str,
    confidence: ConfidenceConfig,
    default: FittedCalibrator | None,
    calibrators: Mapping[str | None, FittedCalibrator],
    config: GatewayConfig,
    problem: _Report,
) -> tuple[dict[str, SignalPlan], dict[str, FittedCalibrator]]:
    """Per configured model, the tenant's calibrator and the signals to run for it.

    Reports (through ``problem``) a calibrator reading a feature no enabled signal yields, a
    signal calling a model that is not configured, and a signal timeout not shorter than the
    upstream's (the signal must give up first, so a slow signal costs its features, not the
    response).
    """
    report = _once(problem)  # the same tenant setting fails for every model
    where = ("tenants", tenant, "confidence")
    for model in confidence.models:
        if model not in config.models:
            report((*where, "models", model),
                   f"tenant {tenant!r}: `confidence: models:` names {model!r}, which is not "
                   f"configured under `models:` (configured: {', '.join(sorted(config.models))})")
    plans: dict[str, SignalPlan] = {}
    per_model: dict[str, FittedCalibrator] = {}
    for model in config.models:
        settings = confidence.for_model(model)
        section = (*where, "models", model) if model in confidence.models else where
        calibrator = calibrators.get(model) or default or uncalibrated_calibrator(settings)
        per_model[model] = calibrator
        try:
            plans[model] = plan_signals(settings, calibrator.feature_names)
        except SignalConfigError as exc:
            # Where the features were asked for: the model's calibrator, the default one, or
            # (uncalibrated) the signal settings whose default feature it reads.
            if model in calibrators:
                key: KeyPath = ("tenants", tenant, "calibrators", "models", model)
            elif default is not None:
                key = ("tenants", tenant, "calibrators", "default")
            else:
                key = section
            report(key, f"tenant {tenant!r}, model {model!r}: {exc}")
            continue
        for signal in plans[model].enabled:
            _check_signal_calls(tenant, model, signal, settings, section, config, report)
    return plans, per_model


def _check_signal_calls(
    tenant: str, model: str, signal: ConfidenceSignal, settings: SignalSettings,
    section: KeyPath, config: GatewayConfig, report: _Report,
) -> None:
    """The model a signal calls is configured, and the signal gives up before the upstream."""
    if signal.immediate:
        return  # no calls: neither a model to call nor a timeout of its own
    sub = getattr(settings, signal.name, None)
    called = getattr(sub, "model", None) or model
    if called not in config.models:
        report((*section, signal.name, "model"),
               f"tenant {tenant!r}: the {signal.name} signal calls the model {called!r}, which "
               f"is not configured under `models:` (configured: "
               f"{', '.join(sorted(config.models))})")
        return
    limit = min(config.models[model].timeout_seconds, config.models[called].timeout_seconds)
    if signal.timeout_seconds >= limit:
        own_timeout = sub is not None and "timeout_seconds" in sub.model_fields_set
        report((*section, signal.name, "timeout_seconds") if own_timeout
               else (*section, "timeout_seconds"),
               f"tenant {tenant!r}, model {model!r}: the {signal.name} signal's timeout "
               f"({signal.timeout_seconds:g} s) must be shorter than the upstream's "
               f"timeout_seconds ({limit:g} s), so a slow signal costs its features, not the "
               "response")


def _once(report: _Report) -> _Report:
    """``report``, passing each message on only the first time."""
    reported: set[str] = set()

    def once(key: KeyPath, message: str) -> None:
        if message not in reported:
            reported.add(message)
            report(key, message)

    return once
