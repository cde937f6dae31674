"""The body deadline's arithmetic (``proxy.http.body_deadline``) and its settings.

Over the wire, the deadline is tested in tests/proxy/test_request_bodies.py; here, its rules as
properties over any pace a client may keep.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from proxy.http.body_deadline import MIN_CHECK_SECONDS, BodyDeadline
from proxy.runtime.settings import ServerSettings

TOTAL, RATE, WINDOW = 30.0, 1024, 5.0


def deadline() -> BodyDeadline:
    return BodyDeadline(total_seconds=TOTAL, min_rate=RATE, window_seconds=WINDOW)


def run(body: BodyDeadline, pace: list[tuple[float, int]]) -> tuple[float, str | None]:
    """Steps of ``(seconds, bytes)``: the bytes arrive, then the seconds pass, checked when the
    deadline asks. Returns when the body was late and why (None: it never was)."""
    now, due = 0.0, body.check(0.0)[1]
    for seconds, count in pace:
        body.received(count)
        end = now + seconds
        while due <= end:
            late, wait = body.check(due)
            if late is not None:
                return due, late
            due += wait
        now = end
    return now, None


@given(st.lists(st.tuples(st.floats(0.01, 1.0), st.integers(0, 10_000)), max_size=200))
def test_a_body_is_never_judged_after_the_total_deadline(pace: list[tuple[float, int]]) -> None:
    when, late = run(deadline(), pace)
    if late is not None:
        assert when <= TOTAL + MIN_CHECK_SECONDS


@given(st.lists(st.floats(0.01, 1.0), min_size=1, max_size=200))
def test_a_steady_body_is_late_only_at_the_total_deadline(steps: list[float]) -> None:
    # Twice the rate: a window can start just after a step's bytes came (up to 1 s early).
    pace = [(seconds, int(2 * RATE * seconds) + 1) for seconds in steps]
    when, late = run(deadline(), pace)
    if late is not None:
        assert when >= TOTAL and "within 30 s" in late


@given(st.floats(0, WINDOW - 0.01))
def test_the_first_window_is_an_allowance(waited: float) -> None:
    assert deadline().check(waited)[0] is None  # nothing arrived yet, and that is allowed


def test_a_body_that_stops_is_late_after_one_window() -> None:
    body = deadline()
    when, late = run(body, [(1.0, 10_000)] + [(1.0, 0)] * 20)
    assert late is not None and "slower than 1024 bytes a second" in late
    assert when <= 1.0 + 2 * WINDOW


def test_without_a_rate_only_the_total_counts() -> None:
    body = BodyDeadline(total_seconds=TOTAL, min_rate=0, window_seconds=WINDOW)
    when, late = run(body, [(1.0, 0)] * 40)
    assert late is not None and "within 30 s" in late and when == pytest.approx(TOTAL)


def test_a_rate_window_longer_than_the_deadline_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="body_rate_window_seconds"):
        ServerSettings(config=tmp_path / "c.yaml", body_timeout_seconds=3,
                       body_rate_window_seconds=5)
