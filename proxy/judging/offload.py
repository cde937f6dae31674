"""Large non-streamed replies parsed, judged and encoded in a worker process.

orjson holds the GIL while it parses or encodes, so a worker thread cannot keep a reply of
several MiB from pausing the event loop (about 0.1 s per MiB of logprob-dense JSON, measured by
``benchmarks/bench_large_reply.py``). Replies above ``offload_reply_bytes`` go to a small process
pool instead: the raw body and the picklable decision inputs
(:class:`~proxy.judging.replies.ReplyJudging` for chat and completions,
:class:`~proxy.judging.responses.ResponseJudging` for the Responses API) go in, the encoded
body (without its ``basguard`` member, which the caller appends) and the decisions come out.
The event loop only copies bytes.

- The pool starts with the first large reply (nothing is spent on a server that never gets
  one) from ``spawn``: a fresh interpreter, never a fork of a process running an event loop and
  threads. Its processes ignore SIGINT and SIGTERM, so a stop signalled to the whole process
  group still drains; the server shuts the pool down after it has drained (:meth:`aclose`), and a
  pool process whose server died reads end-of-file and exits.
- A pool process that dies (killed, out of memory) fails the replies it had in hand with a
  logged, counted 500 (:class:`concurrent.futures.process.BrokenProcessPool` reaches the failure
  boundary): the reply that killed it is not retried in the server's own process, which it could
  kill too. A new pool takes the next large reply; a reply that finds the pool already broken
  (its process died idle) goes to the new pool at once.
- The spawned processes import the server's main module, as ``spawn`` always does: ``basguard
  serve`` and ``python -m proxy.cli`` are safe; a script that builds the app itself must guard
  its start with ``if __name__ == "__main__":``.
- A client that goes away cancels its job if it is still waiting here (the pool hands its
  processes' queue a job or two ahead); a job handed over runs to its end (bounded by
  ``max_response_bytes``) and its result is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from proxy.judging.decision import ChoiceOutcome
from proxy.judging.replies import ReplyJudging
from proxy.judging.responses import ResponseJudging
from proxy.signals.base import Answer
from proxy.upstream.failures import invalid_json
from proxy.wire.formats import WireFormat
from proxy.wire.responses import ResponseAnswer, ResponsesFormat, answer_of

__all__ = [
    "JudgedReply",
    "JudgedResponse",
    "ReplyOffload",
    "judge_reply",
    "judge_response",
    "read_answers",
    "read_response_answer",
    "with_member",
]

logger = logging.getLogger("basguard")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class JudgedReply:
    """What :func:`judge_reply` sends back: small decisions and one bytes object."""

    outcomes: list[ChoiceOutcome]
    abstained: dict[int, str]
    encoded: bytes
    """The edited reply, encoded, without a ``basguard`` member."""


@dataclass(frozen=True, slots=True)
class JudgedResponse:
    """What :func:`judge_response` sends back: the decision and one bytes object."""

    outcome: ChoiceOutcome
    abstained: dict[int, str]
    encoded: bytes
    """The edited response, encoded, without a ``basguard`` member."""


def _parsed(raw: bytes, model: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        # Not chained: orjson's error holds the whole document, and would travel back with it.
        raise invalid_json(model) from None


def _choices(
    raw: bytes, fmt: type[WireFormat], model: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    document = _parsed(raw, model)
    return document, fmt.check_reply(document, model)


def read_answers(raw: bytes, fmt: type[WireFormat], model: str) -> list[Answer]:
    """The answers' indices and texts, for the signals that make calls (which read only
    those); the token logprobs stay here, where the judgement computes their features."""
    _, choices = _choices(raw, fmt, model)
    answers = (Answer.from_choice(choice, fmt, i) for i, choice in enumerate(choices))
    return [Answer(answer.index, answer.text) for answer in answers]


def judge_reply(raw: bytes, judging: ReplyJudging) -> JudgedReply:
    """Parse, judge and encode a reply exactly as the serving process would for a small one."""
    document, choices = _choices(raw, judging.fmt, judging.model)
    outcomes, abstained = judging.judge(choices)
    # The caller adds the decision last, as setting the key on the document would (an
    # upstream's own member of that name is replaced either way).
    document.pop("basguard", None)
    return JudgedReply(outcomes, abstained, orjson.dumps(document))


def read_response_answer(raw: bytes, model: str) -> ResponseAnswer:
    """A Responses reply's text and whether it calls tools, for the signals that make calls
    (which read only those); the token logprobs stay here, where the judgement reads them."""
    whole = answer_of(ResponsesFormat.check_response(_parsed(raw, model), model))
    answer = ResponseAnswer()
    answer.add_text(0, 0, whole.text, None)
    answer.calls_tools = whole.calls_tools
    return answer


def judge_response(raw: bytes, judging: ResponseJudging) -> JudgedResponse:
    """Parse, judge and encode a Responses reply exactly as the serving process would for a
    small one (:meth:`ResponseJudging.judge`)."""
    document = ResponsesFormat.check_response(_parsed(raw, judging.model), judging.model)
    outcome, abstained = judging.judge(document)
    return JudgedResponse(outcome, abstained, orjson.dumps(document))


def _ignore_stop_signals() -> None:
    # A stop signalled to the whole process group (a terminal's Ctrl-C, systemd) must not kill
    # the pool under a server that is still draining; the server shuts it down when done.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class ReplyOffload:
    """A lazily started pool of ``processes`` processes for replies above ``min_bytes``."""

    def __init__(self, *, processes: int, min_bytes: int) -> None:
        if processes < 1:
            raise ValueError("the reply offload needs at least one process")
        self.processes = processes
        self.min_bytes = min_bytes
        self._pool: ProcessPoolExecutor | None = None
        self._closed = False

    def takes(self, size: int) -> bool:
        """Whether a reply of ``size`` bytes goes to the pool."""
        return size > self.min_bytes and not self._closed

    async def answers(self, raw: bytes, fmt: type[WireFormat], model: str) -> list[Answer]:
        """:func:`read_answers` in the pool."""
        return await self.run(read_answers, raw, fmt, model)

    async def judge(self, raw: bytes, judging: ReplyJudging) -> JudgedReply:
        """:func:`judge_reply` in the pool; raises what it raises (an upstream's malformed
        reply: :class:`~proxy.errors.UpstreamInvalidResponse`, as parsing here would)."""
        return await self.run(judge_reply, raw, judging)

    async def response_answer(self, raw: bytes, model: str) -> ResponseAnswer:
        """:func:`read_response_answer` in the pool."""
        return await self.run(read_response_answer, raw, model)

    async def judge_response(self, raw: bytes, judging: ResponseJudging) -> JudgedResponse:
        """:func:`judge_response` in the pool; raises what it raises, as :meth:`judge` does."""
        return await self.run(judge_response, raw, judging)

    async def run(self, job: Callable[..., T], *args: Any) -> T:
        """``job(*args)`` in the pool (a top-level function, picklable arguments)."""
        pool = self._current()
        try:
            submitted = pool.submit(job, *args)
        except BrokenProcessPool:
            # It broke before this job (a process died idle): a new pool takes the job.
            self._discard(pool)
            pool = self._current()
            submitted = pool.submit(job, *args)
        try:
            # Pickling the arguments and unpickling the result happen in the pool's own
            # threads; this task only waits. Cancelling it cancels a job not yet started.
            return await asyncio.wrap_future(submitted)
        except BrokenProcessPool:
            # This job may be what killed the process: it is not retried here, where it
            # could take the server down with it.
            self._discard(pool)
            raise

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        if self._pool is pool:
            self._pool = None
            logger.error("a reply offload process died; the replies it held fail with 500, "
                         "and a new pool takes the next large reply")
        pool.shutdown(wait=False, cancel_futures=True)

    def _current(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.processes, mp_context=multiprocessing.get_context("spawn"),
                initializer=_ignore_stop_signals,
            )
        return self._pool

    async def aclose(self) -> None:
        """Stop the pool, after the jobs in hand (the server has drained its requests)."""
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)


def with_member(encoded: bytes, key: str, value: Any) -> bytes:
    """``encoded`` (a non-empty JSON object without ``key``) with ``key: value`` added last:
    what setting the key on the parsed object and encoding it gives, at the cost of a copy."""
    return b"".join((memoryview(encoded)[:-1], b",", orjson.dumps(key), b":",
                     orjson.dumps(value), b"}"))
