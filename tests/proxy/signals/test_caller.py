"""End to end: signals through UpstreamModelCaller and the real HTTPUpstream, over loopback.

A tiny OpenAI-compatible server of this test's own samples its answers from a seeded
distribution (so k samples give the same multiset of answers in any arrival order), states a
probability when asked for one, judges with logprobs, and fails or hangs on request.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.signals import (
    Answer,
    CallResult,
    SignalRequest,
    SignalRun,
    UpstreamModelCaller,
    measure_signals,
)
from proxy.signals.consistency import ConsistencySignal
from proxy.signals.judge import JudgeSignal
from proxy.signals.verbalized import VerbalizedSignal
from proxy.upstream.openai_compatible import HTTPUpstream
from proxy.upstream.target import UpstreamTarget
from proxy.wire.chat import ChatFormat
from tests.support.loopback import serve_in_thread

SEED = 1234
ANSWERS = ["Canberra"] * 6 + ["Sydney"] * 3 + ["Melbourne"]
K = 6


@dataclass
class SamplingServer:
    """A seeded OpenAI-compatible chat server that records how many requests overlap."""

    rng: random.Random = field(default_factory=lambda: random.Random(SEED))
    received: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    gate: asyncio.Event | None = None

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/chat/completions", self.chat, methods=["POST"])])

    def reset(self) -> None:
        self.rng = random.Random(SEED)
        self.received.clear()
        self.most_in_flight = 0
        self.gate = None

    async def chat(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        self.received.append(body)
        question = body["messages"][-1]["content"]
        if "FAIL500" in question:
            return _json({"error": {"message": "boom", "type": "server_error", "param": None,
                                    "code": None}}, 500)
        if "HANG" in question:
            await asyncio.sleep(3)
        if "How likely is it that the proposed answer is correct" in question:
            return _json(_reply("I'd say 85%.", body))
        if "True or False" in question:
            right = "Proposed answer: Canberra" in question
            p = 0.9 if right else 0.2
            return _json(_reply("True" if right else "False", body, [
                {"token": "True", "logprob": math.log(p), "bytes": None},
                {"token": "False", "logprob": math.log(1 - p), "bytes": None}]))
        return _json(_reply(await self._sample(), body))

    async def _sample(self) -> str:
        self.gate = self.gate or asyncio.Event()
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.in_flight >= K:
                self.gate.set()
            # Waits for all k samples to overlap; sequential calls would wait out the bound.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.gate.wait(), 2)
            return self.rng.choice(ANSWERS)
        finally:
            self.in_flight -= 1


def _reply(text: str, body: dict[str, Any], top: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    logprobs = None
    if body.get("logprobs"):
        first = top[0] if top else {"token": text, "logprob": -0.2, "bytes": None}
        logprobs = {"content": [{**first, "top_logprobs": top or [first]}], "refusal": None}
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "logprobs": logprobs, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 2, "total_tokens": 22}}


def _json(document: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(document), status, media_type="application/json")


@pytest.fixture(scope="module")
def sampling_server() -> Iterator[tuple[SamplingServer, str]]:
    server = SamplingServer()
    with serve_in_thread(server.app()) as url:
        yield server, url


@pytest.fixture
def server(sampling_server: tuple[SamplingServer, str]) -> tuple[SamplingServer, str]:
    sampling_server[0].reset()
    return sampling_server


def targets(url: str) -> dict[str, UpstreamTarget]:
    return {name: UpstreamTarget(public_name=name, provider="openai", model=f"{name}-upstream",
                                 base_url=f"{url}/v1", api_key=None, timeout_seconds=30,
                                 top_logprobs=5)
            for name in ("claude", "smollm2")}


def question(text: str = "What is the capital of Australia?") -> SignalRequest:
    body = {"model": "claude", "messages": [{"role": "user", "content": text}], "seed": 99}
    return SignalRequest("claude", ChatFormat, body,
                         frozenset({"agreement", "verbalized_prob", "judge_prob"}))


def run(url: str, signals: list[Any], request: SignalRequest, answers: list[Answer]) -> Any:
    async def scenario() -> Any:
        upstream = HTTPUpstream()
        try:
            caller = UpstreamModelCaller({"openai": upstream}, targets(url))
            return await measure_signals(signals, request, answers, caller)
        finally:
            await upstream.aclose()

    return asyncio.run(scenario())


def test_seeded_samples_consistency_verbalized_and_judge_over_http(
    server: tuple[SamplingServer, str],
) -> None:
    fake, url = server
    signals = [ConsistencySignal(timeout_seconds=20, samples=K),
               VerbalizedSignal(timeout_seconds=20), JudgeSignal(timeout_seconds=20)]
    outcome = run(url, signals, question(), [Answer(0, "Canberra"), Answer(1, "Sydney")])

    rng = random.Random(SEED)
    drawn = [rng.choice(ANSWERS) for _ in range(K)]
    first, second = outcome.features
    assert first["agreement"] == pytest.approx(drawn.count("Canberra") / K)
    assert second["agreement"] == pytest.approx(drawn.count("Sydney") / K)
    assert first["distinct_answers"] == len({*drawn, "Canberra"})
    assert first["verbalized_prob"] == second["verbalized_prob"] == 0.85
    assert first["judge_prob"] == pytest.approx(0.9)
    assert second["judge_prob"] == pytest.approx(0.2)

    assert fake.most_in_flight == K  # the samples overlapped
    samples = [b for b in fake.received if b.get("temperature") == 1.0]
    assert len(samples) == K and all("seed" not in b for b in samples)
    assert {b["model"] for b in samples} == {"claude-upstream"}
    judged = [b for b in fake.received if b.get("logprobs")]
    assert {b["model"] for b in judged} == {"smollm2-upstream"}
    assert outcome.extra_calls == K + 2 + 2
    assert outcome.extra_tokens == (K + 4) * 22
    assert all(call.result is CallResult.OK for call in outcome.calls)


def test_http_500_timeouts_and_unknown_models_leave_features_missing(
    server: tuple[SamplingServer, str],
) -> None:
    _, url = server
    failing = run(url, [VerbalizedSignal(timeout_seconds=5)], question("FAIL500"),
                  [Answer(0, "x")])
    assert failing.features == ({},)
    assert [c.result for c in failing.calls] == [CallResult.ERROR]
    assert "HTTP 500" in (failing.calls[0].detail or "")

    hanging = run(url, [VerbalizedSignal(timeout_seconds=0.3)], question("HANG"),
                  [Answer(0, "x")])
    assert hanging.features == ({},)
    assert [c.result for c in hanging.calls] == [CallResult.TIMEOUT]
    assert hanging.calls[0].seconds < 3

    unknown = run(url, [JudgeSignal(timeout_seconds=5, model="gpt-judge")], question(),
                  [Answer(0, "Canberra")])
    assert unknown.features == ({},)
    assert [c.result for c in unknown.calls] == [CallResult.ERROR]
    assert "gpt-judge" in (unknown.calls[0].detail or "")


def test_samples_started_with_the_main_request_are_ready_with_its_answer(
    server: tuple[SamplingServer, str],
) -> None:
    fake, url = server

    async def scenario() -> Any:
        upstream = HTTPUpstream()
        try:
            caller = UpstreamModelCaller({"openai": upstream}, targets(url))
            run = SignalRun.start([ConsistencySignal(timeout_seconds=20, samples=K)], question(),
                                  caller)
            main = await caller.complete("claude", "chat/completions", question().body)
            answer = Answer.from_choice(main["choices"][0], ChatFormat)
            return await run.finish([answer])
        finally:
            await upstream.aclose()

    outcome = asyncio.run(scenario())
    assert [c.result for c in outcome.calls] == [CallResult.OK] * K
    assert set(outcome.features[0]) == {"agreement", "distinct_answers", "sample_similarity"}
    assert len(fake.received) == K + 1 and fake.most_in_flight >= K
