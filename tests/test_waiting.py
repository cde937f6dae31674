"""tests/support/waiting.py: the one way the tests wait for something to happen."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tests.support.waiting import wait_until, wait_until_async


def test_returns_the_first_true_value_as_soon_as_it_comes() -> None:
    values = iter([0, [], "ready"])
    assert wait_until(lambda: next(values), what="a value", interval=0) == "ready"


def test_fails_naming_what_it_waited_for_the_last_value_and_the_output() -> None:
    with pytest.raises(AssertionError) as failed:
        wait_until(lambda: [], what="the queue to fill", timeout=0.05, interval=0.01,
                   output=lambda: "server log: listening")
    message = str(failed.value)
    assert "waiting for the queue to fill" in message
    assert "last seen: []" in message
    assert message.endswith("server log: listening")


def test_an_ignored_exception_is_not_yet_and_any_other_fails_at_once() -> None:
    calls = itertools.count()

    def refused_twice() -> bool:
        if next(calls) < 2:
            raise ConnectionRefusedError
        return True

    assert wait_until(refused_twice, what="a connection", interval=0,
                      ignoring=(ConnectionRefusedError,))

    def always_refused() -> bool:
        raise ConnectionRefusedError

    with pytest.raises(AssertionError, match="ConnectionRefusedError"):
        wait_until(always_refused, what="never", timeout=0.05, interval=0.01,
                   ignoring=(ConnectionRefusedError,))

    def exited() -> bool:
        raise RuntimeError("the server exited")

    with pytest.raises(RuntimeError, match="exited"):
        wait_until(exited, what="the server", ignoring=(ConnectionRefusedError,))


def test_the_async_twin_lets_the_loop_make_the_condition_true() -> None:
    async def scenario() -> str:
        done: list[str] = []
        asyncio.get_running_loop().call_later(0.02, done.append, "set by the loop")
        found = await wait_until_async(lambda: done, what="the callback", interval=0.005)
        with pytest.raises(AssertionError, match="waiting for nothing"):
            await wait_until_async(lambda: False, what="nothing", timeout=0.03)
        return found[0]

    assert asyncio.run(scenario()) == "set by the loop"
