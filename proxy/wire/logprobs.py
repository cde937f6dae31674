"""Token logprobs as the wire carries them, read into one shape every signal reads.

Chat choices keep them under ``logprobs.content`` (and the Responses API its output text's),
legacy completions under ``token_logprobs`` and ``top_logprobs``; both become a list of
:class:`TokenLogprob`. Values a provider uses for an impossible token (-inf, -9999) are floored,
and anything that is not a logprob makes the whole list unusable (None), never a wrong feature.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

__all__ = [
    "TokenLogprob",
    "tokens_from_chat_logprobs",
    "tokens_from_completion_logprobs",
    "trim_token_alternatives",
]

# Providers report impossible tokens as -inf or -9999; beyond e^-100 nothing changes a feature.
_LOGPROB_FLOOR = -100.0


class TokenLogprob(NamedTuple):
    """One generated token's logprob and the logprobs of its top alternatives (may be empty).

    A named tuple, made for every token of every guarded answer: immutable, and made in a
    third less time than a frozen dataclass.
    """

    logprob: float
    top_logprobs: tuple[float, ...] = ()


def _clean(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    if math.isnan(number) or number > 0.0:
        return None
    return max(number, _LOGPROB_FLOOR)


def tokens_from_chat_logprobs(logprobs: Mapping[str, Any] | None) -> list[TokenLogprob] | None:
    """Tokens of a chat choice's ``logprobs`` (``{"content": [{"logprob", "top_logprobs"}]}``).

    Returns None when the choice carries no usable logprobs.
    """
    if not logprobs:
        return None
    content = logprobs.get("content")
    if not isinstance(content, list) or not content:
        return None
    # Every token of every guarded answer passes here, with its alternatives: the common case
    # (a dict holding a float in [floor, 0]) is read inline, without a call per value, and
    # anything else goes through _clean as before (NaN fails both comparisons).
    tokens = []
    for entry in content:
        if type(entry) is not dict and not isinstance(entry, Mapping):
            return None
        value = entry.get("logprob")
        logprob = (value if type(value) is float and _LOGPROB_FLOOR <= value <= 0.0
                   else _clean(value))
        if logprob is None:
            return None
        top = entry.get("top_logprobs")
        alternatives: tuple[float, ...] = ()
        if isinstance(top, list):  # absent, null, or a shape no server sends: no alternatives
            found = []
            for alternative in top:
                if type(alternative) is not dict and not isinstance(alternative, Mapping):
                    continue
                value = alternative.get("logprob")
                if type(value) is float and _LOGPROB_FLOOR <= value <= 0.0:
                    found.append(value)
                elif (cleaned := _clean(value)) is not None:
                    found.append(cleaned)
            alternatives = tuple(found)
        tokens.append(TokenLogprob(logprob, alternatives))
    return tokens


def tokens_from_completion_logprobs(
    logprobs: Mapping[str, Any] | None,
) -> list[TokenLogprob] | None:
    """Tokens of a legacy completion choice's ``logprobs`` (``token_logprobs``, ``top_logprobs``).

    Returns None when the choice carries no usable logprobs.
    """
    if not logprobs:
        return None
    values = logprobs.get("token_logprobs")
    if not isinstance(values, list) or not values:
        return None
    tops = logprobs.get("top_logprobs")
    tokens = []
    for i, value in enumerate(values):
        logprob = _clean(value)
        if logprob is None:
            return None
        top = tops[i] if isinstance(tops, list) and i < len(tops) else None
        alternatives: tuple[float, ...] = ()
        if isinstance(top, Mapping):
            alternatives = tuple(v for v in map(_clean, top.values()) if v is not None)
        tokens.append(TokenLogprob(logprob, alternatives))
    return tokens


def trim_token_alternatives(entries: list[Any], top_k: int, key: str = "top_logprobs") -> None:
    """Keep at most ``top_k`` alternatives in each token entry of ``entries`` (in place)."""
    for entry in entries:
        if isinstance(entry, dict) and isinstance(entry.get(key), list):
            del entry[key][top_k:]
