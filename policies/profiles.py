"""Risk profiles: what a wrong answer and an abstention cost a deployment.

A profile is the pair (λ, a) of :mod:`policies.utility`: a wrong answer costs ``λ`` and a
withheld answer costs ``a``, in units of the value of a correct answer. Its answer threshold is
``(λ − a) / (1 + λ)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from .utility import optimal_threshold, wrong_answer_cost_for_threshold

__all__ = ["PRESETS", "RiskProfile"]


@dataclass(frozen=True)
class RiskProfile:
    """Costs of a wrong answer (λ) and of an abstention (a), in units of a correct answer.

    Parameters
    ----------
    wrong_answer_cost : float
        λ >= 0, finite.
    abstain_cost : float, default=0.0
        a >= 0, finite.
    description : str, default=""
        Who the profile is for, shown by ``basguard policy check``.

    Raises
    ------
    ValueError
        If a cost is negative, infinite or NaN.
    """

    wrong_answer_cost: float
    abstain_cost: float = 0.0
    description: str = ""

    def __post_init__(self) -> None:
        # optimal_threshold validates both costs (finite, non-negative).
        optimal_threshold(wrong_answer_cost=self.wrong_answer_cost, abstain_cost=self.abstain_cost)

    @property
    def threshold(self) -> float:
        """The smallest P(correct) at which answering is worth it: ``(λ − a) / (1 + λ)``.

        See :func:`policies.utility.optimal_threshold`; clipped to ``[0, 1]``.
        """
        return optimal_threshold(
            wrong_answer_cost=self.wrong_answer_cost, abstain_cost=self.abstain_cost
        )

    @classmethod
    def from_threshold(cls, threshold: float) -> RiskProfile:
        """The profile with free abstention whose answer threshold is ``threshold``.

        Parameters
        ----------
        threshold : float
            t in ``[0, 1)``.

        Returns
        -------
        RiskProfile
            ``λ = t / (1 − t)`` and ``a = 0``, the BAS paper's pricing of a wrong answer at risk
            threshold t, so utilities stay defined for a tenant that only states a threshold.

        Raises
        ------
        ValueError
            If ``threshold`` is outside ``[0, 1)``.
        """
        cost = wrong_answer_cost_for_threshold(threshold)
        return cls(cost, 0.0, f"explicit threshold {threshold}")


#: Named presets, from a casual assistant to a near-zero-tolerance deployment, each with a
#: description of who it is for. Read-only; a policy file selects one with ``profile: <name>``.
PRESETS: Mapping[str, RiskProfile] = MappingProxyType(
    {
        "casual": RiskProfile(
            1.0, 0.25, "chit-chat and brainstorming: a wrong answer costs what a right one earns, "
            "and refusing is itself annoying (answers from p ≥ 0.375)"
        ),
        "balanced": RiskProfile(
            2.0, 0.1, "general assistants: a wrong answer costs twice a right one "
            "(answers from p ≥ 0.633)"
        ),
        "cautious": RiskProfile(
            4.0, 0.1, "customer support and internal knowledge bases: wrong answers create "
            "tickets and lost trust (answers from p ≥ 0.78)"
        ),
        "high_stakes": RiskProfile(
            9.0, 0.05, "legal, financial or HR answers: a wrong answer costs nine right ones "
            "(answers from p ≥ 0.895)"
        ),
        "critical": RiskProfile(
            99.0, 0.0, "medical, safety or compliance settings with near-zero tolerance for "
            "error (answers from p ≥ 0.99)"
        ),
    }
)
