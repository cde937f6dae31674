"""Running a request's signals: started with (or after) the main request, finished with its answers.

:meth:`SignalRun.start` starts every signal at once as its own task; signals whose calls need
only the request (consistency's samples, verbalized top-k) begin them at once, the others wait
for the answers. :meth:`SignalRun.finish` hands over the answers and returns a
:class:`SignalOutcome`: features per answer, every extra call made, and why any signal yielded
nothing. Nothing a signal does raises to the caller; a signal that is still running its
``timeout_seconds`` (plus a short grace, so the calls' own timeouts fire first) after the answers
arrived is cancelled and recorded as a timeout.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from proxy.signals.base import (
    Answer,
    CallResult,
    ConfidenceSignal,
    Features,
    ModelCaller,
    SignalCall,
    SignalCalls,
    SignalRequest,
    SignalUnavailable,
)
from proxy.signals.registry import FEATURE_SIGNALS

__all__ = ["SignalOutcome", "SignalRun", "measure_now", "measure_signals"]

#: Added to a signal's timeout for its whole run, so a call's own timeout is what fires.
DEADLINE_GRACE_SECONDS = 0.5


@dataclass(frozen=True)
class SignalOutcome:
    """What a request's signals found, and what it cost."""

    features: tuple[Features, ...]
    """Per answer (in the order given to :meth:`SignalRun.finish`), every signal's features."""
    calls: tuple[SignalCall, ...]
    """Every extra call, and every signal that failed on its own (``model`` None)."""
    unavailable: Mapping[str, str] = field(default_factory=dict)
    """Signal name to why it yielded no feature at all."""
    seconds: float = 0.0
    """Time from the answers' arrival to the last signal's end: the latency signals added."""

    @property
    def extra_calls(self) -> int:
        return sum(1 for call in self.calls if call.model is not None)

    @property
    def extra_tokens(self) -> int:
        return sum(call.tokens for call in self.calls)

    def merged(self, other: SignalOutcome) -> SignalOutcome:
        """Both outcomes' features (per answer), calls and reasons, as one; this one's seconds.

        For the same answers measured in two parts (the gateway computes immediate signals apart
        from a run, so a large reply's can go to a worker thread).
        """
        features = tuple({**mine, **theirs}
                         for mine, theirs in zip(self.features, other.features, strict=True))
        return SignalOutcome(features, self.calls + other.calls,
                             {**self.unavailable, **other.unavailable}, self.seconds)

    def missing_reason(self, index: int, feature_names: Iterable[str]) -> str | None:
        """Why answer ``index`` (a position) lacks some of ``feature_names``; None if it has all."""
        missing = [name for name in feature_names if name not in self.features[index]]
        if not missing:
            return None
        reasons = []
        for name in missing:
            signal = FEATURE_SIGNALS.get(name, "no signal")
            reasons.append(f"{name} ({signal}: {self._why(signal)})")
        return "missing confidence features: " + "; ".join(reasons)

    def _why(self, signal: str) -> str:
        if signal in self.unavailable:
            return self.unavailable[signal]
        failed = Counter(c.result.value for c in self.calls
                         if c.signal == signal and c.result is not CallResult.OK)
        if not failed:
            return "not run for this answer"
        return "calls that failed: " + ", ".join(f"{n} {r}" for r, n in sorted(failed.items()))


class SignalRun:
    """One request's signals in flight. Create it inside the event loop that serves the request.

    Every run must end in :meth:`finish` or :meth:`cancel`; ``async with SignalRun.start(...)``
    cancels whatever is left on the way out.
    """

    def __init__(
        self, signals: Sequence[ConfidenceSignal], request: SignalRequest, caller: ModelCaller
    ) -> None:
        self._signals = tuple(signals)
        self._answers: asyncio.Future[tuple[Answer, ...]] = (
            asyncio.get_running_loop().create_future()
        )
        self._log: list[SignalCall] = []
        self._unavailable: dict[str, str] = {}
        self._request = request
        # Signals without calls are computed in finish(): a task each would cost more than
        # their features (benchmarks/bench_signals.py).
        self._tasks = {
            signal.name: asyncio.ensure_future(self._measure(signal, request, caller))
            for signal in self._signals if not signal.immediate
        }

    @classmethod
    def start(
        cls, signals: Sequence[ConfidenceSignal], request: SignalRequest, caller: ModelCaller
    ) -> SignalRun:
        """Start every signal now; those that need the answers wait for :meth:`finish`."""
        return cls(signals, request, caller)

    async def _measure(
        self, signal: ConfidenceSignal, request: SignalRequest, caller: ModelCaller
    ) -> list[Features]:
        calls = SignalCalls(signal.name, caller, signal.timeout_seconds, self._log)
        # Shielded: one signal's cancellation must not cancel the answers for the others.
        return await signal.measure(request, asyncio.shield(self._answers), calls)

    async def finish(self, answers: Sequence[Answer]) -> SignalOutcome:
        """Hand over the complete answers and collect every signal's features. Never raises."""
        answered = tuple(answers)
        started = time.perf_counter()
        if not self._answers.done():
            self._answers.set_result(answered)
        results = [self._now(signal, answered, started)
                   for signal in self._signals if signal.immediate]
        if self._tasks:
            try:
                results += await asyncio.gather(*(
                    self._collect(signal, started)
                    for signal in self._signals if not signal.immediate
                ))
            except BaseException:
                await self.cancel()
                raise
        features: list[Features] = [{} for _ in answered]
        for per_answer in results:
            if per_answer is None:
                continue
            for merged, found in zip(features, per_answer, strict=False):
                merged.update(found)
        return SignalOutcome(
            tuple(features), tuple(self._log), dict(self._unavailable),
            time.perf_counter() - started,
        )

    def _now(
        self, signal: ConfidenceSignal, answers: Sequence[Answer], started: float
    ) -> list[Features] | None:
        return _features_now(signal, self._request, answers, started, self._log,
                             self._unavailable)

    async def _collect(self, signal: ConfidenceSignal, started: float) -> list[Features] | None:
        task = self._tasks[signal.name]
        limit = signal.timeout_seconds + DEADLINE_GRACE_SECONDS
        done, _ = await asyncio.wait({task}, timeout=limit)
        if not done:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            self._fail(signal, CallResult.TIMEOUT, started, f"ran past its {limit:g} s deadline")
            return None
        if task.cancelled():
            self._fail(signal, CallResult.ERROR, started, "cancelled")
            return None
        exc = task.exception()
        if isinstance(exc, SignalUnavailable):
            self._unavailable[signal.name] = str(exc)
            return None
        if exc is not None:
            # A bug in a signal must cost its features, never the response.
            self._fail(signal, CallResult.ERROR, started, f"{type(exc).__name__}: {exc}")
            return None
        return [_checked(signal, found) for found in task.result()]

    def _fail(self, signal: ConfidenceSignal, result: CallResult, started: float, why: str) -> None:
        _fail(signal, result, started, why, self._log, self._unavailable)

    async def __aenter__(self) -> SignalRun:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # A run left without finish() (the main request failed) would wait for answers forever.
        await self.cancel()

    async def cancel(self) -> None:
        """Stop every signal (the main request failed or the client went away); idempotent."""
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)


def _checked(signal: ConfidenceSignal, found: Features) -> Features:
    # Only the features the signal declares, as finite floats: a calibrator never sees junk.
    # A float (nearly every value) is told apart with one type test; an int, a float subclass
    # or anything else takes the whole check.
    kinds = signal.feature_kinds
    isfinite = math.isfinite
    return {
        name: value if type(value) is float else float(value)
        for name, value in found.items()
        if name in kinds and (type(value) is float or _real_number(value)) and isfinite(value)
    }


def _real_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _fail(
    signal: ConfidenceSignal, result: CallResult, started: float, why: str,
    log: list[SignalCall], unavailable: dict[str, str],
) -> None:
    log.append(SignalCall(signal.name, None, result, time.perf_counter() - started, detail=why))
    unavailable[signal.name] = why


def _features_now(
    signal: ConfidenceSignal, request: SignalRequest, answers: Sequence[Answer], started: float,
    log: list[SignalCall], unavailable: dict[str, str],
) -> list[Features] | None:
    try:
        per_answer = signal.features_now(request, answers)
    except SignalUnavailable as exc:
        unavailable[signal.name] = str(exc)
        return None
    except Exception as exc:  # a bug in a signal must cost its features, never the response
        _fail(signal, CallResult.ERROR, started, f"{type(exc).__name__}: {exc}", log, unavailable)
        return None
    return [_checked(signal, found) for found in per_answer]


def measure_now(
    signals: Sequence[ConfidenceSignal], request: SignalRequest, answers: Sequence[Answer]
) -> SignalOutcome:
    """Run signals that make no calls (all :attr:`~ConfidenceSignal.immediate`) synchronously.

    Needs no event loop, so the gateway can compute a large reply's features in a worker
    thread, as it did before signals existed. Never raises.
    """
    if not all(signal.immediate for signal in signals):
        raise ValueError("measure_now runs immediate signals only; use SignalRun")
    started = time.perf_counter()
    log: list[SignalCall] = []
    unavailable: dict[str, str] = {}
    features: list[Features] = [{} for _ in answers]
    for signal in signals:
        found = _features_now(signal, request, answers, started, log, unavailable)
        for merged, more in zip(features, found or (), strict=False):
            merged.update(more)
    return SignalOutcome(tuple(features), tuple(log), unavailable, time.perf_counter() - started)


async def measure_signals(
    signals: Sequence[ConfidenceSignal], request: SignalRequest, answers: Sequence[Answer],
    caller: ModelCaller,
) -> SignalOutcome:
    """Run ``signals`` after the answers are complete (start and finish at once)."""
    return await SignalRun.start(signals, request, caller).finish(answers)
