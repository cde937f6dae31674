"""SignalRun: signals in parallel, features merged per answer, and no failure reaching the caller."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Sequence
from typing import Any, ClassVar, Self

import pytest

from calibrators.signals import ScoreKind
from policies.confidence import SignalSettings
from proxy.signals import (
    Answer,
    CallResult,
    ConfidenceSignal,
    SignalCalls,
    SignalRequest,
    SignalRun,
    measure_signals,
)
from proxy.signals.base import Features
from proxy.signals.consistency import ConsistencySignal
from proxy.signals.judge import JudgeSignal
from proxy.signals.logprobs import LogprobsSignal
from proxy.signals.verbalized import VerbalizedSignal
from proxy.wire.chat import ChatFormat
from tests.support.fake_caller import FakeCaller, answer_tokens, chat_reply, hanging
from tests.support.waiting import wait_until_async

BODY = {"model": "gpt", "messages": [{"role": "user", "content": "Largest planet?"}]}
REQUEST = SignalRequest("gpt", ChatFormat, BODY, frozenset({"token_prob", "agreement"}))


class _TestSignal(ConfidenceSignal):
    name = "test"
    feature_kinds: ClassVar = {"test_prob": ScoreKind.PROBABILITY}

    @classmethod
    def from_settings(cls, settings: SignalSettings) -> Self:
        return cls(timeout_seconds=settings.timeout_seconds)

    @property
    def uncalibrated_feature(self) -> str:
        return "test_prob"


class BuggySignal(_TestSignal):
    async def measure(self, request: SignalRequest, answers: Awaitable[Sequence[Answer]],
                      calls: SignalCalls) -> list[Features]:
        await answers
        raise ZeroDivisionError("a bug")


class StuckSignal(_TestSignal):
    async def measure(self, request: SignalRequest, answers: Awaitable[Sequence[Answer]],
                      calls: SignalCalls) -> list[Features]:
        await answers
        await asyncio.sleep(60)
        return []


class JunkSignal(_TestSignal):
    async def measure(self, request: SignalRequest, answers: Awaitable[Sequence[Answer]],
                      calls: SignalCalls) -> list[Features]:
        answered = await answers
        return [{"test_prob": math.nan, "undeclared": 0.5, "agreement": 0.9}, {"test_prob": 1}][
            : len(answered)]


def router(model: str, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    content = body["messages"][-1]["content"]
    if "How likely is it that the proposed answer is correct" in content:
        return chat_reply("70")
    if "Reply with one word: True or False" in content:
        return chat_reply("True", [("True", math.log(0.8), [("True", math.log(0.8)),
                                                             ("False", math.log(0.2))])])
    return chat_reply("Jupiter")


def test_every_signals_features_are_merged_per_answer() -> None:
    signals = [LogprobsSignal(timeout_seconds=5), ConsistencySignal(timeout_seconds=5, samples=3),
               VerbalizedSignal(timeout_seconds=5), JudgeSignal(timeout_seconds=5)]
    answers = [Answer(0, "Jupiter", ChatFormat.tokens(
        chat_reply("Jupiter", answer_tokens("Jupiter", -0.3))["choices"][0])),
        Answer(1, "Saturn")]
    outcome = asyncio.run(measure_signals(signals, REQUEST, answers, FakeCaller(router)))
    first, second = outcome.features
    assert first["token_prob"] == pytest.approx(math.exp(-0.3))
    assert first["agreement"] == 1.0 and second["agreement"] == 0.0
    assert first["verbalized_prob"] == second["verbalized_prob"] == 0.7
    assert first["judge_prob"] == pytest.approx(0.8)
    assert "token_prob" not in second
    assert outcome.extra_calls == 3 + 2 + 2
    assert outcome.extra_tokens == 7 * 35
    assert {c.signal for c in outcome.calls} == {"consistency", "verbalized", "judge"}
    assert outcome.unavailable == {}
    assert outcome.seconds >= 0
    assert outcome.missing_reason(0, ["token_prob", "agreement"]) is None
    assert "token_prob (logprobs" in (outcome.missing_reason(1, ["token_prob"]) or "")


def test_a_bug_in_a_signal_costs_its_features_not_the_response() -> None:
    signals = [BuggySignal(timeout_seconds=5), VerbalizedSignal(timeout_seconds=5)]
    outcome = asyncio.run(measure_signals(signals, REQUEST, [Answer(0, "Jupiter")],
                                          FakeCaller(router)))
    assert outcome.features == ({"verbalized_prob": 0.7},)
    [failure] = [c for c in outcome.calls if c.signal == "test"]
    assert failure.result is CallResult.ERROR and failure.model is None
    assert "ZeroDivisionError" in outcome.unavailable["test"]
    assert outcome.extra_calls == 1  # the failure is not an upstream call


def test_a_signal_stuck_past_its_deadline_is_cancelled_and_counted_as_a_timeout() -> None:
    outcome = asyncio.run(measure_signals([StuckSignal(timeout_seconds=0.1)], REQUEST,
                                          [Answer(0, "Jupiter")], FakeCaller(router)))
    assert outcome.features == ({},)
    assert [(c.signal, c.result) for c in outcome.calls] == [("test", CallResult.TIMEOUT)]


def test_only_declared_finite_features_reach_the_calibrator() -> None:
    outcome = asyncio.run(measure_signals([JunkSignal(timeout_seconds=5)], REQUEST,
                                          [Answer(0, "a"), Answer(1, "b")], FakeCaller(router)))
    assert outcome.features == ({}, {"test_prob": 1.0})


def test_cancelling_a_run_stops_its_calls() -> None:
    async def scenario() -> FakeCaller:
        caller = FakeCaller(hanging(60))
        run = SignalRun.start([ConsistencySignal(timeout_seconds=30, samples=3)], REQUEST, caller)
        await wait_until_async(lambda: caller.in_flight == 3,
                               what="3 signal call(s) in flight")
        await run.cancel()  # the main request failed
        return caller

    caller = asyncio.run(scenario())
    assert caller.in_flight == 0 and len(caller.received) == 3


def test_a_cancelled_request_cancels_its_signals() -> None:
    async def scenario() -> FakeCaller:
        caller = FakeCaller(hanging(60))
        run = SignalRun.start([VerbalizedSignal(timeout_seconds=30)], REQUEST, caller)
        finishing = asyncio.ensure_future(run.finish([Answer(0, "Jupiter")]))
        await wait_until_async(lambda: caller.in_flight == 1,
                               what="1 signal call(s) in flight")
        finishing.cancel()  # the client went away
        with pytest.raises(asyncio.CancelledError):
            await finishing
        return caller

    caller = asyncio.run(scenario())
    assert caller.in_flight == 0


def test_no_signals_is_no_work() -> None:
    outcome = asyncio.run(measure_signals([], REQUEST, [Answer(0, "x")], FakeCaller(router)))
    assert outcome.features == ({},) and outcome.calls == ()


class BuggyImmediateSignal(_TestSignal):
    immediate = True

    def features_now(self, request: SignalRequest, answers: Sequence[Answer]) -> list[Features]:
        raise KeyError("a bug")

    async def measure(self, request: SignalRequest, answers: Awaitable[Sequence[Answer]],
                      calls: SignalCalls) -> list[Features]:
        return self.features_now(request, await answers)


def test_signals_without_calls_run_without_a_task_and_fail_softly() -> None:
    async def scenario() -> Any:
        run = SignalRun.start([LogprobsSignal(timeout_seconds=5),
                               BuggyImmediateSignal(timeout_seconds=5)], REQUEST,
                              FakeCaller(router))
        assert run._tasks == {}  # computed in finish()
        return await run.finish([Answer(0, "Jupiter")])

    outcome = asyncio.run(scenario())
    assert outcome.features == ({},)
    assert outcome.unavailable["logprobs"] == "the upstream returned no token logprobs"
    assert [(c.signal, c.result) for c in outcome.calls] == [("test", CallResult.ERROR)]


def test_leaving_a_run_without_finishing_it_cancels_its_signals() -> None:
    async def scenario() -> tuple[FakeCaller, SignalRun]:
        caller = FakeCaller(hanging(60))
        with contextlib.suppress(RuntimeError):
            async with SignalRun.start([ConsistencySignal(timeout_seconds=30, samples=2),
                                        JudgeSignal(timeout_seconds=30)], REQUEST, caller) as run:
                await wait_until_async(lambda: caller.in_flight == 2,
                                       what="2 signal call(s) in flight")
                raise RuntimeError("the main request failed")
        return caller, run

    caller, run = asyncio.run(scenario())
    assert caller.in_flight == 0
    assert all(task.done() for task in run._tasks.values())  # the judge no longer waits
