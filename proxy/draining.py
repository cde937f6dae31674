"""The streams a stopping server must end cleanly: the tasks sending an SSE body right now."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["OpenStreams"]


class OpenStreams:
    """Tasks currently streaming a response, so shutdown can end each with an error event.

    A stream registers its task for as long as it runs (:meth:`tracking`). At the grace
    deadline the server calls :meth:`end_all`, which cancels each; the stream sees a
    ``CancelledError``, asks the callable :meth:`tracking` gave it whether shutdown sent it,
    and if so un-cancels itself and writes its closing events instead of being cut off.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[object]] = set()
        self._ended: set[asyncio.Task[object]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    @contextmanager
    def tracking(self) -> Iterator[Callable[[], bool]]:
        """Register the current task; yields ``ended_by_shutdown()``."""
        task = asyncio.current_task()
        if task is None:  # not in a task: nothing to end, nothing ever ends it
            yield lambda: False
            return
        self._tasks.add(task)
        try:
            yield lambda: task in self._ended
        finally:
            self._tasks.discard(task)
            self._ended.discard(task)

    def end_all(self) -> int:
        """Cancel every open stream (once each); returns how many."""
        ending = self._tasks - self._ended
        for task in ending:
            self._ended.add(task)
            task.cancel(msg="the server is shutting down")
        return len(ending)
