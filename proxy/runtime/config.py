"""The gateway's config file: the tenant policy file plus the upstream models it serves.

Everything is validated when the file is loaded — at start-up and at each reload — so a bad
config fails the start (or is rejected by the reload), never a request.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from policies.loader import load_yaml_located
from policies.schema import ApiKeyRef, PolicyFile, StrictModel, TenantName
from proxy.upstream.registry import PROVIDERS

__all__ = ["AdminAccess", "GatewayConfig", "ReviewerAccess", "UpstreamModel",
           "load_gateway_config"]


class UpstreamModel(StrictModel):
    """Where one public model name is served."""

    provider: str = Field(
        default="openai",
        description="How the model is reached, one of: " + "; ".join(
            f"{name}: {provider.description}" for name, provider in PROVIDERS.items()) + ".",
    )
    base_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="The upstream's API root, e.g. http://127.0.0.1:8080/v1 (required for openai).",
    )
    model: str | None = Field(
        default=None,
        min_length=1,
        description="The upstream's name for the model (litellm: e.g. anthropic/claude-sonnet-4); "
        "defaults to the public name.",
    )
    api_key_env: str | None = Field(
        default=None,
        pattern=r"^[A-Z_][A-Z0-9_]*$",
        description="Environment variable holding the provider's API key.",
    )
    organization: str | None = Field(
        default=None,
        min_length=1,
        pattern=r"^[\x21-\x7e]+$",
        description="The OpenAI organization the key acts for (sent as OpenAI-Organization on "
        "every request to this upstream). A tenant's own OpenAI-Organization header is never "
        "forwarded: the key is basguard's.",
    )
    project: str | None = Field(
        default=None,
        min_length=1,
        pattern=r"^[\x21-\x7e]+$",
        description="The OpenAI project the key acts for (sent as OpenAI-Project on every "
        "request to this upstream). A tenant's own OpenAI-Project header is never forwarded.",
    )
    timeout_seconds: float = Field(
        default=60.0, gt=0, le=900,
        description="Total deadline of one upstream request, streams included (connecting, "
        "sending and every chunk). Exceeded before the response starts: 504 upstream_timeout; "
        "mid-stream: one upstream_timeout error event, then [DONE].",
    )
    max_response_bytes: int = Field(
        default=8 * 1_048_576, ge=1_024, le=1_073_741_824,
        description="Largest upstream reply: a non-streamed body, or the sum of a stream's "
        "lines (what the enforce buffer and the decision's accumulated answer can hold). "
        "Exceeded: 502 upstream_response_too_large, or one error event and [DONE] mid-stream.",
    )
    top_logprobs: int = Field(
        default=5,
        ge=0,
        le=20,
        description="Alternatives per token to request when a calibrator reads top-k features.",
    )

    @field_validator("base_url")
    @classmethod
    def _plain_base_url(cls, base_url: str | None) -> str | None:
        if base_url is None:
            return None
        parsed = urlsplit(base_url)
        if not parsed.hostname:
            raise ValueError("base_url needs a host, e.g. http://127.0.0.1:8080/v1")
        if parsed.query or parsed.fragment or "?" in base_url or "#" in base_url:
            raise ValueError("base_url must not have a query or fragment")
        segments = parsed.path.rstrip("/").split("/")[1:]
        if any(segment in ("", ".", "..") for segment in segments) or "%" in parsed.path:
            raise ValueError("base_url's path must be plain: no empty, . or .. segments and no "
                             "percent-escapes")
        return base_url

    @field_validator("provider")
    @classmethod
    def _known_provider(cls, provider: str) -> str:
        if provider not in PROVIDERS:
            raise ValueError(f"unknown provider {provider!r}; one of: {', '.join(PROVIDERS)}")
        return provider

    @model_validator(mode="after")
    def _base_url_where_needed(self) -> UpstreamModel:
        if PROVIDERS[self.provider].needs_base_url and self.base_url is None:
            raise ValueError(f"an {self.provider}-compatible upstream needs `base_url`")
        return self


class ReviewerAccess(StrictModel):
    """Keys that open the ops console to review decisions: label them, and read the figures."""

    api_keys: list[ApiKeyRef] = Field(
        min_length=1, max_length=1000,
        description="Keys of these reviewers, as tenant keys are given (`env:` or `sha256:`); "
        "none may also be a tenant's key.",
    )
    tenants: list[TenantName] | None = Field(
        default=None, min_length=1,
        description="The tenants these keys see and label (default: every tenant). Another "
        "tenant's decisions, figures and calibrators stay out of sight.",
    )


class AdminAccess(ReviewerAccess):
    """Who opens the ops console (``/admin``) and its API: operators, and named reviewers."""

    reviewers: dict[TenantName, ReviewerAccess] = Field(
        default_factory=dict,
        description="Further keys by name (the name is who the logs show): they label "
        "decisions and read the figures, but do not fit or promote calibrators.",
    )
    session_minutes: int = Field(
        default=30, ge=1, le=720,
        description="How long a browser session lasts after logging in with a key; then the "
        "key is asked for again.",
    )


class GatewayConfig(PolicyFile):
    """Tenants (the policy file schema) plus upstream models and limits."""

    models: dict[str, UpstreamModel] = Field(
        min_length=1, description="Upstream targets by public model name."
    )
    max_body_bytes: int = Field(
        default=1_048_576, ge=1_024, le=64 * 1_048_576, description="Largest request body (413)."
    )
    admin: AdminAccess | None = Field(
        default=None,
        description="The ops console and its API under /admin: the operators' keys (`api_keys`, "
        "optionally scoped to some `tenants`) and reviewers'. Unset: /admin answers 404. "
        "Tenant keys never open it.",
    )

    @model_validator(mode="after")
    def _calibrated_models_exist(self) -> GatewayConfig:
        for tenant, policy in self.tenants.items():
            unknown = sorted(set(policy.calibrators.models) - set(self.models))
            if unknown:
                raise ValueError(
                    f"tenant {tenant!r} has calibrators for unknown models {unknown}; "
                    f"configured models: {sorted(self.models)}"
                )
            if policy.default_model is not None and policy.default_model not in self.models:
                raise ValueError(
                    f"tenant {tenant!r} has default_model {policy.default_model!r}, which is not "
                    f"a configured model; configured models: {sorted(self.models)}"
                )
        return self

    @model_validator(mode="after")
    def _admin_keys_are_their_own(self) -> GatewayConfig:
        if self.admin is None:
            return self
        if "admin" in self.admin.reviewers:
            raise ValueError("a reviewer may not be named 'admin': the logs use that name for "
                             "the operators' keys")
        owners: dict[tuple[str, str], str] = {}
        for tenant, policy in self.tenants.items():
            for key in policy.api_keys:
                owners[_key_ref(key)] = f"tenant {tenant!r}"
        accesses = {"admin": self.admin, **{f"reviewer {name!r}": reviewer for name, reviewer
                                           in self.admin.reviewers.items()}}
        for who, access in accesses.items():
            for key in access.api_keys:
                ref = _key_ref(key)
                other = owners.setdefault(ref, who)
                if other != who:
                    raise ValueError(
                        f"the key `{ref[0]}: {ref[1]}` of {who} is also {other}'s; an admin or "
                        "reviewer key must be its own (a tenant key never opens /admin)")
            unknown = sorted(set(access.tenants or ()) - set(self.tenants))
            if unknown:
                raise ValueError(f"{who} names unknown tenants {unknown}; configured tenants: "
                                 f"{sorted(self.tenants)}")
        return self


def _key_ref(key: ApiKeyRef) -> tuple[str, str]:
    return ("env", key.env) if key.env else ("sha256", key.sha256 or "")


def load_gateway_config(path: Path) -> GatewayConfig:
    """Read and validate a gateway config (raises :class:`policies.loader.PolicyError`)."""
    return load_yaml_located(path, GatewayConfig)[0]
