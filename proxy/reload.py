"""Hot reload: a new valid config replaces the old one atomically; an invalid one is refused.

Reloads are triggered by a change to the config file or any calibrator artifact it references
(polled: a stat per file per interval costs nothing and needs no platform-specific watcher) and
by SIGHUP. Requests read :attr:`ConfigStore.current` once, so a request in flight finishes on
the state it started with.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from policies.loader import PolicyError

from .runtime import RuntimeState, build_runtime, file_signature

__all__ = ["ConfigStore", "ReloadResult"]

logger = logging.getLogger("basguard.reload")


@dataclass(frozen=True)
class ReloadResult:
    """What a reload attempt did."""

    applied: bool
    error: str | None = None


class ConfigStore:
    """Holds the current :class:`RuntimeState` and replaces it on reload."""

    def __init__(
        self,
        path: Path,
        *,
        build: Callable[[Path], RuntimeState] = build_runtime,
        on_reload: Callable[[ReloadResult], None] | None = None,
    ) -> None:
        self._path = path
        self._build = build
        self._on_reload = on_reload
        self._lock = threading.Lock()
        # The first load is not caught: a bad config must fail the start.
        self._current = build(path)

    @property
    def current(self) -> RuntimeState:
        return self._current

    def reload(self) -> ReloadResult:
        """Build a new state from the files; keep the old one if that fails."""
        with self._lock:
            try:
                state = self._build(self._path)
            except PolicyError as exc:
                result = ReloadResult(False, str(exc))
                logger.error("config reload rejected; the previous config stays in force:\n%s", exc)
            else:
                self._current = state  # one reference assignment: atomic for readers
                result = ReloadResult(True)
                logger.info("config reloaded from %s", self._path)
        if self._on_reload is not None:
            self._on_reload(result)
        return result

    def changed(self) -> bool:
        """Whether any watched file differs from when the current state was built."""
        state = self._current
        return file_signature(state.watched_files) != state.signature

    async def watch(self, interval_seconds: float) -> None:
        """Reload whenever a watched file changes; runs until cancelled."""
        last_failed: tuple[object, ...] | None = None
        while True:
            await asyncio.sleep(interval_seconds)
            if not self.changed():
                continue
            # Retry a rejected file only once it changes again, not every interval.
            now = file_signature(self._current.watched_files)
            if now == last_failed:
                continue
            result = await asyncio.to_thread(self.reload)
            last_failed = None if result.applied else now

    def install_sighup(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Reload on SIGHUP (main thread only; returns whether it was installed)."""
        if threading.current_thread() is not threading.main_thread():
            return False
        try:
            loop.add_signal_handler(
                signal.SIGHUP, lambda: loop.run_in_executor(None, self.reload)
            )
        except (NotImplementedError, RuntimeError, AttributeError):
            return False
        return True
