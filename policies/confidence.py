"""A tenant's ``confidence:`` section: which confidence signals to run, and their settings.

Pure pydantic, like the rest of the policy file: the gateway (``proxy.signals``) reads these
settings, this module knows nothing of it. The signal names are repeated here as a ``Literal`` so
a typo fails the check; a test keeps them equal to the gateway's registry.

Example, in front of a model that returns no logprobs::

    confidence:
      signals: [consistency]
      consistency: {samples: 5, temperature: 1.0}

A per-model section under ``models:`` overrides the keys it gives, for that model only.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal

from pydantic import AllowInfNan, BaseModel, ConfigDict, Field, Strict, model_validator

__all__ = [
    "SIGNAL_NAMES",
    "ConfidenceConfig",
    "ConsistencySettings",
    "JudgeSettings",
    "SignalName",
    "SignalSettings",
    "VerbalizedSettings",
]

SignalName = Literal["logprobs", "consistency", "verbalized", "judge"]
SIGNAL_NAMES: tuple[str, ...] = ("logprobs", "consistency", "verbalized", "judge")

# Strict as in the policy schema: YAML reads `no` as False and "0.8" is a typo worth reporting.
_Number = Annotated[float, Strict(), AllowInfNan(False)]
_ModelName = Annotated[str, Field(min_length=1, max_length=200)]
_Prompt = Annotated[str, Field(min_length=1, max_length=20_000)]


class _Section(BaseModel):
    # Not policies.schema.StrictModel: the tenant schema will import this module.
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_template(
    template: str, *, required: Iterable[str], allowed: Iterable[str], what: str
) -> None:
    """Raise ValueError unless ``template`` uses only ``allowed`` and all ``required`` fields."""
    allowed_set, required_set = set(allowed), set(required)
    try:
        fields = [part[1] for part in string.Formatter().parse(template) if part[1] is not None]
    except ValueError as exc:
        raise ValueError(
            f"{what} is not a valid template ({exc}); write a literal brace as {{{{ or }}}}"
        ) from None
    unknown = sorted({f for f in fields if f not in allowed_set})
    if unknown:
        names = ", ".join("{" + f + "}" for f in unknown)
        raise ValueError(
            f"{what} uses {names}; it may use only "
            f"{', '.join('{' + a + '}' for a in sorted(allowed_set))} "
            "(write a literal brace as {{ or }})"
        )
    missing = sorted(required_set - set(fields))
    if missing:
        raise ValueError(f"{what} must contain {', '.join('{' + m + '}' for m in missing)}")


class ConsistencySettings(_Section):
    """Extra samples of the same request, compared with the answer."""

    samples: int = Field(
        default=5, ge=1, le=20, strict=True,
        description="How many extra samples per request (k); sent concurrently, each one upstream "
        "call at the upstream's price.",
    )
    temperature: _Number = Field(
        default=1.0, ge=0, le=2,
        description="Sampling temperature of the extra samples (0 would make them all the same).",
    )
    model: _ModelName | None = Field(
        default=None,
        description="Public name of the model that draws the samples; none: the request's own "
        "model. A cheaper model lowers the cost but measures its agreement, not the answer's.",
    )
    timeout_seconds: _Number | None = Field(
        default=None, gt=0, le=600,
        description="This signal's own limit on each extra call, in place of the section's "
        "`timeout_seconds`.",
    )

class VerbalizedSettings(_Section):
    """A follow-up call asking the model how likely its answer is to be correct."""

    prompt: _Prompt | None = Field(
        default=None,
        description="The follow-up question, with {question} and {answer} (top-k: {question} and "
        "{k}); none: the documented default in proxy/signals/verbalized.py.",
    )
    top_k: int | None = Field(
        default=None, ge=2, le=10, strict=True,
        description="Ask for this many guesses with a probability each (the BAS paper's top-k "
        "variant) instead of one probability for the answer; none: the plain variant.",
    )
    model: _ModelName | None = Field(
        default=None,
        description="Public name of the model asked; none: the request's own model.",
    )
    max_tokens: int | None = Field(
        default=32, ge=1, le=4096, strict=True,
        description="Token cap of the reply (per guess in the top-k variant); null sends none, "
        "as reasoning models, which reject max_tokens, need.",
    )
    temperature: _Number | None = Field(
        default=0.0, ge=0, le=2,
        description="Temperature of the follow-up call; null sends none (reasoning models).",
    )
    timeout_seconds: _Number | None = Field(
        default=None, gt=0, le=600,
        description="This signal's own limit on each extra call, in place of the section's "
        "`timeout_seconds`.",
    )

    @model_validator(mode="after")
    def _prompt_fits_the_variant(self) -> VerbalizedSettings:
        if self.prompt is not None:
            required = ("question", "answer") if self.top_k is None else ("question", "k")
            _check_template(
                self.prompt, required=required, allowed=("question", "answer", "k"),
                what="the verbalized prompt" + (" (top-k variant)" if self.top_k else ""),
            )
        return self


class JudgeSettings(_Section):
    """A separate judge model asked whether the answer is correct."""

    model: _ModelName = Field(
        default="smollm2",
        description="Public name of the judge model; default smollm2, the embedded local "
        "SmolLM2 (any configured model may judge).",
    )
    prompt: _Prompt | None = Field(
        default=None,
        description="The judge's question, with {question} and {answer}; none: the documented "
        "default in proxy/signals/judge.py.",
    )
    logprobs: bool = Field(
        default=True, strict=True,
        description="Read P(True) from the first answer token's logprobs; false for judges that "
        "reject logprobs (their True/False verdict is used).",
    )
    max_tokens: int | None = Field(
        default=8, ge=1, le=4096, strict=True,
        description="Token cap of the verdict; null sends none (reasoning models).",
    )
    temperature: _Number | None = Field(
        default=0.0, ge=0, le=2,
        description="Temperature of the judge call; null sends none (reasoning models).",
    )
    timeout_seconds: _Number | None = Field(
        default=None, gt=0, le=600,
        description="This signal's own limit on each extra call, in place of the section's "
        "`timeout_seconds`.",
    )

    @model_validator(mode="after")
    def _prompt_has_its_fields(self) -> JudgeSettings:
        if self.prompt is not None:
            _check_template(
                self.prompt, required=("question", "answer"), allowed=("question", "answer"),
                what="the judge prompt",
            )
        return self


_PER_SIGNAL = ("consistency", "verbalized", "judge")


class SignalSettings(_Section):
    """The signals to run for a model and their settings."""

    signals: list[SignalName] = Field(
        default_factory=lambda: list[SignalName](["logprobs"]),
        min_length=1, max_length=len(SIGNAL_NAMES),
        description="Signals to run, from logprobs, consistency, verbalized and judge. The first "
        "one's feature is the uncalibrated confidence; with a calibrator, exactly the signals "
        "whose features it reads run.",
    )
    consistency: ConsistencySettings = Field(
        default_factory=ConsistencySettings, description="Settings of the consistency signal."
    )
    verbalized: VerbalizedSettings = Field(
        default_factory=VerbalizedSettings, description="Settings of the verbalized signal."
    )
    judge: JudgeSettings = Field(
        default_factory=JudgeSettings, description="Settings of the judge signal."
    )
    timeout_seconds: _Number = Field(
        default=10.0, gt=0, le=600,
        description="Limit on each extra call of a signal (and on a signal's work once the answer "
        "is complete); it must be shorter than the upstream's timeout. A signal that runs out "
        "leaves its features missing, and on_missing_confidence decides.",
    )

    @model_validator(mode="after")
    def _signals_once(self) -> SignalSettings:
        repeated = sorted({name for name in self.signals if self.signals.count(name) > 1})
        if repeated:
            raise ValueError(f"`signals` lists {', '.join(repeated)} more than once")
        return self

    def _unused_sections(self) -> list[str]:
        """Per-signal sections given here whose signal ``signals`` does not enable."""
        return [name for name in _PER_SIGNAL
                if name in self.model_fields_set and name not in self.signals]


def _unused_message(unused: Sequence[str], signals: Sequence[str]) -> str:
    them = "it" if len(unused) == 1 else "them"
    return (
        f"settings for {', '.join(unused)} are given but `signals` ({', '.join(signals)}) does "
        f"not enable {them}; add {them} to `signals` or remove the settings"
    )


class ModelSignalSettings(SignalSettings):
    """A per-model override: the keys it gives replace the tenant's, the rest are inherited."""

    @model_validator(mode="after")
    def _sections_are_used(self) -> ModelSignalSettings:
        # Only when this section names its signals; otherwise they are inherited, and
        # ConfidenceConfig checks against the merged list.
        unused = self._unused_sections() if "signals" in self.model_fields_set else []
        if unused:
            raise ValueError(_unused_message(unused, list(self.signals)))
        return self


class ConfidenceConfig(SignalSettings):
    """A tenant's ``confidence:`` section."""

    models: dict[_ModelName, ModelSignalSettings] = Field(
        default_factory=dict,
        description="Per public model name, keys that replace the tenant's for that model.",
    )

    @model_validator(mode="before")
    @classmethod
    def _must_be_a_mapping(cls, value: Any) -> Any:
        if isinstance(value, list):
            raise ValueError(
                "`confidence` is a mapping; list the signals under it: "
                "`confidence: {signals: [consistency]}`"
            )
        return value

    @model_validator(mode="after")
    def _sections_are_used(self) -> ConfidenceConfig:
        # The tenant's sections may serve a model that enables their signal.
        enabled = set(self.signals).union(*(self.for_model(m).signals for m in self.models))
        unused = [name for name in self._unused_sections() if name not in enabled]
        if unused:
            raise ValueError(_unused_message(unused, list(self.signals)))
        for model, override in self.models.items():
            # Only the model's own sections: the tenant's may serve its other models.
            merged = self.for_model(model)
            unused = [name for name in override._unused_sections() if name not in merged.signals]
            if unused:
                raise ValueError(f"for model {model!r}: {_unused_message(unused, merged.signals)}")
        return self

    def for_model(self, model: str) -> SignalSettings:
        """The settings for ``model``: the tenant's, with the model's own keys replacing them.

        Parameters
        ----------
        model : str
            A public model name.

        Returns
        -------
        SignalSettings
            The effective settings; for a model without its own section, the tenant's.
        """
        # Only the keys given are passed on; the rest take their defaults.
        given = {name: getattr(self, name) for name in self.model_fields_set
                 if name in SignalSettings.model_fields}
        override = self.models.get(model)
        if override is not None:
            given.update({name: getattr(override, name) for name in override.model_fields_set})
        return SignalSettings.model_validate(given)
