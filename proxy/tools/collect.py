"""``basguard collect``: labelled calibration records from real traffic through basguard.

Each question goes through basguard's own completion service in ``shadow`` mode, so the features
recorded are exactly the ones the gateway computes when it serves; the answer is graded against
the accepted answers. The records feed ``basguard calibrate fit``: collect, fit, serve.
"""

from __future__ import annotations

import asyncio
import collections
import csv
import itertools
import os
import sys
from collections.abc import AsyncGenerator, Iterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from tqdm import tqdm

from calibrators.errors import DataError
from calibrators.json_lines import json_objects
from policies.confidence import SignalSettings
from proxy.errors import ConfidenceUnavailable, GatewayError, UpstreamError, UpstreamRejected
from proxy.judging.decision import signals_json
from proxy.judging.stream_gate import prefix_features
from proxy.runtime.state import UNCALIBRATED, RuntimeState, TenantRuntime, build_runtime
from proxy.services.completions import GuardedCompletions
from proxy.signals.base import CallResult
from proxy.signals.grading import is_correct, is_correct_choice, parse_options
from proxy.signals.registry import plan_signals
from proxy.signals.runner import SignalOutcome
from proxy.upstream.registry import UpstreamPool
from proxy.usage import UsageError
from proxy.wire.chat import ChatFormat

__all__ = ["Collected", "Question", "collect_records", "failed_questions_path", "read_questions"]

SYSTEM_PROMPT = "Answer the question with a short phrase only, no explanation."
CHOICE_PROMPT = "Answer with the letter of the correct option only."
COLLECTOR = TenantRuntime(
    name="collect",
    mode="shadow",
    threshold=0.5,
    wrong_answer_cost=1.0,
    abstain_cost=0.0,
    abstention_message="",
    abstain_action="message",
    on_missing_confidence="answer",
    default_calibrator=UNCALIBRATED,
)


@dataclass(frozen=True)
class Question:
    """A question and the answers that count as correct.

    A multiple-choice question lists its ``options`` (``{"a": text, ...}``) and has one answer,
    the correct option's letter.
    """

    id: str
    question: str
    answers: tuple[str, ...]
    options: dict[str, str] = field(default_factory=dict)

    def is_correct(self, response: str) -> bool:
        if self.options:
            return is_correct_choice(response, self.answers[0], self.options)
        return is_correct(response, self.answers)


@dataclass(frozen=True)
class Collected:
    """What ``collect`` wrote: records, how many were correct, answers skipped, questions failed."""

    written: int
    correct: int
    skipped: int
    """Answers without logprobs, so without confidence features: no record."""
    failed: int = 0
    """Questions the upstream never answered (an error or a timeout on every attempt)."""
    failed_path: Path | None = None
    """Where the failed questions were written, as a questions file to retry; None if none."""


@dataclass(frozen=True)
class _Failed:
    """A question every attempt at which failed, and the last error."""

    question: Question
    error: str


_Outcome = dict[str, Any] | _Failed | None
"""A question's outcome: its record, None (an answer without logprobs), or its failure."""

#: How much of a failed signal call's detail a record keeps.
_DETAIL_CHARS = 160


def failed_questions_path(out: Path) -> Path:
    """Where ``collect`` lists the questions that failed: ``OUT.failed.jsonl``."""
    return out.with_name(out.name + ".failed.jsonl")


def read_questions(path: Path) -> Iterator[Question]:
    """Questions from JSON Lines (``{"id", "question", "answers": [...]}``) or CSV.

    JSON Lines may give ``"answer"`` (one string) for ``"answers"``. CSV has a header row with
    ``question`` (or ``prompt``), ``answer`` and optionally ``id`` columns, in any letter case:
    the layout of the shipped TriviaQA and MMLU sets. A question whose text lists options
    ``a)``, ``b)``, ... on their own lines and whose answer is one of their letters is graded as
    multiple choice.
    """
    if path.suffix.lower() == ".csv":
        yield from _read_csv_questions(path)
        return
    for number, record in json_objects(path):
        if not isinstance(record.get("question"), str):
            raise DataError(path, "each line needs a string field 'question'", line=number)
        answers = record.get("answers", record.get("answer"))
        if isinstance(answers, str):
            answers = [answers]
        if not isinstance(answers, list) or not answers or not all(
            isinstance(a, str) for a in answers
        ):
            raise DataError(path, "'answers' must be a non-empty list of strings", line=number)
        yield _question(str(record.get("id", number)), record["question"], tuple(answers))


def _question(qid: str, text: str, answers: tuple[str, ...]) -> Question:
    options = parse_options(text)
    if options and len(answers) == 1 and answers[0].strip().lower() in options:
        return Question(qid, text, answers, options)
    return Question(qid, text, answers)


def _read_csv_questions(path: Path) -> Iterator[Question]:
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise DataError(path, f"cannot read the file: {exc.strerror or exc}") from exc
    with handle:
        reader = csv.reader(handle, strict=True)
        try:
            header = [name.strip().lower() for name in next(reader, [])]
            text_column = next((header.index(n) for n in ("question", "prompt") if n in header),
                               None)
            answer_column = next((header.index(n) for n in ("answer", "answers") if n in header),
                                 None)
            if text_column is None or answer_column is None:
                raise DataError(path, "the header needs a 'question' (or 'prompt') and an "
                                "'answer' column", line=1)
            id_column = header.index("id") if "id" in header else None
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                line = reader.line_num  # a quoted prompt may span lines: where the row ends
                if len(row) != len(header):
                    raise DataError(path, f"{len(row)} fields, the header has {len(header)}",
                                    line=line)
                text, answer = row[text_column], row[answer_column].strip()
                if not text.strip() or not answer:
                    raise DataError(path, "empty question or answer", line=line)
                qid = row[id_column] if id_column is not None else str(line)
                yield _question(qid, text, (answer,))
        except (csv.Error, UnicodeDecodeError) as exc:
            raise DataError(path, f"malformed CSV: {exc}", line=reader.line_num) from None


def _worth_retrying(error: GatewayError) -> bool:
    # Timeouts, rate limits, 5xx and unreachable upstreams pass; the upstream refusing the
    # request itself (4xx) or answering without logprobs would fail the same way again.
    return isinstance(error, UpstreamError) and not isinstance(
        error, UpstreamRejected | ConfidenceUnavailable)


@dataclass(frozen=True)
class _Asker:
    """How ``collect`` asks each question: through the service, as the collector, with retries."""

    service: GuardedCompletions
    state: RuntimeState
    collector: TenantRuntime
    model: str
    max_tokens: int
    retries: int
    retry_delay: float
    prefix_tokens: Sequence[int] = ()

    async def ask(self, question: Question) -> _Outcome:
        """A record, None (no logprobs), or the question as failed after ``1 + retries`` tries."""
        for attempt in range(self.retries + 1):
            try:
                return await self._ask_once(question)
            except GatewayError as exc:
                if attempt == self.retries or not _worth_retrying(exc):
                    tries = f" ({attempt + 1} tries)" if attempt else ""
                    return _Failed(question, f"{exc}{tries}")
            # Doubling waits give a rate-limited or restarting upstream time to recover.
            await asyncio.sleep(self.retry_delay * 2**attempt)
        raise AssertionError("unreachable: the last attempt returns")

    async def _ask_once(self, question: Question) -> dict[str, Any] | None:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {"role": "system",
                 "content": CHOICE_PROMPT if question.options else SYSTEM_PROMPT},
                {"role": "user", "content": question.question},
            ],
            "max_tokens": self.max_tokens,
            "temperature": 0,
        }
        # Top-k alternatives for the logprobs signal's top-k features, if it is enabled; a
        # provider without logprobs (signals without logprobs) is never asked for them.
        reads_logprobs = any(s.name == "logprobs"
                             for s in self.collector.signal_plan_for(self.model).to_run)
        if self.prefix_tokens:
            # The answer's own token logprobs, for the prefix features: the upstream is asked
            # for the same (5 alternatives) either way, so the full-answer features do not
            # change.
            body.update(logprobs=True, top_logprobs=5)
        result = await self.service.complete(self.state, self.collector, ChatFormat, body,
                                             min_top_logprobs=5 if reads_logprobs else 0)
        choice = result.body["choices"][0]
        outcome = result.record.outcomes[0]
        if outcome.features is None:
            return None
        answer = str((choice.get("message") or {}).get("content") or "")
        signals = result.record.signals
        return {
            "id": question.id,
            "group": question.id,
            "model": self.model,
            "question": question.question,
            "answer": answer,
            "correct": int(question.is_correct(answer)),
            **outcome.features,
            # A stream gate's features: the same, over the first K tokens (all of a shorter
            # answer).
            **_prefix_record(ChatFormat.tokens(choice), self.prefix_tokens),
            # What the signals cost this request (extra calls, tokens, seconds, each call), as
            # the gateway stores it: benchmarks price a signal set from it.
            **({"signal_costs": _signal_costs(signals)} if signals is not None else {}),
        }


def _prefix_record(tokens: Any, prefix_tokens: Sequence[int]) -> dict[str, float]:
    record: dict[str, float] = {}
    for k in prefix_tokens if tokens else ():
        record.update(prefix_features(tokens, k))
    return record


def _signal_costs(outcome: SignalOutcome) -> dict[str, Any]:
    """The store's ``signals`` object, plus why each failed call failed (for diagnosis later:
    e.g. the start of a verbalized reply that held no probability), cut short."""
    costs = signals_json(outcome)
    for entry, call in zip(costs["calls"], outcome.calls, strict=True):
        if call.result is not CallResult.OK and call.detail:
            entry["detail"] = call.detail[:_DETAIL_CHARS]
    return costs


async def collect_records(
    config: Path, questions: Path, out: Path, *, model: str | None = None, max_tokens: int = 24,
    limit: int | None = None, offset: int = 0, concurrency: int = 1, retries: int = 0,
    retry_delay: float = 1.0, tenant: str | None = None, prefix_tokens: Sequence[int] = (),
) -> Collected:
    """Send every question through basguard and write one record per answered question.

    The first ``offset`` questions of the file are skipped and at most ``limit`` asked, so a
    large file can be collected in parts (``--offset 0 --limit 500``, ``--offset 500 ...``)
    without cutting it by hand; a question keeps its id (its line or row number when the file
    gives none), so the parts' records never share a group.

    Up to ``concurrency`` questions are in flight at once (a hosted API answers many in
    parallel; a local llama.cpp server queues them); records keep the questions' order.

    A question whose upstream call fails or times out (the model's ``timeout_seconds``) is
    tried ``retries`` more times, ``retry_delay`` seconds apart, doubling; if it still fails it
    is counted, listed in ``OUT.failed.jsonl`` (a questions file, to retry with
    ``--questions``) and the run goes on. Records go to ``OUT.partial`` first and are renamed
    into place at the end, so ``out`` is never a half-written file.

    Every feature of the confidence signals ``tenant``'s ``confidence:`` section enables for the
    model is recorded (its extra calls included), with what the signals cost under
    ``signal_costs`` (the store's form); without ``tenant``, the logprobs features.
    No tenant is ever authenticated, so the config's tenant key variables need not be set.

    For each K of ``prefix_tokens`` the logprobs features of the answer's first K tokens are
    recorded too, as ``FEATURE@K`` (``token_prob@16``): what ``calibrate fit --prefix K`` fits a
    stream gate's prefix calibrator on. They need the logprobs signal.
    """
    state = build_runtime(config, require_tenant_keys=False)
    model = model or next(iter(state.models))
    collector = _collector_for(state, config, model, tenant, prefix_tokens)
    items = list(itertools.islice(read_questions(questions), offset,
                                  None if limit is None else offset + limit))
    if offset and not items:
        total = sum(1 for _ in read_questions(questions))
        raise UsageError(f"--offset {offset} skips every question of {questions} (it has "
                         f"{total})")
    # Signals may call other models (a cheaper sampler, a judge) of any provider.
    upstreams = UpstreamPool()
    upstreams.prepare(target.provider for target in state.models.values())
    asker = _Asker(GuardedCompletions(upstreams), state, collector, model, max_tokens, retries,
                   retry_delay, prefix_tokens)
    try:
        tally = await _write_records(asker, items, out, concurrency)
    finally:
        await upstreams.aclose()
    failed_path = failed_questions_path(out)
    _write_failed(failed_path, tally.failures)
    return Collected(tally.written, tally.correct, tally.skipped, failed=len(tally.failures),
                     failed_path=failed_path if tally.failures else None)


def _collector_for(state: RuntimeState, config: Path, model: str, tenant: str | None,
                   prefix_tokens: Sequence[int]) -> TenantRuntime:
    """The shadow tenant that asks: every signal ``tenant`` enables for ``model`` runs."""
    if model not in state.models:
        raise UsageError(f"model {model!r} is not in {config}; configured: {sorted(state.models)}")
    if tenant is not None and tenant not in state.config.tenants:
        raise UsageError(f"tenant {tenant!r} is not in {config}; configured: "
                         f"{sorted(state.config.tenants)}")
    settings = (state.config.tenants[tenant].confidence.for_model(model) if tenant is not None
                else SignalSettings())
    if prefix_tokens and "logprobs" not in settings.signals:
        raise UsageError(f"--prefix-tokens records logprobs features, but tenant {tenant!r} "
                         "does not enable the logprobs signal")
    # No feature names: every enabled signal runs, for every feature it yields.
    return replace(COLLECTOR, signal_plans={model: plan_signals(settings)})


@dataclass
class _Tally:
    """What went into the records file so far, and the questions that failed."""

    written: int = 0
    correct: int = 0
    skipped: int = 0
    """Answers without logprobs, so without confidence features: no record."""
    failures: list[_Failed] = field(default_factory=list)

    def take(self, outcome: _Outcome, handle: BinaryIO) -> None:
        """Count one question's outcome, writing its record if it has one."""
        if isinstance(outcome, _Failed):
            self.failures.append(outcome)
        elif outcome is None:
            self.skipped += 1
        else:
            handle.write(orjson.dumps(outcome) + b"\n")
            self.written += 1
            self.correct += outcome["correct"]


async def _write_records(asker: _Asker, items: list[Question], out: Path,
                         concurrency: int) -> _Tally:
    """Ask every question, writing the records in the questions' order.

    They go to ``OUT.partial``, renamed to ``out`` only when every question is done.
    """
    partial = out.with_name(out.name + ".partial")
    tally = _Tally()
    try:
        with partial.open("wb") as handle, tqdm(
            total=len(items), desc=f"collect {asker.model}", unit="q", disable=None
        ) as progress:
            async with aclosing(_outcomes_in_order(asker, items, concurrency)) as outcomes:
                async for outcome in outcomes:
                    progress.update()
                    if isinstance(outcome, _Failed):
                        progress.write(f"question {outcome.question.id}: failed: "
                                       f"{outcome.error}", file=sys.stderr)
                    tally.take(outcome, handle)
        os.replace(partial, out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return tally


async def _outcomes_in_order(asker: _Asker, items: list[Question], concurrency: int
                             ) -> AsyncGenerator[_Outcome, None]:
    """Each question's outcome, in the questions' order, with up to ``concurrency`` asked at once.

    A sliding window of tasks, awaited oldest first: bounded concurrency, records in order.
    Closing the iterator early cancels the questions still in flight.
    """
    in_flight: collections.deque[asyncio.Task[_Outcome]] = collections.deque()
    try:
        for question in items:
            in_flight.append(asyncio.create_task(asker.ask(question)))
            if len(in_flight) == concurrency:
                yield await in_flight.popleft()
        while in_flight:
            yield await in_flight.popleft()
    finally:
        for task in in_flight:
            task.cancel()
        await asyncio.gather(*in_flight, return_exceptions=True)


def _write_failed(path: Path, failures: list[_Failed]) -> None:
    """List the failed questions as a questions file; remove an old list when none failed."""
    if not failures:
        path.unlink(missing_ok=True)
        return
    with path.open("wb") as handle:
        for failure in failures:
            q = failure.question
            handle.write(orjson.dumps(
                {"id": q.id, "question": q.question, "answers": list(q.answers),
                 "error": failure.error}) + b"\n")


def run_collect(
    config: Path, questions: Path, out: Path, model: str | None, *, limit: int | None = None,
    offset: int = 0, concurrency: int = 1, retries: int = 0, tenant: str | None = None,
    prefix_tokens: Sequence[int] = (), max_tokens: int = 24,
) -> Collected:
    return asyncio.run(collect_records(config, questions, out, model=model, limit=limit,
                                       offset=offset,
                                       concurrency=concurrency, retries=retries, tenant=tenant,
                                       prefix_tokens=prefix_tokens, max_tokens=max_tokens))
