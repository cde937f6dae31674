"""The confidence-signal seam: what a signal is, what it is given, and how its calls are made.

A signal declares the features it yields (each with its :class:`ScoreKind`), may change the
main upstream request (:meth:`ConfidenceSignal.upstream_body`), may make extra model calls
through an injected :class:`ModelCaller`, and computes features for every choice of the response
(:meth:`ConfidenceSignal.measure`). Signals never talk HTTP: the gateway implements
:class:`ModelCaller` over its upstreams (:class:`proxy.signals.caller.UpstreamModelCaller`).

Every extra call goes through :class:`SignalCalls`, which bounds it by the signal's timeout and
records a :class:`SignalCall` (result, seconds, tokens) whatever happens; a failed call returns
``None`` and never raises, so a failing signal leaves its features missing.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Protocol, Self, TypeVar

from calibrators.signals import ScoreKind
from policies.confidence import SignalSettings
from proxy.errors import UpstreamTimeout
from proxy.wire.chat import ChatFormat
from proxy.wire.formats import WireFormat, answer_text, merged_calls
from proxy.wire.logprobs import TokenLogprob
from proxy.wire.schema import Endpoint

__all__ = [
    "Answer",
    "CallResult",
    "ConfidenceSignal",
    "ModelCaller",
    "SignalCall",
    "SignalCalls",
    "SignalRequest",
    "SignalUnavailable",
    "choice_text",
    "reply_choice",
]

Json = dict[str, Any]
Features = dict[str, float]
T = TypeVar("T")


class ModelCaller(Protocol):
    """A way for signals to call a configured model by its public name.

    Raises the gateway's upstream errors (:class:`proxy.errors.UpstreamError` and kin) on
    failure; :class:`SignalCalls` turns every failure into a recorded result.
    """

    async def complete(self, model: str, endpoint: Endpoint, body: Json) -> Json: ...


class CallResult(StrEnum):
    """How one extra call ended (the ``result`` label of ``basguard_signal_calls_total``)."""

    OK = "ok"
    TIMEOUT = "timeout"
    ERROR = "error"
    GARBAGE = "garbage"
    """The model answered, but nothing usable could be read from the reply."""


@dataclass(frozen=True, slots=True)
class SignalCall:
    """One extra call a signal made (or a signal's own failure, with ``model`` None)."""

    signal: str
    model: str | None
    result: CallResult
    seconds: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    detail: str | None = None
    """Why it failed, for logs and the decision's reason; never a secret (errors are sanitised)."""

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_json(self) -> Json:
        return {
            "signal": self.signal, "model": self.model, "result": self.result.value,
            "seconds": round(self.seconds, 6), "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }


class SignalUnavailable(Exception):
    """Raised by a signal that can yield no feature for this response; the message says why."""


@dataclass(frozen=True, slots=True)
class Answer:
    """One choice of the main response: its index, text and token logprobs (if any)."""

    index: int
    text: str
    tokens: Sequence[TokenLogprob] | None = None

    @classmethod
    def from_choice(cls, choice: Any, fmt: type[WireFormat], position: int = 0) -> Answer:
        """The answer of one response choice; a malformed choice has no text and no tokens."""
        if not isinstance(choice, dict):
            return cls(position, "")
        index = choice.get("index")
        try:
            tokens = fmt.tokens(choice)
        except (AttributeError, TypeError):  # logprobs of the wrong shape: none to read
            tokens = None
        return cls(
            index if isinstance(index, int) and not isinstance(index, bool) else position,
            choice_text(choice), tokens,
        )


@dataclass(frozen=True, slots=True)
class SignalRequest:
    """What the client asked: the main model, the endpoint's format, and the request body."""

    model: str
    """Public name of the model the request went to."""
    fmt: type[WireFormat]
    body: Json
    """The client's request (without the gateway's changes for logprobs)."""
    features: frozenset[str]
    """The features wanted: the calibrator's (or every one, when collecting)."""

    @property
    def question(self) -> str:
        return self.fmt.prompt_text(self.body)


def choice_text(choice: Any) -> str:
    """The text of a chat or legacy-completion choice ("" if it has none), with the tool calls
    of a chat choice (:func:`proxy.wire.formats.answer_text`)."""
    if not isinstance(choice, Mapping):
        return ""
    message = choice.get("message")
    if isinstance(message, Mapping):
        content = message.get("content")
        if (isinstance(content, str) and not message.get("tool_calls")
                and not message.get("function_call")):
            # Nearly every answer: plain text, no call to render (read for every guarded
            # choice, so without the copy and the walk over calls below).
            return content
        text = ""
        if isinstance(content, str):
            text = content
        elif isinstance(content, list):
            text = "\n".join(
                str(part.get("text", "")) for part in content
                if isinstance(part, Mapping) and part.get("type") == "text"
            )
        # A tool call's answer is its arguments (a forced call is structured output).
        return answer_text(text, merged_calls(ChatFormat.tool_call_pieces(dict(choice))))
    legacy = choice.get("text")
    return legacy if isinstance(legacy, str) else ""


def reply_choice(document: Json) -> Json | None:
    """The first choice of a reply, or None if the reply has no usable choice."""
    choices = document.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return choices[0]
    return None


def _usage(document: Any) -> tuple[int, int]:
    usage = document.get("usage") if isinstance(document, Mapping) else None
    if not isinstance(usage, Mapping):
        return 0, 0

    def count(key: str) -> int:
        value = usage.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

    return count("prompt_tokens"), count("completion_tokens")


class SignalCalls:
    """One signal's extra calls for one request: each bounded, each recorded, none raising."""

    def __init__(
        self, signal: str, caller: ModelCaller, timeout_seconds: float, log: list[SignalCall]
    ) -> None:
        self.signal = signal
        self._caller = caller
        self._timeout = timeout_seconds
        self._log = log

    def record(self, call: SignalCall) -> None:
        self._log.append(call)

    async def call(
        self, model: str, endpoint: Endpoint, body: Json, read: Callable[[Json], T | None]
    ) -> T | None:
        """Call ``model`` and ``read`` its reply; None if the call failed or ``read`` found nothing.

        ``read`` returns None (or raises ValueError, TypeError, KeyError, IndexError or
        AttributeError) when the reply holds nothing usable: recorded as garbage.
        """
        started = time.perf_counter()
        try:
            document = await asyncio.wait_for(
                self._caller.complete(model, endpoint, body), self._timeout
            )
        except asyncio.CancelledError:
            # The signal's own deadline (or the request's end) stopped it: it ran out of time.
            self._finish(model, CallResult.TIMEOUT, started, (0, 0), "cancelled")
            raise
        except (TimeoutError, UpstreamTimeout) as exc:
            self._finish(model, CallResult.TIMEOUT, started, (0, 0), str(exc) or "timed out")
            return None
        except Exception as exc:  # any failure of the call leaves the features missing
            self._finish(model, CallResult.ERROR, started, (0, 0), str(exc) or type(exc).__name__)
            return None
        tokens = _usage(document)
        try:
            value = read(document) if isinstance(document, dict) else None
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            self._finish(model, CallResult.GARBAGE, started, tokens, f"unreadable reply: {exc}")
            return None
        if value is None:
            self._finish(model, CallResult.GARBAGE, started, tokens, "nothing usable in the reply")
            return None
        self._finish(model, CallResult.OK, started, tokens, None)
        return value

    def _finish(
        self, model: str, result: CallResult, started: float, tokens: tuple[int, int],
        detail: str | None,
    ) -> None:
        self.record(SignalCall(
            self.signal, model, result, time.perf_counter() - started, tokens[0], tokens[1],
            detail,
        ))


class ConfidenceSignal(ABC):
    """One way of measuring confidence; subclasses are registered in :mod:`proxy.signals.registry`.

    ``__init__`` stores the settings; :meth:`from_settings` builds a signal from a tenant's
    :class:`~policies.confidence.SignalSettings`.
    """

    #: The signal's name in the config and in metrics.
    name: ClassVar[str]
    #: Every feature the signal can yield, with its kind.
    feature_kinds: ClassVar[Mapping[str, ScoreKind]]
    #: For features only some settings yield: when (for config errors).
    feature_conditions: ClassVar[Mapping[str, str]] = {}
    #: Whether the signal makes no calls and computes its features at once
    #: (:meth:`features_now`), so running it needs no task of its own.
    immediate: ClassVar[bool] = False

    def __init__(self, *, timeout_seconds: float) -> None:
        self.timeout_seconds = timeout_seconds

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: SignalSettings) -> Self:
        """The signal configured by a tenant's (or a model's) settings."""

    @property
    def features(self) -> frozenset[str]:
        """The features this configured signal yields (a subset of :attr:`feature_kinds`)."""
        return frozenset(self.feature_kinds)

    @property
    @abstractmethod
    def uncalibrated_feature(self) -> str:
        """The feature read as P(correct) when no calibrator is fitted (a probability)."""

    def extra_calls(self, choices: int = 1) -> int:
        """How many extra upstream calls it makes for a response of ``choices`` choices."""
        return 0

    def upstream_body(self, body: Json, fmt: type[WireFormat], wanted: frozenset[str]) -> Json:
        """The main request with what this signal needs (a new dict; ``body`` is not changed)."""
        return body

    def features_now(self, request: SignalRequest, answers: Sequence[Answer]) -> list[Features]:
        """Features per answer, computed at once (only for :attr:`immediate` signals)."""
        raise NotImplementedError(f"the {self.name} signal makes calls; use measure()")

    @abstractmethod
    async def measure(
        self,
        request: SignalRequest,
        answers: Awaitable[Sequence[Answer]],
        calls: SignalCalls,
    ) -> list[Features]:
        """Features per answer, in the order of ``answers``.

        ``answers`` resolves when the main response is complete; calls that need only the
        request (consistency's samples) may start before awaiting it. An empty dict leaves that
        answer's features missing; :class:`SignalUnavailable` leaves every answer's missing.
        """
