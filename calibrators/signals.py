"""Confidence signals: what a score field measures and how calibrators read it.

A calibrator's input is one or more score fields. Their kind decides how they are validated and
transformed:

``prob``
    A probability in ``[0, 1]`` (token probability, agreement, verbalized confidence).
``logprob``
    A log-probability ``<= 0`` (mean or sum of token logprobs).
``real``
    Any finite number (token count, entropy).

Calibrators fit in *logit space*: ``prob`` and ``logprob`` scores are mapped to the log-odds of the
probability they express, which is where Platt, temperature and logistic models are linear.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "PROBABILITY_EPSILON",
    "ScoreKind",
    "ScoreSpec",
    "logit_scalar",
    "parse_score_spec",
    "probability_view",
    "to_logit_space",
]

#: Probabilities are clipped to ``[ε, 1 - ε]`` before taking log-odds, so a score of exactly 0 or 1
#: maps to a large finite logit (±13.8) instead of ±inf.
PROBABILITY_EPSILON = 1e-6


class ScoreKind(StrEnum):
    """How a score field is to be read."""

    PROBABILITY = "prob"
    LOG_PROBABILITY = "logprob"
    REAL = "real"

    @property
    def is_probabilistic(self) -> bool:
        """Whether the score expresses a probability (so it can be used uncalibrated)."""
        return self is not ScoreKind.REAL


@dataclass(frozen=True)
class ScoreSpec:
    """A score field and its kind."""

    field: str
    kind: ScoreKind

    def __str__(self) -> str:
        return f"{self.field}:{self.kind.value}"

    def check(self, value: float) -> str | None:
        """Why ``value`` is not a valid score of this kind, or None if it is."""
        if not math.isfinite(value):
            return f"field {self.field!r} is {value!r}; scores must be finite numbers"
        if self.kind is ScoreKind.PROBABILITY and not 0.0 <= value <= 1.0:
            return (
                f"field {self.field!r} = {value!r} is not a probability in [0, 1] "
                f"(declare --score {self.field}:real for an unbounded score)"
            )
        if self.kind is ScoreKind.LOG_PROBABILITY and value > 0.0:
            return f"field {self.field!r} = {value!r} is not a log-probability (must be <= 0)"
        return None


def parse_score_spec(text: str) -> ScoreSpec:
    """Parse ``FIELD[:KIND]``.

    Without a kind, a field whose name contains ``logprob`` or ``log_prob`` is a log-probability
    and any other field a probability: the common naming of LLM confidence signals. Declare
    ``:real`` for unbounded scores such as token counts.
    """
    field, sep, kind_text = text.partition(":")
    field = field.strip()
    if not field:
        raise ValueError(f"empty score field name in {text!r}")
    if sep:
        try:
            kind = ScoreKind(kind_text.strip())
        except ValueError:
            allowed = ", ".join(k.value for k in ScoreKind)
            message = f"unknown score kind {kind_text!r} in {text!r}; use {allowed}"
            raise ValueError(message) from None
    else:
        lowered = field.lower()
        is_log = "logprob" in lowered or "log_prob" in lowered
        kind = ScoreKind.LOG_PROBABILITY if is_log else ScoreKind.PROBABILITY
    return ScoreSpec(field, kind)


def probability_view(values: NDArray[np.float64], kind: ScoreKind) -> NDArray[np.float64]:
    """The probability a score expresses (``prob`` as is, ``logprob`` exponentiated)."""
    if kind is ScoreKind.PROBABILITY:
        return values
    if kind is ScoreKind.LOG_PROBABILITY:
        return np.exp(values)
    raise ValueError("a real-valued score does not express a probability")


def to_logit_space(values: NDArray[np.float64], kind: ScoreKind) -> NDArray[np.float64]:
    """Map scores to the log-odds of the probability they express (``real`` scores pass as is)."""
    if kind is ScoreKind.REAL:
        return values
    p = np.clip(probability_view(values, kind), PROBABILITY_EPSILON, 1.0 - PROBABILITY_EPSILON)
    return np.log(p) - np.log1p(-p)


def logit_scalar(value: float, kind: ScoreKind) -> float:
    """Scalar :func:`to_logit_space` for single-row prediction on the request path."""
    if kind is ScoreKind.REAL:
        return value
    p = math.exp(value) if kind is ScoreKind.LOG_PROBABILITY else value
    p = min(max(p, PROBABILITY_EPSILON), 1.0 - PROBABILITY_EPSILON)
    return math.log(p / (1.0 - p))
