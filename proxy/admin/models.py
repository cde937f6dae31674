"""The ops console's API: its request and response bodies, as pydantic models (the OpenAPI
schema at ``/admin/openapi.json`` is generated from them)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "CalibratorSummary",
    "FitReport",
    "FitRequest",
    "LabelReceipt",
    "LabelRequest",
    "Metrics",
    "ModelFigures",
    "PromoteRequest",
    "PromotionList",
    "PromotionRecord",
    "ReliabilityBin",
    "ReviewEntry",
    "ReviewQueue",
    "RiskLimitFigures",
    "SimulatedCandidate",
    "SimulationCurve",
    "SimulationReport",
    "TenantFigures",
    "TenantList",
    "WhoAmI",
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WhoAmI(BaseModel):
    """The key's holder."""

    name: str = Field(description="`admin` for an operator key, else the reviewer's name.")
    key_id: str = Field(description="First 8 hex digits of the key's SHA-256 digest.")
    tenants: list[str] = Field(description="The tenants this key sees.")
    can_promote: bool = Field(description="Whether it may fit and promote calibrators.")
    session_expires: float | None = Field(
        default=None, description="Unix time the browser session ends (none with a bearer key).")


class ReliabilityBin(BaseModel):
    """Labelled decisions whose confidence fell in ``[low, high)``."""

    low: float
    high: float
    decisions: int
    correct: int
    mean_confidence: float | None = Field(description="None for an empty bin.")

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.decisions if self.decisions else None


class CalibratorSummary(BaseModel):
    """The calibrator serving a tenant's model."""

    method: str
    version: str
    features: list[str]
    created_at: float = Field(description="Unix time it was fitted.")
    age_days: float
    file: str | None = Field(description="Its artifact, relative to the config's directory "
                             "(none: uncalibrated).")


class RiskLimitFigures(BaseModel):
    """A tenant's risk limit on one model: the limit, the certificate in force and what the
    audit sample's labels say of it live (the figures of the ``basguard_risk_limit_*``
    metrics)."""

    max_error_rate: float = Field(description="A: at most this share of the answers wrong.")
    confidence: float = Field(description="C: the confidence it is certified and watched with.")
    on_breach: Literal["alert", "abstain"]
    status: Literal["uncertified", "certified", "breached"] = Field(
        description="uncertified: nothing is answered on the model; breached: the audit "
        "sample proves the limit broken (with on_breach: abstain nothing is answered).")
    threshold: float | None = Field(
        description="The threshold answered at: max(the costs', the certified); none: "
        "nothing is answered.")
    certificate: str | None = Field(description="The version of the certificate in force.")
    certificate_labels: int = Field(description="Labelled rows the certificate was made on.")
    certified_answer_rate: float | None = Field(
        description="The share of the certificate's rows answered at its threshold.")
    audited_answers: int = Field(
        description="Labelled audited answers under this certificate: what the live bound "
        "rests on.")
    audited_wrong: int
    error_lower_bound: float | None = Field(
        description="Anytime-valid lower bound on the error rate among answers (none: no "
        "certificate to watch); above A is a breach.")
    error_upper_bound: float | None


class ModelFigures(BaseModel):
    """One tenant's figures on one model."""

    model: str
    threshold: float
    wrong_answer_cost: float
    abstain_cost: float
    certified_threshold: float | None = Field(
        default=None, description="The threshold a risk limit certified; none where the "
        "tenant has no risk limit or no certified threshold.")
    risk_limit: RiskLimitFigures | None = Field(
        default=None, description="The tenant's risk limit on the model; none without one.")
    audit_rate: float = Field(
        default=0.0, description="The share of decisions drawn at random into the audit "
        "sample, to be labelled.")
    decisions: int = Field(description="Choices decided in the window (answered or withheld).")
    withheld: int
    abstention_rate: float | None
    labelled: int = Field(description="Labelled decisions (all time: the feedback totals).")
    live_utility_per_request: float | None = Field(
        description="Realized utility over the labelled decisions, at their own costs.")
    over_abstention: float | None = Field(description="Withheld but correct, of labelled.")
    under_abstention: float | None = Field(description="Answered but wrong, of labelled.")
    bas: float | None = Field(description="Mean BAS of the labelled decisions with a "
                              "confidence.")
    calibrator: CalibratorSummary
    reliability: list[ReliabilityBin]


class TenantFigures(BaseModel):
    name: str
    mode: str
    description: str | None
    models: list[ModelFigures]


class TenantList(BaseModel):
    window_days: float = Field(description="The window decisions are counted over.")
    tenants: list[TenantFigures]


class ReviewEntry(BaseModel):
    """A decision as a reviewer sees it. ``answer`` is the text of a withheld answer or of an
    audited one: it is shown here and nowhere else (the store keeps no other answered text;
    the app that asked has it)."""

    id: str
    choice: int
    tenant: str
    model: str
    mode: str
    decision: Literal["answer", "abstain"]
    audited: bool = Field(
        description="In the audit sample: drawn at random for labelling; its labels certify "
        "and watch the tenant's risk limit, and its answer's text is kept even when answered.")
    confidence: float | None
    threshold: float
    prompt: str | None
    answer: str | None
    created: float
    correct: bool | None
    labelled: float | None
    reason: str | None
    features: dict[str, Any] = Field(description="The confidence signals' features.")
    calibrator_version: str


class ReviewQueue(BaseModel):
    object: Literal["list"] = "list"
    data: list[ReviewEntry]


class LabelRequest(_Body):
    id: str = Field(min_length=1, max_length=200, description="The decision's id.")
    choice: int = Field(default=0, ge=0, le=127)
    correct: bool
    expected: bool | None = Field(
        description="The label you saw (null: none). If it was labelled otherwise since, the "
        "answer is 409 label_conflict and nothing changes.")


class LabelReceipt(BaseModel):
    id: str
    choice: int
    tenant: str
    correct: bool
    previous: bool | None
    outcome: str
    labelled_by: str


class SimulatedCandidate(BaseModel):
    """One replayed policy (``policies.simulate``'s figures)."""

    name: str
    kind: str
    threshold: float
    wrong_answer_cost: float
    abstain_cost: float
    decisions: int
    labelled: int
    coverage: float | None
    accuracy_answered: float | None
    over_abstention: float | None
    under_abstention: float | None
    utility_per_request: float | None
    utility_interval: list[float | None]
    reference_utility_per_request: float | None
    reference_utility_interval: list[float | None]


class SimulationCurve(BaseModel):
    threshold: list[float]
    reference_utility_per_request: list[float | None]
    coverage: list[float | None]
    over_abstention: list[float | None]
    under_abstention: list[float | None]


class SimulationReport(BaseModel):
    """What ``basguard policy simulate --json`` prints, for one tenant (and model)."""

    source: str
    decisions: int
    labelled: int
    without_confidence: int
    groups: int
    bootstrap: dict[str, Any]
    bas: float | None
    reference: dict[str, Any]
    candidates: list[SimulatedCandidate]
    optimum: dict[str, Any]
    curve: SimulationCurve
    configured_live: dict[str, Any] | None = None
    simulated: str = Field(description="The name of the candidate the request asked for.")


class FitRequest(_Body):
    tenant: str
    model: str


class Metrics(BaseModel):
    """Calibration figures on the labelled rows (None where undefined)."""

    bas: float | None
    ece: float | None
    brier: float | None
    auroc: float | None


class FitReport(BaseModel):
    """A calibrator fitted on the store's labels, next to the one serving."""

    tenant: str
    model: str
    rows: int
    groups: int
    candidate_version: str
    candidate_method: str
    candidate: Metrics = Field(description="Out-of-fold: on rows each fit did not see.")
    candidate_reliability: list[ReliabilityBin]
    serving_version: str
    serving_method: str
    serving: Metrics | None = Field(description="The serving calibrator on the same rows.")
    serving_reliability: list[ReliabilityBin]
    serving_note: str
    promotable: bool
    target: str | None = Field(description="The artifact a promotion replaces.")
    why_not: str | None = Field(description="Why it cannot be promoted, if it cannot.")


class PromoteRequest(_Body):
    tenant: str
    model: str
    candidate_version: str = Field(description="The fitted candidate's version.")
    serving_version: str = Field(
        description="The version you saw serving: if another has been promoted since, the "
        "answer is 409 and nothing changes.")


class PromotionRecord(BaseModel):
    at: float
    who: str
    tenant: str
    model: str
    file: str
    from_version: str
    to_version: str
    method: str
    rows: int


class PromotionList(BaseModel):
    object: Literal["list"] = "list"
    data: list[PromotionRecord]
