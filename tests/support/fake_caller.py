"""A scripted in-process ModelCaller, and replies shaped like the real OpenAI wire format."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from proxy.errors import UpstreamError

Json = dict[str, Any]
Script = Callable[[str, str, Json], Awaitable[Json] | Json]


def chat_reply(
    text: str,
    tokens: Sequence[tuple[str, float, Sequence[tuple[str, float]]]] | None = None,
    *,
    usage: tuple[int, int] = (30, 5),
    model: str = "gpt-4o-mini-2024-07-18",
) -> Json:
    """A chat.completion as OpenAI sends it; ``tokens`` are (token, logprob, alternatives)."""
    logprobs = None
    if tokens is not None:
        logprobs = {"content": [
            {"token": token, "logprob": logprob, "bytes": list(token.encode()),
             "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())}
                              for t, lp in alternatives]}
            for token, logprob, alternatives in tokens
        ], "refusal": None}
    return {
        "id": "chatcmpl-AbC123", "object": "chat.completion", "created": 1_764_500_000,
        "model": model, "system_fingerprint": "fp_0ba0d124f1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text,
                                             "refusal": None},
                     "logprobs": logprobs, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1],
                  "total_tokens": sum(usage)},
    }


def completion_reply(text: str, logprobs: Sequence[float] | None = None) -> Json:
    """A legacy text_completion as OpenAI-compatible servers send it."""
    lp = None
    if logprobs is not None:
        words = text.split() or [text]
        lp = {"tokens": words[: len(logprobs)], "token_logprobs": list(logprobs),
              "top_logprobs": None, "text_offset": []}
    return {"id": "cmpl-1", "object": "text_completion", "created": 1_764_500_000,
            "model": "fake", "choices": [{"index": 0, "text": text, "logprobs": lp,
                                          "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}}


def answer_tokens(text: str, logprob: float = -0.1) -> list[tuple[str, float, list[tuple[str, float]]]]:
    """One token per word of ``text``, each with one alternative."""
    return [(word, logprob, [(word, logprob), ("x", math.log(1 - math.exp(logprob)) - 1)])
            for word in text.split()]


@dataclass
class FakeCaller:
    """Answers each call by ``script(model, endpoint, body)``; counts calls in flight."""

    script: Script
    received: list[tuple[str, str, Json]] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0

    async def complete(self, model: str, endpoint: str, body: Json) -> Json:
        self.received.append((model, endpoint, body))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            reply = self.script(model, endpoint, body)
            if isinstance(reply, Awaitable):
                reply = await reply
            return reply
        finally:
            self.in_flight -= 1


def replies(*documents: Json) -> Script:
    """A script answering with ``documents`` in turn (the last one repeated)."""
    queue = list(documents)

    def script(model: str, endpoint: str, body: Json) -> Json:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return script


def failing(message: str = "upstream for model 'fake' failed with HTTP 500: boom") -> Script:
    def script(model: str, endpoint: str, body: Json) -> Json:
        raise UpstreamError(message)

    return script


def hanging(seconds: float = 30.0) -> Script:
    async def script(model: str, endpoint: str, body: Json) -> Json:
        await asyncio.sleep(seconds)
        return chat_reply("too late")

    return script
