"""A tenant's risk in the policy file: a preset, costs or a threshold, and an optional risk
limit with its certificates."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from .fields import ArtifactPath, Number, StrictModel
from .profiles import PRESETS, RiskProfile

__all__ = ["CertificateRefs", "OnBreach", "RiskPolicy"]

OnBreach = Literal["alert", "abstain"]

class CertificateRefs(StrictModel):
    """Risk certificates (``basguard calibrate certify -o``), relative to the policy file's
    directory; each is bound to the calibrator it was certified for."""

    default: ArtifactPath | None = Field(
        default=None,
        description="Certificate for the models that use the tenant's default calibrator (or "
        "none): it must have been certified for that calibrator.",
    )
    models: dict[str, ArtifactPath] = Field(
        default_factory=dict,
        description="Certificate per public model name, certified for that model's calibrator.",
    )

    def paths(self) -> dict[str | None, str]:
        """Every referenced certificate, as written, keyed by model (None for the default)."""
        paths: dict[str | None, str] = {} if self.default is None else {None: self.default}
        paths.update(self.models)
        return paths


class RiskPolicy(StrictModel):
    """A tenant's risk: a named preset, explicit costs, or an explicit threshold; optionally a
    risk limit with a guarantee ("at most `max_error_rate` wrong among the answers, with
    `confidence`"), certified by `certificates`."""

    profile: str | None = Field(default=None, description=f"A preset: {', '.join(PRESETS)}.")
    wrong_answer_cost: Number | None = Field(
        default=None, ge=0, le=1e6, description="λ: utility lost by a wrong answer (0 to 1e6)."
    )
    abstain_cost: Number | None = Field(
        default=None,
        ge=0,
        le=1e6,
        description="a: utility lost by withholding an answer (0 to 1e6; default 0).",
    )
    threshold: Number | None = Field(
        default=None, ge=0, lt=1, description="Answer iff P(correct) >= threshold, in [0, 1)."
    )
    max_error_rate: Number | None = Field(
        default=None, gt=0, lt=1,
        description="A risk limit: at most this share of the answers wrong (A, in (0, 1)), with "
        "probability `confidence`. The tenant answers iff P(correct) >= max(the cost threshold, "
        "the threshold its certificate proves for the limit); with no certificate, or one that "
        "certified nothing, it answers nothing. Needs `confidence`.",
    )
    confidence: Number | None = Field(
        default=None, gt=0, lt=1,
        description="C: the probability, over the labelled data the certificate was computed "
        "on, that the error rate among answers is at most `max_error_rate` (e.g. 0.95). Also "
        "the confidence of the live bound. Needs `max_error_rate`.",
    )
    certificates: CertificateRefs | None = Field(
        default=None,
        description="Where the limit's certificates are (`basguard calibrate certify ... -o "
        "FILE`, on data or with `--from-store` on the audit sample's labels). A certificate "
        "for another calibrator, or for a looser limit, is refused at load. A model without "
        "one answers nothing.",
    )
    on_breach: OnBreach = Field(
        default="alert",
        description="When the audit sample's live bound proves the error rate among answers is "
        "above `max_error_rate`: alert (basguard_risk_limit_breached is 1, the alert fires, "
        "answers go on) or abstain (also withhold every answer on that model until a new "
        "certificate is loaded).",
    )

    @model_validator(mode="before")
    @classmethod
    def _must_be_a_mapping(cls, value: Any) -> Any:
        if isinstance(value, str | int | float):
            raise ValueError(
                "`risk` is a mapping: `profile: <name>`, `wrong_answer_cost: <λ>` (with optional "
                "`abstain_cost: <a>`) or `threshold: <t>`"
            )
        return value

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

    @model_validator(mode="after")
    def _whole_limit(self) -> RiskPolicy:
        if (self.max_error_rate is None) != (self.confidence is None):
            given, missing = (("max_error_rate", "confidence") if self.confidence is None
                              else ("confidence", "max_error_rate"))
            raise ValueError(
                f"a risk limit needs both `max_error_rate` and `confidence`; `{given}` is given "
                f"without `{missing}`"
            )
        if self.max_error_rate is None:
            strays = [name for name in ("certificates", "on_breach")
                      if name in self.model_fields_set]
            if strays:
                raise ValueError(
                    f"`{'` and `'.join(strays)}` belong to a risk limit: add `max_error_rate` "
                    "and `confidence`, or remove them"
                )
        return self

    @property
    def form(self) -> str:
        """How the risk was given: the preset's name, ``"custom"`` (costs) or ``"threshold"``."""
        if self.profile is not None:
            return self.profile
        return "custom" if self.wrong_answer_cost is not None else "threshold"

    @property
    def limited(self) -> bool:
        """Whether the tenant states a risk limit (``max_error_rate`` and ``confidence``)."""
        return self.max_error_rate is not None

    def resolve(self) -> RiskProfile:
        """The effective (λ, a): the preset, the costs, or ``λ = t / (1 − t)`` with ``a = 0``."""
        if self.profile is not None:
            return PRESETS[self.profile]
        if self.wrong_answer_cost is not None:
            return RiskProfile(self.wrong_answer_cost, self.abstain_cost or 0.0, "custom costs")
        assert self.threshold is not None  # guaranteed by _one_form
        return RiskProfile.from_threshold(self.threshold)

    def certificate_paths(self) -> dict[str | None, str]:
        """The limit's certificates, as written, by model (None: the default); empty without."""
        return {} if self.certificates is None else self.certificates.paths()
