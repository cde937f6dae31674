"""Judging a non-streamed reply's choices: one code for this process and the reply offload's.

:class:`ReplyJudging` holds only picklable inputs (no tenant, no upstream), so a large reply is
judged by the same code in the offload's process (:mod:`proxy.judging.offload`); the streamed
paths decide with the same helpers on what a stream said.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from calibrators.artifact import FittedCalibrator
from policies.schema import DropInPolicy
from proxy.judging.decision import (
    ChoiceOutcome,
    DecisionTerms,
    MissingConfidence,
    decide_features,
    not_applicable,
)
from proxy.signals.base import Answer, SignalRequest
from proxy.signals.logprobs import TOPK_FEATURES
from proxy.signals.registry import SignalPlan
from proxy.signals.runner import SignalOutcome, measure_now
from proxy.wire.formats import WireFormat, merged_calls
from proxy.wire.withheld import Asked, not_decided_reason, withheld_shape

__all__ = [
    "ReplyJudging",
    "choice_text",
    "decide_or_pass",
    "features_now",
    "kept_for_review",
    "missing_feature_reason",
    "review_text",
]

Json = dict[str, Any]


@dataclass(slots=True)
class ReplyJudging:
    """Everything judging a non-streamed reply's choices reads: the same in this process and,
    for a large reply, in the offload's (so it is all picklable: no tenant, no upstream).

    Not frozen, though nothing changes it once made: one is made per request, and a frozen
    dataclass sets each of its fields through ``object.__setattr__`` (measured: 1.1 against
    0.16 µs for fifteen fields).
    """

    fmt: type[WireFormat]
    model: str
    plan: SignalPlan
    request: SignalRequest
    calibrator: FittedCalibrator
    terms: DecisionTerms
    """The threshold, audit mark and risk limit the request is decided by."""
    on_missing_confidence: MissingConfidence
    enforce: bool
    abstention_message: str
    wanted: bool
    """The client asked for logprobs (else they are stripped from the answer)."""
    top_k: int
    signals: SignalOutcome | None
    """What the signals that make calls found, if any ran."""
    drop_in: DropInPolicy = field(default_factory=DropInPolicy)
    """The tenant's tool-call, structured-output and withheld-shape settings."""
    asked: Asked = "text"
    """The shape of answer the request asks for (plain text, JSON, a forced tool call)."""

    def judge(self, choices: list[Json]) -> tuple[list[ChoiceOutcome], dict[int, str]]:
        """Each choice's decision and the text of each one kept for review (see
        :func:`kept_for_review`); trims the logprobs to what the client asked for and, in
        enforce mode, withholds abstained answers."""
        fmt = self.fmt
        found = features_now(self.plan, self.request, self.signals, [
            Answer.from_choice(choice, fmt, i) for i, choice in enumerate(choices)])
        names = self.calibrator.feature_names
        outcomes = [
            decide_or_pass(
                self.terms, self.on_missing_confidence, choice.get("index", i),
                found.features[i], missing_feature_reason(found, i, names), self.calibrator,
                not_decided_reason(self.drop_in, calls_tools=fmt.calls_tools(choice),
                                   asked=self.asked))
            for i, choice in enumerate(choices)
        ]
        abstained = {
            outcome.index: review_text(choice_text(choice), fmt.tool_call_pieces(choice))
            for choice, outcome in zip(choices, outcomes, strict=True)
            if kept_for_review(outcome, self.terms)
        }
        for choice, outcome in zip(choices, outcomes, strict=True):
            fmt.restrict_logprobs(choice, self.wanted, self.top_k)
            if self.enforce and not outcome.answer:
                fmt.withhold(choice, withheld_shape(self.drop_in, self.abstention_message,
                                                    asked=self.asked))
        return outcomes, abstained


def decide_or_pass(
    terms: DecisionTerms, on_missing_confidence: MissingConfidence, index: int,
    features: Mapping[str, float], missing_reason: str | None, calibrator: FittedCalibrator,
    not_decided: str | None,
) -> ChoiceOutcome:
    """The choice's decision on ``terms``, or ``not_applicable`` when the tenant passes such
    choices."""
    if not_decided is not None:
        return not_applicable(index, not_decided)
    return decide_features(
        index, features, missing_reason, calibrator=calibrator, threshold=terms.threshold,
        on_missing_confidence=on_missing_confidence, withhold=terms.withhold,
    )


def kept_for_review(outcome: ChoiceOutcome, terms: DecisionTerms | None) -> bool:
    """Whether a choice's text (and the prompt) is kept in the store for a reviewer: every
    withheld one, and every decided one of an audited decision (whose labels must not depend
    on what was decided)."""
    if not outcome.answer:
        return True
    return terms is not None and terms.audited and outcome.applicable


def features_now(
    plan: SignalPlan, request: SignalRequest, run: SignalOutcome | None, answers: list[Answer]
) -> SignalOutcome:
    """Every feature of ``answers``: the run's (signals that make calls), if any, with those of
    the immediate signals (logprobs) computed now."""
    found = measure_now([s for s in plan.to_run if s.immediate], request, answers)
    return found if run is None else run.merged(found)


def missing_feature_reason(
    outcome: SignalOutcome, position: int, feature_names: Sequence[str]
) -> str | None:
    """Why answer ``position`` lacks a feature the calibrator reads (None: it has them all)."""
    reason = outcome.missing_reason(position, feature_names)
    found = outcome.features[position]
    missing = [name for name in feature_names if name not in found]
    if reason is not None and found and set(missing) <= TOPK_FEATURES:
        # Logprobs came back, without the alternatives the top-k features need.
        return (f"the calibrator reads {', '.join(sorted(missing))}, which the upstream's "
                "logprobs do not provide (no top_logprobs?)")
    return reason


def choice_text(choice: Json) -> str:
    message = choice.get("message")
    if isinstance(message, dict):
        return str(message.get("content") or "")
    return str(choice.get("text") or "")


def review_text(text: str, pieces: list[tuple[int, str, str]]) -> str:
    """A withheld answer as a reviewer reads it: its text, then each tool call it made."""
    lines = [f"[tool call] {name}({arguments})" for name, arguments in merged_calls(pieces)]
    return "\n".join([text, *lines] if text else lines)
