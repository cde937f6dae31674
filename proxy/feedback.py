"""Feedback accounting, free of any database: decisions as stored, labels, outcomes and bins.

What a label means (over- or under-abstention), the reliability bin of a confidence, and the
shapes the store returns. Every store backend shares these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "OUTCOMES",
    "RELIABILITY_BINS",
    "DriftWindow",
    "FeedbackTotal",
    "Label",
    "Outcome",
    "SegmentTotal",
    "StoredDecision",
    "confidence_bin",
    "outcome_of",
]

RELIABILITY_BINS = 10
OUTCOMES = ("answered_correct", "answered_wrong", "abstained_correct", "abstained_wrong")
Outcome = Literal["answered_correct", "answered_wrong", "abstained_correct", "abstained_wrong"]


def confidence_bin(p: float | None) -> int:
    """The reliability bin of ``p``: ``[0, 0.1)`` is 0, ..., ``[0.9, 1]`` is 9; -1 for none."""
    if p is None:
        return -1
    return min(int(p * RELIABILITY_BINS), RELIABILITY_BINS - 1)


def outcome_of(answered: bool, correct: bool) -> Outcome:
    """answered_wrong is under-abstention; abstained_correct is over-abstention."""
    if answered:
        return "answered_correct" if correct else "answered_wrong"
    return "abstained_correct" if correct else "abstained_wrong"


@dataclass(frozen=True)
class StoredDecision:
    """One choice's decision as stored, with its label if it has one."""

    id: str
    choice: int
    tenant: str
    model: str
    mode: str
    decision: str
    confidence: float | None
    threshold: float
    wrong_answer_cost: float
    abstain_cost: float
    prompt: str | None
    abstained_answer: str | None
    created_at: float
    correct: bool | None
    labelled_at: float | None
    segment: str = "other"
    """The segment the request named (:mod:`policies.segments`); ``other`` for older ones."""

    @property
    def answered(self) -> bool:
        return self.decision == "answer"

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "choice": self.choice,
            "tenant": self.tenant,
            "model": self.model,
            "mode": self.mode,
            "decision": self.decision,
            "confidence": self.confidence,
            "threshold": self.threshold,
            "prompt": self.prompt,
            "answer": self.abstained_answer,
            "created": self.created_at,
            "correct": self.correct,
            "labelled": self.labelled_at,
        }


@dataclass(frozen=True)
class Label:
    """The result of labelling one decision."""

    decision: StoredDecision
    previous: bool | None
    """The label it had before (None: first label)."""

    @property
    def outcome(self) -> Outcome:
        assert self.decision.correct is not None
        return outcome_of(self.decision.answered, self.decision.correct)


@dataclass(frozen=True)
class FeedbackTotal:
    """Labelled decisions of one tenant, model, outcome and confidence bin (-1: no confidence)."""

    tenant: str
    model: str
    outcome: Outcome
    bin: int
    decisions: int
    confidence_sum: float
    utility_sum: float
    bas_sum: float


@dataclass(frozen=True)
class SegmentTotal:
    """Labelled decisions of one tenant, segment and outcome."""

    tenant: str
    segment: str
    outcome: Outcome
    decisions: int


@dataclass(frozen=True)
class DriftWindow:
    """Mean predicted P(correct) against observed accuracy over the latest labelled decisions."""

    tenant: str
    model: str
    decisions: int
    mean_confidence: float
    accuracy: float

    @property
    def gap(self) -> float:
        """Positive: overconfident (predicts more correct answers than there are)."""
        return self.mean_confidence - self.accuracy

