"""The store's read API: the review list and the audit sample, segment, feedback and audit
totals, drift, labelled data.

Reads run on the backend's read connections, beside the writer's, so a slow read never holds
up the writer, and the writer's batches never hold up a read. A decision queued but not yet
committed is not seen: :meth:`proxy.store.DecisionStore.settled` waits for the queue first.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import orjson

from calibrators.dataset import CalibrationData, calibration_data_from_records
from calibrators.signals import ScoreSpec
from proxy.store import queries, review
from proxy.store.backend import Backend
from proxy.store.feedback import (
    AuditTotal,
    DriftWindow,
    FeedbackTotal,
    SegmentTotal,
    StoredDecision,
)
from proxy.store.location import StoreLocation
from proxy.store.queries import ServingVersion
from proxy.store.review import DecisionCount, ReviewItem

__all__ = ["DecisionReads"]


class DecisionReads:
    """The reads of :class:`~proxy.store.DecisionStore`, over its ``backend``."""

    # Set by the class these reads are mixed into (DecisionStore, whose writer holds them).
    backend: Backend
    location: StoreLocation

    def abstained(
        self,
        tenant: str | None,
        *,
        limit: int = 50,
        unlabelled_only: bool = True,
        before: float | None = None,
    ) -> list[StoredDecision]:
        """Abstained answers, newest first, for reviewers to label."""
        sql, params = queries.abstained_query(tenant, unlabelled_only=unlabelled_only,
                                              before=before)
        with self.backend.reading() as db:
            rows = db.execute(sql, (*params, limit)).fetchall()
        return [queries.decision_from_row(row) for row in rows]

    def audited(
        self,
        tenant: str | None,
        *,
        model: str | None = None,
        limit: int = 50,
        unlabelled_only: bool = True,
        before: float | None = None,
    ) -> list[StoredDecision]:
        """The audit sample (``audited``: answered and withheld decisions drawn at random for
        labelling), newest first; ``before`` a ``created_at`` for the next page."""
        sql, params = queries.audited_query(tenant, model=model, unlabelled_only=unlabelled_only,
                                            before=before)
        with self.backend.reading() as db:
            rows = db.execute(sql, (*params, limit)).fetchall()
        return [queries.decision_from_row(row) for row in rows]

    def review_queue(
        self, tenant: str | None, *, limit: int = 50, unlabelled_only: bool = True
    ) -> list[StoredDecision]:
        """What a reviewer should label, in order: the audit sample first (answered and
        withheld, newest first), since only its labels certify and watch a risk limit; then
        every other withheld answer, newest first."""
        sql, params = queries.review_queue_query(tenant, unlabelled_only=unlabelled_only)
        with self.backend.reading() as db:
            rows = db.execute(sql, (*params, limit)).fetchall()
        return [queries.decision_from_row(row) for row in rows]

    def withheld_page(
        self,
        tenant: str,
        *,
        limit: int,
        max_bytes: int,
        max_choices: int,
        unlabelled_only: bool = True,
        before: float | None = None,
    ) -> tuple[list[StoredDecision], bool]:
        """One page of the review list, newest first, and whether more follow.

        A page holds whole responses only (their choices share the ``created`` cursor, so a
        page split inside one would skip the rest), at least one, and then stops before it
        would pass ``limit`` choices or ``max_bytes`` of JSON (counted as ``as_json`` with a
        separator; the wire model holds a subset of those fields). ``max_choices`` is the most
        choices a response can have.
        """
        sql, params = queries.abstained_query(tenant, unlabelled_only=unlabelled_only,
                                              before=before)
        page: list[StoredDecision] = []
        size = 0
        response: list[StoredDecision] = []
        response_size = 0
        with self.backend.reading() as db:
            # Enough rows to finish the last response that starts within the limit, and one
            # more to tell whether anything follows; read one by one, so stopping early saves
            # decoding the rest.
            for row in db.execute(sql, (*params, limit + max_choices + 1)):
                item = queries.decision_from_row(row)
                if response and item.id != response[0].id:
                    if page and size + response_size > max_bytes:
                        return page, True
                    page += response
                    size += response_size
                    response, response_size = [], 0
                    if len(page) >= limit:
                        return page, True
                response.append(item)
                response_size += len(orjson.dumps(item.as_json())) + 1
        if response and page and size + response_size > max_bytes:
            return page, True
        return page + response, False

    # The ops console (proxy.admin).

    def review_items(
        self, tenants: Collection[str], *, since: float, limit: int,
        skipped: Collection[tuple[str, int]] = (),
    ) -> list[ReviewItem]:
        """The console's review queue: unlabelled decisions of ``tenants`` since ``since``,
        the audit sample first, then withheld answers, then those closest to their threshold
        (:mod:`proxy.store.review`)."""
        with self.backend.reading() as db:
            return review.review_queue(db, tenants, since=since, limit=limit, skipped=skipped)

    def review_item(self, decision_id: str, choice: int) -> ReviewItem | None:
        with self.backend.reading() as db:
            return review.review_item(db, decision_id, choice)

    def decision_counts(self, *, since: float) -> list[DecisionCount]:
        with self.backend.reading() as db:
            return review.decision_counts(db, since=since)

    # Segments (policy tools): parity figures and the decisions a policy simulation replays.

    def segment_totals(self) -> list[SegmentTotal]:
        """Labelled decisions per tenant, segment and outcome (the last label of each)."""
        with self.backend.reading() as db:
            return queries.segment_totals(db)

    def tenant_decisions(
        self, tenant: str, *, model: str | None = None, since: float | None = None
    ) -> list[StoredDecision]:
        """Every decision of ``tenant`` (labelled or not), oldest first, without its texts.

        ``model`` keeps one public model's; ``since`` (a Unix time) those made from then on.
        """
        with self.backend.reading() as db:
            return queries.tenant_decisions(db, tenant, model=model, since=since)

    def feedback_totals(self) -> list[FeedbackTotal]:
        with self.backend.reading() as db:
            return queries.feedback_totals(db)

    def audit_totals(self) -> list[AuditTotal]:
        """The audit sample's labelled decisions per tenant, model, risk certificate and
        outcome (the last label of each): what the live risk-limit bound is computed from."""
        with self.backend.reading() as db:
            return queries.audit_totals(db)

    def drift(
        self, window: int, *, tenant: str | None = None, model: str | None = None,
        serving: ServingVersion | None = None, all_versions: bool = False,
        count_earlier: bool = False,
    ) -> list[DriftWindow]:
        """Mean confidence and accuracy over each tenant and model's last ``window`` labels
        made under the serving calibrator (see :func:`proxy.store.queries.drift`)."""
        with self.backend.reading() as db:
            return queries.drift(db, window, tenant=tenant, model=model,
                                 serving=serving, all_versions=all_versions,
                                 count_earlier=count_earlier)

    def labelled_data(
        self, tenant: str, model: str | None, scores: Sequence[ScoreSpec], *,
        prefix: int | None = None, audited_only: bool = False, since: float | None = None,
        labelled_until: float | None = None,
    ) -> CalibrationData:
        """The tenant's labelled decisions on ``model`` (None: on every model) as calibration
        data: those decided on the whole answer, or with ``prefix`` K those its stream gate
        decided on K tokens; ``audited_only`` keeps the audit sample's, ``since`` (a Unix time)
        those made after it, ``labelled_until`` those labelled by then.

        Each decision id is a group: the choices of one request answer one question, so they
        never straddle cross-validation folds.
        """
        with self.backend.reading() as db:
            rows = queries.labelled_rows(db, tenant, model, prefix, audited_only=audited_only,
                                         since=since, labelled_until=labelled_until)
        records = (
            {**orjson.loads(features), "correct": bool(correct), "decision": decision_id}
            for decision_id, features, correct in rows
        )
        which = "model " + repr(model) if model is not None else "every model"
        sample = "audited " if audited_only else ""
        return calibration_data_from_records(
            records,
            source=f"{self.location} (tenant {tenant!r}, {which}; only labelled {sample}"
            "decisions with confidence features count)",
            scores=scores, label="correct", group="decision",
        )

    def labelled_counts(
        self, tenant: str, model: str | None, *, since: float | None = None
    ) -> tuple[int, int]:
        """The tenant's labelled decisions with features (on ``model``, made after ``since``),
        and how many of them are in the audit sample."""
        with self.backend.reading() as db:
            return queries.labelled_counts(db, tenant, model, since=since)

    def latest_label_time(
        self, tenant: str, model: str, *, prefix: int | None = None
    ) -> float | None:
        """When the newest decision :meth:`labelled_data` would read was labelled."""
        with self.backend.reading() as db:
            return queries.latest_label_time(db, tenant, model, prefix)
