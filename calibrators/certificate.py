"""Risk certificates: the file ``basguard calibrate certify -o`` writes and a gateway loads.

A certificate is one JSON document that describes itself: the limit (``max_error_rate``,
``confidence``), the certified ``threshold`` (null when nothing could be certified), the bound and
the labels behind it, how groups were handled, how the test ran, which data it ran on, and the
calibrator it holds for (its version, the first 12 hex digits of the artifact's checksum, with
method and features), plus a SHA-256 checksum over all of that, whose first 12 hex digits are
the certificate's own version. The threshold is a cut on *that*
calibrator's probability, so :func:`load_certificate` refuses a certificate for another one.
Loading parses JSON and validates it; it never executes code.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
)

from .artifact import FittedCalibrator
from .documents import DocumentKind, document_checksum, read_document, write_atomically
from .errors import CertificateError

if TYPE_CHECKING:
    # Certifying needs SciPy; a gateway only loads certificates, and starts without it.
    from .certification import CalibratorCertification

__all__ = [
    "CERTIFICATE_FORMAT",
    "CERTIFICATE_FORMAT_VERSION",
    "RiskCertificate",
    "certificate_for",
    "load_certificate",
    "save_certificate",
]

CERTIFICATE_FORMAT: Final = "basguard.risk_certificate"
CERTIFICATE_FORMAT_VERSION: Final = 1
_CERTIFICATE = DocumentKind(CERTIFICATE_FORMAT, CERTIFICATE_FORMAT_VERSION, "certificate", "a",
                            "basguard risk certificate", CertificateError)


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CertifiedCalibrator(_Document):
    """The calibrator whose probability the threshold cuts."""

    version: str = Field(pattern=r"^[0-9a-f]{12}$", description="The artifact's version.")
    method: str = Field(description="Its calibration method.")
    features: list[str] = Field(description="The score fields it reads, FIELD:KIND.")


class TestedRows(_Document):
    """The rows the fixed sequence tested, at the certified threshold."""

    labels: int = Field(ge=0, description="Independent labelled rows tested.")
    answered: int = Field(ge=0, description="Of those, answered at the threshold.")
    errors: int = Field(ge=0, description="Of those, wrong.")


class GroupHandling(_Document):
    """How rows of one question were made independent."""

    field: str | None = Field(description="The group field; null: every row its own group.")
    handling: Literal["one_row_per_group"] = Field(
        description="One row per group, drawn uniformly at random with the procedure's seed.")
    rows: int = Field(ge=1, description="Rows of the data.")
    groups: int = Field(ge=1, description="Distinct groups, one label each.")


class Procedure(_Document):
    """How the threshold was certified."""

    method: Literal["learn_then_test"] = "learn_then_test"
    test: Literal["exact_binomial"] = Field(
        default="exact_binomial", description="P(Binomial(n, A) <= k) at each threshold.")
    sequence: Literal["fixed_sequence_high_to_low"] = "fixed_sequence_high_to_low"
    start_from: Literal["held_out_labels", "training_curve"] = Field(
        default="held_out_labels", description="What chose the start: a share of the labels "
        "(start_labels of them, not tested) or the calibrator's training curve (every label "
        "tested).")
    start_labels: int = Field(ge=0, description="Labels that chose the start and were not tested.")
    start_threshold: float = Field(ge=0, le=1, description="The highest threshold tested.")
    min_answered: int = Field(ge=1, description="Fewest answers that can certify the limit.")
    seed: int = Field(description="Seed of the group draw and of the start split.")

    @model_serializer(mode="wrap")
    def _without_the_old_default(self, dump: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A certificate written before start_from existed started from held-out labels; leaving
        # the default out keeps its version, which decisions record and the live bound counts by.
        body: dict[str, Any] = dump(self)
        if body.get("start_from") == "held_out_labels":
            del body["start_from"]
        return body


class CertifiedData(_Document):
    """The labelled data the certificate was computed on."""

    source: str = Field(description="The data file.")
    fingerprint: str = Field(pattern=r"^sha256:[0-9a-f]{64}$",
                             description="Digest of the calibrator's fields and the labels.")
    label: str = Field(description="The correctness field.")


class LabelsNeededReport(_Document):
    """How many labels it would take (only when nothing was certified)."""

    min_answered: int = Field(ge=1, description="Fewest tested answers, none wrong, that certify.")
    at_observed_rates: int | None = Field(
        description="Independent labels that would certify a threshold at the observed rates.")


class RiskCertificate(_Document):
    """A certified risk limit for one calibrator."""

    format: Literal["basguard.risk_certificate"] = CERTIFICATE_FORMAT
    format_version: Literal[1] = CERTIFICATE_FORMAT_VERSION
    calibrator: CertifiedCalibrator
    max_error_rate: float = Field(gt=0, lt=1, description="A: most wrong answers per answer.")
    confidence: float = Field(gt=0, lt=1, description="C: probability the limit holds.")
    threshold: float | None = Field(
        ge=0, le=1, description="Answer iff p >= threshold; null: nothing could be certified.")
    upper_bound: float | None = Field(
        ge=0, le=1, description="Clopper-Pearson bound at C on the tested error rate.")
    labels: int = Field(ge=0, description="Independent labels used (one per group).")
    answer_rate: float = Field(ge=0, le=1, description="Share of all rows answered.")
    error_rate: float | None = Field(ge=0, le=1, description="Error rate among them.")
    tested: TestedRows
    groups: GroupHandling
    procedure: Procedure
    data: CertifiedData
    labels_needed: LabelsNeededReport | None
    created_at: datetime

    @property
    def version(self) -> str:
        """The first 12 hex digits of the certificate's checksum: what a gateway records on
        each decision made under it, so the live bound counts only labels gathered since."""
        return document_checksum(self.model_dump(mode="json"))[len("sha256:"):][:12]


def certificate_for(
    calibrator: FittedCalibrator, outcome: CalibratorCertification, *, source: str,
    fingerprint: str, label: str,
) -> RiskCertificate:
    """The certificate recording ``outcome`` for ``calibrator``."""
    from .certification import GROUP_HANDLING  # certifying has loaded it (and SciPy) already

    result = outcome.certification
    needed = outcome.labels_needed
    return RiskCertificate(
        calibrator=CertifiedCalibrator(
            version=calibrator.version, method=calibrator.method,
            features=[str(spec) for spec in calibrator.features],
        ),
        max_error_rate=result.max_error_rate,
        confidence=result.confidence,
        threshold=result.threshold,
        upper_bound=result.upper_bound,
        labels=result.labels,
        answer_rate=outcome.answer_rate,
        error_rate=outcome.error_rate,
        tested=TestedRows(labels=result.test_labels, answered=result.answered,
                          errors=result.errors),
        groups=GroupHandling(field=outcome.group_field, handling=GROUP_HANDLING,
                             rows=outcome.rows, groups=outcome.groups),
        # Certifying a calibrator, the start curve is always its training curve.
        procedure=Procedure(start_from=("training_curve" if result.start_from == "start_curve"
                                        else "held_out_labels"),
                            start_labels=result.start_labels,
                            start_threshold=result.start_threshold,
                            min_answered=result.min_answered, seed=outcome.seed),
        data=CertifiedData(source=source, fingerprint=fingerprint, label=label),
        labels_needed=None if needed is None else LabelsNeededReport(
            min_answered=needed.min_answered, at_observed_rates=needed.at_observed_rates),
        created_at=datetime.now(UTC),
    )


def save_certificate(certificate: RiskCertificate, path: str | Path) -> None:
    """Write ``certificate`` to ``path`` atomically, with its checksum."""
    body = certificate.model_dump(mode="json")
    document = {**body, "checksum": document_checksum(body)}
    payload = orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    try:
        write_atomically(path, payload)
    except OSError as exc:
        raise CertificateError(
            path, f"cannot write the certificate: {exc.strerror or exc}") from exc


def load_certificate(
    path: str | Path, *, calibrator: FittedCalibrator | None = None
) -> RiskCertificate:
    """Read and verify a risk certificate, and with ``calibrator``, that it is this one's.

    Raises
    ------
    CertificateError
        If the file is missing or unreadable, not JSON, not a basguard risk certificate, of an
        unsupported format version, fails its checksum or its schema, or was certified for a
        calibrator other than ``calibrator``.
    """
    body = {key: value for key, value in read_document(path, _CERTIFICATE).items()
            if key != "checksum"}
    try:
        certificate = RiskCertificate.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise CertificateError(path, f"invalid certificate field {where!r}: {first['msg']}"
                               ) from None
    if calibrator is not None and certificate.calibrator.version != calibrator.version:
        raise CertificateError(
            path, f"certified for calibrator {certificate.calibrator.version}, not "
            f"{calibrator.version}: its threshold cuts another calibrator's probability; "
            "certify again with this calibrator")
    return certificate
