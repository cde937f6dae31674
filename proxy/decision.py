"""Turning one generated choice into an answer-or-abstain decision."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from calibrators.artifact import FittedCalibrator
from policies.utility import should_answer

from .confidence import TokenLogprob, confidence_features

__all__ = [
    "ChoiceOutcome",
    "MissingConfidence",
    "decide_choice",
    "decide_features",
    "missing_confidence_error",
    "not_applicable",
]

MissingConfidence = Literal["abstain", "answer", "error"]


@dataclass(frozen=True, slots=True)
class ChoiceOutcome:
    """The decision for one choice, with what it was based on."""

    index: int
    answer: bool
    confidence: float | None
    reason: str | None = None
    features: dict[str, float] | None = None
    applicable: bool = True
    """False for a choice passed unchanged without a decision (a tool call or structured
    output under the tenant's ``pass`` policy): recorded as ``not_applicable``."""

    @property
    def decision(self) -> Literal["answer", "abstain", "not_applicable"]:
        if not self.applicable:
            return "not_applicable"
        return "answer" if self.answer else "abstain"

    def as_json(self) -> dict[str, object]:
        return {
            "index": self.index,
            "decision": self.decision,
            "confidence": self.confidence,
            "reason": self.reason,
        }


def decide_choice(
    index: int,
    tokens: Sequence[TokenLogprob] | None,
    *,
    calibrator: FittedCalibrator,
    threshold: float,
    on_missing_confidence: MissingConfidence,
) -> ChoiceOutcome:
    """Answer iff the calibrated P(correct) reaches ``threshold``.

    Without confidence (no logprobs, or not the features the calibrator reads) the tenant's
    ``on_missing_confidence`` decides; missing confidence is never taken for high confidence.
    Under ``error`` the choice is an abstention without confidence: it is recorded like any
    other decision, and the caller then answers with the error (see
    :func:`missing_confidence_error`).
    """
    if not tokens:
        return _without_confidence(
            index, "the upstream returned no token logprobs", on_missing_confidence
        )
    features = confidence_features(tokens)
    missing = [name for name in calibrator.feature_names if name not in features]
    if missing:
        reason = (
            f"the calibrator reads {', '.join(missing)}, which the upstream's logprobs "
            "do not provide (no top_logprobs?)"
        )
        return _without_confidence(index, reason, on_missing_confidence, features)
    p = calibrator.predict_features(features)
    return ChoiceOutcome(index, should_answer(p, threshold), p, None, features)


def decide_features(
    index: int,
    features: Mapping[str, float],
    missing_reason: str | None,
    *,
    calibrator: FittedCalibrator,
    threshold: float,
    on_missing_confidence: MissingConfidence,
) -> ChoiceOutcome:
    """Answer iff the calibrated P(correct) from the signals' ``features`` reaches ``threshold``.

    ``missing_reason`` (from :meth:`proxy.signals.runner.SignalOutcome.missing_reason`) says why
    some feature the calibrator reads is missing (no logprobs, a signal call that failed, timed
    out or returned garbage); then ``on_missing_confidence`` decides, as in :func:`decide_choice`.
    """
    found = dict(features)
    if missing_reason is not None:
        return _without_confidence(index, missing_reason, on_missing_confidence, found or None)
    p = calibrator.predict_features(found)
    return ChoiceOutcome(index, should_answer(p, threshold), p, None, found)


def not_applicable(index: int, reason: str) -> ChoiceOutcome:
    """A choice passed unchanged, without a decision (see :attr:`ChoiceOutcome.applicable`)."""
    return ChoiceOutcome(index, True, None, reason, None, applicable=False)


def _without_confidence(
    index: int,
    reason: str,
    policy: MissingConfidence,
    features: dict[str, float] | None = None,
) -> ChoiceOutcome:
    return ChoiceOutcome(index, policy == "answer", None, reason, features)


def missing_confidence_error(
    outcomes: Sequence[ChoiceOutcome], policy: MissingConfidence
) -> str | None:
    """Why the response must be an error under ``on_missing_confidence: error``, else None."""
    if policy != "error":
        return None
    missing = next((o for o in outcomes if o.confidence is None and o.applicable), None)
    return None if missing is None else f"no confidence could be computed: {missing.reason}"
