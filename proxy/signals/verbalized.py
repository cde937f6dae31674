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

Replies are read by :func:`stated_probability`: a stated probability (number, percentage,
fraction, "very likely"), a bare verdict ("the proposed answer is not correct": 5 %; "is
correct": 95 %), or, from a model that answers the question again instead of rating the answer,
whether it gives the same answer (95 %) or another (5 %). A reply with none of these leaves the
feature missing (the call is recorded as ``garbage``, its detail showing the reply's start).
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import ClassVar, Self

from calibrators.signals import ScoreKind
from policies.confidence import SignalSettings
from proxy.signals.answers import AnswerMatcher
from proxy.signals.base import (
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
    "restated_probability",
    "stated_probability",
    "top_k_probability",
]

#: The default follow-up question; a tenant's ``verbalized.prompt`` replaces it ({question} and
#: {answer} are filled in). "Do not answer the question again" and the percentage form are
#: there for small models: asked "the probability, from 0 to 100", SmolLM2-135M answered the
#: question again or wrote sums ("1 - (d)") on 9 of 16 TriviaQA and 4 of 16 college CS
#: replies; with this wording, on 5 and 1 of the same 16 (the rest: a percentage or a verdict).
VERBALIZED_PROMPT = (
    "Question: {question}\n"
    "Proposed answer: {answer}\n\n"
    "Do not answer the question again. How likely is it that the proposed answer is correct? "
    "Reply with a percentage from 0% to 100% and nothing else."
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

#: How much of an unreadable reply a garbage call's detail keeps.
_SHOWN = 120

# "On a scale of 0 to 100" names the scale, not the answer; removed before reading numbers.
_SCALE = re.compile(
    r"\b(?:from|between|of)?\s*0(?:\.0)?\s*(?:to|-|–|and)\s*(?:100|1(?:\.0)?)\b(?!\s*%)"
    r"|\b(?:from|between|of)?\s*0\s*%\s*(?:to|-|–|and)\s*100\s*%", re.I
)
_FRACTION = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s*(?:/|out of)\s*(\d+(?:\.\d+)?)(?![\d.]?\d)")
_PERCENT = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?|\.\d+)\s*(?:%|percent\b|per cent\b)", re.I)
_NUMBER = re.compile(
    # Not a digit group of a larger number ("1,298,30"), nor an operand of arithmetic or a ratio
    # ("1 - (d)", "1 - 0.5", "1:1"): small models write sums instead of answering.
    r"(?<![\w.,])(?<![-+*×/^]\s)(?<![+*×/^:])(-?)(\d+(?:\.\d+)?|\.\d+)(?![\d.,]?\d)"
    r"(?!\s*[-+*×:/]\s*[\w(.])"
)
# The result of a sum the reply works out ("1 - 0.5 = 0.5"): its last "= number".
_RESULT = re.compile(r"[=≈]\s*(\d+(?:\.\d+)?|\.\d+)(?![\d.,]?\d)(?!\s*[-+*×:/]\s*[\w(.])")
# "10% incorrect": a stated chance of being wrong.
_WRONG_AFTER = re.compile(r"\s*(?:incorrect|wrong|false|inaccurate|unlikely)\b", re.I)
# A bare verdict on the answer ("The proposed answer is not correct.", "It is correct, but"),
# as a judge would give: read as near-certainty. The verdict word must end its clause, so that
# "the probability that it is correct is 85" is read as 85, not as a verdict.
_END = r"(?=\s*(?:[.,;:!\n]|$|but\b|and\b|because\b|as\b))"
_PARTLY_RIGHT = re.compile(
    r"\b(?:not|n't)\s+(?:entirely|completely|fully|quite|totally|100%)\s+"
    r"(?:correct|right|true|accurate)" + _END, re.I)
_WRONG_VERDICT = re.compile(
    r"\b(?:(?:is|are|was|seems|looks)(?:\s+not|n't)\s+(?:\w+\s+)?(?:correct|right|true|accurate)"
    r"|(?:is|are|was|seems|looks)\s+(?:\w+\s+)?(?:incorrect|wrong|false|inaccurate|not true))"
    r"(?:\s+answer(?:\s+(?:to|for)\s+(?:the|this)\s+question)?)?" + _END, re.I)
# "The proposed answer is not a source of carbon": what was asked for, it says, is not that.
_NOT_AN_INSTANCE = re.compile(
    r"\b(?:proposed\s+)?answer\s+(?:is\s+not|isn't)\s+(?:a|an|the|one|present|part)\b", re.I)
_RIGHT_VERDICT = re.compile(
    r"\b(?:(?:is|are|was|seems|looks)\s+(?:\w+\s+)?(?:correct|right|true|accurate)" + _END
    + r"|answered\s+(?:\w+\s+){0,3}correctly\b)", re.I)
VERDICT_RIGHT = 0.95
"""A bare "it is correct": as Kent's "certain"."""
VERDICT_WRONG = 0.05
"""A bare "it is not correct"."""
VERDICT_PARTLY = 0.3
""""Not entirely correct": as Kent's "probably not"."""

# Words of estimative probability, after Sherman Kent's table (almost certain 93 %, probable
# 75 %, about even 50 %, probably not 30 %, almost certainly not 7 %). Negations come first, so
# that "not likely" is not read as "likely"; the first pattern that matches decides.
_PHRASES: tuple[tuple[re.Pattern[str], float], ...] = tuple(
    (re.compile(pattern, re.I), value)
    for pattern, value in (
        (r"\b(?:certainly|definitely|absolutely) (?:not|wrong|incorrect)\b|\bimpossible\b"
         r"|\bnot possible\b"
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


# "It is not possible to determine": no estimate at all, not "impossible".
_REFUSAL = re.compile(r"\bnot possible to (?:determine|say|know|tell|judge|estimate)\b", re.I)


def _percent(value: float) -> float | None:
    return value / 100.0 if math.isfinite(value) and 0.0 <= value <= 100.0 else None


def _number(text: str) -> float | None:
    number = float(text)
    if "." in text and 0.0 <= number <= 1.0:
        return number
    return _percent(number)


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
            return 1.0 - value if _WRONG_AFTER.match(text, match.end()) else value
    if _PARTLY_RIGHT.search(text):
        return VERDICT_PARTLY
    if _WRONG_VERDICT.search(text):
        return VERDICT_WRONG
    if _RIGHT_VERDICT.search(text):
        return VERDICT_RIGHT
    results = _RESULT.findall(text)
    for number_text in results[-1:] or [m[2] for m in _NUMBER.finditer(text) if not m[1]]:
        value = _number(number_text)
        if value is not None:
            return value
    if _REFUSAL.search(text):
        return None
    if _NOT_AN_INSTANCE.search(text):
        return VERDICT_WRONG
    for pattern, probability in _PHRASES:
        if pattern.search(text):
            return probability
    return None


# A reply that answers the question again instead of rating the answer (small models do):
# "The answer is c) ...", "c) M = 7", "The correct answer is: Paris".
_RESTATED = re.compile(
    r"^\W*(?:the\s+)?(?:correct\s+|right\s+|proposed\s+|final\s+|best\s+)?answer"
    r"(?:\s+to\s+(?:this|the)\s+question)?\s+(?:is|would\s+be)\s*:?\s*(?:indeed\s+)?(.+)",
    re.I | re.S)
_OPTION = re.compile(r"^\W*\(?([a-z])(?:\)|\.|:|\s*$)", re.I)
# What follows "the answer is" when it rates rather than restates: a verdict, a number.
_NOT_AN_ANSWER = re.compile(
    r"^\W*(?:not\b|no\b|yes\b|incorrect|correct|right\b|wrong|true\b|false\b|accurate|"
    r"inaccurate|likely|unlikely|possibly|probably|certain|uncertain|unclear|unknown|a bit\b|"
    r"\d|\.\d)", re.I)


def restated_probability(text: str, answer: str, matcher: AnswerMatcher) -> float | None:
    """A verdict read from a reply that answers the question again instead of rating ``answer``.

    Giving the same answer endorses it (:data:`VERDICT_RIGHT`), another one rejects it
    (:data:`VERDICT_WRONG`); None when the reply restates no answer. A multiple-choice reply
    restates an option by its letter ("The answer is c)", "c) M = 7"); a free-text one by
    "the (correct) answer is X", or by saying the proposed answer again (then only endorsing:
    other text may be a ramble, not another answer).
    """
    text = text[:2000]
    restated = _RESTATED.match(text)
    rest = restated[1] if restated else text
    if matcher.multiple_choice:
        option = _OPTION.match(rest)
        chosen = matcher.chosen(option[0]) if option else None
        if chosen is None:
            return None
        return VERDICT_RIGHT if chosen == matcher.chosen(answer) else VERDICT_WRONG
    if restated is None:
        # No "the answer is": a reply that says the proposed answer again endorses it; any other
        # text may be a ramble rather than another answer, so it is read as nothing.
        return VERDICT_RIGHT if matcher.same(text, answer) else None
    if _NOT_AN_ANSWER.match(rest):
        return None
    return VERDICT_RIGHT if matcher.same(rest, answer) else VERDICT_WRONG


def stated_probability(text: str, answer: str, matcher: AnswerMatcher) -> float | None:
    """The probability a verbalized reply gives ``answer``: stated, or read from a restatement.

    A percentage or fraction is read first (``parse_probability``); then a reply that answers
    the question again (``restated_probability``), whose numbers belong to that answer ("c)
    log_10 (N-m)"); then anything else ``parse_probability`` reads.
    """
    if not (_PERCENT.search(text[:2000]) or _FRACTION.search(text[:2000])):
        restated = restated_probability(text, answer, matcher)
        if restated is not None:
            return restated
    return parse_probability(text)


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


def _stated_probability(answer: str, matcher: AnswerMatcher) -> Callable[[Json], float | None]:
    def read(document: Json) -> float | None:
        choice = reply_choice(document)
        if choice is None:
            return None
        text = choice_text(choice)
        probability = stated_probability(text, answer, matcher)
        if probability is None:
            # Recorded as the garbage call's detail, to see later what the model said instead.
            raise ValueError(f"no probability in {text[:_SHOWN]!r}")
        return probability
    return read


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
        matcher = AnswerMatcher(question)
        stated = await asyncio.gather(*(
            calls.call(model, "chat/completions", self._body(question, a.text),
                       _stated_probability(a.text, matcher))
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
