"""Confidence features from a response's token log-probabilities.

Pure functions over plain Python floats: a response has tens to hundreds of tokens, and a loop
in Python over that many floats costs less than converting them to NumPy arrays would.

Feature names (the calibrator artifact names the ones it reads):

=====================  =======  ===============================================================
name                   kind     meaning
=====================  =======  ===============================================================
``mean_logprob``       logprob  mean token logprob: the length-normalised sequence log-probability
``token_prob``         prob     ``exp(mean_logprob)``, the geometric-mean token probability
``sum_logprob``        logprob  the sequence log-probability
``min_token_prob``     prob     probability of the least likely token
``first_token_prob``   prob     probability of the first token (often the answer's decision)
``token_count``        real     number of generated tokens
``mean_topk_entropy``  real     mean entropy (nats) of each token's renormalised top-k distribution
``mean_topk_margin``   prob     mean gap between the two most likely tokens' probabilities
=====================  =======  ===============================================================

The top-k features exist only when the upstream returned ``top_logprobs`` with at least two
alternatives for some tokens; they average over those tokens.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from calibrators.signals import ScoreKind
from proxy.wire.logprobs import TokenLogprob

__all__ = [
    "FEATURE_KINDS",
    "confidence_features",
]

#: The features of token logprobs and their kinds: the logprobs signal's declaration
#: (:mod:`proxy.signals.logprobs`), from which the registry derives every signal's table.
FEATURE_KINDS: Mapping[str, ScoreKind] = {
    "mean_logprob": ScoreKind.LOG_PROBABILITY,
    "token_prob": ScoreKind.PROBABILITY,
    "sum_logprob": ScoreKind.LOG_PROBABILITY,
    "min_token_prob": ScoreKind.PROBABILITY,
    "first_token_prob": ScoreKind.PROBABILITY,
    "token_count": ScoreKind.REAL,
    "mean_topk_entropy": ScoreKind.REAL,
    "mean_topk_margin": ScoreKind.PROBABILITY,
}











def _topk_entropy_and_margin(alternatives: Sequence[float]) -> tuple[float, float]:
    # Called for every token of every guarded answer: plain loops, not generators (the same
    # operations in the same order, so the same floats).
    exp, log = math.exp, math.log
    probabilities = sorted([exp(v) for v in alternatives], reverse=True)
    total = sum(probabilities)
    weighted = 0.0
    for p in probabilities:
        if p > 0.0:
            share = p / total
            weighted += share * log(share)
    return -weighted, probabilities[0] - probabilities[1]


def confidence_features(tokens: Sequence[TokenLogprob]) -> dict[str, float]:
    """Every confidence feature of one generated answer.

    Parameters
    ----------
    tokens : sequence of TokenLogprob
        The answer's tokens, at least one.

    Returns
    -------
    dict of str to float
        The features of the module docstring; the top-k ones only when some token has at least
        two alternatives.
    """
    if not tokens:
        raise ValueError("confidence features need at least one token")
    logprobs = [t.logprob for t in tokens]
    total = math.fsum(logprobs)
    lowest = min(logprobs)
    # A mean lies between the extremes; the division can round it just below the least one
    # (three equal logprobs), which would make the geometric mean below the minimum.
    mean = min(max(total / len(logprobs), lowest), max(logprobs))
    features = {
        "mean_logprob": mean,
        "token_prob": math.exp(mean),
        "sum_logprob": total,
        "min_token_prob": math.exp(lowest),
        "first_token_prob": math.exp(logprobs[0]),
        "token_count": float(len(logprobs)),
    }
    # Servers sometimes list fewer alternatives for a token (llama.cpp for some multi-byte
    # tokens), so the means run over the tokens that have at least two.
    pairs = [_topk_entropy_and_margin(t.top_logprobs) for t in tokens if len(t.top_logprobs) >= 2]
    if pairs:
        features["mean_topk_entropy"] = math.fsum(e for e, _ in pairs) / len(pairs)
        features["mean_topk_margin"] = math.fsum(m for _, m in pairs) / len(pairs)
    return features
