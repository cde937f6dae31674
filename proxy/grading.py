"""Grading a model's answer against accepted answers: normalised exact or containment match."""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

__all__ = ["is_correct", "normalize_answer"]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans({c: " " for c in string.punctuation if c not in "-."})
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_NUMBER_WORDS = {
    word: str(i)
    for i, word in enumerate((
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
        "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
        "eighteen", "nineteen", "twenty",
    ))
}


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation or articles, single spaces (as SQuAD and TriviaQA grade)."""
    lowered = text.lower().replace(",", "")
    spaced = lowered.translate(_PUNCTUATION).replace(". ", " ").rstrip(".")
    return " ".join(_ARTICLES.sub(" ", spaced).split())


def _final_number(text: str) -> str | None:
    words = [_NUMBER_WORDS.get(word, word) for word in text.split()]
    numbers = _NUMBER.findall(" ".join(words))
    return numbers[-1] if numbers else None


def is_correct(response: str, answers: Sequence[str]) -> bool:
    """Whether ``response`` gives one of ``answers``.

    A numeric answer is compared with the last number in the response (its final answer; a
    response that repeats the question's numbers must not pass on them). Any other answer is
    correct when the normalised response equals it or contains it as whole words.
    """
    normalized = normalize_answer(response)
    for answer in answers:
        expected = normalize_answer(answer)
        if not expected:
            continue
        if _NUMBER.fullmatch(expected):
            if _final_number(normalized) == expected:
                return True
            continue
        if normalized == expected or re.search(rf"(?<!\w){re.escape(expected)}(?!\w)", normalized):
            return True
    return False
