"""The judgement of a Responses API answer: one code for every path that decides on one.

A non-streamed reply is judged in the serving process when it is small and in the reply
offload's process (:mod:`proxy.offload`) when it is large; a stream is decided on what it said.
All three read the same :class:`ResponseJudging`, so they cannot drift apart. It holds only
picklable inputs (no tenant, no upstream): it travels to the offload's process with the raw
reply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from calibrators.artifact import FittedCalibrator
from policies.schema import DropInPolicy

from .decision import ChoiceOutcome, MissingConfidence, decide_features, not_applicable
from .responses_wire import ResponseAnswer, answer_of, restrict_response, withhold
from .serving import _immediate, _missing_reason
from .signals.base import Answer, SignalRequest
from .signals.registry import SignalPlan
from .signals.runner import SignalOutcome
from .withheld import not_decided_reason

__all__ = ["ResponseJudging", "as_answer"]

Json = dict[str, Any]


def as_answer(answer: ResponseAnswer) -> Answer:
    """A response's answer as the signals read it (choice 0)."""
    return Answer(0, answer.text, answer.tokens())


@dataclass(frozen=True)
class ResponseJudging:
    """Everything deciding on a response reads, and what a withheld one becomes."""

    model: str
    plan: SignalPlan
    request: SignalRequest
    calibrator: FittedCalibrator
    threshold: float
    on_missing_confidence: MissingConfidence
    enforce: bool
    withheld_text: str
    """What replaces a withheld answer: the abstention message, or its JSON object."""
    refusal: bool
    """Withhold as the Responses API's refusal content part (``withheld_refusal``)."""
    wanted: bool
    """The client asked for logprobs (else they are stripped from the response)."""
    top_k: int
    signals: SignalOutcome | None
    """What the signals that make calls found, if any ran."""
    drop_in: DropInPolicy
    """The tenant's tool-call and structured-output settings."""
    structured: bool
    """The request asks for JSON (a JSON ``text.format``)."""

    def not_decided(self, answer: ResponseAnswer) -> str | None:
        """Why ``answer`` passes undecided (a tool call, structured output under ``pass``);
        None: decide on it."""
        return not_decided_reason(self.drop_in, calls_tools=answer.calls_tools,
                                  structured=self.structured)

    def decide(self, answer: ResponseAnswer) -> tuple[ChoiceOutcome, dict[int, str]]:
        """The decision on ``answer`` (choice 0) and, if it abstains, its text by index."""
        reason = self.not_decided(answer)
        if reason is not None:
            return not_applicable(0, reason), {}
        found = _immediate(self.plan, self.request, self.signals, [as_answer(answer)])
        outcome = decide_features(
            0, found.features[0], _missing_reason(found, 0, self.calibrator.feature_names),
            calibrator=self.calibrator, threshold=self.threshold,
            on_missing_confidence=self.on_missing_confidence,
        )
        return outcome, {} if outcome.answer else {0: answer.text}

    def judge(
        self, document: Json, answer: ResponseAnswer | None = None
    ) -> tuple[ChoiceOutcome, dict[int, str]]:
        """:meth:`decide` on a shape-checked response object (``answer``: its
        :func:`answer_of`, if already read), which is edited as the client gets it: logprobs
        trimmed to what it asked for, a withheld answer replaced (enforce), and without an
        upstream's own ``basguard`` member (the caller appends the decision last)."""
        decided = self.decide(answer_of(document) if answer is None else answer)
        restrict_response(document, self.wanted, self.top_k)
        if self.enforce and not decided[0].answer:
            withhold(document, self.withheld_text, refusal=self.refusal)
        document.pop("basguard", None)
        return decided
