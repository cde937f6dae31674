"""The ``consistency`` signal: agreement of the answer with k extra samples of the same request.

Works with any model (no logprobs needed). The k samples are sent concurrently, so the added
latency is about one call's; started together with the main request, close to none. The samples
repeat the client's request at the configured temperature, with ``n``, ``seed``, ``stream`` and
``echo`` removed (a client's seed would make every sample the same), to the same model or a
configured cheaper one. Each choice of the response is compared with the same k samples, so the
features mean the same whatever ``n`` the client asked for.

=====================  =====  ==================================================================
feature                kind   meaning
=====================  =====  ==================================================================
``agreement``          prob   share of the samples giving the same answer as the choice
``distinct_answers``   real   number of different answers among the choice and the samples
``sample_similarity``  prob   mean Jaccard similarity of the choice's words to each sample's
``sample_token_prob``  prob   mean geometric-mean token probability of the samples (only when
                              the calibrator reads it, which asks the samples for logprobs)
=====================  =====  ==================================================================

Answers are compared by :class:`~proxy.signals.answers.AnswerMatcher`: structured output (a JSON
format, a forced tool call, read as its canonical arguments) exactly as data; prose by the option
they pick
for a multiple-choice question, else by their own words less the question's (small models
answer in sentences that repeat it), equal, contained or with ROUGE-L F1 above 0.5; the
similarity is the Jaccard index of those words. Uncalibrated, ``agreement`` is the
confidence. Samples that fail are left out; with none left, the features are missing.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
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
)
from proxy.signals.features import confidence_features
from proxy.wire.formats import WireFormat

__all__ = [
    "ConsistencySignal",
    "Sample",
    "consistency_features",
    "sample_body",
]

# Fields of the client's request that a sample must not copy: one answer per sample, not
# streamed, not seeded (a seed would make every sample identical), without the prompt echoed.
_NOT_SAMPLED = frozenset({
    "n", "best_of", "stream", "stream_options", "seed", "echo", "logprobs", "top_logprobs",
})


@dataclass(frozen=True, slots=True)
class Sample:
    """One extra sample's answer text and, if it carried logprobs, its token probability."""

    text: str
    token_prob: float | None = None


def sample_body(
    body: Json, fmt: type[WireFormat], *, temperature: float, logprobs: bool
) -> Json:
    """The request for one extra sample of the client's ``body``."""
    sample = {key: value for key, value in body.items() if key not in _NOT_SAMPLED}
    sample["temperature"] = temperature
    return fmt.ask_for_logprobs(sample, 1) if logprobs else sample


def _distinct(answers: Sequence[str], matcher: AnswerMatcher) -> int:
    """Number of groups of answers that are the same as their group's first answer."""
    representatives: list[str] = []
    for answer in answers:
        if not any(matcher.same(answer, r) for r in representatives):
            representatives.append(answer)
    return len(representatives)


def consistency_features(
    answer: str, samples: Sequence[Sample], matcher: AnswerMatcher | None = None
) -> Features:
    """The consistency features of ``answer`` against ``samples`` (at least one).

    Parameters
    ----------
    answer : str
        The choice's text.
    samples : sequence of Sample
        The extra samples that could be read.
    matcher : AnswerMatcher, optional
        Compares answers to the request's question (default: to no question).

    Returns
    -------
    dict of str to float
        ``agreement``, ``distinct_answers``, ``sample_similarity``, and ``sample_token_prob``
        when some sample carried logprobs.
    """
    if not samples:
        raise ValueError("consistency features need at least one sample")
    matcher = matcher or AnswerMatcher()
    texts = [s.text for s in samples]
    features = {
        "agreement": sum(matcher.same(answer, t) for t in texts) / len(texts),
        "distinct_answers": float(_distinct([answer, *texts], matcher)),
        "sample_similarity": math.fsum(matcher.similarity(answer, t) for t in texts)
        / len(texts),
    }
    probs = [s.token_prob for s in samples if s.token_prob is not None]
    if probs:
        features["sample_token_prob"] = math.fsum(probs) / len(probs)
    return features


def _read_sample(document: Json, fmt: type[WireFormat]) -> Sample | None:
    choice = fmt.sample_choice(document)
    if choice is None:
        return None
    text = choice_text(choice)
    if not text.strip():
        return None
    tokens = fmt.tokens(choice)
    return Sample(text, confidence_features(tokens)["token_prob"] if tokens else None)


class ConsistencySignal(ConfidenceSignal):
    """k extra samples of the request, sent concurrently; agreement of each choice with them."""

    name = "consistency"
    feature_kinds: ClassVar[Mapping[str, ScoreKind]] = {
        "agreement": ScoreKind.PROBABILITY,
        "distinct_answers": ScoreKind.REAL,
        "sample_similarity": ScoreKind.PROBABILITY,
        "sample_token_prob": ScoreKind.PROBABILITY,
    }

    def __init__(
        self, *, timeout_seconds: float, samples: int = 5, temperature: float = 1.0,
        model: str | None = None,
    ) -> None:
        super().__init__(timeout_seconds=timeout_seconds)
        self.samples = samples
        self.temperature = temperature
        self.model = model

    @classmethod
    def from_settings(cls, settings: SignalSettings) -> Self:
        section = settings.consistency
        return cls(
            timeout_seconds=section.timeout_seconds or settings.timeout_seconds,
            samples=section.samples,
            temperature=section.temperature, model=section.model,
        )

    @property
    def uncalibrated_feature(self) -> str:
        return "agreement"

    def extra_calls(self, choices: int = 1) -> int:
        return self.samples

    async def measure(
        self, request: SignalRequest, answers: Awaitable[Sequence[Answer]], calls: SignalCalls
    ) -> list[Features]:
        fmt = request.fmt
        body = sample_body(
            request.body, fmt, temperature=self.temperature,
            logprobs="sample_token_prob" in request.features,
        )
        model = self.model or request.model

        def read(document: Json) -> Sample | None:
            return _read_sample(document, fmt)

        # Started before the answer is awaited: they need only the request.
        pending = [
            asyncio.ensure_future(calls.call(model, fmt.endpoint, body, read))
            for _ in range(self.samples)
        ]
        try:
            answered = await answers
            results = await asyncio.gather(*pending)
        except BaseException:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            raise
        samples = [sample for sample in results if sample is not None]
        if not samples:
            raise SignalUnavailable(f"none of the {self.samples} samples could be used")
        # Structured output (JSON, a forced tool call) is compared as data, exactly.
        matcher = AnswerMatcher(request.question,
                                structured=fmt.asked(request.body) != "text")
        return [consistency_features(a.text, samples, matcher) for a in answered]
