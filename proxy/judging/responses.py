"""The judgement of a Responses API answer: one code for every path that decides on one.

A non-streamed reply is judged in the serving process when it is small and in the reply
offload's process (:mod:`proxy.judging.offload`) when it is large; a stream is decided on what
it said.
All three read the same :class:`ResponseJudging`, so they cannot drift apart. It holds only
picklable inputs (no tenant, no upstream): it travels to the offload's process with the raw
reply.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from calibrators.artifact import FittedCalibrator
from policies.schema import DropInPolicy
from proxy.judging.decision import (
    ChoiceOutcome,
    DecisionTerms,
    MissingConfidence,
    decide_features,
    decision_metadata,
    not_applicable,
)
from proxy.judging.replies import features_now, kept_for_review, missing_feature_reason
from proxy.signals.base import Answer, SignalRequest
from proxy.signals.registry import SignalPlan
from proxy.signals.runner import SignalOutcome, SignalRun
from proxy.wire.responses import ResponseAnswer, answer_of, restrict_response, withhold
from proxy.wire.withheld import Asked, WithheldShape, not_decided_reason

__all__ = ["ResponseJudging", "as_answer"]

Json = dict[str, Any]


def as_answer(answer: ResponseAnswer) -> Answer:
    """A response's answer as the signals read it (choice 0)."""
    return Answer(0, answer.answer_text, answer.tokens())


@dataclass(frozen=True)
class ResponseJudging:
    """Everything deciding on a response reads, and what a withheld one becomes."""

    model: str
    plan: SignalPlan
    request: SignalRequest
    calibrator: FittedCalibrator
    terms: DecisionTerms
    """The threshold, audit mark and risk limit the request is decided by."""
    on_missing_confidence: MissingConfidence
    enforce: bool
    withheld: WithheldShape
    """What replaces a withheld answer (:func:`proxy.wire.withheld.withheld_shape`)."""
    wanted: bool
    """The client asked for logprobs (else they are stripped from the response)."""
    top_k: int
    signals: SignalOutcome | None
    """What the signals that make calls found, if any ran."""
    drop_in: DropInPolicy
    """The tenant's tool-call and structured-output settings."""
    asked: Asked
    """The shape of answer the request asks for (``text.format``, ``tool_choice``)."""
    decision_id: str
    """The id the decision will be recorded under (written into the response's metadata)."""

    async def with_signals(
        self, run: SignalRun | None, answer: ResponseAnswer | None
    ) -> ResponseJudging:
        """This judging with what the signals that make calls (``run``) found on ``answer``,
        once their follow-up calls are done."""
        # What is passed undecided (a tool call, structured output under `pass`) needs no
        # follow-up calls: they would judge nothing.
        if run is None or answer is None or self.not_decided(answer) is not None:
            return self
        return replace(self, signals=await run.finish([as_answer(answer)]))

    def not_decided(self, answer: ResponseAnswer) -> str | None:
        """Why ``answer`` passes undecided (a tool call, structured output under ``pass``);
        None: decide on it."""
        return not_decided_reason(self.drop_in, calls_tools=answer.calls_tools,
                                  asked=self.asked)

    def decide(self, answer: ResponseAnswer) -> tuple[ChoiceOutcome, dict[int, str]]:
        """The decision on ``answer`` (choice 0) and, if it is kept for review (withheld, or
        audited), its text by index."""
        reason = self.not_decided(answer)
        if reason is not None:
            return not_applicable(0, reason), {}
        found = features_now(self.plan, self.request, self.signals, [as_answer(answer)])
        outcome = decide_features(
            0, found.features[0], missing_feature_reason(found, 0, self.calibrator.feature_names),
            calibrator=self.calibrator, threshold=self.terms.threshold,
            on_missing_confidence=self.on_missing_confidence, withhold=self.terms.withhold,
        )
        return outcome, ({0: answer.answer_text} if kept_for_review(outcome, self.terms)
                         else {})

    def judge(
        self, document: Json, answer: ResponseAnswer | None = None
    ) -> tuple[ChoiceOutcome, dict[int, str]]:
        """:meth:`decide` on a shape-checked response object (``answer``: its
        :func:`answer_of`, if already read), which is edited as the client gets it: logprobs
        trimmed to what it asked for, a withheld answer replaced (enforce), the decision in its
        ``metadata``, and without an upstream's own ``basguard`` member (the caller appends the
        decision object last)."""
        decided = self.decide(answer_of(document) if answer is None else answer)
        restrict_response(document, self.wanted, self.top_k)
        if self.enforce and not decided[0].answer:
            withhold(document, self.withheld)
        document.pop("basguard", None)
        given = document.get("metadata")
        document["metadata"] = {**(given if isinstance(given, dict) else {}),
                                **decision_metadata(self.decision_id, [decided[0]])}
        return decided
