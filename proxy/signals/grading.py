"""Grading a model's answer: normalised exact or containment match, or a multiple-choice letter."""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

__all__ = ["chosen_option", "is_correct", "is_correct_choice", "normalize_answer", "parse_options"]

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
        if normalized == expected or _contains_words(normalized, expected):
            return True
    return False


def _contains_words(text: str, words: str) -> bool:
    """Whether ``words`` occurs in ``text`` as whole words (both normalised)."""
    return re.search(rf"(?<!\w){re.escape(words)}(?!\w)", text) is not None


# Options listed one per line as "a) ...", the format of the shipped MMLU question sets.
_OPTION_LINE = re.compile(r"^\s*([a-z])\)\s*(.+?)\s*$", re.M)
# A letter given outright: "b", "b)", "(b)", "B.", "B: ...", at the start of the response (not
# "A 20 gauge cannula", where the letter is an article).
_LEADING_LETTER = re.compile(r"^\W*\(?([a-z])(?:\)|\.|:|$)", re.I)
_STATED_LETTER = re.compile(r"\b(?:answer|option|choice)\s*(?:is|:)?\s*\(?([a-z])\b", re.I)


def parse_options(prompt: str) -> dict[str, str]:
    """The options of a multiple-choice prompt, ``{"a": "text", ...}``; empty if it has none."""
    options = {letter: text for letter, text in _OPTION_LINE.findall(prompt)}
    # At least two consecutive letters from "a": a stray "x) " line is not a list of options.
    letters = sorted(options)
    if len(letters) < 2 or letters != [chr(ord("a") + i) for i in range(len(letters))]:
        return {}
    return options


def chosen_option(response: str, options: dict[str, str]) -> str | None:
    """The option letter a response picks: a letter it states, else the one option it quotes.

    Small models often answer with the option's text rather than its letter; quoting the text of
    exactly one option counts as choosing it. Anything else chooses nothing.
    """
    for pattern in (_LEADING_LETTER, _STATED_LETTER):
        match = pattern.search(response)
        if match and match[1].lower() in options:
            return match[1].lower()
    normalized = normalize_answer(response)
    quoted = [letter for letter, text in options.items()
              if (expected := normalize_answer(text)) and _contains_words(normalized, expected)]
    return quoted[0] if len(quoted) == 1 else None


def is_correct_choice(response: str, answer: str, options: dict[str, str]) -> bool:
    """Whether ``response`` picks option ``answer`` (a letter) of ``options``."""
    return chosen_option(response, options) == answer.strip().lower()
