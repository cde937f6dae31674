"""Refit and promote: a calibrator fitted on a tenant's labels, compared with the serving one,
and swapped in.

A fit (:func:`proxy.analysis.store_fit.fit_from_store`, what ``calibrate fit --from-store``
runs) is kept as a candidate file beside the artifact it would replace, under
``.basguard-candidates/``, so any worker can promote it. A promotion writes the candidate over
the artifact the tenant's config names for the model (atomically: a temporary file renamed over
it) and reloads the config (:mod:`proxy.runtime.reload`): the new calibrator serves from the next
request, in this worker at once and in the others at their next file poll. A reload that refuses
the file puts the old one back. Each promotion is appended to ``basguard-promotions.jsonl``
beside the config, with who did it, and logged.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
from numpy.typing import NDArray

from calibrators.artifact import FittedCalibrator, load_artifact, save_artifact
from calibrators.documents import write_atomically
from calibrators.errors import CalibrationError
from proxy.admin.models import FitReport, Metrics, PromotionRecord, ReliabilityBin
from proxy.analysis.store_fit import fit_from_store
from proxy.errors import Conflict, InvalidRequest
from proxy.runtime.admin_access import AdminPrincipal
from proxy.runtime.reload import ConfigStore
from proxy.runtime.state import RuntimeState
from proxy.store import DecisionStore

__all__ = ["CANDIDATES_DIR", "PROMOTION_LOG", "CalibratorPromotions", "Target"]

logger = logging.getLogger("basguard.admin")

CANDIDATES_DIR = ".basguard-candidates"
PROMOTION_LOG = "basguard-promotions.jsonl"
CANDIDATE_MAX_AGE_SECONDS = 86400.0
"""Candidates not promoted within a day are deleted at the next fit."""


@dataclass(frozen=True)
class Target:
    """The artifact a promotion for one tenant and model replaces, or why there is none."""

    path: Path | None
    relative: str | None
    why_not: str | None


def promotion_target(state: RuntimeState, tenant: str, model: str) -> Target:
    """The file the tenant's config names for ``model`` alone. The default calibrator, or a
    file another tenant or model also reads, would change more than this pair."""
    refs = state.config.tenants[tenant].calibrators
    relative = refs.models.get(model)
    if relative is None:
        return Target(None, None, (
            f"tenant {tenant!r} names no calibrator file of its own for {model!r}; add "
            f"`calibrators: models: {{{model}: FILE}}` to its config (a copy of the serving "
            "artifact will do) so that a promotion changes this model alone"))
    path = (state.path.parent / relative).resolve()
    for other_tenant, other in state.config.tenants.items():
        for other_model, other_relative in other.calibrators.paths().items():
            if (other_tenant, other_model) == (tenant, model):
                continue
            if (state.path.parent / other_relative).resolve() == path:
                whose = f"tenant {other_tenant!r}" + (
                    f", model {other_model!r}" if other_model else " (its default)")
                return Target(None, relative, (
                    f"{relative} is also the calibrator of {whose}: give {tenant!r}/{model!r} "
                    "a file of its own before promoting"))
    return Target(path, relative, None)


def _metrics(summary: dict[str, float]) -> Metrics:
    def finite(name: str) -> float | None:
        value = summary.get(name)
        return None if value is None or not np.isfinite(value) else float(value)

    return Metrics(bas=finite("bas"), ece=finite("ece"), brier=finite("brier"),
                   auroc=finite("auroc"))


def _bins(p: NDArray[np.float64], y: NDArray[np.bool_]) -> list[ReliabilityBin]:
    from calibrators.metrics import reliability_bins

    bins = reliability_bins(p, y, n_bins=10)
    return [ReliabilityBin(low=float(bins.edges[b]), high=float(bins.edges[b + 1]),
                           decisions=int(bins.count[b]),
                           correct=round(float(bins.accuracy[b]) * int(bins.count[b]))
                           if bins.count[b] else 0,
                           mean_confidence=float(bins.mean_predicted[b]) if bins.count[b]
                           else None)
            for b in range(len(bins.count))]


def _pair_digest(tenant: str, model: str) -> str:
    return hashlib.sha256(f"{tenant}\0{model}".encode()).hexdigest()[:16]


class CalibratorPromotions:
    """Fits candidates from the store and promotes them into the config's calibrator files."""

    def __init__(self, config: ConfigStore, decisions: DecisionStore) -> None:
        self._config = config
        self._decisions = decisions
        self._lock = threading.Lock()  # one promotion at a time in this process

    @property
    def log_path(self) -> Path:
        return self._config.current.path.parent / PROMOTION_LOG

    def _candidate_path(self, target: Path, tenant: str, model: str, version: str) -> Path:
        return target.parent / CANDIDATES_DIR / f"{_pair_digest(tenant, model)}-{version}.json"

    def fit(self, tenant: str, model: str) -> FitReport:
        """Fit on the tenant's labelled decisions with the serving calibrator's features, and
        report both on the same rows (blocking: call it in a thread)."""
        from calibrators.metrics import summarize

        state = self._config.current
        serving = state.tenants[tenant].calibrator_for(model)
        try:
            data, outcome = fit_from_store(self._decisions, tenant, model,
                                           scores=list(serving.features))
        except CalibrationError as exc:
            raise InvalidRequest(f"cannot fit a calibrator for {tenant!r} on {model!r}: {exc}",
                                 param="model") from None
        candidate = outcome.calibrator
        oof = outcome.selected.oof
        candidate_bins = _bins(oof, data.correct) if oof is not None else []
        serving_p = serving.predict(data.scores)
        serving_metrics = _metrics(summarize(serving_p, data.correct))
        training = serving.training
        note = ("The serving calibrator was not fitted (the raw score, read as a probability)"
                if training is None else
                f"The serving calibrator was fitted on {training.rows} rows from "
                f"{', '.join(training.sources)}: where those are these labels, its figures "
                "here are in-sample and flatter it; the candidate's are out-of-fold")
        target = promotion_target(state, tenant, model)
        if target.path is not None:
            self._save_candidate(candidate, target.path, tenant, model)
        return FitReport(
            tenant=tenant, model=model, rows=data.n_rows, groups=data.n_groups,
            candidate_version=candidate.version, candidate_method=candidate.method,
            candidate=_metrics(outcome.selected.summary), candidate_reliability=candidate_bins,
            serving_version=serving.version, serving_method=serving.method,
            serving=serving_metrics, serving_reliability=_bins(serving_p, data.correct),
            serving_note=note, promotable=target.path is not None, target=target.relative,
            why_not=target.why_not,
        )

    def _save_candidate(self, candidate: FittedCalibrator, target: Path, tenant: str,
                        model: str) -> None:
        path = self._candidate_path(target, tenant, model, candidate.version)
        try:
            path.parent.mkdir(mode=0o700, exist_ok=True)
            now = time.time()
            for old in path.parent.glob("*.json"):
                if now - old.stat().st_mtime > CANDIDATE_MAX_AGE_SECONDS:
                    old.unlink(missing_ok=True)
        except OSError as exc:
            raise InvalidRequest(f"cannot keep the candidate beside {target.name}: "
                                 f"{exc.strerror or exc}; promotion needs that directory "
                                 "writable") from None
        save_artifact(candidate, path)

    def promote(self, principal: AdminPrincipal, tenant: str, model: str,
                candidate_version: str, serving_version: str) -> PromotionRecord:
        """Swap the candidate in for the serving calibrator (blocking: call it in a thread).

        Raises
        ------
        Conflict
            Another calibrator was promoted since ``serving_version`` was seen.
        InvalidRequest
            No such candidate, no file of the pair's own to replace, or the reload refused it
            (the previous file is then back, and in force).
        """
        with self._lock:
            state = self._config.current
            target = promotion_target(state, tenant, model)
            if target.path is None or target.relative is None:
                raise InvalidRequest(target.why_not or "nothing to replace", param="model")
            serving = state.tenants[tenant].calibrator_for(model)
            if serving.version != serving_version:
                raise Conflict(f"the calibrator serving {tenant!r} on {model!r} is now version "
                               f"{serving.version}, not {serving_version}: someone promoted "
                               "another since; look at the new one before replacing it",
                               param="serving_version", code="serving_calibrator_changed")
            candidate_path = self._candidate_path(target.path, tenant, model, candidate_version)
            try:
                candidate = load_artifact(candidate_path)
            except ValueError:
                raise InvalidRequest(f"no candidate {candidate_version} for {tenant!r} on "
                                     f"{model!r} (fitted in the last day): fit one first",
                                     param="candidate_version") from None
            previous = target.path.read_bytes() if target.path.exists() else None
            save_artifact(candidate, target.path)
            result = self._config.reload()
            now_serving = self._config.current.tenants[tenant].calibrator_for(model).version
            if not result.applied or now_serving != candidate.version:
                if previous is not None:
                    write_atomically(target.path, previous)
                self._config.reload()
                raise InvalidRequest(f"the reload refused the new calibrator, so the previous "
                                     f"one stays in force: {result.error or 'not applied'}")
            if previous is not None:
                write_atomically(target.path.with_name(target.path.name + ".previous"), previous)
            candidate_path.unlink(missing_ok=True)
            training = candidate.training
            record = PromotionRecord(
                at=time.time(), who=principal.who, tenant=tenant, model=model,
                file=target.relative, from_version=serving.version,
                to_version=candidate.version, method=candidate.method,
                rows=training.rows if training is not None else 0)
            self._append(record)
        logger.info("calibrator promoted by %s: tenant %r, model %r, %s -> %s (%s)",
                    record.who, tenant, model, record.from_version, record.to_version,
                    record.file)
        return record

    def _append(self, record: PromotionRecord) -> None:
        line = orjson.dumps(record.model_dump(), option=orjson.OPT_APPEND_NEWLINE)
        descriptor = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(descriptor, line)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def history(self, tenants: Collection[str], *, limit: int = 100) -> list[PromotionRecord]:
        """The latest promotions for ``tenants``, newest first."""
        try:
            lines = self.log_path.read_bytes().splitlines()
        except FileNotFoundError:
            return []
        records = []
        for line in reversed(lines):
            try:
                record = PromotionRecord.model_validate(orjson.loads(line))
            except ValueError:
                continue  # a line cut short by a crash
            if record.tenant in tenants:
                records.append(record)
                if len(records) >= limit:
                    break
        return records
