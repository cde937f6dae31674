"""The ``verbalized`` signal: the model is asked how likely its answer is to be correct.

A follow-up call (to the same model unless configured otherwise) with the question and the
answer asks for the probability, 0 to 100, that the answer is correct; the reply is parsed by
:func:`parse_probability`. Works with any model, costs one short call per choice. Uncalibrated,
the stated probability is the confidence (stated confidences are usually too high: fit a
calibrator).

The top-k variant (``top_k: k``; Tian et al. 2023, as scored in the BAS paper) instead asks once
per request for the model's k best guesses with a probability each. The choice's confidence is
the stated probability of the guesses that give the same answer as the choice; if none does, the
probability the guesses leave unassigned (an upper bound on the choice's).

=========================  =====  =================================================
feature                    kind   meaning
=========================  =====  =================================================
``verbalized_prob``        prob   the stated probability that the answer is correct
``verbalized_topk_prob``   prob   the top-k variant's probability of the answer
=========================  =====  =================================================

A reply with no readable probability leaves the feature missing (the call is recorded as
``garbage``).
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Awaitable, Mapping, Sequence
from typing import ClassVar, Self

from calibrators.signals import ScoreKind
from policies.confidence import SignalSettings

from .answers import AnswerMatcher
from .base import (
    Answer,
    ConfidenceSignal,
    Features,
    Json,
    SignalCalls,
    SignalRequest,
    SignalUnavailable,
    choice_text,
    reply_choice,
)

__all__ = [
    "VERBALIZED_PROMPT",
    "VERBALIZED_TOPK_PROMPT",
    "VerbalizedSignal",
    "parse_probability",
    "parse_top_k",
    "top_k_probability",
]

#: The default follow-up question; a tenant's ``verbalized.prompt`` replaces it ({question} and
#: {answer} are filled in).
VERBALIZED_PROMPT = (
    "Here is a question and a proposed answer to it.\n\n"
    "Question: {question}\n"
    "Proposed answer: {answer}\n\n"
    "What is the probability, from 0 to 100, that the proposed answer is correct? "
    "Reply with the number only."
)

#: The default top-k question ({question} and {k} are filled in).
VERBALIZED_TOPK_PROMPT = (
    "Give your {k} best guesses for the question below, each with the probability, from 0 to "
    "100, that it is correct. Reply in exactly this form and nothing else:\n"
    "G1: <the most likely guess, as short as possible>\n"
    "P1: <the probability that G1 is correct>\n"
    "...\n"
    "G{k}: <the {k}th most likely guess>\n"
    "P{k}: <the probability that G{k} is correct>\n\n"
    "Question: {question}"
)

# "On a scale of 0 to 100" names the scale, not the answer; removed before reading numbers.
_SCALE = re.compile(
    r"\b(?:from|between|of)?\s*0(?:\.0)?\s*(?:to|-|–|and)\s*(?:100|1(?:\.0)?)\b(?!\s*%)", re.I
)
_FRACTION = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s*(?:/|out of)\s*(\d+(?:\.\d+)?)(?![\d.]?\d)")
_PERCENT = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?|\.\d+)\s*(?:%|percent\b|per cent\b)", re.I)
_NUMBER = re.compile(r"(?<![\w.])(-?)(\d+(?:\.\d+)?|\.\d+)(?![\d.]?\d)")

# Words of estimative probability, after Sherman Kent's table (almost certain 93 %, probable
# 75 %, about even 50 %, probably not 30 %, almost certainly not 7 %). Negations come first, so
# that "not likely" is not read as "likely"; the first pattern that matches decides.
_PHRASES: tuple[tuple[re.Pattern[str], float], ...] = tuple(
    (re.compile(pattern, re.I), value)
    for pattern, value in (
        (r"\b(?:certainly|definitely|absolutely) (?:not|wrong|incorrect)\b|\bimpossible\b"
         r"|\bno chance\b|\bzero chance\b", 0.02),
        (r"\b(?:almost|virtually|nearly) (?:certainly|definitely) (?:not|wrong|incorrect)\b"
         r"|\balmost no chance\b", 0.07),
        (r"\b(?:highly|very|extremely) (?:unlikely|improbable|doubtful)\b", 0.07),
        (r"\b(?:unlikely|improbable|doubtful|not likely|probably not|probably (?:wrong|incorrect))"
         r"\b|\bnot confident\b", 0.3),
        (r"\b(?:not sure|unsure|uncertain|not certain|fifty[- ]fifty|toss[- ]up|about even"
         r"|even chance|coin flip)\b", 0.5),
        (r"\b(?:almost|virtually|nearly) (?:certain(?:ly)?|sure|definitely)\b", 0.93),
        (r"\b(?:highly|very|extremely) (?:likely|probable|confident)\b", 0.9),
        (r"\b(?:certain(?:ly)?|definitely|absolutely sure|sure)\b", 0.95),
        (r"\b(?:fairly|quite|reasonably|pretty) (?:confident|sure|likely)\b|\bconfident\b", 0.8),
        (r"\b(?:likely|probable|probably)\b", 0.75),
        (r"\b(?:possibly|maybe|perhaps|possible)\b", 0.4),
    )
)


def _percent(value: float) -> float | None:
    return value / 100.0 if math.isfinite(value) and 0.0 <= value <= 100.0 else None


def parse_probability(text: str) -> float | None:
    """The probability a reply states, in [0, 1], or None if it states none.

    Read, in this order: a fraction (``85/100``, ``4 out of 5``), a percentage (``85%``,
    ``85 percent``), the first plain number (``0.85`` or ``.85``: a decimal up to 1 is a
    probability; ``85``, ``1`` or ``85.5``: a percentage, as the prompt asks for 0 to 100),
    then a phrase (``very likely``, ``almost certain``, ``unlikely``, ...). Negative numbers and
    numbers past 100 are not probabilities. A phrase naming the scale ("from 0 to 100") is
    ignored.
    """
    text = _SCALE.sub(" ", text[:2000])
    for match in _FRACTION.finditer(text):
        numerator, denominator = float(match[1]), float(match[2])
        if math.isfinite(denominator) and denominator > 0 and 0 <= numerator <= denominator:
            return numerator / denominator
    for match in _PERCENT.finditer(text):
        value = _percent(float(match[1]))
        if value is not None:
            return value
    for match in _NUMBER.finditer(text):
        if match[1]:  # negative
            continue
        number = float(match[2])
        if "." in match[2] and 0.0 <= number <= 1.0:
            return number
        value = _percent(number)
        if value is not None:
            return value
    for pattern, probability in _PHRASES:
        if pattern.search(text):
            return probability
    return None


_GUESS_LINE = re.compile(r"^\W*(?:g|guess)\s*(\d+)\W*?[:.)=-]\s*(.+?)\s*$", re.I | re.M)
_PROB_LINE = re.compile(
    r"^\W*(?:p|prob|probability)\s*(\d+)\W*?[:.)=-]\s*(.+?)\s*$", re.I | re.M
)


def parse_top_k(text: str) -> list[tuple[str, float]]:
    """The (guess, probability) pairs of a top-k reply (``G1: ...`` / ``P1: ...`` lines).

    A guess without a readable probability is left out; the pairs are in the guesses' order.
    """
    text = text[:20_000]
    guesses = {int(number): guess for number, guess in _GUESS_LINE.findall(text)}
    probabilities: dict[int, float] = {}
    for number, stated in _PROB_LINE.findall(text):
        probability = parse_probability(stated)
        if probability is not None:
            probabilities.setdefault(int(number), probability)
    return [(guesses[n], probabilities[n]) for n in sorted(guesses) if n in probabilities]


def top_k_probability(
    answer: str, guesses: Sequence[tuple[str, float]], matcher: AnswerMatcher | None = None
) -> float:
    """The probability of ``answer`` among top-k ``guesses`` (see the module docstring)."""
    matcher = matcher or AnswerMatcher()
    matching = [p for guess, p in guesses if matcher.same(answer, guess)]
    if matching:
        return min(1.0, math.fsum(matching))
    return max(0.0, 1.0 - math.fsum(p for _, p in guesses))


def _stated_probability(document: Json) -> float | None:
    choice = reply_choice(document)
    return None if choice is None else parse_probability(choice_text(choice))


def _stated_guesses(document: Json) -> list[tuple[str, float]] | None:
    choice = reply_choice(document)
    guesses = parse_top_k(choice_text(choice)) if choice is not None else []
    return guesses or None


class VerbalizedSignal(ConfidenceSignal):
    """A follow-up call asking for the probability that the answer is correct."""

    name = "verbalized"
    feature_kinds: ClassVar[Mapping[str, ScoreKind]] = {
        "verbalized_prob": ScoreKind.PROBABILITY,
        "verbalized_topk_prob": ScoreKind.PROBABILITY,
    }
    feature_conditions: ClassVar[Mapping[str, str]] = {
        "verbalized_prob": "without `verbalized: {top_k: ...}`",
        "verbalized_topk_prob": "with `verbalized: {top_k: k}`",
    }

    def __init__(
        self, *, timeout_seconds: float, prompt: str | None = None, top_k: int | None = None,
        model: str | None = None, max_tokens: int | None = 32, temperature: float | None = 0.0,
    ) -> None:
        super().__init__(timeout_seconds=timeout_seconds)
        self.top_k = top_k
        self.prompt = prompt or (VERBALIZED_PROMPT if top_k is None else VERBALIZED_TOPK_PROMPT)
        self.model = model
        self.max_tokens = max_tokens
        self.temperature = temperature

    @classmethod
    def from_settings(cls, settings: SignalSettings) -> Self:
        section = settings.verbalized
        return cls(
            timeout_seconds=section.timeout_seconds or settings.timeout_seconds,
            prompt=section.prompt, top_k=section.top_k,
            model=section.model, max_tokens=section.max_tokens, temperature=section.temperature,
        )

    @property
    def feature(self) -> str:
        return "verbalized_prob" if self.top_k is None else "verbalized_topk_prob"

    @property
    def features(self) -> frozenset[str]:
        return frozenset({self.feature})

    @property
    def uncalibrated_feature(self) -> str:
        return self.feature

    def extra_calls(self, choices: int = 1) -> int:
        return choices if self.top_k is None else 1

    def _body(self, question: str, answer: str = "") -> Json:
        k = self.top_k or 0
        body: Json = {"messages": [{
            "role": "user",
            "content": self.prompt.format(question=question, answer=answer, k=k),
        }]}
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens * max(k, 1)
        if self.temperature is not None:
            body["temperature"] = self.temperature
        return body

    async def measure(
        self, request: SignalRequest, answers: Awaitable[Sequence[Answer]], calls: SignalCalls
    ) -> list[Features]:
        question = request.question
        model = self.model or request.model
        if self.top_k is not None:
            return await self._measure_top_k(question, model, answers, calls)
        answered = await answers
        if not question.strip():
            raise SignalUnavailable("the request has no question in text to ask about")
        stated = await asyncio.gather(*(
            calls.call(model, "chat/completions", self._body(question, a.text),
                       _stated_probability)
            for a in answered
        ))
        return [{} if p is None else {"verbalized_prob": p} for p in stated]

    async def _measure_top_k(
        self, question: str, model: str, answers: Awaitable[Sequence[Answer]],
        calls: SignalCalls,
    ) -> list[Features]:
        if not question.strip():
            raise SignalUnavailable("the request has no question in text to ask about")
        # The guesses need only the question: asked before the answer is awaited.
        asked = asyncio.ensure_future(
            calls.call(model, "chat/completions", self._body(question), _stated_guesses)
        )
        try:
            answered = await answers
            guesses = await asked
        except BaseException:
            asked.cancel()
            await asyncio.gather(asked, return_exceptions=True)
            raise
        if guesses is None:
            raise SignalUnavailable("the top-k reply held no guess with a probability")
        matcher = AnswerMatcher(question)
        return [
            {"verbalized_topk_prob": top_k_probability(a.text, guesses, matcher)}
            for a in answered
        ]
