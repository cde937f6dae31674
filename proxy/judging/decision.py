"""Turning one generated choice into an answer-or-abstain decision."""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from calibrators.artifact import FittedCalibrator
from policies.segments import OTHER_SEGMENT
from policies.utility import should_answer
from proxy.signals.features import confidence_features
from proxy.wire.logprobs import TokenLogprob

if TYPE_CHECKING:  # the types only: the decision imports no serving or signal machinery
    from proxy.signals.runner import SignalOutcome

__all__ = [
    "ChoiceOutcome",
    "DecidingTenant",
    "DecisionRecord",
    "DecisionTerms",
    "LimitStatus",
    "MissingConfidence",
    "RiskLimitTerms",
    "decide_choice",
    "decide_features",
    "decision_metadata",
    "missing_confidence_error",
    "new_decision_id",
    "not_applicable",
    "signals_json",
    "static_headers",
]

MissingConfidence = Literal["abstain", "answer", "error"]
Json = dict[str, Any]


class DecidingTenant(Protocol):
    """What a decision records of the tenant it was made for (a
    :class:`proxy.runtime.state.TenantRuntime` is one): a decision depends on these terms, not
    on the runtime that resolved them."""

    @property
    def name(self) -> str: ...
    @property
    def mode(self) -> str: ...
    @property
    def threshold(self) -> float: ...
    @property
    def wrong_answer_cost(self) -> float: ...
    @property
    def abstain_cost(self) -> float: ...


LimitStatus = Literal["certified", "uncertified", "breached"]
"""A risk limit's state for a decision: certified (answers at the certified threshold or
above), uncertified (no certificate, or one that certified nothing: nothing is answered),
breached (the audit sample's live bound proves the error rate above the limit)."""


@dataclass(frozen=True, slots=True)
class RiskLimitTerms:
    """A tenant's risk limit on one model, as a decision states it (see
    :mod:`policies.risk_limit`)."""

    max_error_rate: float
    confidence: float
    cost_threshold: float
    """The tenant's cost-optimal threshold, before the limit raises it."""
    certified_threshold: float | None
    """The certificate's threshold; None: nothing certified."""
    labels: int
    """Independent labels the certificate was computed on (0: no certificate)."""
    answer_rate: float | None
    """The answer rate the certificate measured at its threshold on its data (None: none)."""
    certificate: str | None
    """The certificate's version (None: no certificate)."""
    status: LimitStatus
    on_breach: str

    def as_json(self) -> Json:
        return {
            "max_error_rate": self.max_error_rate,
            "confidence": self.confidence,
            "status": self.status,
            "cost_threshold": self.cost_threshold,
            "certified_threshold": self.certified_threshold,
            "labels": self.labels,
            "answer_rate": self.answer_rate,
            "certificate": self.certificate,
            "on_breach": self.on_breach,
        }

    def header(self) -> str:
        """The ``x-basguard-risk-limit`` header: ``key=value`` pairs, ``none`` for null."""
        def number(value: float | None) -> str:
            return "none" if value is None else f"{value:.4f}"

        return (f"status={self.status}; max_error_rate={self.max_error_rate:g}; "
                f"confidence={self.confidence:g}; "
                f"certified_threshold={number(self.certified_threshold)}; "
                f"labels={self.labels}; answer_rate={number(self.answer_rate)}")


@dataclass(frozen=True, slots=True)
class DecisionTerms:
    """What one request is decided by: resolved once, when it arrives, for its tenant and
    model (:meth:`proxy.runtime.state.TenantRuntime.terms_for`)."""

    threshold: float
    """Answer iff the calibrated P(correct) reaches it: the tenant's cost threshold, raised to
    the certified one under a risk limit."""
    withhold: str | None = None
    """Why every choice is withheld whatever its confidence (a risk limit with no certified
    threshold, or breached under ``on_breach: abstain``); None: decide on the threshold."""
    audited: bool = False
    """In the tenant's audit sample: drawn at random (``audit_rate``) for labelling."""
    limit: RiskLimitTerms | None = None
    """The tenant's risk limit on this model, if it has one."""


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
    withhold: str | None = None,
) -> ChoiceOutcome:
    """Answer iff the calibrated P(correct) reaches ``threshold``.

    Without confidence (no logprobs, or not the features the calibrator reads) the tenant's
    ``on_missing_confidence`` decides; missing confidence is never taken for high confidence.
    Under ``error`` the choice is an abstention without confidence: it is recorded like any
    other decision, and the caller then answers with the error (see
    :func:`missing_confidence_error`). ``withhold`` (a reason) withholds the choice whatever
    its confidence, which is still measured and recorded.
    """
    if not tokens:
        return _without_confidence(
            index, "the upstream returned no token logprobs", on_missing_confidence,
            withhold=withhold)
    features = confidence_features(tokens)
    missing = [name for name in calibrator.feature_names if name not in features]
    if missing:
        reason = (
            f"the calibrator reads {', '.join(missing)}, which the upstream's logprobs "
            "do not provide (no top_logprobs?)"
        )
        return _without_confidence(index, reason, on_missing_confidence, features, withhold)
    p = calibrator.predict_features(features)
    return _decided(index, p, threshold, features, withhold)


def decide_features(
    index: int,
    features: Mapping[str, float],
    missing_reason: str | None,
    *,
    calibrator: FittedCalibrator,
    threshold: float,
    on_missing_confidence: MissingConfidence,
    withhold: str | None = None,
) -> ChoiceOutcome:
    """Answer iff the calibrated P(correct) from the signals' ``features`` reaches ``threshold``.

    ``missing_reason`` (from :meth:`proxy.signals.runner.SignalOutcome.missing_reason`) says why
    some feature the calibrator reads is missing (no logprobs, a signal call that failed, timed
    out or returned garbage); then ``on_missing_confidence`` decides, as in :func:`decide_choice`.
    ``withhold`` withholds the choice whatever its confidence, as there.
    """
    found = dict(features)
    if missing_reason is not None:
        return _without_confidence(index, missing_reason, on_missing_confidence, found or None,
                                   withhold)
    p = calibrator.predict_features(found)
    return _decided(index, p, threshold, found, withhold)


def _decided(
    index: int, p: float, threshold: float, features: dict[str, float], withhold: str | None
) -> ChoiceOutcome:
    if withhold is not None:
        return ChoiceOutcome(index, False, p, withhold, features)
    return ChoiceOutcome(index, should_answer(p, threshold), p, None, features)


def not_applicable(index: int, reason: str) -> ChoiceOutcome:
    """A choice passed unchanged, without a decision (see :attr:`ChoiceOutcome.applicable`)."""
    return ChoiceOutcome(index, True, None, reason, None, applicable=False)


def _without_confidence(
    index: int,
    reason: str,
    policy: MissingConfidence,
    features: dict[str, float] | None = None,
    withhold: str | None = None,
) -> ChoiceOutcome:
    return ChoiceOutcome(index, policy == "answer" and withhold is None, None, reason, features)


def missing_confidence_error(
    outcomes: Sequence[ChoiceOutcome], policy: MissingConfidence
) -> str | None:
    """Why the response must be an error under ``on_missing_confidence: error``, else None."""
    if policy != "error":
        return None
    missing = next((o for o in outcomes if o.confidence is None and o.applicable), None)
    return None if missing is None else f"no confidence could be computed: {missing.reason}"


@dataclass(slots=True)
class DecisionRecord:
    """What was decided for one response, for headers, the ``basguard`` object and the store.

    Not frozen, though nothing changes it once made: one is made per request, and a frozen
    dataclass sets each of its fields through ``object.__setattr__`` (see
    :class:`~proxy.judging.replies.ReplyJudging`).
    """

    id: str
    tenant: DecidingTenant
    model: str
    outcomes: list[ChoiceOutcome]
    calibrator_method: str
    calibrator_version: str
    abstained_answers: Mapping[int, str] = field(default_factory=dict)
    """Choice index to the text of each abstained answer (withheld in enforce mode), so that
    reviewers can label it: the only way to measure over-abstention."""
    prompt: str | None = None
    """What was asked (the last user message or the prompt), kept when a choice abstained."""
    created_at: float = field(default_factory=time.time)
    signals: SignalOutcome | None = None
    """What the confidence signals that make extra calls found and cost; None when only
    signals without calls ran (logprobs), so such responses look as they always did."""
    segment: str = OTHER_SEGMENT
    """The tenant's segment the request named (see :mod:`policies.segments`)."""
    decided_after_tokens: int | None = None
    """K of the tenant's stream gate when the decision was made on each choice's first K
    tokens (a streamed answer); None for a decision on the whole answer."""
    prefix_tokens: tuple[int, ...] = ()
    """With a stream gate: the tokens each choice had when decided (fewer than K: it ended)."""
    terms: DecisionTerms | None = None
    """What the request was decided by (its threshold, audit mark and risk limit); None: the
    tenant's own threshold, not audited, no limit."""

    @property
    def threshold(self) -> float:
        """The threshold the choices were decided at."""
        return self.terms.threshold if self.terms is not None else self.tenant.threshold

    @property
    def audited(self) -> bool:
        """Whether the decision is in the tenant's audit sample."""
        return self.terms is not None and self.terms.audited

    @property
    def limit(self) -> RiskLimitTerms | None:
        return None if self.terms is None else self.terms.limit

    def as_json(self) -> Json:
        first = self.outcomes[0] if self.outcomes else None
        limit = self.limit
        return {
            "id": self.id,
            "tenant": self.tenant.name,
            "mode": self.tenant.mode,
            "decision": first.decision if first else "abstain",
            "confidence": first.confidence if first else None,
            "threshold": self.threshold,
            "calibrator": {"method": self.calibrator_method, "version": self.calibrator_version},
            "choices": [outcome.as_json() for outcome in self.outcomes],
            "audited": self.audited,
            **({"risk_limit": limit.as_json()} if limit is not None else {}),
            **({"signals": signals_json(self.signals)} if self.signals is not None else {}),
            **({"decided_after_tokens": self.decided_after_tokens,
                "prefix_tokens": list(self.prefix_tokens)}
               if self.decided_after_tokens is not None else {}),
        }

    def metadata(self) -> dict[str, str]:
        """The decision as a Responses API response's ``metadata`` strings."""
        return decision_metadata(self.id, self.outcomes)

    def headers(self) -> dict[str, str]:
        return {
            **static_headers(self.tenant, self.calibrator_version, self.terms),
            "x-basguard-id": self.id,
            # The SDKs keep it as the response's request id (openai's `_request_id`, the
            # Agents SDK's `ModelResponse.request_id`), where the basguard headers are lost.
            "x-request-id": self.id,
            "x-basguard-decision": ",".join(o.decision for o in self.outcomes),
            "x-basguard-confidence": _confidences(self.outcomes),
        }


def _confidences(outcomes: Sequence[ChoiceOutcome]) -> str:
    return ",".join("none" if o.confidence is None else f"{o.confidence:.4f}" for o in outcomes)


def decision_metadata(decision_id: str, outcomes: Sequence[ChoiceOutcome]) -> dict[str, str]:
    """The decision as strings, for the Responses API's ``metadata`` (a map of strings that
    every typed client keeps): ``basguard_id``, ``basguard_decision``, ``basguard_confidence``,
    written as the ``x-basguard-*`` headers are."""
    return {
        "basguard_id": decision_id,
        "basguard_decision": ",".join(o.decision for o in outcomes),
        "basguard_confidence": _confidences(outcomes),
    }


def signals_json(outcome: SignalOutcome) -> Json:
    """The extra calls' costs, for the ``basguard`` object and the store."""
    return {
        "extra_calls": outcome.extra_calls,
        "extra_tokens": outcome.extra_tokens,
        "seconds": round(outcome.seconds, 6),
        "calls": [call.as_json() for call in outcome.calls],
    }


def static_headers(
    tenant: DecidingTenant, calibrator_version: str, terms: DecisionTerms | None = None
) -> dict[str, str]:
    """Headers known before the decision (all a streamed annotate/shadow response can carry):
    with ``terms``, the threshold in force, ``x-basguard-audit: true`` for a decision in the
    audit sample, and the risk limit (``x-basguard-risk-limit``) when the tenant has one."""
    threshold = tenant.threshold if terms is None else terms.threshold
    headers = {
        "x-basguard-tenant": tenant.name,
        "x-basguard-mode": tenant.mode,
        "x-basguard-threshold": f"{threshold:.4f}",
        "x-basguard-calibrator-version": calibrator_version,
    }
    if terms is not None:
        if terms.audited:
            headers["x-basguard-audit"] = "true"
        if terms.limit is not None:
            headers["x-basguard-risk-limit"] = terms.limit.header()
    return headers


# A random prefix per process and a counter: unique across workers and restarts without a
# getrandom() system call per request (measured: 1.5 against 5.2 µs an id). An id names a
# decision and grants nothing: feedback is checked against the tenant's key.
_ID_PREFIX = "bg-" + secrets.token_hex(6)
_ID_COUNTER = itertools.count()


def new_decision_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):012x}"
