"""The gateway's runtime state: a loaded config with its tenants, keys, calibrators and models.

A :class:`RuntimeState` is immutable and built whole from the config file; a reload builds a new
one and swaps it in atomically, so a request that started on one state finishes on it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from calibrators.artifact import FittedCalibrator, load_artifact
from calibrators.methods import IdentityCalibrator
from calibrators.signals import ScoreKind, ScoreSpec
from policies.check import short_key_problems
from policies.loader import PolicyError, PolicyProblem, load_yaml_located
from policies.schema import MIN_API_KEY_LENGTH, MissingConfidencePolicy, Mode

from .config import GatewayConfig
from .errors import AuthenticationFailed
from .upstream import UpstreamTarget

__all__ = [
    "UNCALIBRATED",
    "RuntimeState",
    "TenantRuntime",
    "build_runtime",
    "check_runtime",
    "file_signature",
]

#: Used when a tenant names no calibrator: the raw geometric-mean token probability.
UNCALIBRATED = FittedCalibrator(
    estimator=IdentityCalibrator(),
    features=(ScoreSpec("token_prob", ScoreKind.PROBABILITY),),
    # A fixed date keeps its version the same across processes and restarts.
    created_at=datetime(2026, 1, 1, tzinfo=UTC),
)


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

    def calibrator_for(self, model: str) -> FittedCalibrator:
        return self.model_calibrators.get(model, self.default_calibrator)


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

    def authenticate(self, authorization: str | None) -> TenantRuntime:
        """The tenant whose key is in ``Authorization: Bearer KEY``.

        Keys are compared as SHA-256 digests with :func:`hmac.compare_digest`, against every
        stored digest without stopping at a match, so timing reveals nothing about the keys.
        """
        if not authorization or not authorization.startswith("Bearer "):
            raise AuthenticationFailed(
                "missing API key: send it as 'Authorization: Bearer YOUR_KEY'"
            )
        key = authorization[7:].strip()
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
    problems: list[PolicyProblem] = []
    warnings: list[str] = []

    def problem(key: tuple[str | int, ...], message: str) -> None:
        problems.append(PolicyProblem(str(path), lines.line_of(key), message))

    def unset(key: tuple[str | int, ...], message: str) -> None:
        if unset_env_is_error:
            problem(key, message)
        else:
            line = lines.line_of(key)
            where = f"{path}:{line}" if line is not None else str(path)
            warnings.append(f"{where}: {message} here; the gateway will refuse to start "
                            "without it")

    key_digests: list[tuple[bytes, str]] = []
    tenants: dict[str, TenantRuntime] = {}
    watched = [path]
    problems.extend(short_key_problems(config, path, lines, env))
    for name, policy in config.tenants.items():
        for i, key in enumerate(policy.api_keys):
            # Stripped as a presented key is: a key file's newline must not lock the tenant out.
            value = env.get(key.env, "").strip() if key.env is not None else ""
            if key.sha256 is not None:
                key_digests.append((bytes.fromhex(key.sha256), name))
            elif value:
                digest = hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()
                key_digests.append((digest, name))
            elif require_tenant_keys:
                unset(("tenants", name, "api_keys", i),
                      f"tenant {name!r}: environment variable {key.env} is not set")
        calibrators: dict[str | None, FittedCalibrator] = {}
        for model, artifact in policy.calibrators.paths().items():
            artifact_path = path.parent / artifact
            watched.append(artifact_path)
            signature.extend(file_signature((artifact_path,)))
            where = ("models", model) if model else ("default",)
            try:
                calibrators[model] = load_artifact(artifact_path)
            except ValueError as exc:  # ArtifactError
                problem(("tenants", name, "calibrators", *where), str(exc))
        profile = policy.profile
        tenants[name] = TenantRuntime(
            name=name,
            mode=policy.mode,
            threshold=profile.threshold,
            wrong_answer_cost=profile.wrong_answer_cost,
            abstain_cost=profile.abstain_cost,
            abstention_message=policy.abstention_message,
            abstain_action=policy.abstain_action,
            on_missing_confidence=policy.on_missing_confidence,
            default_calibrator=calibrators.pop(None, UNCALIBRATED),
            model_calibrators={m: c for m, c in calibrators.items() if m is not None},
        )
    models: dict[str, UpstreamTarget] = {}
    for public, upstream in config.models.items():
        api_key = None
        if upstream.api_key_env is not None:
            api_key = env.get(upstream.api_key_env)
            if not api_key:
                unset(("models", public, "api_key_env"),
                      f"model {public!r}: environment variable {upstream.api_key_env} is not set")
        models[public] = UpstreamTarget(
            public_name=public,
            provider=upstream.provider,
            model=upstream.model or public,
            base_url=upstream.base_url.rstrip("/") if upstream.base_url else None,
            api_key=api_key,
            timeout_seconds=upstream.timeout_seconds,
            top_logprobs=upstream.top_logprobs,
            max_response_bytes=upstream.max_response_bytes,
        )
    if problems:
        raise PolicyError(problems)
    state = RuntimeState(
        config=config,
        path=path,
        tenants=tenants,
        models=models,
        key_digests=tuple(key_digests),
        watched_files=tuple(watched),
        signature=tuple(signature),
    )
    return state, warnings
