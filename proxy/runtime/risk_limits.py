"""A tenant's risk limit per model, loaded with the config, and its live verdict.

At load, each certificate the tenant's ``risk: certificates:`` names is read and checked: it
must be a valid certificate (checksum, schema), certify the policy's limit or a stricter one,
and have been certified for the calibrator that decides on the model, since its threshold cuts
that calibrator's probability. A problem is reported at the certificate's line; a model left
without a certified threshold is a warning, and the tenant answers nothing on it
(:class:`ModelRiskLimit`).

Live, the audit sample's labels of answers given under the certificate in force give the bound
of :func:`policies.risk_limit.live_bound` (:func:`live_limits`), which the metrics export and the
gateway's watch reads (``on_breach: abstain``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from calibrators.artifact import FittedCalibrator
from calibrators.certificate import RiskCertificate, load_certificate
from calibrators.errors import CertificateError
from policies.located_yaml import KeyPath
from policies.risk_limit import LiveBound, certificate_covers, limited_threshold, live_bound
from policies.schema import OnBreach, TenantPolicy
from proxy.judging.decision import DecisionTerms, LimitStatus, RiskLimitTerms
from proxy.store import AuditTotal

__all__ = ["LiveLimit", "ModelRiskLimit", "RiskLimitLoad", "live_limits", "load_risk_limits"]


@dataclass(frozen=True)
class ModelRiskLimit:
    """A tenant's risk limit on one model: the limit, its certificate, the threshold in force."""

    model: str | None
    """The public model (None: a policy file's default, which names no models)."""
    max_error_rate: float
    confidence: float
    on_breach: OnBreach
    cost_threshold: float
    certificate: RiskCertificate | None
    certificate_path: Path | None

    @property
    def certificate_version(self) -> str | None:
        return None if self.certificate is None else self.certificate.version

    @property
    def certified_threshold(self) -> float | None:
        return None if self.certificate is None else self.certificate.threshold

    @property
    def threshold(self) -> float | None:
        """``max(cost, certified)``; None: nothing is answered."""
        return limited_threshold(self.cost_threshold, self.certified_threshold)

    @property
    def certified(self) -> bool:
        return self.threshold is not None

    def describe(self) -> str:
        """The limit in words, for logs, ``policy check`` and reasons."""
        return (f"at most {100 * self.max_error_rate:g}% wrong among the answers with "
                f"{100 * self.confidence:g}% confidence")

    def uncertified_reason(self) -> str | None:
        """Why nothing is answered on the model (None: a threshold is certified)."""
        where = "" if self.model is None else f" on model {self.model!r}"
        if self.certificate is None:
            return (f"risk limit ({self.describe()}) without a certificate{where}: nothing is "
                    "answered until one is loaded (risk: certificates:)")
        if self.certificate.threshold is None:
            return (f"risk limit ({self.describe()}): certificate {self.certificate_path} "
                    f"certified no threshold on its {self.certificate.labels} labels{where}: "
                    "nothing is answered until a certified one is loaded")
        return None

    def breach_reason(self) -> str:
        return (f"risk limit breached: the audit sample's labels prove more than "
                f"{100 * self.max_error_rate:g}% wrong among the answers (on_breach: abstain); "
                "nothing is answered until a new certificate is loaded")

    def status(self, *, breached: bool) -> LimitStatus:
        if not self.certified:
            return "uncertified"
        return "breached" if breached else "certified"

    def terms(self, *, audited: bool, breached: bool) -> DecisionTerms:
        """What a request on this model is decided by."""
        status = self.status(breached=breached)
        certificate = self.certificate
        limit = RiskLimitTerms(
            max_error_rate=self.max_error_rate, confidence=self.confidence,
            cost_threshold=self.cost_threshold, certified_threshold=self.certified_threshold,
            labels=0 if certificate is None else certificate.labels,
            answer_rate=(certificate.answer_rate
                         if certificate is not None and certificate.threshold is not None
                         else None),
            certificate=self.certificate_version, status=status, on_breach=self.on_breach,
        )
        withhold = self.uncertified_reason()
        if withhold is None and status == "breached" and self.on_breach == "abstain":
            withhold = self.breach_reason()
        threshold = self.threshold
        return DecisionTerms(
            threshold=self.cost_threshold if threshold is None else threshold,
            withhold=withhold, audited=audited, limit=limit,
        )


Report = Callable[[KeyPath, str], None]


@dataclass(frozen=True)
class RiskLimitLoad:
    """A tenant's limits per model, and the warnings to log (models that answer nothing)."""

    limits: dict[str | None, ModelRiskLimit]
    warnings: list[str]


def load_risk_limits(
    tenant: str,
    policy: TenantPolicy,
    *,
    models: Iterable[str | None],
    calibrator_for: Callable[[str | None], FittedCalibrator],
    own_calibrator: Callable[[str], bool],
    resolve: Callable[[str], Path],
    problem: Report,
) -> RiskLimitLoad:
    """The tenant's risk limit on each of ``models`` (None: the default), certificates checked.

    ``calibrator_for`` gives the calibrator deciding on a model; ``own_calibrator`` whether the
    model has one of its own (else the default certificate applies); ``resolve`` turns a
    certificate's path as written into a file (and watches it for reloads); ``problem`` is told
    each problem at its key. A model certificate for a model not in ``models`` is a problem.
    """
    risk = policy.risk
    if risk.max_error_rate is None or risk.confidence is None:
        return RiskLimitLoad({}, [])
    loaded = _certificates(tenant, policy, resolve, problem)
    wanted = list(models)
    for model in loaded:
        if model is not None and model not in wanted:
            problem(_certificate_key(tenant, model),
                    f"tenant {tenant!r}: `risk: certificates: models:` names {model!r}, which "
                    f"is not configured (configured: {', '.join(sorted(map(str, wanted)))})")
    limits: dict[str | None, ModelRiskLimit] = {}
    warnings: list[str] = []
    refused: set[str | None] = set()
    for model in wanted:
        # A model's own certificate, else (if it has no calibrator of its own) the default.
        source = model if model is not None and (model in loaded or own_calibrator(model)) \
            else None
        certificate, path = loaded.get(source, (None, None))
        calibrator = calibrator_for(model)
        if certificate is not None and certificate.calibrator.version != calibrator.version:
            if source not in refused:
                refused.add(source)
                for_what = ("the tenant's default calibrator" if source is None
                            else f"the calibrator of model {source!r}")
                problem(_certificate_key(tenant, source),
                        f"{path}: certified for calibrator {certificate.calibrator.version}, "
                        f"but {for_what} is {calibrator.version}: its threshold cuts another "
                        "calibrator's probability; certify again with this calibrator "
                        "(basguard calibrate certify)")
            certificate, path = None, None
        limit = ModelRiskLimit(model, risk.max_error_rate, risk.confidence, risk.on_breach,
                               policy.profile.threshold, certificate, path)
        limits[model] = limit
        reason = limit.uncertified_reason()
        if reason is not None and source not in refused:
            warnings.append(f"tenant {tenant!r}: {reason}")
    return RiskLimitLoad(limits, warnings)


def _certificate_key(tenant: str, model: str | None) -> KeyPath:
    where: KeyPath = ("tenants", tenant, "risk", "certificates")
    return (*where, "models", model) if model is not None else (*where, "default")


def _certificates(
    tenant: str, policy: TenantPolicy, resolve: Callable[[str], Path], problem: Report
) -> dict[str | None, tuple[RiskCertificate | None, Path | None]]:
    """The tenant's certificates that load and prove its limit, by model (None: default)."""
    risk = policy.risk
    assert risk.max_error_rate is not None and risk.confidence is not None
    loaded: dict[str | None, tuple[RiskCertificate | None, Path | None]] = {}
    for model, written in risk.certificate_paths().items():
        key = _certificate_key(tenant, model)
        path = resolve(written)
        try:
            certificate = load_certificate(path)
        except CertificateError as exc:
            problem(key, str(exc))
            continue
        if not certificate_covers(
                certified_max_error_rate=certificate.max_error_rate,
                certified_confidence=certificate.confidence,
                max_error_rate=risk.max_error_rate, confidence=risk.confidence):
            problem(key, f"{path}: certified at most {100 * certificate.max_error_rate:g}% "
                    f"wrong with {100 * certificate.confidence:g}% confidence, which does not "
                    f"prove the policy's limit of {100 * risk.max_error_rate:g}% with "
                    f"{100 * risk.confidence:g}%; certify again with --max-error-rate "
                    f"{risk.max_error_rate:g} --confidence {risk.confidence:g}")
            continue
        loaded[model] = (certificate, path)
    return loaded


@dataclass(frozen=True)
class LiveLimit:
    """One tenant's limit on one model, with what the audit sample says of it now."""

    tenant: str
    model: str
    limit: ModelRiskLimit
    bound: LiveBound


def live_limits(
    limits: Mapping[str, Mapping[str, ModelRiskLimit]], totals: Iterable[AuditTotal]
) -> list[LiveLimit]:
    """Each certified limit's live bound, from the store's audit totals.

    Only labels of audited decisions made under the certificate in force count: a decision
    records the certificate's version, so a new certificate starts a new count (and ends a
    breach), and labels gathered under another threshold never mix in.

    Parameters
    ----------
    limits
        Per tenant, per model, the limits in force (:attr:`TenantRuntime.risk_limits`).
    totals
        The store's audited, labelled decisions per tenant, model, certificate and outcome.
    """
    answered: dict[tuple[str, str, str], list[int]] = {}
    for total in totals:
        counts = answered.setdefault((total.tenant, total.model, total.certificate), [0, 0])
        if total.outcome.startswith("answered_"):
            counts[0] += total.decisions
            counts[1] += total.decisions if total.outcome == "answered_wrong" else 0
    live = []
    for tenant, per_model in limits.items():
        for model, limit in per_model.items():
            version = limit.certificate_version
            if not limit.certified or version is None:
                continue  # nothing is answered: there is no error rate among answers to watch
            labels, errors = answered.get((tenant, model, version), (0, 0))
            bound = live_bound(errors, labels, max_error_rate=limit.max_error_rate,
                               confidence=limit.confidence)
            live.append(LiveLimit(tenant, model, limit, bound))
    return live
