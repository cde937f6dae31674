"""Confidence signals: the gateway's own cost per request, and the latency k samples add.

1. CPU per request of the signal machinery (SignalRun, tasks, recording) over an in-process
   caller that answers at once, against computing the logprob features directly (today's path)
   in the same run.
2. Added latency of the consistency signal with k samples over a caller that takes a fixed
   time per call: the samples run concurrently, so the added latency should be about one call's
   (ratio ≈ 1), where k calls one after another would take k times as long.

Run: python benchmarks/bench_signals.py
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from proxy.signals import Answer, SignalRequest, measure_signals
from proxy.signals.consistency import ConsistencySignal
from proxy.signals.features import confidence_features
from proxy.signals.logprobs import LogprobsSignal
from proxy.signals.verbalized import VerbalizedSignal
from proxy.wire.chat import ChatFormat
from proxy.wire.logprobs import TokenLogprob

BODY = {"model": "m", "messages": [{"role": "user", "content": "What is the capital of Peru?"}]}
TOKENS = [TokenLogprob(-0.05 * (i % 7), (-0.05 * (i % 7), -2.0, -3.5)) for i in range(40)]
ANSWER = Answer(0, "The capital of Peru is Lima.", TOKENS)
CALL_SECONDS = 0.05


def reply(text: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 6, "total_tokens": 26}}


class InstantCaller:
    async def complete(self, model: str, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        content = body["messages"][-1]["content"]
        return reply("85" if "probability, from 0 to 100" in content else "Lima.")


class SlowCaller:
    async def complete(self, model: str, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(CALL_SECONDS)
        return reply("Lima")


def request(features: frozenset[str]) -> SignalRequest:
    return SignalRequest("m", ChatFormat, BODY, features)


async def per_request_microseconds(signals: list[Any], features: frozenset[str], n: int) -> float:
    caller = InstantCaller()
    started = time.perf_counter()
    for _ in range(n):
        await measure_signals(signals, request(features), [ANSWER], caller)
    return (time.perf_counter() - started) / n * 1e6


def direct_microseconds(n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        confidence_features(TOKENS)
    return (time.perf_counter() - started) / n * 1e6


async def added_latency(k: int) -> tuple[float, float]:
    signal = ConsistencySignal(timeout_seconds=10, samples=k)
    started = time.perf_counter()
    await measure_signals([signal], request(frozenset({"agreement"})), [ANSWER], SlowCaller())
    concurrent = time.perf_counter() - started
    caller = SlowCaller()
    started = time.perf_counter()
    for _ in range(k):
        await caller.complete("m", "chat/completions", BODY)
    return concurrent, time.perf_counter() - started


async def main() -> None:
    n = 3000
    direct = direct_microseconds(n)
    rows = [
        ("confidence_features directly (today)", direct),
        ("SignalRun: logprobs", await per_request_microseconds(
            [LogprobsSignal(timeout_seconds=5)], frozenset({"token_prob"}), n)),
        ("SignalRun: consistency, k=5 (instant caller)", await per_request_microseconds(
            [ConsistencySignal(timeout_seconds=5, samples=5)], frozenset({"agreement"}), n)),
        ("SignalRun: verbalized (instant caller)", await per_request_microseconds(
            [VerbalizedSignal(timeout_seconds=5)], frozenset({"verbalized_prob"}), n)),
    ]
    print("CPU per request (µs, mean of", n, "requests)")
    for name, micros in rows:
        print(f"  {name:<46} {micros:8.1f} µs  ({micros / direct:5.1f}× direct)")
    print(f"\nAdded latency of consistency, each call {CALL_SECONDS * 1000:.0f} ms")
    for k in (1, 5, 10, 20):
        concurrent, sequential = await added_latency(k)
        print(f"  k={k:<3} concurrent {concurrent * 1000:7.1f} ms "
              f"({concurrent / CALL_SECONDS:4.2f} calls)   one after another "
              f"{sequential * 1000:7.1f} ms ({sequential / CALL_SECONDS:5.2f} calls)")
    assert math.isfinite(direct)


if __name__ == "__main__":
    asyncio.run(main())
