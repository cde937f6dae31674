"""A buffered answer's events, replayed after its decision, leave together: one body message."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from proxy.http.draining import InFlight
from proxy.http.routes.sse import event_stream
from proxy.observability.first_token import timed_first_token
from proxy.services.streaming import replayed
from proxy.wire.chat import ChatFormat

EVENTS = [{"choices": [{"index": 0, "delta": {"role": "assistant"}}]},
          {"choices": [{"index": 0, "delta": {"content": "Paris"}}]},
          {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]


async def collect(chunks: Any) -> list[bytes]:
    firsts: list[None] = []
    return [piece async for piece in event_stream(
        chunks, lambda: firsts.append(None), lambda where: None, InFlight())]


def test_replayed_events_are_one_message_with_every_event_in_order() -> None:
    messages = asyncio.run(collect(replayed(EVENTS)))
    assert len(messages) == 2  # the batch, then [DONE]
    assert messages[1] == b"data: [DONE]\n\n"
    events = [json.loads(line[6:]) for line in messages[0].split(b"\n\n") if line]
    assert events == EVENTS


def test_nothing_to_replay_is_only_done() -> None:
    assert asyncio.run(collect(replayed([]))) == [b"data: [DONE]\n\n"]


def test_the_first_token_of_a_batch_is_timed_once() -> None:
    seen: list[float] = []

    async def run() -> list[Any]:
        timed = timed_first_token(replayed(EVENTS), ChatFormat, 0.0, seen.append)
        return [item async for item in timed]

    (batch,) = asyncio.run(run())
    assert list(batch) == EVENTS and len(seen) == 1
