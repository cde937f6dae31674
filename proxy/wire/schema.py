"""The OpenAI wire schema basguard speaks, as pydantic models.

Requests accept unknown fields and pass them upstream untouched, so new OpenAI parameters work
without a basguard release. Responses and chunks are explicit. The gateway edits upstream JSON
in place on its fast path (parsing every response into these models would cost more than the
rest of the proxy); the tests validate what it sends against the models below.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    field_validator,
)

__all__ = [
    "OPENAI_REQUEST_FIELDS",
    "AbstainedAnswer",
    "AbstainedList",
    "AbstentionReport",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatCompletionResponse",
    "ChoiceDecision",
    "CompletionRequest",
    "CompletionResponse",
    "Endpoint",
    "ErrorBody",
    "ErrorDetail",
    "FeedbackReceipt",
    "FeedbackRequest",
    "ModelCard",
    "ModelList",
    "ResponsesRequest",
    "RiskLimitReport",
]

Decision = Literal["answer", "abstain"]
ChoiceDecisionKind = Literal["answer", "abstain", "not_applicable"]
"""A choice's decision; ``not_applicable``: passed unchanged without one (a tool call)."""
Endpoint = Literal["chat/completions", "completions", "responses"]
"""The guarded endpoints: the paths below ``/v1/`` basguard decides on."""
MAX_CHOICES = 16
"""The most choices (``n``) one request may ask for."""

_SAMPLING = frozenset({
    "model", "stream", "stream_options", "temperature", "top_p", "user", "metadata", "store",
    "service_tier", "safety_identifier", "prompt_cache_key", "top_logprobs",
})
OPENAI_REQUEST_FIELDS: dict[str, frozenset[str]] = {
    "chat/completions": _SAMPLING | {
        "messages", "audio", "frequency_penalty", "function_call", "functions", "logit_bias",
        "logprobs", "max_completion_tokens", "max_tokens", "modalities", "n",
        "parallel_tool_calls", "prediction", "presence_penalty", "reasoning_effort",
        "response_format", "seed", "stop", "tool_choice", "tools", "verbosity",
        "web_search_options",
    },
    "completions": _SAMPLING | {
        "prompt", "best_of", "echo", "frequency_penalty", "logit_bias", "logprobs",
        "max_tokens", "n", "presence_penalty", "seed", "stop", "suffix",
    },
    "responses": _SAMPLING | {
        "input", "background", "conversation", "include", "instructions", "max_output_tokens",
        "max_tool_calls", "parallel_tool_calls", "previous_response_id", "prompt", "reasoning",
        "text", "tool_choice", "tools", "truncation",
    },
}
"""The request fields of OpenAI's API, per endpoint. An OpenAI-compatible upstream gets any
field a client sends (new parameters work without a release); a model served through litellm
gets only these, because litellm reads its own control arguments (``api_base``, ``api_key``,
``custom_llm_provider``, ``extra_headers``, ...) from the same keywords as the request's, and a
client's body could otherwise send the upstream's key elsewhere."""


class _Request(BaseModel):
    # Strict types for the fields that steer the gateway: the service reads them from the body,
    # so a value pydantic would coerce (``"stream": "false"``, truthy as a string) must be a 400,
    # not a behaviour the validation did not see.
    model_config = ConfigDict(extra="allow")

    model: StrictStr = Field(min_length=1,
                             description="Public model name from the gateway config.")
    stream: StrictBool | None = Field(
        default=False, description="Stream the answer as server-sent events.")
    n: StrictInt = Field(default=1, ge=1, le=MAX_CHOICES,
                         description="Number of choices to generate.")


class ResponseFormat(BaseModel):
    """``response_format``: its ``type`` says whether the answer is JSON (structured output)."""

    model_config = ConfigDict(extra="allow")

    type: StrictStr = Field(description="text, json_object or json_schema.")


class ChatCompletionRequest(_Request):
    """``POST /v1/chat/completions``; unknown fields pass upstream unchanged."""

    messages: list[dict[str, Any]] = Field(min_length=1, description="The conversation.")
    response_format: ResponseFormat | None = Field(
        default=None, description="Structured output (the tenant's structured_output policy).")
    logprobs: StrictBool | None = Field(default=None, description="Return token logprobs.")
    top_logprobs: StrictInt | None = Field(
        default=None, ge=0, le=20, description="Alternatives per token (needs logprobs)."
    )


class ResponsesRequest(BaseModel):
    """``POST /v1/responses``; unknown fields pass upstream unchanged."""

    model_config = ConfigDict(extra="allow")

    model: StrictStr = Field(min_length=1,
                             description="Public model name from the gateway config.")
    input: str | list[dict[str, Any]] | None = Field(
        default=None, description="The prompt: text or input items.")
    stream: StrictBool | None = Field(
        default=False, description="Stream the response as typed server-sent events.")
    background: StrictBool | None = Field(
        default=None, description="Must be false: basguard decides on the answer it relays, "
        "and a background response has none yet when it is created.")
    include: list[StrictStr] | None = Field(
        default=None, description="Extra output; `message.output_text.logprobs` for logprobs.")
    top_logprobs: StrictInt | None = Field(
        default=None, ge=0, le=20, description="Alternatives per output token.")

    @field_validator("background")
    @classmethod
    def _not_in_background(cls, value: bool | None) -> bool | None:
        if value:
            raise ValueError("background responses cannot be guarded (basguard decides on the "
                             "answer it relays); send the request without background")
        return value


class CompletionRequest(_Request):
    """``POST /v1/completions`` (legacy); unknown fields pass upstream unchanged."""

    prompt: str | list[str] | list[int] | list[list[int]] = Field(description="The prompt.")
    logprobs: StrictInt | None = Field(
        default=None, ge=0, le=20, description="Return logprobs with this many alternatives."
    )


class RiskLimitReport(BaseModel):
    """A tenant's risk limit as a decision states it (``basguard.risk_limit``)."""

    max_error_rate: float = Field(description="A: at most this share of the answers wrong.")
    confidence: float = Field(description="C: with this probability.")
    status: Literal["certified", "uncertified", "breached"] = Field(
        description="uncertified: nothing is answered; breached: the audit sample proves the "
        "error rate above A (withheld under on_breach: abstain).")
    cost_threshold: float = Field(description="The tenant's cost-optimal threshold.")
    certified_threshold: float | None = Field(description="The certificate's threshold.")
    labels: int = Field(description="Independent labels the certificate was computed on.")
    answer_rate: float | None = Field(
        description="The answer rate the certificate measured at its threshold.")
    certificate: str | None = Field(description="The certificate's version.")
    on_breach: Literal["alert", "abstain"]


class ChoiceDecision(BaseModel):
    """The guardrail's decision for one choice."""

    index: int
    decision: ChoiceDecisionKind
    confidence: float | None = Field(description="Calibrated P(correct); null when unknown.")
    reason: str | None = Field(default=None, description="Why confidence is missing, if it is.")


class AbstentionReport(BaseModel):
    """The top-level ``basguard`` object added to every response (and final stream chunk)."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(description="Decision id, for feedback.")
    tenant: str
    mode: Literal["enforce", "annotate", "shadow"]
    decision: ChoiceDecisionKind = Field(
        description="Choice 0's decision (see choices for n > 1).")
    confidence: float | None = Field(description="Choice 0's calibrated P(correct).")
    threshold: float = Field(description="The answer threshold the request was decided at.")
    calibrator: dict[str, Any] = Field(description="Method and version of the calibrator used.")
    choices: list[ChoiceDecision]
    audited: bool = Field(
        default=False, description="In the tenant's audit sample: drawn at random (its "
        "audit_rate) for labelling; label it with POST /v1/feedback.")
    risk_limit: RiskLimitReport | None = Field(
        default=None, description="The tenant's risk limit on the model, if it has one.")


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    created: int
    model: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["assistant"]
    content: str | None


class ChatChoice(BaseModel):
    model_config = ConfigDict(extra="allow")

    index: int
    message: ChatMessage
    finish_reason: str | None
    logprobs: dict[str, Any] | None = None


class ChatCompletionResponse(_Response):
    object: Literal["chat.completion"]
    choices: list[ChatChoice]
    basguard: AbstentionReport | None = None


class ChunkChoice(BaseModel):
    model_config = ConfigDict(extra="allow")

    index: int
    delta: dict[str, Any]
    finish_reason: str | None = None
    logprobs: dict[str, Any] | None = None


class ChatCompletionChunk(_Response):
    object: Literal["chat.completion.chunk"]
    choices: list[ChunkChoice]
    basguard: AbstentionReport | None = None


class CompletionChoice(BaseModel):
    model_config = ConfigDict(extra="allow")

    index: int
    text: str
    finish_reason: str | None = None
    logprobs: dict[str, Any] | None = None


class CompletionResponse(_Response):
    object: Literal["text_completion"]
    choices: list[CompletionChoice]
    basguard: AbstentionReport | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "basguard"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class FeedbackRequest(BaseModel):
    """``POST /v1/feedback``: whether the answer of one of the tenant's responses was correct."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=128, description="The response's `basguard.id`.")
    correct: StrictBool = Field(description="Whether the (possibly withheld) answer was right.")
    choice: int = Field(default=0, ge=0, lt=MAX_CHOICES, description="Which choice (for n > 1).")


class FeedbackReceipt(BaseModel):
    """The stored label, with what it says about the decision."""

    object: Literal["basguard.feedback"] = "basguard.feedback"
    id: str
    choice: int
    correct: bool
    decision: Decision
    confidence: float | None
    outcome: Literal["answered_correct", "answered_wrong", "abstained_correct", "abstained_wrong"]
    previous: bool | None = Field(description="The label it replaced; null if the first.")


class AbstainedAnswer(BaseModel):
    """An answer the guardrail abstained on, for a reviewer to label."""

    id: str
    choice: int
    model: str
    mode: Literal["enforce", "annotate", "shadow"]
    confidence: float | None
    threshold: float
    prompt: str | None = Field(description="The last user message (or the prompt).")
    answer: str | None = Field(description="The answer that was withheld.")
    created: float = Field(description="Unix time of the decision.")
    correct: bool | None = Field(description="The label, if it has one.")
    audited: bool = Field(
        default=False, description="In the tenant's audit sample (drawn at random for "
        "labelling): its label certifies and watches a risk limit.")


class AbstainedList(BaseModel):
    """``GET /v1/feedback/withheld``: newest first; page with ``before=<last created>``."""

    object: Literal["list"] = "list"
    data: list[AbstainedAnswer]
    has_more: bool


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    """The OpenAI error envelope: ``{"error": {"message", "type", "param", "code"}}``."""

    error: ErrorDetail
