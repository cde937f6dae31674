"""A tenant's ``stream_gate``: decide a stream on its first K tokens, then stream it or stop.

In ``enforce`` mode without a gate a stream is buffered whole and decided at its end. With one:

1. the chunks are buffered until every choice has K tokens or has finished (:class:`PrefixBuffer`);
2. each choice is decided on its own prefix by the prefix calibrator, which reads the logprob
   features of the first K tokens (``token_prob@K``..., see :mod:`calibrators.prefix`);
3. an answered choice's buffer is flushed and the rest of it streams as it comes; an abstained
   choice gets the abstention message at once. When every choice abstains the upstream
   response is closed right after the decision: the upstream stops generating (llama.cpp and
   vLLM stop on disconnect; hosted APIs stop billing), and nothing withheld reaches the client.

Tokens are counted per choice as the logprob entries its chunks carry (the gate always asks
for logprobs); a chunk that carries text but no entries counts as one token, so an upstream
that drops logprobs is still decided after K chunks (without confidence: the tenant's
``on_missing_confidence`` decides). A role-only or empty chunk counts nothing.

``n > 1``: every choice is decided on its own first K tokens, and the response starts once all
are decided. If some answer and others abstain, the answered ones stream on and the abstained
ones get the abstention; their tokens are still generated upstream (one request cannot be
cancelled for some of its choices) but never sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calibrators.artifact import FittedCalibrator, load_artifact
from calibrators.prefix import prefix_feature, split_prefix_feature
from proxy.errors import GatewayError, error_payload
from proxy.judging.decision import ChoiceOutcome, MissingConfidence, decide_features
from proxy.signals.features import FEATURE_KINDS, confidence_features
from proxy.signals.logprobs import TOP_LOGPROBS_FOR_CALIBRATORS, TOPK_FEATURES
from proxy.wire.formats import WireFormat
from proxy.wire.logprobs import TokenLogprob
from proxy.wire.withheld import WithheldShape

__all__ = [
    "PrefixBuffer",
    "StreamGate",
    "decide_prefixes",
    "gated_chunks",
    "load_stream_gate",
    "prefix_calibrator_problem",
    "tokens_saved",
]

Json = dict[str, Any]


@dataclass(frozen=True)
class StreamGate:
    """A tenant's gate, resolved: K and the loaded prefix calibrator."""

    decide_after_tokens: int
    calibrator: FittedCalibrator

    @property
    def top_logprobs(self) -> int:
        """Alternatives per token to ask the upstream for: the top-k features need several;
        the others need the tokens' own logprobs, which some servers send only with one."""
        bases = {split_prefix_feature(name)[0] for name in self.calibrator.feature_names}
        return TOP_LOGPROBS_FOR_CALIBRATORS if bases & TOPK_FEATURES else 1


def prefix_calibrator_problem(calibrator: FittedCalibrator, tokens: int) -> str | None:
    """Why ``calibrator`` cannot gate at ``tokens`` tokens (None: it can).

    It must read logprob features of the first ``tokens`` tokens only: ``FEATURE@K`` with K
    equal to the gate's, FEATURE one of :data:`proxy.signals.features.FEATURE_KINDS`.
    """
    wrong = []
    for name in calibrator.feature_names:
        base, k = split_prefix_feature(name)
        if k != tokens or base not in FEATURE_KINDS:
            wrong.append(name)
    if not wrong:
        return None
    return (
        f"the prefix calibrator reads {', '.join(wrong)}; a stream gate with "
        f"decide_after_tokens {tokens} needs one that reads only logprob features of the first "
        f"{tokens} tokens ({prefix_feature('token_prob', tokens)}, ...): record them with "
        f"`basguard collect --prefix-tokens {tokens}` and fit with `basguard calibrate fit "
        f"--prefix {tokens}`"
    )


def load_stream_gate(path: Path, tokens: int) -> StreamGate:
    """Load the prefix calibrator at ``path`` for a gate at ``tokens`` tokens.

    Raises ValueError (an :class:`~calibrators.artifact.ArtifactError` among them) if the
    artifact cannot be loaded or does not read the prefix features of ``tokens`` tokens.
    """
    calibrator = load_artifact(path)
    problem = prefix_calibrator_problem(calibrator, tokens)
    if problem is not None:
        raise ValueError(f"{path}: {problem}")
    return StreamGate(tokens, calibrator)


def prefix_features(tokens: Sequence[TokenLogprob], k: int) -> dict[str, float]:
    """The logprob features of the first ``k`` tokens, named ``FEATURE@k``."""
    return {prefix_feature(name, k): value
            for name, value in confidence_features(tokens[:k]).items()}


@dataclass
class _Choice:
    tokens: int = 0
    entries: list[Any] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    finished: bool = False
    calls_tools: bool = False


class PrefixBuffer:
    """A gated stream's chunks, held until every choice has ``k`` tokens or has finished."""

    def __init__(self, fmt: type[WireFormat], k: int, choices: int) -> None:
        self._fmt = fmt
        self.k = k
        self._expected = choices
        self._choices: dict[int, _Choice] = {}
        self.chunks: list[Json] = []

    def add(self, chunk: Json) -> None:
        self.chunks.append(chunk)
        for piece in chunk.get("choices") or []:
            state = self._choices.setdefault(int(piece.get("index", 0)), _Choice())
            entries = self._fmt.delta_logprob_entries(piece)
            text = self._fmt.delta_text(piece)
            # Entries beyond K are not read (the decision is on the first K), only counted.
            state.entries.extend(entries[:max(0, self.k - len(state.entries))])
            state.tokens += len(entries) or (1 if text else 0)
            state.text.append(text)
            state.calls_tools = state.calls_tools or self._fmt.delta_calls_tools(piece)
            if piece.get("finish_reason"):
                state.finished = True

    @property
    def ready(self) -> bool:
        """Whether every expected choice has ``k`` tokens or has finished."""
        if len(self._choices) < self._expected:
            return False
        return all(c.finished or c.tokens >= self.k for c in self._choices.values())

    def indices(self) -> list[int]:
        return sorted(self._choices)

    def received(self, index: int) -> int:
        """Tokens of choice ``index`` received so far."""
        state = self._choices.get(index)
        return state.tokens if state else 0

    def calls_tools(self, index: int) -> bool:
        """Whether choice ``index``'s prefix carries a piece of a tool call."""
        state = self._choices.get(index)
        return state.calls_tools if state else False

    def finished(self, index: int) -> bool:
        state = self._choices.get(index)
        return state.finished if state else False

    def text(self, index: int) -> str:
        state = self._choices.get(index)
        return "".join(state.text) if state else ""

    def tokens(self, index: int) -> list[TokenLogprob] | None:
        """The first ``k`` tokens of choice ``index`` with their logprobs (None: none came)."""
        state = self._choices.get(index)
        if state is None or not state.entries:
            return None
        return self._fmt.tokens({"logprobs": self._fmt.merged_logprobs(state.entries)})


async def read_prefix(buffer: PrefixBuffer, chunks: AsyncIterator[Json]) -> bool:
    """Add chunks to ``buffer`` until it is ready; False if the stream ended first."""
    async for chunk in chunks:
        buffer.add(chunk)
        if buffer.ready:
            return True
    return False


def decide_prefixes(
    buffer: PrefixBuffer, gate: StreamGate, *, threshold: float,
    on_missing_confidence: MissingConfidence, withhold: str | None = None,
) -> list[ChoiceOutcome]:
    """Each choice decided on its own first K tokens by the prefix calibrator (``withhold``:
    withheld whatever its confidence, as in :func:`proxy.judging.decision.decide_features`)."""
    outcomes = []
    for index in buffer.indices():
        tokens = buffer.tokens(index)
        features = prefix_features(tokens, gate.decide_after_tokens) if tokens else {}
        missing = [name for name in gate.calibrator.feature_names if name not in features]
        reason = None
        if not tokens:
            reason = "the upstream returned no token logprobs"
        elif missing:
            reason = (f"the prefix calibrator reads {', '.join(missing)}, which the upstream's "
                      "logprobs do not provide (no top_logprobs?)")
        outcomes.append(decide_features(
            index, features, reason, calibrator=gate.calibrator, threshold=threshold,
            on_missing_confidence=on_missing_confidence, withhold=withhold))
    return outcomes


def tokens_saved(body: Mapping[str, Any], buffer: PrefixBuffer) -> int:
    """Tokens a cancelled stream did not generate: ``max_tokens`` minus those received, per
    unfinished choice. 0 when the request set no ``max_tokens`` (``max_completion_tokens``):
    without a cap, what the model would have written is unknown."""
    cap = body.get("max_completion_tokens") or body.get("max_tokens")
    if not isinstance(cap, int) or isinstance(cap, bool) or cap <= 0:
        return 0
    return sum(max(0, cap - buffer.received(i)) for i in buffer.indices()
               if not buffer.finished(i))


async def gated_chunks(
    *,
    buffer: PrefixBuffer,
    rest: AsyncIterator[Json],
    outcomes: Sequence[ChoiceOutcome],
    fmt: type[WireFormat],
    base: Json,
    withheld: WithheldShape,
    restrict: Callable[[Json], None],
    closing: Callable[[list[Json]], list[Json]],
    failed: Callable[[GatewayError], None],
    close: Callable[[], Awaitable[None]],
) -> AsyncIterator[Json]:
    """The chunks sent after the decision (see the module docstring).

    The buffered chunks are replayed as in a buffered ``enforce`` stream: answered choices as
    they came, abstained ones without their answer (what else they carried, the role and
    unknown fields, stays), each abstained choice then ending in the ``withheld`` shape (the
    tenant's content, refusal or JSON object, and finish_reason). Answered choices then get
    the rest of the stream (nothing of it when none answered: the upstream is closed before).
    As in ``annotate``, chunks carrying a ``finish_reason`` are held back so the decision can
    ride on the last one; ``closing`` adds it. ``restrict`` trims each sent choice's logprobs
    to what the client asked for.
    """
    answered = {o.index for o in outcomes if o.answer}
    held: list[Json] = []
    try:

        def sent(chunk: Json, *, buffered: bool) -> Json | None:
            choices = []
            for choice in chunk.get("choices") or []:
                if int(choice.get("index", 0)) in answered:
                    restrict(choice)
                    choices.append(choice)
                elif buffered and (stripped := fmt.withheld_delta(choice)) is not None:
                    choices.append(stripped)
            if not choices:
                return None  # nothing left of it, or a usage chunk (sent only if asked)
            return {**chunk, "choices": choices}

        for chunk in buffer.chunks:
            out = sent(chunk, buffered=True)
            if out is not None and not _finishes(out, held):
                yield out
        buffer.chunks.clear()
        for outcome in outcomes:
            if not outcome.answer:
                for choice in fmt.withheld_chunk_choices(outcome.index, withheld):
                    ending = {**base, "choices": [choice]}
                    if not _finishes(ending, held):
                        yield ending
        if answered:
            async for chunk in rest:
                out = sent(chunk, buffered=False)
                if out is not None and not _finishes(out, held):
                    yield out
        for chunk in closing(held):
            yield chunk
    except GatewayError as exc:
        failed(exc)
        for chunk in held:
            yield chunk
        yield error_payload(exc)
    finally:
        await close()


def _finishes(chunk: Json, held: list[Json]) -> bool:
    """Hold back ``chunk`` if it carries a ``finish_reason`` (the decision may ride on it)."""
    if any(choice.get("finish_reason") for choice in chunk["choices"]):
        held.append(chunk)
        return True
    return False
