"""The ``judge`` signal: a separate judge model is asked whether the proposed answer is correct.

One call per choice to the judge (any configured model; by default ``smollm2``, the embedded
local SmolLM2). Its feature, ``judge_prob`` (prob), is P(True): the probability of the judge's
first answer token being a yes-word (True, Yes, Correct) rather than a no-word (False, No,
Incorrect, Wrong), read from that token's ``top_logprobs``. When both kinds are among the
alternatives, P(True) = p_yes / (p_yes + p_no); with only yes-words, p_yes; with only no-words,
1 − p_no. Without logprobs (a judge that returns none, or ``logprobs: false``), the judge's
verdict is read instead: 1 for a yes, 0 for a no, or a probability it states. Uncalibrated,
``judge_prob`` is the confidence.
"""

from __future__ import annotations

import asyncio
import math
import re
import string
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, ClassVar, Self

from calibrators.signals import ScoreKind
from policies.confidence import SignalSettings
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
from proxy.signals.verbalized import parse_probability

__all__ = [
    "JUDGE_PROMPT",
    "JUDGE_TOP_LOGPROBS",
    "JudgeSignal",
    "judge_probability",
    "p_true_from_logprobs",
    "verdict_probability",
]

#: The default question to the judge; a tenant's ``judge.prompt`` replaces it ({question} and
#: {answer} are filled in).
JUDGE_PROMPT = (
    "You are grading an answer to a question.\n\n"
    "Question: {question}\n"
    "Proposed answer: {answer}\n\n"
    "Is the proposed answer correct? Reply with one word: True or False."
)

#: Alternatives asked for the judge's tokens: enough for both verdicts to be among them.
JUDGE_TOP_LOGPROBS = 5

_YES = frozenset({"true", "yes", "correct", "right"})
_NO = frozenset({"false", "no", "incorrect", "wrong"})
_STRIP = string.whitespace + string.punctuation
_NEGATED_YES = re.compile(r"\bnot\s+(?:true|correct|right)\b", re.I)
_WORD = re.compile(r"[a-z]+", re.I)


def _word(token: Any) -> str:
    return token.strip(_STRIP).lower() if isinstance(token, str) else ""


def _logprob(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if number <= 0.0 and not math.isnan(number) else None


def p_true_from_logprobs(logprobs: Any) -> float | None:
    """P(True) from a chat choice's ``logprobs`` (see the module docstring), or None.

    The first answer token is the first one with a letter or digit (skipping whitespace, quotes
    and markdown). None when there is no such token, or no yes- or no-word among it and its
    alternatives.
    """
    content = logprobs.get("content") if isinstance(logprobs, Mapping) else None
    if not isinstance(content, list):
        return None
    entry = next(
        (e for e in content if isinstance(e, Mapping) and _word(e.get("token"))), None
    )
    if entry is None:
        return None
    candidates: dict[str, float] = {}
    for alternative in entry.get("top_logprobs") or ():
        if isinstance(alternative, Mapping) and isinstance(alternative.get("token"), str):
            value = _logprob(alternative.get("logprob"))
            if value is not None:
                candidates.setdefault(alternative["token"], value)
    own = _logprob(entry.get("logprob"))
    if own is not None:
        candidates.setdefault(entry["token"], own)
    # The same word may appear as several tokens ("True", " True", "true").
    yes = math.fsum(math.exp(v) for t, v in candidates.items() if _word(t) in _YES)
    no = math.fsum(math.exp(v) for t, v in candidates.items() if _word(t) in _NO)
    has_yes = any(_word(t) in _YES for t in candidates)
    has_no = any(_word(t) in _NO for t in candidates)
    if has_yes and has_no:
        return yes / (yes + no) if yes + no > 0.0 else None
    if has_yes:
        return min(1.0, yes)
    if has_no:
        return max(0.0, 1.0 - no)
    return None


def verdict_probability(text: str) -> float | None:
    """1.0 for a yes verdict, 0.0 for a no, else the probability the text states (or None)."""
    text = text[:2000]
    if _NEGATED_YES.search(text):
        return 0.0
    for word in _WORD.findall(text):
        lowered = word.lower()
        if lowered in _YES:
            return 1.0
        if lowered in _NO:
            return 0.0
    return parse_probability(text)


def judge_probability(document: Json) -> float | None:
    """P(True) from a judge's reply: its logprobs if usable, else its verdict."""
    choice = reply_choice(document)
    if choice is None:
        return None
    from_logprobs = p_true_from_logprobs(choice.get("logprobs"))
    return from_logprobs if from_logprobs is not None else verdict_probability(choice_text(choice))


class JudgeSignal(ConfidenceSignal):
    """A judge model's P(True) that the proposed answer is correct."""

    name = "judge"
    feature_kinds: ClassVar[Mapping[str, ScoreKind]] = {"judge_prob": ScoreKind.PROBABILITY}

    def __init__(
        self, *, timeout_seconds: float, model: str = "smollm2", prompt: str | None = None,
        logprobs: bool = True, max_tokens: int | None = 8, temperature: float | None = 0.0,
    ) -> None:
        super().__init__(timeout_seconds=timeout_seconds)
        self.model = model
        self.prompt = prompt or JUDGE_PROMPT
        self.logprobs = logprobs
        self.max_tokens = max_tokens
        self.temperature = temperature

    @classmethod
    def from_settings(cls, settings: SignalSettings) -> Self:
        section = settings.judge
        return cls(
            timeout_seconds=section.timeout_seconds or settings.timeout_seconds,
            model=section.model, prompt=section.prompt,
            logprobs=section.logprobs, max_tokens=section.max_tokens,
            temperature=section.temperature,
        )

    @property
    def uncalibrated_feature(self) -> str:
        return "judge_prob"

    def extra_calls(self, choices: int = 1) -> int:
        return choices

    def _body(self, question: str, answer: str) -> Json:
        body: Json = {"messages": [{
            "role": "user", "content": self.prompt.format(question=question, answer=answer),
        }]}
        if self.logprobs:
            body.update(logprobs=True, top_logprobs=JUDGE_TOP_LOGPROBS)
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        if self.temperature is not None:
            body["temperature"] = self.temperature
        return body

    async def measure(
        self, request: SignalRequest, answers: Awaitable[Sequence[Answer]], calls: SignalCalls
    ) -> list[Features]:
        answered = await answers
        question = request.question
        if not question.strip():
            raise SignalUnavailable("the request has no question in text to ask about")
        verdicts = await asyncio.gather(*(
            calls.call(self.model, "chat/completions", self._body(question, a.text),
                       judge_probability)
            for a in answered
        ))
        return [{} if p is None else {"judge_prob": p} for p in verdicts]
