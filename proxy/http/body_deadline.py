"""When a request body is too slow: a total deadline and a minimum rate, as plain arithmetic.

The HTTP protocol (:mod:`proxy.http.protocol`) feeds it the bytes that arrive and asks, at the
times it names, whether the body is late. Time is the client's: seconds in which the server was
reading. The protocol leaves out the time it paused reading itself (a request whose app is
busy with the upstream), so a fast client behind a slow upstream is never blamed.
"""

from __future__ import annotations

__all__ = ["BodyDeadline"]

#: The shortest wait between two checks: a check due "now" still lets the loop run first.
MIN_CHECK_SECONDS = 0.01


class BodyDeadline:
    """A body's deadline: whole within ``total_seconds``, and at least ``min_rate`` bytes a
    second over each ``window_seconds`` of waiting (``min_rate`` 0: no rate check).

    The first window is the allowance every body starts with: its rate is first judged once
    ``window_seconds`` have passed.
    """

    def __init__(self, *, total_seconds: float, min_rate: int, window_seconds: float) -> None:
        self.total_seconds = total_seconds
        self.min_rate = min_rate
        self.window_seconds = window_seconds
        self._window_started = 0.0
        self._window_bytes = 0

    def received(self, count: int) -> None:
        """``count`` more bytes of the body arrived."""
        self._window_bytes += count

    def check(self, waited: float) -> tuple[str | None, float]:
        """After ``waited`` seconds of waiting on the client: why the body is too slow (or None),
        and how many more seconds of waiting until the next check."""
        if waited >= self.total_seconds:
            return f"the request body did not arrive within {self.total_seconds:g} s", 0.0
        next_check = self.total_seconds - waited
        if self.min_rate:
            window = waited - self._window_started
            if window >= self.window_seconds:
                if self._window_bytes < self.min_rate * window:
                    return (f"the request body arrived slower than {self.min_rate} bytes a "
                            f"second (over {window:.1f} s)"), 0.0
                self._window_started, self._window_bytes, window = waited, 0, 0.0
            next_check = min(next_check, self.window_seconds - window)
        return None, max(next_check, MIN_CHECK_SECONDS)
