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
from policies.loader import PolicyError, PolicyProblem, load_yaml_located
from policies.schema import MissingConfidencePolicy, Mode

from .config import GatewayConfig
from .errors import AuthenticationFailed
from .upstream import UpstreamTarget

__all__ = ["UNCALIBRATED", "RuntimeState", "TenantRuntime", "build_runtime", "file_signature"]

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
        except OSError:
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
        digest = hashlib.sha256(authorization[7:].strip().encode()).digest()
        found: str | None = None
        for stored, tenant in self.key_digests:
            if hmac.compare_digest(stored, digest):
                found = tenant
        if found is None:
            raise AuthenticationFailed("invalid API key")
        return self.tenants[found]


def build_runtime(path: Path, environ: Mapping[str, str] | None = None) -> RuntimeState:
    """Load the config at ``path`` with everything it references.

    Raises
    ------
    PolicyError
        For any problem, located by file and line where possible: invalid config, an unset
        environment variable, or a calibrator artifact that cannot be loaded.
    """
    env = os.environ if environ is None else environ
    # Signatures are taken before reading, so a change made while loading triggers a reload.
    signature = list(file_signature((path,)))
    config, lines = load_yaml_located(path, GatewayConfig)
    problems: list[PolicyProblem] = []

    def problem(key: tuple[str | int, ...], message: str) -> None:
        problems.append(PolicyProblem(str(path), lines.line_of(key), message))

    key_digests: list[tuple[bytes, str]] = []
    tenants: dict[str, TenantRuntime] = {}
    watched = [path]
    for name, policy in config.tenants.items():
        for i, key in enumerate(policy.api_keys):
            if key.sha256 is not None:
                key_digests.append((bytes.fromhex(key.sha256), name))
            elif key.env is not None and env.get(key.env):
                key_digests.append((hashlib.sha256(env[key.env].encode()).digest(), name))
            else:
                problem(("tenants", name, "api_keys", i),
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
                problem(("models", public, "api_key_env"),
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
    return RuntimeState(
        config=config,
        path=path,
        tenants=tenants,
        models=models,
        key_digests=tuple(key_digests),
        watched_files=tuple(watched),
        signature=tuple(signature),
    )
