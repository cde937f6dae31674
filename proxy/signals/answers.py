"""Whether two free-text answers to the same question say the same thing, without a model.

Small and chatty models answer in sentences that repeat the question ("Ezzard Charles was a
world champion in the sport of boxing."), so whole sentences are not compared: each answer is
reduced to its *core*, its normalised words (:func:`proxy.signals.grading.normalize_answer`) less
function words and less the question's own words ("boxing"). Two cores are the same answer when
one equals or contains the other as whole words (numbers compare by their final number, so
"four" is "4"), or when their ROUGE-L F1 is above 0.5 ("lyndon b johnson" and "lyndon johnson").
An answer whose core is empty only repeats the question: it is the same as another such answer
when their whole texts are, and never the same as an answer that says more. A multiple-choice
question (options listed as ``a) ...``) compares the options the answers pick instead.

Structured output (JSON text, or a forced tool call as :func:`proxy.wire.formats.answer_text` writes
it) is data, not prose: two such answers are the same only when they are equal once each JSON
value is written canonically (sorted keys, no spaces), so ``{"city": "Lyon"}`` is not
``{"city": "Paris"}`` however many words they share.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import orjson

from proxy.signals.grading import chosen_option, is_correct, normalize_answer, parse_options

__all__ = ["AnswerMatcher", "canonical_structured", "rouge_l_f1"]

# Function words and answer boilerplate ("the answer is ..."), which say nothing of the answer.
# Negations stay: "not boxing" is not "boxing".
_FUNCTION_WORDS = frozenset({
    "of", "in", "on", "at", "to", "for", "by", "with", "from", "into", "onto", "about", "as",
    "and", "or", "but", "so", "is", "are", "was", "were", "be", "been", "being", "am", "it",
    "its", "this", "that", "these", "those", "which", "who", "whom", "whose", "what", "where",
    "when", "why", "how", "there", "here", "i", "me", "my", "we", "our", "you", "your", "he",
    "him", "his", "she", "her", "they", "them", "their", "do", "does", "did", "has", "have",
    "had", "will", "would", "can", "could", "should", "may", "might", "must", "answer",
    "correct", "called", "named", "known", "also", "specifically"
})
# Longer cores are cut here for ROUGE-L, whose cost grows with the product of the lengths.
_MAX_ROUGE_WORDS = 64
_SPACE = re.compile(r"\s+")


def canonical_structured(text: str) -> str:
    """``text`` as compared when it is structured output: JSON re-written with sorted keys and
    no spaces; text that is not JSON (a tool call's ``name(arguments)`` lines, already
    canonical) with its runs of white space collapsed."""
    stripped = text.strip()
    try:
        return orjson.dumps(orjson.loads(stripped), option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONDecodeError:
        return _SPACE.sub(" ", stripped)


def rouge_l_f1(a: Sequence[str], b: Sequence[str]) -> float:
    """ROUGE-L F1 of two word sequences: 2·LCS / (len(a) + len(b)); 0 if either is empty.

    Lin (2004), "ROUGE: A Package for Automatic Evaluation of Summaries", with β = 1.
    """
    if not a or not b:
        return 0.0
    previous = [0] * (len(b) + 1)
    for word in a:
        current = [0]
        for j, other in enumerate(b):
            current.append(previous[j] + 1 if word == other else max(previous[j + 1], current[j]))
        previous = current
    return 2.0 * previous[-1] / (len(a) + len(b))


class AnswerMatcher:
    """Compares answers to one question (see the module docstring)."""

    def __init__(self, question: str = "", *, structured: bool = False) -> None:
        self._options = parse_options(question)
        self._question_words = frozenset(normalize_answer(question).split())
        self._structured = structured
        """The answers are structured output: compared exactly (see the module docstring)."""

    def core(self, text: str) -> tuple[str, ...]:
        """The answer's own words: normalised, less function words and the question's words."""
        return tuple(
            word for word in normalize_answer(text).split()
            if word not in _FUNCTION_WORDS and word not in self._question_words
        )

    def _comparable(self, a: str, b: str) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        core_a, core_b = self.core(a), self.core(b)
        if core_a and core_b:
            return core_a, core_b
        if core_a or core_b:
            return None  # one says something, the other only repeats the question
        whole_a, whole_b = tuple(normalize_answer(a).split()), tuple(normalize_answer(b).split())
        return (whole_a, whole_b) if whole_a and whole_b else None

    @property
    def multiple_choice(self) -> bool:
        """Whether the question lists options (``a) ...``), so answers are compared by letter."""
        return bool(self._options)

    def chosen(self, text: str) -> str | None:
        """The option ``text`` picks, for a multiple-choice question; None otherwise."""
        return chosen_option(text, self._options) if self._options else None

    def same(self, a: str, b: str) -> bool:
        """Whether ``a`` and ``b`` give the same answer."""
        if self._structured:
            return canonical_structured(a) == canonical_structured(b)
        if self._options:
            chosen = chosen_option(a, self._options)
            return chosen is not None and chosen == chosen_option(b, self._options)
        pair = self._comparable(a, b)
        if pair is None:
            return False
        words_a, words_b = pair
        text_a, text_b = " ".join(words_a), " ".join(words_b)
        if is_correct(text_a, [text_b]) or is_correct(text_b, [text_a]):
            return True
        return rouge_l_f1(words_a[:_MAX_ROUGE_WORDS], words_b[:_MAX_ROUGE_WORDS]) > 0.5

    def similarity(self, a: str, b: str) -> float:
        """Jaccard similarity of the two answers' sets of core words, in [0, 1].

        Two answers that both only repeat the question compare their whole texts' words; two
        empty answers are identical (1.0); an empty core against a non-empty one shares nothing.
        """
        pair = self._comparable(a, b)
        if pair is None:
            return 1.0 if not normalize_answer(a) and not normalize_answer(b) else 0.0
        left, right = set(pair[0]), set(pair[1])
        return len(left & right) / len(left | right)
