"""A risk limit at serving time: the threshold a tenant answers at, and the live verdict.

A tenant with a risk limit ("at most A wrong among the answers, with confidence C") answers iff
``p >= max(t_cost, t_cert)``: the cost-optimal threshold of its (λ, a) and the threshold a
certificate proved for A and C (:func:`policies.risk_control.certify_selective_risk`). Raising
the threshold above the certified one keeps the answered set inside the certified one; where
the error rate among answers falls as the threshold rises (what a calibrator that ranks well
gives), the limit holds there too. Without a certified threshold nothing is answered.

Live, a uniform random sample of decisions (the *audit sample*) is labelled. Its answered rows
are a uniform sample of the answers, so their error count is what the limit speaks about; the
anytime-valid confidence sequence of
:func:`policies.confidence_sequence.error_rate_confidence_sequence`
bounds their error rate at every moment at once, so the verdict can be read after every label
without the multiple-looks trap of a fixed-sample interval.

Every function is pure: numbers in, numbers out.
"""

from __future__ import annotations

from dataclasses import dataclass

from .confidence_sequence import error_rate_confidence_sequence

__all__ = [
    "LIVE_PRIOR_STRENGTH",
    "LiveBound",
    "certificate_covers",
    "limited_threshold",
    "live_bound",
]

LIVE_PRIOR_STRENGTH = 10.0
"""The live confidence sequence mixes over Beta(A·10, (1 − A)·10): tightest around the limit."""


def limited_threshold(cost_threshold: float, certified_threshold: float | None) -> float | None:
    """The threshold a tenant with a risk limit answers at.

    Parameters
    ----------
    cost_threshold : float
        ``t_cost = (λ − a) / (1 + λ)``, the cost-optimal threshold of the tenant's profile.
    certified_threshold : float or None
        ``t_cert``, the lowest threshold certified to keep the error rate among answers at most
        A with confidence C; None when nothing could be certified.

    Returns
    -------
    float or None
        ``max(t_cost, t_cert)``: answer iff ``p >= max(t_cost, t_cert)``. None (answer nothing)
        when ``t_cert`` is None: a limit that nothing proves is kept by never answering.
    """
    if certified_threshold is None:
        return None
    return max(cost_threshold, certified_threshold)


def certificate_covers(
    *, certified_max_error_rate: float, certified_confidence: float, max_error_rate: float,
    confidence: float,
) -> bool:
    """Whether a certificate for (A', C') proves the limit (A, C) a policy asks for.

    Parameters
    ----------
    certified_max_error_rate, certified_confidence : float
        A' and C', the limit the certificate was computed for.
    max_error_rate, confidence : float
        A and C, the limit the policy states.

    Returns
    -------
    bool
        ``A' <= A and C' >= C``: ``P(R <= A') >= C'`` implies ``P(R <= A) >= C``. A looser
        certificate proves nothing about the stricter limit.
    """
    return certified_max_error_rate <= max_error_rate and certified_confidence >= confidence


@dataclass(frozen=True)
class LiveBound:
    """What the audit sample's labels say about the error rate among answers."""

    labels: int
    """Labelled audited decisions that were answered."""
    errors: int
    """Of those, labelled wrong."""
    lower: float
    """Anytime-valid lower bound on the error rate among answers."""
    upper: float
    """Anytime-valid upper bound on it; both hold together with the limit's confidence."""
    max_error_rate: float
    """A, the limit."""

    @property
    def breached(self) -> bool:
        """The lower bound is above A: the labels prove the error rate is above the limit."""
        return self.lower > self.max_error_rate

    @property
    def error_rate(self) -> float | None:
        """The observed error rate among the labelled answers (None: no label yet)."""
        return self.errors / self.labels if self.labels else None


def live_bound(errors: int, labels: int, *, max_error_rate: float, confidence: float) -> LiveBound:
    """The live verdict on a limit from the audit sample's answered, labelled decisions.

    Parameters
    ----------
    errors : int
        ``S_t``: audited answers labelled wrong.
    labels : int
        ``t``: audited answers labelled at all; ``0 <= errors <= labels``.
    max_error_rate : float
        A, in (0, 1).
    confidence : float
        C, in (0, 1): the probability that the bounds hold at every moment at once.

    Returns
    -------
    LiveBound
        ``[lower, upper]`` of the beta-binomial mixture confidence sequence (Howard, Ramdas,
        McAuliffe, Sekhon 2021) mixed over ``Beta(A·s, (1 − A)·s)`` with
        ``s =`` :data:`LIVE_PRIOR_STRENGTH`; by Ville's inequality the true rate leaves it at
        some moment with probability at most ``1 − C``. ``breached`` is ``lower > A``: a false
        alarm, at any moment, has probability at most ``1 − C``. ``[0, 1]`` before any label.
    """
    lower, upper = error_rate_confidence_sequence(
        errors, labels, confidence=confidence, prior_mean=max_error_rate,
        prior_strength=LIVE_PRIOR_STRENGTH,
    )
    return LiveBound(labels, errors, float(lower), float(upper), max_error_rate)
