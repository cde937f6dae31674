"""Waiting for something to happen: poll a condition until it holds, or fail saying what.

Tests wait on the condition they need (a server answers, a row is stored, an upstream saw the
client leave), never on a fixed sleep: a sleep long enough for a busy 2-core machine wastes
time everywhere else, and one short enough to be cheap fails there. The bound is a generous
ceiling, not an expectation; a condition that holds returns at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["DEFAULT_TIMEOUT", "wait_until", "wait_until_async"]

T = TypeVar("T")

DEFAULT_TIMEOUT = 60.0
"""Seconds: long enough for a loaded machine; a passing test never waits it out."""


def _failure(what: str, timeout: float, last: object, output: Callable[[], str] | None) -> str:
    message = f"timed out after {timeout:g} s waiting for {what} (last seen: {last!r})"
    if output is not None:
        message += f"\n{output()}"
    return message


def wait_until(
    predicate: Callable[[], T], *, what: str, timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.02, output: Callable[[], str] | None = None,
    ignoring: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns something true; return it.

    Fails (``AssertionError``) after ``timeout`` seconds with a message naming ``what`` it
    waited for, the last value seen and, when ``output`` is given, what it returns then: a
    server process's output (:meth:`~tests.support.loopback.ServerProcess.output`), or the
    state the condition looked at. An exception of a type in ``ignoring`` (a connection refused
    while a server starts) counts as "not yet"; any other propagates at once, so a predicate can
    fail early (a process that exited).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = predicate()
        except ignoring as exc:
            if time.monotonic() >= deadline:
                raise AssertionError(_failure(what, timeout, exc, output)) from exc
        else:
            if result:
                return result
            if time.monotonic() >= deadline:
                raise AssertionError(_failure(what, timeout, result, output))
        time.sleep(interval)


async def wait_until_async(
    predicate: Callable[[], T], *, what: str, timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.01,
) -> T:
    """:func:`wait_until` inside an event loop: sleeps with ``asyncio.sleep``, so the tasks
    that make the condition come true run meanwhile."""
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() >= deadline:
            raise AssertionError(_failure(what, timeout, result, None))
        await asyncio.sleep(interval)
    return result
