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
from proxy.runtime.state import RuntimeState, build_runtime, file_signature

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
        _log_warnings(self._current)

    @property
    def current(self) -> RuntimeState:
        return self._current

    def reload(self) -> ReloadResult:
        """Build a new state from the files; keep the old one if that fails, however it fails."""
        with self._lock:
            try:
                state = self._build(self._path)
            except PolicyError as exc:
                result = ReloadResult(False, str(exc))
                logger.error("config reload rejected; the previous config stays in force:\n%s", exc)
            except Exception as exc:
                # A bug, or an input the loader does not turn into a PolicyError yet. Raising
                # would end the watcher, and no later edit (a revoked key) would ever apply.
                result = ReloadResult(False, f"{type(exc).__name__}: {exc}")
                logger.exception("config reload failed unexpectedly; the previous config stays "
                                 "in force")
            else:
                self._current = state  # one reference assignment: atomic for readers
                result = ReloadResult(True)
                logger.info("config reloaded from %s", self._path)
                _log_warnings(state)
        if self._on_reload is not None:
            try:
                self._on_reload(result)
            except Exception:
                logger.exception("recording a config reload failed")
        return result

    def changed(self) -> bool:
        """Whether any watched file differs from when the current state was built."""
        state = self._current
        return file_signature(state.watched_files) != state.signature

    async def watch(self, interval_seconds: float) -> None:
        """Reload whenever a watched file changes; runs until cancelled.

        Never raises anything but :class:`asyncio.CancelledError`: an error is logged and the
        next interval tries again, so the watcher cannot die silently and its cancellation at
        shutdown cannot fail.
        """
        last_failed: tuple[object, ...] | None = None
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                last_failed = await self._reload_if_changed(last_failed)
            except Exception:
                logger.exception("checking the config files for changes failed; retrying")

    async def _reload_if_changed(
        self, last_failed: tuple[object, ...] | None
    ) -> tuple[object, ...] | None:
        """Reload if a watched file changed; returns the signature of a rejected version."""
        if not self.changed():
            return last_failed
        # Retry a rejected file only once it changes again, not every interval.
        now = file_signature(self._current.watched_files)
        if now == last_failed:
            return last_failed
        result = await asyncio.to_thread(self.reload)
        return None if result.applied else now

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


def _log_warnings(state: RuntimeState) -> None:
    """What the config loaded but deserves a look (a risk limit that answers nothing)."""
    for warning in state.warnings:
        logger.warning("%s: %s", state.path, warning)
