"""A calibrator fitted on a tenant's labelled decisions: what ``basguard calibrate fit
--from-store`` and the ops console's refit both run.

The store holds each decision's confidence features; the labelled ones of one tenant and public
model are the data, each decision id a group (its choices answer one question).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from calibrators.artifact import StoreQuery
from calibrators.signals import ScoreKind, ScoreSpec, parse_score_spec
from proxy.signals.registry import FEATURE_KINDS

if TYPE_CHECKING:
    from calibrators.dataset import CalibrationData
    from calibrators.selection import FitOutcome
    from proxy.store import DecisionStore

__all__ = ["DEFAULT_STORE_SCORE", "fit_from_store", "gateway_score_kinds", "store_fit_data"]

DEFAULT_STORE_SCORE = ScoreSpec("token_prob", ScoreKind.PROBABILITY)
"""The feature a fit from the store reads when no other is asked for."""


def gateway_score_kinds(scores: Sequence[ScoreSpec] | None) -> list[ScoreSpec] | None:
    """Score fields the gateway's signals yield take the kind the registry declares
    (``distinct_answers`` is a count, not a probability), unless another kind was written."""
    if scores is None:
        return None
    return [
        ScoreSpec(spec.field, FEATURE_KINDS[spec.field])
        if spec.field in FEATURE_KINDS and spec.kind == parse_score_spec(spec.field).kind
        else spec
        for spec in scores
    ]


def store_fit_data(
    store: DecisionStore, tenant: str, model: str, *,
    scores: Sequence[ScoreSpec] | None = None, prefix: int | None = None,
) -> tuple[CalibrationData, StoreQuery | None]:
    """The tenant's labelled decisions on ``model`` as calibration data, and the query that
    reads the same rows again (None: there are none), for the artifact to record: a policy card
    finds a calibrator's training data by it.

    ``scores`` default to ``token_prob``. With ``prefix`` K, the decisions a stream gate made on
    the first K tokens, read as their prefix features (``token_prob@K``). The rows are those
    labelled up to the newest label now: a label arriving meanwhile is after that time, and in
    neither reading.

    Raises
    ------
    calibrators.errors.CalibrationError
        A bad score list, or decisions without the features asked for.
    """
    from calibrators.cli import prefixed_scores

    kinds = gateway_score_kinds(scores) or [DEFAULT_STORE_SCORE]
    until = store.latest_label_time(tenant, model, prefix=prefix)
    data = store.labelled_data(tenant, model, prefixed_scores(kinds, prefix), prefix=prefix,
                               labelled_until=until)
    query = None if until is None else StoreQuery(
        location=str(store.location), tenant=tenant, model=model, prefix=prefix,
        labelled_until=until)
    return data, query


def fit_from_store(
    store: DecisionStore, tenant: str, model: str, *,
    scores: Sequence[ScoreSpec] | None = None, prefix: int | None = None,
    method: str = "auto", folds: int = 5, progress: Callable[[int], object] | None = None,
) -> tuple[CalibrationData, FitOutcome]:
    """Fit a calibrator on the tenant's labelled decisions (:func:`store_fit_data`), choosing
    the method by grouped cross-validation as ``calibrate fit`` does.

    Raises
    ------
    calibrators.errors.CalibrationError
        Too few labels (or of one class only), or no method could be fitted.
    """
    from calibrators.selection import fit_calibrator

    data, query = store_fit_data(store, tenant, model, scores=scores, prefix=prefix)
    return data, fit_calibrator(data, method=method, n_folds=folds, store=query,
                                progress=progress)
