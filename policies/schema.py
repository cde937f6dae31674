"""The tenant policy file, as validated pydantic models.

Unknown keys are rejected everywhere and every number is bounded, so a typo fails the check (or
the gateway's start or reload) instead of silently changing behaviour.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from .profiles import PRESETS, RiskProfile

__all__ = [
    "ApiKeyRef",
    "CalibratorRefs",
    "MissingConfidencePolicy",
    "Mode",
    "PolicyFile",
    "RiskPolicy",
    "TenantName",
    "TenantPolicy",
]

Mode = Literal["enforce", "annotate", "shadow"]
MissingConfidencePolicy = Literal["abstain", "answer", "error"]
TenantName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]

DEFAULT_ABSTENTION_MESSAGE = (
    "I'm not confident enough in an answer to this to give one. Please rephrase, add detail, "
    "or ask a person."
)
_PLAINTEXT_KEY = (
    "a plaintext API key is not allowed in a policy file; reference it with "
    "`env: VARIABLE_NAME` or store its digest as `sha256: <64 hex digits>`"
)


class StrictModel(BaseModel):
    """A frozen model that rejects unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ApiKeyRef(StrictModel):
    """Where a tenant's API key comes from: an environment variable or its SHA-256 digest."""

    env: str | None = Field(
        default=None,
        pattern=r"^[A-Z_][A-Z0-9_]*$",
        description="Name of the environment variable holding the key.",
    )
    sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="Lower-case hex SHA-256 digest of the key (the key itself is never stored).",
    )

    @model_validator(mode="before")
    @classmethod
    def _refuse_plaintext(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError(_PLAINTEXT_KEY)
        if isinstance(value, dict) and set(value) - {"env", "sha256"}:
            raise ValueError(_PLAINTEXT_KEY)
        if isinstance(value, dict) and value.get("sha256") is not None and not isinstance(
            value["sha256"], str
        ):
            # A digest of digits (or digits and one 'e') reads as a YAML number.
            raise ValueError('quote the sha256 digest so YAML reads it as text: sha256: "..."')
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> ApiKeyRef:
        if (self.env is None) == (self.sha256 is None):
            raise ValueError("give exactly one of `env:` or `sha256:` per key")
        return self


class RiskPolicy(StrictModel):
    """A tenant's risk: a named preset, explicit costs, or an explicit threshold."""

    profile: str | None = Field(
        default=None, description=f"A preset: {', '.join(PRESETS)}."
    )
    wrong_answer_cost: float | None = Field(
        default=None, ge=0, le=1e6, description="λ: utility lost by a wrong answer."
    )
    abstain_cost: float | None = Field(
        default=None, ge=0, le=1e6, description="a: utility lost by withholding an answer."
    )
    threshold: float | None = Field(
        default=None, ge=0, lt=1, description="Answer iff P(correct) >= threshold."
    )

    @model_validator(mode="after")
    def _one_form(self) -> RiskPolicy:
        forms = [
            name
            for name, given in (
                ("profile", self.profile is not None),
                ("wrong_answer_cost/abstain_cost",
                 self.wrong_answer_cost is not None or self.abstain_cost is not None),
                ("threshold", self.threshold is not None),
            )
            if given
        ]
        if len(forms) != 1:
            raise ValueError(
                "give exactly one of `profile`, `wrong_answer_cost` (with optional "
                f"`abstain_cost`) or `threshold`; found {' and '.join(forms) or 'none'}"
            )
        if self.abstain_cost is not None and self.wrong_answer_cost is None:
            raise ValueError("`abstain_cost` needs `wrong_answer_cost` as well")
        if self.profile is not None and self.profile not in PRESETS:
            raise ValueError(
                f"unknown profile {self.profile!r}; choose one of {', '.join(PRESETS)}"
            )
        return self

    @property
    def form(self) -> str:
        """``profile:<name>``, ``costs`` or ``threshold``: how the risk was given."""
        if self.profile is not None:
            return f"profile:{self.profile}"
        return "costs" if self.wrong_answer_cost is not None else "threshold"

    def resolve(self) -> RiskProfile:
        """The effective (λ, a) of this risk."""
        if self.profile is not None:
            return PRESETS[self.profile]
        if self.wrong_answer_cost is not None:
            return RiskProfile(self.wrong_answer_cost, self.abstain_cost or 0.0, "custom costs")
        assert self.threshold is not None  # guaranteed by _one_form
        return RiskProfile.from_threshold(self.threshold)


class CalibratorRefs(StrictModel):
    """Calibrator artifacts, relative to the policy file's directory."""

    default: str | None = Field(
        default=None, description="Artifact for models without their own (else uncalibrated)."
    )
    models: dict[str, str] = Field(
        default_factory=dict, description="Artifact per public model name."
    )

    def paths(self) -> dict[str | None, str]:
        """Every referenced artifact keyed by model (None for the default)."""
        paths: dict[str | None, str] = {None: self.default} if self.default else {}
        paths.update(self.models)
        return paths


class TenantPolicy(StrictModel):
    """One tenant's keys, risk and behaviour."""

    api_keys: list[ApiKeyRef] = Field(min_length=1, description="Keys that identify the tenant.")
    risk: RiskPolicy = Field(description="The tenant's risk profile.")
    calibrators: CalibratorRefs = Field(
        default_factory=CalibratorRefs, description="Calibrator artifacts to apply."
    )
    mode: Mode = Field(
        default="enforce",
        description="enforce: withhold low-confidence answers; annotate: pass them with the "
        "decision attached; shadow: pass them and only record the decision.",
    )
    abstention_message: str = Field(
        default=DEFAULT_ABSTENTION_MESSAGE,
        min_length=1,
        max_length=2000,
        description="The assistant message sent instead of a withheld answer.",
    )
    abstain_action: Literal["message", "error"] = Field(
        default="message",
        description="In enforce mode, abstain with the message (HTTP 200) or with an error "
        "(HTTP 422, code answer_withheld).",
    )
    on_missing_confidence: MissingConfidencePolicy = Field(
        default="abstain",
        description="What to do when the upstream returns no logprobs: abstain, answer, or "
        "fail with an error.",
    )

    @property
    def profile(self) -> RiskProfile:
        return self.risk.resolve()

    @property
    def threshold(self) -> float:
        return self.profile.threshold


class PolicyFile(StrictModel):
    """A tenant policy file. The gateway's config file extends it with upstream models."""

    version: Literal[1] = Field(description="Format version of the file; 1.")
    tenants: dict[TenantName, TenantPolicy] = Field(
        min_length=1, description="Tenants by name."
    )

    @model_validator(mode="after")
    def _keys_identify_one_tenant(self) -> PolicyFile:
        owners: dict[tuple[str, str], str] = {}
        for tenant, policy in self.tenants.items():
            for key in policy.api_keys:
                ref = ("env", key.env) if key.env else ("sha256", key.sha256 or "")
                other = owners.setdefault(ref, tenant)
                if other != tenant:
                    raise ValueError(
                        f"the key `{ref[0]}: {ref[1]}` is used by tenants {other!r} and "
                        f"{tenant!r}; a key must identify one tenant"
                    )
        return self

    def calibrator_paths(self, base_dir: Path) -> dict[str, dict[str | None, Path]]:
        """Every tenant's calibrator artifacts resolved against ``base_dir``."""
        return {
            tenant: {model: base_dir / path for model, path in policy.calibrators.paths().items()}
            for tenant, policy in self.tenants.items()
        }
