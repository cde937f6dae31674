"""The tenant policy file, as validated pydantic models.

Unknown keys are rejected everywhere and every number is bounded, so a typo fails the check (or
the gateway's start or reload) instead of silently changing behaviour. Messages name what is
allowed, and never repeat a value that might be a secret.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from .confidence import ConfidenceConfig
from .fields import ArtifactPath, Number, StrictModel, TenantName
from .profiles import RiskProfile
from .risk_policy import CertificateRefs, OnBreach, RiskPolicy
from .segments import SegmentPolicy

__all__ = [
    "DEFAULT_ABSTENTION_MESSAGE",
    "MIN_API_KEY_LENGTH",
    "PASSTHROUGH_FAMILIES",
    "PREFIX_SIGNALS",
    "RETIRED_KEYS",
    "ApiKeyRef",
    "CalibratorRefs",
    "CertificateRefs",
    "DropInPolicy",
    "MissingConfidencePolicy",
    "Mode",
    "OnBreach",
    "PolicyFile",
    "RiskPolicy",
    "StreamGatePolicy",
    "StrictModel",
    "TenantName",
    "TenantPolicy",
    "WithheldShapeSetting",
]

Mode = Literal["enforce", "annotate", "shadow"]
MissingConfidencePolicy = Literal["abstain", "answer", "error"]

_ENV_NAME = r"^[A-Z_][A-Z0-9_]*$"
_SHA256 = r"^[0-9a-f]{64}$"

#: The shortest API key the gateway accepts, in characters: shorter keys are refused when an
#: ``env:`` key is loaded, and a presented key shorter than this never authenticates (so the
#: digest of a short key, which cannot be seen in a ``sha256:`` entry, never matches either).
MIN_API_KEY_LENGTH = 16
_EMPTY_KEY_DIGEST = hashlib.sha256(b"").hexdigest()


DEFAULT_ABSTENTION_MESSAGE = (
    "I'm not confident enough in an answer to this to give one. Please rephrase, add detail, "
    "or ask a person."
)
_KEY_FORMS = "`env: VARIABLE_NAME` or its digest as `sha256: <64 lower-case hex digits>`"


class ApiKeyRef(StrictModel):
    """Where a tenant's API key comes from: an environment variable or its SHA-256 digest."""

    env: str | None = Field(
        default=None,
        pattern=_ENV_NAME,
        description="Name of the environment variable holding the key, e.g. SUPPORT_BOT_API_KEY.",
    )
    sha256: str | None = Field(
        default=None,
        pattern=_SHA256,
        description="Lower-case hex SHA-256 digest of the key (the key itself is never stored).",
    )

    @model_validator(mode="before")
    @classmethod
    def _refuse_plaintext(cls, value: Any) -> Any:
        # Runs before the field patterns so the messages explain the two allowed forms; none of
        # them quotes the value, which may be a key pasted in the wrong place.
        if isinstance(value, str | int | float):
            raise ValueError(
                f"a plaintext API key is not allowed in a policy file; reference it as {_KEY_FORMS}"
            )
        if not isinstance(value, dict):
            return value
        unknown = sorted(str(key) for key in value if key not in ("env", "sha256"))
        if unknown:
            raise ValueError(
                f"unknown key `{'`, `'.join(unknown)}` in an API key reference; a plaintext key "
                f"is not allowed, reference it as {_KEY_FORMS}"
            )
        env, digest = value.get("env"), value.get("sha256")
        if isinstance(env, str) and not re.fullmatch(_ENV_NAME, env):
            raise ValueError(
                "`env` names an environment variable (upper-case letters, digits and '_', not "
                "starting with a digit, e.g. SUPPORT_BOT_API_KEY); the key itself goes in it"
            )
        if digest is not None and not isinstance(digest, str):
            # A digest of digits (or digits and one 'e') reads as a YAML number.
            raise ValueError('quote the sha256 digest so YAML reads it as text: sha256: "..."')
        if isinstance(digest, str) and not re.fullmatch(_SHA256, digest):
            hint = " in lower case" if re.fullmatch(r"[0-9a-fA-F]{64}", digest) else ""
            raise ValueError(
                f"`sha256` must be the key's SHA-256 digest as 64 hex digits{hint} "
                '(printf %s "$KEY" | sha256sum, or basguard key new)'
            )
        if digest == _EMPTY_KEY_DIGEST:
            # With it, an empty `Authorization: Bearer ` would authenticate.
            raise ValueError(
                "`sha256` is the digest of the empty key (was $KEY unset when it was made?)"
            )
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> ApiKeyRef:
        if (self.env is None) == (self.sha256 is None):
            raise ValueError("give exactly one of `env:` or `sha256:` per key")
        return self


class CalibratorRefs(StrictModel):
    """Calibrator artifacts, relative to the policy file's directory."""

    default: ArtifactPath | None = Field(
        default=None, description="Artifact for models without their own (else uncalibrated)."
    )
    models: dict[str, ArtifactPath] = Field(
        default_factory=dict, description="Artifact per public model name."
    )

    def paths(self) -> dict[str | None, str]:
        """Every referenced artifact, as written, keyed by model (None for the default)."""
        paths: dict[str | None, str] = {} if self.default is None else {None: self.default}
        paths.update(self.models)
        return paths


class StreamGatePolicy(StrictModel):
    """Decide a streamed answer after its first tokens, then stream it or stop (enforce mode)."""

    decide_after_tokens: int = Field(
        ge=1, le=4096, strict=True,
        description="K: how many tokens of each choice are buffered before deciding (fewer if "
        "the answer ends first). The decision reads the logprobs of these K tokens with the "
        "prefix calibrator; then the buffer is flushed and the rest streams as it comes, or "
        "the abstention is sent and the upstream request is cancelled.",
    )
    calibrator: ArtifactPath | None = Field(
        default=None,
        description="The prefix calibrator: an artifact fitted on the same features over the "
        "first K tokens of labelled answers (`basguard calibrate fit --prefix K`), relative "
        "to the policy file's directory. Required.",
    )

    @model_validator(mode="after")
    def _names_a_prefix_calibrator(self) -> StreamGatePolicy:
        if self.calibrator is None:
            raise ValueError(
                "a stream gate needs a prefix calibrator: fit one on the first "
                f"{self.decide_after_tokens} tokens with `basguard collect --prefix-tokens "
                f"{self.decide_after_tokens}` and `basguard calibrate fit --prefix "
                f"{self.decide_after_tokens}`, and name it as `calibrator:`"
            )
        return self


#: The signals a stream gate can decide from: only these yield features from a prefix.
PREFIX_SIGNALS = frozenset({"logprobs"})


#: The OpenAI endpoint families a tenant's ``passthrough`` list may name (``/v1/<family>/...``);
#: ``other`` stands for every path outside them. Also the bounded label of the passthrough metric.
PASSTHROUGH_FAMILIES = (
    "embeddings", "moderations", "audio", "images", "files", "uploads", "batches",
    "fine_tuning", "vector_stores", "assistants", "threads", "containers", "conversations",
    "evals", "realtime", "videos", "other",
)
WithheldShapeSetting = Literal["auto", "content", "refusal", "error"]

#: Keys that policy files once had, and what to write instead (the loader's message for them).
RETIRED_KEYS = {
    "withheld_refusal": "`withheld_refusal` was replaced by `withheld_shape`: write "
    "`withheld_shape: refusal` for `withheld_refusal: true`, or remove it (the default, "
    "`withheld_shape: auto`, already withholds structured output as a refusal)",
    "withheld_json": "`withheld_json` was replaced by `withheld_shape`: write "
    "`withheld_shape: error` for `withheld_json: error`, or `withheld_shape: content` for "
    '`withheld_json: object` (the JSON object {"basguard_withheld": true, ...}); the default, '
    "`withheld_shape: auto`, withholds structured output as an OpenAI refusal",
}

PassthroughFamily = Literal[
    "embeddings", "moderations", "audio", "images", "files", "uploads", "batches",
    "fine_tuning", "vector_stores", "assistants", "threads", "containers", "conversations",
    "evals", "realtime", "videos", "other",
]


class DropInPolicy(StrictModel):
    """How basguard meets an app that only changed its base URL: which of the OpenAI surface
    it passes through, and what a tool call, structured output and a withheld answer look like.
    Every field has a default, so a tenant without them behaves as an OpenAI endpoint would."""

    tool_calls: Literal["pass", "decide"] = Field(
        default="pass",
        description="For a tool call the model chose to make (tool_choice auto, or none given): "
        "an action the app takes, not an answer a user reads. pass: the choice is passed "
        "unchanged and recorded as not_applicable; decide: the decision covers the tool call, "
        "and a withheld choice loses its tool calls and carries the abstention. A tool call "
        "the request forced (tool_choice required, or naming a tool) is structured output.",
    )
    structured_output: Literal["pass", "decide"] = Field(
        default="decide",
        description="For structured output: a request with a JSON response_format (chat) or "
        "text.format (Responses), json_object or json_schema, or one that forces a tool call "
        "(tool_choice required or naming a tool: how instructor, Pydantic AI and LangChain ask "
        "for structured output). decide: the answer (its JSON, or the forced call's arguments) "
        "is decided like any other; pass: it is passed unchanged (not_applicable).",
    )
    withheld_shape: WithheldShapeSetting = Field(
        default="auto",
        description="What a withheld answer looks like. auto: the shape the request asked for "
        "(plain text: the abstention message as content; structured output: an OpenAI refusal, "
        "message.refusal set and content null, or a refusal content part on the Responses API, "
        "so parse() gives parsed=None and the refusal). content: always content (under a JSON "
        'format, the JSON object {"basguard_withheld": true, "message": ...}). refusal: '
        "always a refusal (plain text keeps the message as content too, so it is never empty). "
        "error: structured output withheld is HTTP 422 answer_withheld (plain text is still "
        "the message; abstain_action: error makes every withheld answer a 422).",
    )
    withheld_finish_reason: Literal["stop", "content_filter"] = Field(
        default="stop",
        description="The finish_reason of a withheld choice: stop, or content_filter (what "
        "OpenAI sends when it filters an answer out; the openai SDK's parse() and stream() "
        "helpers raise ContentFilterFinishReasonError on it).",
    )
    passthrough: Literal["all", "none"] | list[PassthroughFamily] = Field(
        default="all",
        description="Which other /v1 endpoints (embeddings, audio, files, ...) are forwarded "
        "to the model's upstream, unguarded: all, none, or a list of endpoint families "
        f"({', '.join(PASSTHROUGH_FAMILIES)}; other: any path outside them).",
    )
    default_model: str | None = Field(
        default=None,
        min_length=1,
        description="The public model whose upstream serves a passthrough request that names "
        "no model (multipart uploads, GET /v1/files, ...); one of the configured models.",
    )

    def passes(self, family: str) -> bool:
        """Whether requests to the endpoint ``family`` may be passed through."""
        if isinstance(self.passthrough, list):
            return family in self.passthrough
        return self.passthrough == "all"


class _TenantBasics(StrictModel):
    """A tenant's keys, risk and decision behaviour (listed first in messages)."""

    api_keys: list[ApiKeyRef] = Field(
        min_length=1, max_length=1000, description="Keys that identify the tenant."
    )
    risk: RiskPolicy = Field(description="The tenant's risk profile.")
    calibrators: CalibratorRefs = Field(
        default_factory=CalibratorRefs,
        description="Calibrator artifacts to apply (none: the uncalibrated confidence).",
    )
    confidence: ConfidenceConfig = Field(
        default_factory=ConfidenceConfig,
        description="The confidence signals to run (logprobs, consistency, verbalized, judge) "
        "and their settings, per tenant and per model; default: logprobs only.",
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
        description="What to do when the confidence signals yield no confidence (no logprobs, "
        "a signal call that failed, timed out or returned garbage): abstain, answer, or fail "
        "with an error.",
    )
    description: str | None = Field(
        default=None, min_length=1, max_length=2000,
        description="What the tenant's application does and for whom: the purpose its risk "
        "card states.",
    )
    owner: str | None = Field(
        default=None, min_length=1, max_length=200,
        description="Who answers for the tenant's policy (a team, a person, a contact address).",
    )
    audit_rate: Number = Field(
        default=0.0, ge=0, le=1,
        description="The share of decisions, drawn uniformly at random and answered or "
        "withheld alike, marked for labelling (0 to 1, e.g. 0.05): `basguard.audited` and the "
        "x-basguard-audit header say so, the store keeps their prompt and answer, and `basguard "
        "review list --audited` lists them. Only their labels certify (`calibrate certify "
        "--from-store`) and watch a risk limit: labels people chose are not a sample of traffic.",
    )
    segments: SegmentPolicy | None = Field(
        default=None,
        description="The groups of users to report abstention parity on, and where requests "
        "name theirs (none: every request counts as `other`).",
    )

    stream_gate: StreamGatePolicy | None = Field(
        default=None,
        description="enforce mode only: decide a streamed answer from its first "
        "`decide_after_tokens` tokens with a prefix calibrator, instead of buffering the whole "
        "answer. Needs the logprobs signal alone (consistency, verbalized and judge read the "
        "whole answer). Without it a stream is buffered whole and decided.",
    )

    @model_validator(mode="after")
    def _stream_gate_fits(self) -> _TenantBasics:
        if self.stream_gate is None:
            return self
        if self.mode != "enforce":
            raise ValueError(
                f"`stream_gate` applies in enforce mode only; mode {self.mode} already streams "
                "answers as they come (remove `stream_gate` or set `mode: enforce`)"
            )
        confidence = self.confidence
        for model, signals in (
            (None, confidence.signals),
            *((model, confidence.for_model(model).signals) for model in confidence.models),
        ):
            whole = [name for name in signals if name not in PREFIX_SIGNALS]
            where = "" if model is None else f" for model {model!r}"
            if whole:
                raise ValueError(
                    f"`stream_gate` decides from the first tokens' logprobs, but `confidence: "
                    f"signals`{where} enables {', '.join(whole)}, which "
                    f"{'needs' if len(whole) == 1 else 'need'} the whole answer; use "
                    "`signals: [logprobs]` or remove `stream_gate`"
                )
        return self

    @model_validator(mode="after")
    def _risk_limit_fits(self) -> _TenantBasics:
        if not self.risk.limited:
            return self
        if self.stream_gate is not None:
            raise ValueError(
                "a risk limit certifies a threshold on the whole-answer calibrator's "
                "probability, but `stream_gate` decides on the first tokens with a prefix "
                "calibrator; remove `stream_gate` or the limit (`max_error_rate`, `confidence`)"
            )
        if self.on_missing_confidence == "answer":
            raise ValueError(
                "`on_missing_confidence: answer` passes answers that no confidence vouches "
                "for, which a risk limit cannot cover; use `abstain` or `error` with "
                "`max_error_rate`"
            )
        return self

    @property
    def profile(self) -> RiskProfile:
        """The tenant's effective risk profile (λ, a); see :meth:`RiskPolicy.resolve`."""
        return self.risk.resolve()

    @property
    def threshold(self) -> float:
        """The smallest calibrated P(correct) at which the tenant's responses are answered."""
        return self.profile.threshold


class TenantPolicy(DropInPolicy, _TenantBasics):
    """One tenant's keys, risk and behaviour, and how its app meets basguard (DropInPolicy)."""


class PolicyFile(StrictModel):
    """A tenant policy file. The gateway's config file subclasses it to add upstream models."""

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
        """Every tenant's calibrator artifacts, resolved against the policy file's directory.

        Parameters
        ----------
        base_dir : Path
            The directory holding the policy file.

        Returns
        -------
        dict of str to dict of (str or None) to Path
            Per tenant, the artifact per model name (``None`` for the default). Tenants without
            calibrators map to an empty dict.
        """
        return {
            tenant: {model: base_dir / path for model, path in policy.calibrators.paths().items()}
            for tenant, policy in self.tenants.items()
        }

    def certificate_paths(self, base_dir: Path) -> dict[str, dict[str | None, Path]]:
        """Every tenant's risk certificates, resolved against the policy file's directory.

        Parameters
        ----------
        base_dir : Path
            The directory holding the policy file.

        Returns
        -------
        dict of str to dict of (str or None) to Path
            Per tenant, the certificate per model name (``None`` for the default). Tenants
            without a risk limit, or without certificates, map to an empty dict.
        """
        return {
            tenant: {model: base_dir / path
                     for model, path in policy.risk.certificate_paths().items()}
            for tenant, policy in self.tenants.items()
        }
