"""Fitted calibrators and their artifact files.

An artifact is one JSON document that describes itself: the method, the score fields it reads
(with their kinds), the fitted parameters as plain numbers, what it was trained on (row count,
classes, groups, a fingerprint of the data), its cross-validated figures, when it was made, and a
SHA-256 checksum over all of that. Loading parses JSON and validates it; it never executes code
(no pickle), and a truncated, hand-edited or corrupted file fails with :class:`ArtifactError`.
The first 12 hex digits of the checksum are the calibrator's version.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .documents import DocumentKind, read_document, write_atomically
from .documents import document_checksum as _checksum
from .errors import ArtifactError
from .methods import METHODS, Calibrator
from .signals import ScoreKind, ScoreSpec, logit_scalar, to_logit_space

__all__ = [
    "ARTIFACT_FORMAT",
    "ARTIFACT_FORMAT_VERSION",
    "CandidateReport",
    "CrossValidationReport",
    "FittedCalibrator",
    "StoreQuery",
    "TrainingCurve",
    "TrainingSummary",
    "load_artifact",
    "save_artifact",
]

ARTIFACT_FORMAT = "basguard.calibrator"
ARTIFACT_FORMAT_VERSION = 1
_ARTIFACT = DocumentKind(ARTIFACT_FORMAT, ARTIFACT_FORMAT_VERSION, "artifact", "an",
                         "basguard calibrator", ArtifactError)


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StoreQuery(_Document):
    """The labelled decisions of a decision store a calibrator was fitted on
    (``basguard calibrate fit --from-store``): enough to read the same rows again."""

    location: str = Field(description="The store (a SQLite path or a URL, password masked).")
    tenant: str = Field(description="Whose decisions.")
    model: str = Field(description="On which public model.")
    prefix: int | None = Field(
        default=None, ge=1, description="Decisions a stream gate made on this many tokens "
        "(None: decisions on whole answers).")
    labelled_until: float = Field(
        description="Unix time of the latest label read: the rows are the decisions labelled "
        "by then (a later label or relabel is not in the fit).")


class TrainingCurve(_Document):
    """The fitted calibrator's answers and errors on its own training data.

    One row per training group, drawn with seed 0, predicted by the final calibrator; at each
    listed threshold t (high to low), ``answered`` rows have p >= t and ``errors`` of them are
    wrong. ``calibrate certify`` chooses where its test sequence starts from this curve, so every
    held-out label is tested (see policies.risk_control); at most 512 points are kept.
    """

    thresholds: list[float] = Field(min_length=1, description="Thresholds, high to low.")
    answered: list[int] = Field(min_length=1, description="Rows with p >= each threshold.")
    errors: list[int] = Field(min_length=1, description="Wrong rows among them.")

    @model_validator(mode="after")
    def _a_selective_error_curve(self) -> TrainingCurve:
        t, n, k = self.thresholds, self.answered, self.errors
        if not len(t) == len(n) == len(k):
            raise ValueError("thresholds, answered and errors must be of one length")
        if not all(0.0 <= v <= 1.0 for v in t) or any(a <= b for a, b in pairwise(t)):
            raise ValueError("thresholds must be probabilities, strictly decreasing")
        if n[0] < 1 or any(a >= b for a, b in pairwise(n)):
            raise ValueError("answered must be positive, strictly increasing")
        if (any(not 0 <= e <= a for e, a in zip(k, n, strict=True))
                or any(a > b for a, b in pairwise(k))):
            raise ValueError("errors must lie in [0, answered] and never decrease")
        return self


class TrainingSummary(_Document):
    """What a calibrator was fitted on."""

    rows: int = Field(ge=1, description="Rows used for the final fit.")
    positives: int = Field(ge=0, description="Rows labelled correct.")
    groups: int = Field(ge=1, description="Distinct questions (groups) among the rows.")
    fingerprint: str = Field(pattern=r"^sha256:[0-9a-f]{64}$", description="Digest of the data.")
    sources: list[str] = Field(description="Where the rows came from (files or a store).")
    label: str = Field(description="The correctness field.")
    scores: list[str] = Field(description="Every score field offered to the fit, FIELD:KIND.")
    store: StoreQuery | None = Field(
        default=None, description="The decision store query the rows came from (None: files).")
    curve: TrainingCurve | None = Field(
        default=None, description="Answers and errors on the training data, where certifying "
        "starts (None: artifacts written before it was recorded).")


class CandidateReport(_Document):
    """Out-of-fold figures of one candidate method."""

    name: str = Field(description="Method and score fields, e.g. isotonic(token_prob).")
    method: str = Field(description="The calibration method.")
    features: list[str] = Field(description="Score fields the candidate reads.")
    oof: dict[str, float | None] = Field(description="Out-of-fold metrics (None if undefined).")
    fold_bas: list[float] = Field(description="BAS of each held-out fold.")
    error: str | None = Field(default=None, description="Why the candidate could not be fitted.")


class CrossValidationReport(_Document):
    """Grouped k-fold cross-validation behind the choice of method."""

    folds: int = Field(ge=2, description="Number of grouped folds.")
    selected: str = Field(description="Name of the candidate that was fitted on all rows.")
    criterion: Literal["bas"] = Field(default="bas", description="What the selection maximised.")
    candidates: list[CandidateReport] = Field(description="Every candidate's figures.")


class _Feature(_Document):
    name: str = Field(min_length=1)
    kind: ScoreKind


class _ArtifactDocument(_Document):
    format: Literal["basguard.calibrator"]
    format_version: Literal[1]
    method: str
    features: list[_Feature] = Field(min_length=1)
    params: dict[str, Any]
    training: TrainingSummary | None
    cross_validation: CrossValidationReport | None
    created_at: datetime
    checksum: str


@dataclass(frozen=True, eq=False)
class FittedCalibrator:
    """A fitted calibration method bound to the score fields it reads."""

    estimator: Calibrator
    features: tuple[ScoreSpec, ...]
    training: TrainingSummary | None = None
    """None for a calibrator that was not fitted (identity)."""
    cross_validation: CrossValidationReport | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        # Precomputed for predict_one: kinds and field names as plain tuples.
        object.__setattr__(self, "_kinds", tuple(spec.kind for spec in self.features))
        object.__setattr__(self, "_names", tuple(spec.field for spec in self.features))

    @property
    def method(self) -> str:
        return self.estimator.method

    @property
    def feature_names(self) -> tuple[str, ...]:
        names: tuple[str, ...] = self._names  # type: ignore[attr-defined]  # __post_init__'s
        return names

    @cached_property
    def version(self) -> str:
        """First 12 hex digits of the checksum: changes whenever the artifact's content does."""
        return _checksum(self._document_body())[len("sha256:") :][:12]

    def predict(self, scores: NDArray[np.float64]) -> NDArray[np.float64]:
        """P(correct) for rows of raw scores, shape ``(n_rows, len(features))``."""
        if scores.ndim != 2 or scores.shape[1] != len(self.features):
            raise ValueError(
                f"expected scores of shape (n, {len(self.features)}) for "
                f"{', '.join(self.feature_names)}; got {scores.shape}"
            )
        logits = np.column_stack(
            [to_logit_space(scores[:, j], spec.kind) for j, spec in enumerate(self.features)]
        )
        return np.clip(self.estimator.predict(logits), 0.0, 1.0)

    def predict_one(self, scores: Sequence[float]) -> float:
        """P(correct) for one row of raw scores, in plain Python (the request path)."""
        kinds: tuple[ScoreKind, ...] = self._kinds  # type: ignore[attr-defined]
        logits = [logit_scalar(v, k) for v, k in zip(scores, kinds, strict=True)]
        return min(1.0, max(0.0, self.estimator.predict_one(logits)))

    def predict_features(self, features: Mapping[str, float]) -> float:
        """P(correct) from named scores; raises KeyError naming a missing feature."""
        return self.predict_one([features[name] for name in self.feature_names])

    def _document_body(self) -> dict[str, Any]:
        return {
            "format": ARTIFACT_FORMAT,
            "format_version": ARTIFACT_FORMAT_VERSION,
            "method": self.method,
            "features": [{"name": s.field, "kind": s.kind.value} for s in self.features],
            "params": self.estimator.to_params(),
            # Without the None fields: an artifact written before a field existed keeps its
            # checksum, and so its version, when loaded and written again.
            "training": None if self.training is None else self.training.model_dump(
                mode="json", exclude_none=True),
            "cross_validation": (
                None if self.cross_validation is None
                else self.cross_validation.model_dump(mode="json")
            ),
            "created_at": self.created_at.isoformat(),
        }


def save_artifact(calibrator: FittedCalibrator, path: str | Path) -> str:
    """Write ``calibrator`` to ``path`` atomically and return its version.

    The file is written next to its destination and renamed over it, so a reader (or the
    gateway's hot reload) sees either the old artifact or the new one, never half of one.
    """
    body = calibrator._document_body()
    document = {**body, "checksum": _checksum(body)}
    payload = orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    try:
        write_atomically(path, payload)
    except OSError as exc:
        raise ArtifactError(path, f"cannot write the artifact: {exc.strerror or exc}") from exc
    return calibrator.version


def load_artifact(path: str | Path) -> FittedCalibrator:
    """Read and verify a calibrator artifact.

    Raises
    ------
    ArtifactError
        If the file is missing or unreadable, not JSON (for example truncated), nested too
        deeply, not a basguard calibrator, of an unsupported format version, fails its
        checksum, or holds invalid parameters: every malformed file ends here.
    """
    loaded = read_document(path, _ARTIFACT)
    try:
        document = _ArtifactDocument.model_validate(loaded)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ArtifactError(path, f"invalid artifact field {where!r}: {first['msg']}") from None
    method = METHODS.get(document.method)
    if method is None:
        raise ArtifactError(path, f"unknown calibration method {document.method!r}")
    n_features = len(document.features)
    if method.n_scores is not None and n_features != method.n_scores:
        raise ArtifactError(path, f"method {document.method!r} reads one score, not {n_features}")
    try:
        estimator = method.from_params(document.params, n_features)
    except (ValueError, TypeError, LookupError, ArithmeticError) as exc:
        raise ArtifactError(path, f"invalid {document.method} parameters: {exc}") from None
    return FittedCalibrator(
        estimator=estimator,
        features=tuple(ScoreSpec(f.name, f.kind) for f in document.features),
        training=document.training,
        cross_validation=document.cross_validation,
        created_at=document.created_at,
    )
