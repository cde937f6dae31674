"""Work a stopping server must end cleanly: requests and streams still running at its deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from proxy.errors import ShuttingDown

__all__ = ["InFlight", "ending_on_shutdown"]

T = TypeVar("T")


class InFlight:
    """Tasks answering a request or streaming a response, so a stop can end each with an answer.

    A request or stream registers its task for as long as it runs (:meth:`tracking`). At the
    grace deadline the server calls :meth:`end_all`, which cancels each; the task sees a
    ``CancelledError``, asks the callable :meth:`tracking` gave it whether shutdown sent it,
    and if so un-cancels itself and answers ``shutting_down`` instead of being cut off.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[object]] = set()
        self._ended: set[asyncio.Task[object]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def tracking(self) -> _Tracking:
        """A context that registers the current task; it gives ``ended_by_shutdown()``."""
        return _Tracking(self._tasks, self._ended)

    def end_all(self) -> int:
        """Cancel every registered task (once each); returns how many."""
        ending = self._tasks - self._ended
        for task in ending:
            self._ended.add(task)
            task.cancel(msg="the server is shutting down")
        return len(ending)


class _Tracking:
    """:meth:`InFlight.tracking`'s context. A class rather than a ``@contextmanager``
    generator: every guarded request enters one, and the generator's machinery costs twice as
    much (measured: 1.3 against 0.64 µs)."""

    __slots__ = ("_ended", "_task", "_tasks")

    def __init__(self, tasks: set[asyncio.Task[object]], ended: set[asyncio.Task[object]]
                 ) -> None:
        self._tasks = tasks
        self._ended = ended
        self._task: asyncio.Task[object] | None = None

    def __enter__(self) -> Callable[[], bool]:
        task = asyncio.current_task()
        if task is None:  # not in a task: nothing to end, nothing ever ends it
            return _never
        self._task = task
        self._tasks.add(task)
        return self._ended_by_shutdown

    def _ended_by_shutdown(self) -> bool:
        return self._task in self._ended

    def __exit__(self, *exc_info: object) -> None:
        task = self._task
        if task is not None:
            self._tasks.discard(task)
            self._ended.discard(task)


def _never() -> bool:
    return False


async def ending_on_shutdown(in_flight: InFlight, work: Awaitable[T]) -> T:
    """Await ``work``; if the stop deadline ends it, raise :class:`ShuttingDown` (a 503).

    For work before a response starts (a non-streamed answer, an enforce-mode stream still
    buffering): the client gets the envelope instead of a dropped connection.
    """
    with in_flight.tracking() as ended_by_shutdown:
        try:
            return await work
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not ended_by_shutdown() or task is None:
                raise
            task.uncancel()
            raise ShuttingDown("the server is shutting down; retry the request") from None
