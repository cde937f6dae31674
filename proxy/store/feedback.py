"""Feedback accounting, free of any database: decisions as stored, labels, outcomes, bins and
what a label adds to the feedback totals.

What a label means (over- or under-abstention), the reliability bin of a confidence, and the
shapes the store returns. Every store backend shares these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from policies.bas import bas_score_scalar
from policies.utility import realized_utility_scalar

__all__ = [
    "ANY_LABEL",
    "OUTCOMES",
    "RELIABILITY_BINS",
    "AuditTotal",
    "DriftWindow",
    "ExpectedLabel",
    "FeedbackTotal",
    "Label",
    "Outcome",
    "SegmentTotal",
    "StoredDecision",
    "TotalsRow",
    "confidence_bin",
    "label_changes",
    "outcome_moves",
    "outcome_of",
    "totals_change",
]

RELIABILITY_BINS = 10
OUTCOMES = ("answered_correct", "answered_wrong", "abstained_correct", "abstained_wrong")
Outcome = Literal["answered_correct", "answered_wrong", "abstained_correct", "abstained_wrong"]

ANY_LABEL: Literal["any"] = "any"
ExpectedLabel = bool | None | Literal["any"]
"""The label a reviewer saw on a decision before labelling it (None: none yet), checked when
the label is written; ``ANY_LABEL``: no check, the last label wins (``/v1/feedback``)."""


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
    audited: bool = False
    """In the tenant's audit sample (drawn at random, answered or withheld alike, for
    labelling); False for decisions made before audits existed."""
    risk_certificate: str | None = None
    """The version of the risk certificate the decision was made under, if any."""

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
            "audited": self.audited,
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
class AuditTotal:
    """Labelled decisions of the audit sample of one tenant, model, risk certificate (``""``:
    none) and outcome."""

    tenant: str
    model: str
    certificate: str
    outcome: Outcome
    decisions: int


@dataclass(frozen=True)
class DriftWindow:
    """Mean predicted P(correct) against observed accuracy over the latest labelled decisions."""

    tenant: str
    model: str
    decisions: int
    mean_confidence: float
    """NaN when the window holds no decision."""
    accuracy: float
    calibrator_version: str | None = None
    """The calibrator the window's decisions were all made under (None: any)."""
    earlier_labels: int | None = None
    """Labelled decisions made under other calibrator versions, left out (None: not counted)."""

    @property
    def gap(self) -> float:
        """Positive: overconfident (predicts more correct answers than there are)."""
        return self.mean_confidence - self.accuracy



TotalsRow = tuple[str, str, str, int, int, float, float, float]
"""A ``feedback_totals`` row: tenant, model, outcome, bin, decisions and the three sums."""


def totals_change(decision: StoredDecision, correct: bool, sign: int) -> TotalsRow:
    """What labelling ``decision`` ``correct`` adds to its totals row (``sign=-1`` takes it back).

    The realized utility uses the tenant's costs at decision time; BAS needs a confidence.
    """
    p = decision.confidence
    utility = realized_utility_scalar(
        correct, decision.answered, wrong_answer_cost=decision.wrong_answer_cost,
        abstain_cost=decision.abstain_cost,
    )
    bas = bas_score_scalar(p, correct) if p is not None else 0.0
    return (decision.tenant, decision.model, outcome_of(decision.answered, correct),
            confidence_bin(p), sign, sign * (p or 0.0), sign * utility, sign * bas)


def label_changes(decision: StoredDecision, correct: bool) -> list[TotalsRow]:
    """The totals changes of labelling ``decision``: the last label wins, each decision counts
    once, so a different earlier label is taken back first; the same label again changes
    nothing."""
    if decision.correct is correct:
        return []
    changes = [] if decision.correct is None else [totals_change(decision, decision.correct, -1)]
    return [*changes, totals_change(decision, correct, +1)]


def outcome_moves(decision: StoredDecision, correct: bool) -> list[tuple[Outcome, int]]:
    """How labelling ``decision`` ``correct`` moves its count between outcomes: nothing for the
    same label again; otherwise -1 on the old label's outcome (if it had one), +1 on the new."""
    if decision.correct is correct:
        return []
    moves: list[tuple[Outcome, int]] = (
        [] if decision.correct is None else [(outcome_of(decision.answered, decision.correct), -1)])
    return [*moves, (outcome_of(decision.answered, correct), +1)]
