"""Ending a request's work when its client goes away, without a task that waits to hear it.

An ASGI application learns of a disconnect only by awaiting ``receive()``, so noticing one while
the request waits for its upstream, or while it streams, costs a second task per request
(Starlette's streamed responses start one, in a task group, for every stream). The gateway's
protocol (:mod:`proxy.http.protocol`) knows at once: it puts a :class:`DisconnectSignal` in each
request's scope and fires it when the connection is lost, or when the request is refused for a
body too slow, before the response is complete. A request arms the signal with its own task
around the work a departed client makes pointless; firing cancels that task. Written for
speed: it saves the watcher task and its wake-ups on every guarded request. Under another server
(Starlette's TestClient, say) the scope has no signal and the callers fall back to watching
``receive()``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

__all__ = ["EXTENSION", "ClientGone", "DisconnectSignal", "disconnect_signal", "unless_gone"]

EXTENSION = "basguard.disconnect"
"""The scope's ``extensions`` key of a request's :class:`DisconnectSignal`."""

T = TypeVar("T")


class ClientGone(Exception):
    """The client disconnected before the answer was complete."""


class DisconnectSignal:
    """Fired once the client of one request is gone; cancels the task armed on it then."""

    __slots__ = ("_task", "gone")

    def __init__(self) -> None:
        self.gone = False
        self._task: asyncio.Task[Any] | None = None

    def fire(self) -> None:
        """The client is gone (called by the protocol, from the event loop)."""
        self.gone = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel(msg="the client disconnected")

    def fired(self) -> bool:
        """Whether the client is gone (a method: a check after an await must read it anew)."""
        return self.gone

    def arm(self, task: asyncio.Task[Any]) -> None:
        self._task = task

    def disarm(self) -> None:
        self._task = None


def disconnect_signal(scope: Mapping[str, Any]) -> DisconnectSignal | None:
    """The request's signal, if the server gives one."""
    extensions = scope.get("extensions")
    signal = extensions.get(EXTENSION) if extensions else None
    return signal if isinstance(signal, DisconnectSignal) else None


async def unless_gone(signal: DisconnectSignal, work: Awaitable[T]) -> T:
    """Await ``work`` in this task, cancelled if ``signal`` fires meanwhile: then
    :class:`ClientGone` is raised instead.

    The cancellation reaches ``work`` at the await it is suspended in (a task is only ever
    cancelled while suspended), so it never lands after ``work`` has returned.
    """
    task = asyncio.current_task()
    assert task is not None
    if signal.gone:
        if asyncio.iscoroutine(work):
            work.close()  # never started: nothing to clean up, and no "never awaited" warning
        raise ClientGone
    signal.arm(task)
    try:
        return await work
    except asyncio.CancelledError:
        if not signal.fired() or task.cancelling() == 0:
            raise
        task.uncancel()
        raise ClientGone from None
    finally:
        signal.disarm()
