"""Issue #14's probes, rerun in one go: one table of requests, failures and what was lost.

Everything runs on 127.0.0.1 against real ``python -m proxy.cli serve`` processes in front of
the fake OpenAI-compatible upstream (tests/support/fake_upstream.py, in its own process). Every
loop is bounded in count and in time; the script stops by itself and leaves nothing running.

Probes (one row each; the soak has one row per worker count):

- ``fuzz``: Hypothesis over request bodies, query strings and headers against
  /v1/chat/completions, /v1/completions, /v1/feedback and /v1/feedback/withheld. A failure is a
  5xx, an error without the OpenAI envelope, a stream without ``[DONE]``, or a dropped connection.
- ``upstream faults``: every malformed upstream shape, error statuses, a timeout and a dropped
  connection, each as a plain request, an enforce-mode stream and an annotate-mode stream. A
  failure is anything but an error in the envelope (or, after a stream's headers, an error event
  followed by ``[DONE]``).
- ``SIGTERM``: SIGTERM under load (plain requests and streams in flight). Lost: acknowledged
  decisions missing from the store, streams that ended without ``[DONE]``.
- ``SIGKILL``: kill -9 of the whole process group under load, restart. Lost: acknowledged
  decisions missing after the crash journal's replay.
- ``reload under load``: the config rewritten every 0.5 s while requests run.
- ``soak``: wrk for ``--soak-seconds`` with 1 and with 2 workers; RSS per worker at start/end.
- ``slowloris``: thousands of partial-head sockets while legitimate requests run.
- ``huge headers``: 8 × 50 MiB headers at once while legitimate requests run; RSS growth.
- ``endless stream``: the upstream streams forever, in enforce and annotate mode, fast (stopped
  by ``max_response_bytes``) and slow (stopped by the model's deadline); RSS growth.
- ``slow bodies``: 1,100 sockets against one worker, each with a whole request head and a body
  that trickles in just above the minimum rate (so the rate check alone never frees them), while
  legitimate requests run. A failure is a legitimate request not served.
- ``early refusal``: a 401 and a 413 answered before a 200 KiB body was read, on keep-alive
  connections. A failure is an answer without ``connection: close``, a stray response made of
  the unread body, a reset instead of a clean close, or a next connection not served.
- ``master kill``: kill -9 of the supervisor of ``serve --workers 2``. A failure is a worker
  alive ``MASTER_KILL_BOUND_SECONDS`` later, or a restart on the same port that does not serve.

Run: python benchmarks/reliability.py [--quick] [--soak-seconds 60] [--only fuzz,soak]
tests/test_reliability.py runs the fast ``--quick`` probes and asserts nothing fails.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

REPOSITORY = Path(__file__).resolve().parents[1]
if str(REPOSITORY) not in sys.path:
    sys.path.insert(0, str(REPOSITORY))

from benchmarks import bench_connections  # noqa: E402
from tests.support.fake_upstream import (  # noqa: E402
    EMPTY_STREAMS,
    MALFORMED,
    MALFORMED_REPLIES,
)
from tests.support.gateway import TENANT_KEYS, gateway_config  # noqa: E402
from tests.support.loopback import (  # noqa: E402
    ServerProcess,
    free_port,
    kill_process_group,
    serve_in_thread,
    serve_process_group,
)
from tests.support.path_attacks import (  # noqa: E402
    BASE_PATH,
    RecordingUpstream,
    random_spelling,
    send_raw,
    violations,
)
from tests.support.waiting import wait_until  # noqa: E402

UPSTREAM = bench_connections.UPSTREAM
MiB = 2**20
ENDLESS_MAX_BYTES = MiB
RSS_GROWTH_BOUND_MIB = 64
"""The memory an endless stream may cost the gateway (its cap is 1 MiB per request)."""
"""The ``endless`` model's ``max_response_bytes``: what a fast endless stream runs into."""


@dataclass
class Row:
    """One line of the table."""

    probe: str
    requests: int
    failures: int
    lost: int = 0
    lost_what: str = "–"
    note: str = ""
    examples: list[str] = field(default_factory=list)
    """A few failures, for whoever has to fix them (printed under the table)."""


@dataclass(frozen=True)
class Sizes:
    """How hard each probe pushes: the full run, or ``--quick``."""

    fuzz_examples: int
    fuzz_seconds: float
    load_seconds: float
    reload_seconds: float
    soak_seconds: float
    slowloris_sockets: int
    slowloris_seconds: float
    huge_headers: int
    huge_header_bytes: int
    endless_deadline: float
    sigkill_workers: int
    slow_body_sockets: int
    slow_body_seconds: float
    early_refusals: int
    master_kills: int
    path_spellings: int

    @classmethod
    def of(cls, quick: bool, soak_seconds: float | None) -> Sizes:
        if quick:
            return cls(400, 40, 3, 4, soak_seconds or 5, 300, 2, 2, 8 * MiB, 3, 1,
                       1100, 3, 10, 1, 300)
        return cls(2000, 300, 8, 20, soak_seconds or 60, 3000, 20, 8, 50 * MiB, 10, 2,
                   1100, 20, 100, 3, 5000)


def _auth(tenant: str) -> dict[str, str]:
    return {"authorization": f"Bearer {TENANT_KEYS[tenant]}"}


def _directive(**fake: Any) -> list[dict[str, str]]:
    return [{"role": "user", "content": json.dumps({"fake": fake})}]


# --- the lab: the fake upstream, configs and gateways -----------------------------------------


class Lab:
    """A fake upstream process and a directory for configs, stores and server logs."""

    def __init__(self, directory: Path, upstream_url: str, sizes: Sizes) -> None:
        self.directory = directory
        self.upstream_url = upstream_url
        self.sizes = sizes
        self._count = 0

    def config(self, **overrides: Any) -> dict[str, Any]:
        """The tests' tenants (enforcer, annotator ...) and the bench key, plus probe models."""
        config = gateway_config(self.upstream_url, max_body_bytes=MiB)
        del config["models"]["via-litellm"]  # litellm would slow every start; not probed here
        # For load with streams that take seconds ("fake"'s total deadline is 2 s).
        config["models"]["patient"] = {"base_url": f"{self.upstream_url}/v1",
                                       "timeout_seconds": 60}
        config["models"]["endless"] = {
            "base_url": f"{self.upstream_url}/v1",
            "timeout_seconds": self.sizes.endless_deadline,
            "max_response_bytes": ENDLESS_MAX_BYTES,
        }
        config["tenants"]["bench"] = {
            "api_keys": [{"sha256": hashlib.sha256(bench_connections.KEY.encode()).hexdigest()}],
            "risk": {"threshold": 0.5},
        }
        config.update(overrides)
        return config

    @contextmanager
    def gateway(
        self, name: str, *, workers: int = 1, env: dict[str, str] | None = None,
        config: dict[str, Any] | None = None,
    ) -> Iterator[tuple[ServerProcess, Path, Path]]:
        """``basguard serve``, ready; yields it, its config path and its store path."""
        self._count += 1
        directory = self.directory / f"{self._count:02d}-{re.sub(r'[^a-z0-9]+', '-', name)}"
        directory.mkdir()
        path, store = directory / "basguard.yaml", directory / "decisions.sqlite3"
        path.write_text(yaml.safe_dump(config or self.config()))
        server = ServerProcess(
            ["--config", str(path), "--store", str(store), "--workers", str(workers)],
            env={"BASGUARD_RELOAD_INTERVAL_SECONDS": "0", "FAKE_UPSTREAM_KEY": "sk-fake-0123",
                 **(env or {})},
            log=directory / "server.log",
        )
        try:
            server.wait_ready()
            yield server, path, store
        finally:
            try:
                if server.process.poll() is None:
                    server.stop(signal.SIGTERM, timeout=90)
            except AssertionError:  # it would not stop: said, and killed by close()
                print(f"{name}: the server did not exit within 90 s of SIGTERM; killed",
                      flush=True)
            finally:
                server.close()


@contextmanager
def lab(directory: Path, sizes: Sizes) -> Iterator[Lab]:
    """The fake upstream in its own process (so it never competes with the probes' GIL)."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    upstream = subprocess.Popen([sys.executable, "-c", UPSTREAM.format(port=port)],
                                cwd=REPOSITORY, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        def started() -> bool:
            if upstream.poll() is not None:
                raise RuntimeError("the fake upstream exited")
            return httpx.get(f"{url}/v1/models", timeout=2).status_code == 200

        wait_until(started, what="the fake upstream to start", interval=0.1,
                   ignoring=(httpx.HTTPError,))
        yield Lab(directory, url, sizes)
    finally:
        upstream.terminate()
        upstream.wait(timeout=30)


# --- judging responses ------------------------------------------------------------------------


def envelope_problem(status: int, body: bytes) -> str | None:
    """Why an error response is not the OpenAI envelope, or None if it is."""
    try:
        document = json.loads(body)
        error = document["error"]
        if set(error) >= {"message", "type", "param", "code"} and isinstance(
                error["message"], str) and isinstance(error["type"], str):
            return None
    except (ValueError, KeyError, TypeError):
        pass
    return f"{status} without the envelope: {body[:120]!r}"


def stream_events(body: bytes) -> list[str]:
    """The ``data:`` payloads of an SSE body."""
    return [line[6:] for line in body.decode(errors="replace").splitlines()
            if line.startswith("data: ")]


def stream_problem(body: bytes, *, want_error: bool) -> str | None:
    """Why a stream did not end properly (``[DONE]`` last; with ``want_error``, an error event)."""
    events = stream_events(body)
    if not events or events[-1] != "[DONE]":
        return f"stream ended without [DONE] after {len(events)} events"
    if want_error and not any('"error"' in event for event in events[:-1]):
        return "stream ended without an error event"
    return None


def decision_id(response_body: bytes, *, stream: bool) -> str | None:
    """The ``basguard.id`` a response acknowledged, if any."""
    documents: list[Any] = []
    try:
        if stream:
            documents = [json.loads(e) for e in stream_events(response_body) if e != "[DONE]"]
        else:
            documents = [json.loads(response_body)]
    except ValueError:
        return None
    for document in documents:
        if isinstance(document, dict) and isinstance(document.get("basguard"), dict):
            ident = document["basguard"].get("id")
            if ident:
                return str(ident)
    return None


class TooLong(httpx.TimeoutException):
    """A response still coming after the probe's total bound (httpx bounds each read only)."""


def send(
    client: httpx.Client, method: str, url: str, *, total: float = 60.0, **kwargs: Any
) -> tuple[int, str, bytes]:
    """Status, content type and the whole body (streams read to their end, within ``total``)."""
    started = time.monotonic()
    request = client.build_request(method, url, **kwargs)
    response = client.send(request, stream=True)
    chunks: list[bytes] = []
    try:
        for chunk in response.iter_bytes():
            chunks.append(chunk)
            if time.monotonic() - started > total:
                raise TooLong(f"still sending after {total:g} s", request=request)
    finally:
        response.close()
    return response.status_code, response.headers.get("content-type", ""), b"".join(chunks)


def rss_mib(pid: int) -> float:
    """Resident memory of one process, MiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def worker_pids(pid: int) -> list[int]:
    """The server's worker processes (itself when it has none)."""
    try:
        children = [int(c) for c in
                    Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        children = []
    # uvicorn's supervisor with --workers: the workers are its children; a single worker
    # serves in the process itself (its children, if any, are not servers).
    return [c for c in children if rss_mib(c) > 20] or [pid]


# --- 1. fuzzing -------------------------------------------------------------------------------


def probe_fuzz(url: str, sizes: Sizes) -> Row:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    printable = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60)
    json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                          st.floats(allow_nan=False), st.text(max_size=40))
    json_value = st.recursive(
        json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                           st.dictionaries(st.text(max_size=10), inner,
                                                           max_size=4)),
        max_leaves=20)
    message = st.fixed_dictionaries(
        {"role": st.one_of(st.sampled_from(["user", "system", "assistant", "tool"]), json_value),
         "content": st.one_of(st.text(max_size=200), json_value)})
    request_fields = st.fixed_dictionaries({}, optional={
        "model": st.one_of(st.sampled_from(["fake", "unknown-model"]), json_value),
        "messages": st.one_of(st.lists(message, max_size=3), json_value),
        "prompt": st.one_of(st.text(max_size=200), st.lists(st.text(max_size=20)), json_value),
        "stream": st.one_of(st.booleans(), json_value),
        "n": st.one_of(st.integers(-3, 8), json_value),
        "logprobs": st.one_of(st.booleans(), st.integers(-2, 30), json_value),
        "top_logprobs": st.one_of(st.integers(-2, 30), json_value),
        "max_tokens": st.one_of(st.integers(-5, 10**12), json_value),
        "temperature": st.one_of(st.floats(allow_nan=True), json_value),
        "stream_options": st.one_of(st.fixed_dictionaries(
            {"include_usage": st.booleans()}), json_value),
        "id": st.one_of(st.text(max_size=40), json_value),
        "correct": st.one_of(st.booleans(), st.integers(-2, 2), json_value),
        "choice": st.one_of(st.integers(-2, 5), json_value),
    })
    valid_chat = st.fixed_dictionaries({
        "model": st.just("fake"), "messages": st.lists(message, min_size=1, max_size=2),
        "stream": st.booleans(), "logprobs": st.booleans(), "n": st.integers(1, 3)})
    # Deep nesting in an otherwise valid request, so it reaches the forwarding code.
    deep = st.integers(1, 400).map(
        lambda depth: '{"model": "fake", "messages": [{"role": "user", "content": "hi"}], '
        '"metadata": ' + "[" * depth + "]" * depth + "}")
    body = st.one_of(
        request_fields.map(json.dumps), valid_chat.map(json.dumps), json_value.map(json.dumps),
        deep, st.binary(max_size=300), st.text(max_size=300))
    header_name = st.from_regex(r"\Ax-[a-z0-9-]{1,16}\Z")
    headers = st.dictionaries(header_name, printable, max_size=4)
    valid_key = st.sampled_from([TENANT_KEYS["enforcer"], TENANT_KEYS["annotator"]]).map(
        lambda key: f"Bearer {key}")
    auth = st.one_of(valid_key, valid_key, valid_key, printable, st.none())  # mostly past auth
    content_type = st.one_of(st.sampled_from(
        ["application/json", "application/json; charset=utf-8", "text/plain", ""]), printable,
        st.none())
    query = st.dictionaries(
        st.one_of(st.sampled_from(["limit", "before", "include_labelled", "tenant"]),
                  st.text(max_size=8)),
        st.one_of(st.text(max_size=20), st.sampled_from(  # numerals int() or float() accept
            ["²", "١٢", "１２", "1_000", "nan", "inf", "1e999", " 5", "-1", "0", "10**9"])),
        max_size=3)
    case = st.fixed_dictionaries({
        "path": st.sampled_from(["/v1/chat/completions", "/v1/completions", "/v1/feedback",
                                 "/v1/feedback/withheld"]),
        "body": body, "headers": headers, "auth": auth, "content_type": content_type,
        "query": query})

    row = Row("fuzz (bodies, queries, headers; 4 endpoints)", 0, 0)
    statuses: dict[int, int] = {}
    stop_at = time.monotonic() + sizes.fuzz_seconds

    with httpx.Client(timeout=60) as client:

        @settings(max_examples=sizes.fuzz_examples, deadline=None, database=None,
                  phases=[Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case)
        def run(case: dict[str, Any]) -> None:
            if time.monotonic() > stop_at:
                return
            sent_headers = dict(case["headers"])
            if case["auth"] is not None:
                sent_headers["authorization"] = case["auth"]
            if case["content_type"] is not None:
                sent_headers["content-type"] = case["content_type"]
            method = "GET" if case["path"].endswith("withheld") else "POST"
            content = case["body"] if method == "POST" else None
            row.requests += 1
            try:
                status, kind, body = send(client, method, url + case["path"],
                                          params=case["query"], headers=sent_headers,
                                          content=content)
            except (httpx.HTTPError, UnicodeError) as exc:
                if isinstance(exc, UnicodeError | httpx.LocalProtocolError):
                    row.requests -= 1  # httpx refused to send it: not the gateway's doing
                    return
                problem: str | None = f"connection failed: {type(exc).__name__}"
            else:
                statuses[status] = statuses.get(status, 0) + 1
                if status >= 500:
                    problem = f"{status}: {body[:120]!r}"
                elif "text/event-stream" in kind:
                    problem = stream_problem(body, want_error=False)
                elif status >= 400:
                    problem = envelope_problem(status, body)
                else:
                    try:
                        json.loads(body)
                        problem = None
                    except ValueError:
                        problem = f"{status} with a body that is not JSON"
            if problem:
                row.failures += 1
                if len(row.examples) < 5:
                    row.examples.append(f"{case['path']} {problem} <- {str(case)[:200]}")

        run()
    row.note = "statuses " + ", ".join(f"{s}×{n}" for s, n in sorted(statuses.items()))
    return row


# --- 2. the upstream fault list ---------------------------------------------------------------


def fault_cases() -> list[tuple[str, str, str, dict[str, Any]]]:
    """(fault, mode, model, directive): every fault × plain, enforce-stream, annotate-stream."""
    tokens = {"logprobs": [-0.01] * 12}
    cases = []
    for mode in ("plain", "enforce-stream", "annotate-stream"):
        streamed = mode != "plain"
        for shape in MALFORMED:
            if shape != "long_line" or streamed:
                cases.append((f"malformed {shape}", mode, "fake", {"malformed": shape}))
        for shape in EMPTY_STREAMS if streamed else MALFORMED_REPLIES:
            cases.append((f"malformed {shape}", mode, "fake", {"malformed": shape}))
        for status in (400, 429, 500, 503):
            cases.append((f"status {status}", mode, "fake",
                          {"status": status, "retry_after": 7}))
        # The "fake" model's total deadline is 2 s.
        cases.append(("timeout", mode, "fake",
                      {"stream_delay": 0.4, **tokens} if streamed else {"delay": 4}))
        if streamed:
            cases.append(("dropped mid-stream", mode, "fake", {"stream_error_after": 2, **tokens}))
        cases.append(("connection refused", mode, "unreachable", {}))
    return cases


def probe_faults(url: str) -> Row:
    cases = fault_cases()
    row = Row("upstream faults (malformed, status, timeout, drop × 3 modes)", len(cases), 0)

    def one(case: tuple[str, str, str, dict[str, Any]]) -> str | None:
        fault, mode, model, directive = case
        tenant = "annotator" if mode == "annotate-stream" else "enforcer"
        payload = {"model": model, "messages": _directive(**directive),
                   "logprobs": True, "stream": mode != "plain"}
        try:
            with httpx.Client(timeout=60) as client:
                status, kind, body = send(client, "POST", f"{url}/v1/chat/completions",
                                          json=payload, headers=_auth(tenant))
        except httpx.HTTPError as exc:
            return f"{fault} / {mode}: connection failed: {type(exc).__name__}"
        if "text/event-stream" in kind:
            problem = stream_problem(body, want_error=True)
        elif status < 400:
            problem = f"{status}: the fault was not reported"
        else:
            problem = envelope_problem(status, body)
        return f"{fault} / {mode}: {problem}" if problem else None

    with ThreadPoolExecutor(8) as pool:
        problems = [p for p in pool.map(one, cases) if p]
    row.failures = len(problems)
    row.examples = problems[:5]
    shapes = len(MALFORMED) + len(EMPTY_STREAMS) + len(MALFORMED_REPLIES)
    row.note = f"{shapes} malformed shapes, 4 statuses, timeout, drop, refused"
    return row


# --- load helpers -----------------------------------------------------------------------------


@dataclass
class Load:
    """Client threads sending decisions (plain and streamed) until stopped."""

    url: str
    stream_directive: dict[str, Any]
    long_stream_directive: dict[str, Any] | None = None
    """If given, one thread sends this stream instead (one that outlasts a stop's grace)."""
    acknowledged: list[str] = field(default_factory=list)
    sent: int = 0
    failed: list[str] = field(default_factory=list)
    """Requests that failed although the server was not stopping."""
    cut_streams: int = 0
    """Streams whose response started (200) but ended without ``[DONE]``."""
    ended_by_stop: int = 0
    """Streams ended with a ``shutting_down`` error event and ``[DONE]``."""
    refused_while_stopping: int = 0
    """Connections refused or cut after the stop began (not counted as requests)."""
    stopping: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self, threads: int) -> None:
        for index in range(threads):
            thread = threading.Thread(target=self._run, args=(index,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)

    def _run(self, index: int) -> None:
        streamed = index % 2 == 1
        tenant = "annotator" if streamed else "enforcer"
        directive = (self.long_stream_directive if index == 1 and self.long_stream_directive
                     else self.stream_directive if streamed
                     else {"content": "Paris", "logprobs": [-0.01]})
        payload = {"model": "patient", "logprobs": True, "stream": streamed,
                   "messages": _directive(**directive)}
        while not self._stop.is_set():
            with self._lock:
                self.sent += 1
            try:
                # A new connection each time, so a draining server's closed socket is met.
                with httpx.Client(timeout=60) as client:
                    status, _, body = send(client, "POST", f"{self.url}/v1/chat/completions",
                                           json=payload, headers=_auth(tenant))
            except httpx.HTTPError as exc:
                # Refused or cut while the server stops: not acknowledged, so not lost.
                if not self.stopping.is_set():
                    self._fail(f"{type(exc).__name__}: {exc}")
                else:
                    with self._lock:
                        self.sent -= 1
                        self.refused_while_stopping += 1
                    time.sleep(0.05)
                continue
            ident = decision_id(body, stream=streamed) if status == 200 else None
            with self._lock:
                if ident:
                    self.acknowledged.append(ident)
                if streamed and status == 200:
                    if stream_problem(body, want_error=False):
                        self.cut_streams += 1
                    elif b"shutting_down" in body:
                        self.ended_by_stop += 1
                    elif b'"error"' in body:  # an error event: the stream failed
                        self.failed.append(f"stream error: {body[-300:]!r}")
            if status != 200 and not (self.stopping.is_set() and status == 503):
                self._fail(f"{status}: {body[:120]!r}")

    def _fail(self, what: str) -> None:
        with self._lock:
            self.failed.append(what)


def stored_ids(store: Path) -> set[str]:
    with sqlite3.connect(store) as db:
        return {str(row[0]) for row in db.execute("SELECT DISTINCT id FROM decisions")}


# --- 3. SIGTERM -------------------------------------------------------------------------------


def probe_sigterm(lab: Lab) -> Row:
    grace = 5
    # Streams of 8 chunks 0.3 s apart (~2.4 s) finish within the grace; one of 40 chunks
    # 0.4 s apart (~16 s) outlasts it and is ended with shutting_down + [DONE].
    load = Load("", {"stream_delay": 0.3, "logprobs": [-0.01] * 8},
                long_stream_directive={"stream_delay": 0.4, "logprobs": [-0.01] * 40})
    with lab.gateway("sigterm", env={"BASGUARD_SHUTDOWN_GRACE_SECONDS": str(grace)}) as (
            server, _, store):
        load.url = server.url
        load.start(8)
        time.sleep(lab.sizes.load_seconds)
        load.stopping.set()
        stopped = time.monotonic()
        status = server.stop(signal.SIGTERM, timeout=grace + 60)
        took = time.monotonic() - stopped
        load.stop()
        missing = set(load.acknowledged) - stored_ids(store)
    failures = len(load.failed) + (status != 0)
    return Row("SIGTERM under load (plain + streams)", load.sent, failures,
               len(missing) + load.cut_streams,
               f"{len(missing)} acked decisions, {load.cut_streams} streams without [DONE]",
               f"exit {status} after {took:.1f} s (grace {grace} s); {load.ended_by_stop} "
               f"streams ended by shutting_down + [DONE]; {len(load.acknowledged)} acked; "
               f"{load.refused_while_stopping} refused while stopping (not counted)",
               load.failed[:5])


# --- 4. SIGKILL -------------------------------------------------------------------------------


def probe_sigkill(lab: Lab) -> Row:
    workers = lab.sizes.sigkill_workers
    directory = lab.directory / "sigkill"
    directory.mkdir()
    config, store = directory / "basguard.yaml", directory / "decisions.sqlite3"
    config.write_text(yaml.safe_dump(lab.config()))
    load = Load("", {"stream_delay": 0.05, "logprobs": [-0.01] * 6})
    with (directory / "server.log").open("w") as log:
        with serve_process_group(config, store, log, workers) as (url, process):
            load.url = url
            load.start(8)
            time.sleep(lab.sizes.load_seconds)
            load.stopping.set()
            kill_process_group(process)  # SIGKILL to the whole process group, mid-traffic
            load.stop()
        with serve_process_group(config, store, log, workers):
            missing = set(load.acknowledged) - stored_ids(store)
    output = (directory / "server.log").read_text()
    recovered = sum(int(m) for m in re.findall(r"recovered (\d+) decisions from a crashed", output))
    return Row(f"SIGKILL under load, restart ({workers} worker{'s' * (workers > 1)})",
               load.sent, len(load.failed), len(missing),
               f"{len(missing)} acked decisions after replay",
               f"{len(load.acknowledged)} acked; {recovered} replayed from the journal",
               load.failed[:5])


# --- 5. reload under load ---------------------------------------------------------------------


def probe_reload(lab: Lab) -> Row:
    load = Load("", {"stream_delay": 0.05, "logprobs": [-0.01] * 6})
    with lab.gateway("reload", env={"BASGUARD_RELOAD_INTERVAL_SECONDS": "0.2"}) as (
            server, path, _):
        load.url = server.url
        load.start(6)
        edits = 0
        ends = time.monotonic() + lab.sizes.reload_seconds
        while time.monotonic() < ends:
            time.sleep(0.5)
            edits += 1
            config = lab.config()
            config["tenants"]["enforcer"]["risk"]["threshold"] = 0.5 + 0.01 * (edits % 10)
            if edits % 2:  # a tenant comes and goes as well
                config["tenants"]["visitor"] = {
                    "api_keys": [{"sha256": hashlib.sha256(b"visitor-key-0123456789").hexdigest()}],
                    "risk": {"threshold": 0.3}}
            path.write_text(yaml.safe_dump(config))  # in place, as an editor would
        time.sleep(0.5)
        load.stop()
        reloads = server.output().count("config reloaded")
    return Row("reload under load (config edited every 0.5 s)", load.sent, len(load.failed),
               note=f"{edits} edits, {reloads} reloads applied", examples=load.failed[:5])


# --- 6. soak ----------------------------------------------------------------------------------


def probe_soak(lab: Lab, workers: int) -> Row:
    from benchmarks.bench_gateway import BODY, WRK_SCRIPT

    seconds = lab.sizes.soak_seconds
    with lab.gateway(f"soak-{workers}", workers=workers) as (server, _, _):
        for _ in range(20):
            httpx.post(f"{server.url}/v1/chat/completions", json=BODY, timeout=30,
                       headers={"authorization": f"Bearer {bench_connections.KEY}"})
        pids = worker_pids(server.process.pid)
        start = max(rss_mib(pid) for pid in pids)
        script = lab.directory / f"soak-{workers}.lua"
        script.write_text(WRK_SCRIPT.format(body=json.dumps(BODY), key=bench_connections.KEY))
        output = subprocess.run(
            ["wrk", "-t1", "-c16", f"-d{seconds:g}s", "--timeout", "30s", "-s", str(script),
             f"{server.url}/v1/chat/completions"],
            capture_output=True, text=True, timeout=seconds + 120, check=True).stdout
        end = max(rss_mib(pid) for pid in worker_pids(server.process.pid))
        died = server.output().count("died")
    served = re.search(r"(\d+) requests in", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       output)
    requests = int(served[1]) if served else 0
    failures = (int(non_2xx[1]) if non_2xx else 0) + (
        sum(int(n) for n in errors.groups()) if errors else 0)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    return Row(f"soak, {workers} worker{'s' * (workers > 1)}, {seconds:g} s (wrk -c16)",
               requests, failures + died,
               note=f"{rate[1] if rate else '?'} req/s; worker RSS {start:.0f} → {end:.0f} MiB; "
                    f"{died} worker restarts",
               examples=[output] if failures else [])


# --- 7. slowloris, 8. huge headers ------------------------------------------------------------


@contextmanager
def legitimate_traffic(url: str) -> Iterator[tuple[list[float], list[str]]]:
    """bench_connections' legitimate client: one request at a time on fresh connections."""
    stop = threading.Event()
    latencies: list[float] = []
    failures: list[str] = []
    client = threading.Thread(target=bench_connections.legitimate,
                              args=(url, stop, latencies, failures), daemon=True)
    client.start()
    try:
        yield latencies, failures
    finally:
        stop.set()
        client.join(timeout=120)


def probe_slowloris(url: str, sizes: Sizes) -> Row:
    port = int(url.rsplit(":", 1)[1])
    with legitimate_traffic(url) as (latencies, failures):
        held = bench_connections.slowloris(port, sizes.slowloris_sockets,
                                           sizes.slowloris_seconds)
    return Row(f"slowloris ({sizes.slowloris_sockets} sockets, {sizes.slowloris_seconds:g} s)",
               len(latencies) + len(failures), len(failures),
               note=f"legitimate requests; {held} attack sockets still open at the end "
                    "(the head deadline is 10 s)", examples=failures[:5])


def probe_huge_headers(server: ServerProcess, sizes: Sizes) -> Row:
    port = server.port
    before = rss_mib(server.process.pid)
    with legitimate_traffic(server.url) as (latencies, failures), ThreadPoolExecutor(
            sizes.huge_headers) as pool:
        answers = list(pool.map(lambda _: bench_connections.huge_header(
            port, sizes.huge_header_bytes), range(sizes.huge_headers)))
        time.sleep(1)
    after = rss_mib(server.process.pid)
    refused = sum(1 for _, status in answers if " 431 " in status)
    slowest = max(seconds for seconds, _ in answers)
    return Row(f"huge headers ({sizes.huge_headers} × {sizes.huge_header_bytes // MiB} MiB)",
               len(latencies) + len(failures), len(failures),
               note=f"legitimate requests; {refused}/{len(answers)} refused with 431 within "
                    f"{slowest:.2f} s; RSS {before:.0f} → {after:.0f} MiB",
               examples=failures[:5])


# --- 9. endless stream ------------------------------------------------------------------------


def probe_endless(server: ServerProcess, sizes: Sizes) -> Row:
    cases = [(mode, pace) for mode in ("enforce", "annotate") for pace in ("fast", "slow")] * 2
    before = rss_mib(server.process.pid)
    bound = sizes.endless_deadline + 15

    def one(case: tuple[str, str]) -> tuple[str | None, float]:
        mode, pace = case
        directive = ({"endless": True, "content": "x" * 200} if pace == "fast" else
                     {"endless": True, "stream_delay": 0.02})
        started = time.monotonic()
        try:
            with httpx.Client(timeout=bound) as client:
                status, kind, body = send(
                    client, "POST", f"{server.url}/v1/chat/completions", total=bound,
                    json={"model": "endless", "stream": True, "messages": _directive(**directive)},
                    headers=_auth("enforcer" if mode == "enforce" else "annotator"))
        except httpx.HTTPError as exc:
            return f"{mode}/{pace}: {type(exc).__name__} (not ended in {bound:g} s)", bound
        took = time.monotonic() - started
        problem = (stream_problem(body, want_error=True) if "text/event-stream" in kind else
                   envelope_problem(status, body) if status >= 400 else f"{status}: not ended")
        return (f"{mode}/{pace}: {problem}" if problem else None), took

    with ThreadPoolExecutor(len(cases)) as pool:
        results = list(pool.map(one, cases))
    time.sleep(1)
    after = rss_mib(server.process.pid)
    problems = [p for p, _ in results if p]
    growth = after - before
    slowest = max(t for _, t in results)
    return Row(f"endless stream (enforce, annotate × fast, slow; {len(cases)} at once)",
               len(cases), len(problems),
               round(growth) if growth > RSS_GROWTH_BOUND_MIB else 0,
               f"MiB of RSS growth past the {RSS_GROWTH_BOUND_MIB} MiB bound",
               note=f"all ended within {slowest:.1f} s (deadline {sizes.endless_deadline:g} s, "
                    f"cap {ENDLESS_MAX_BYTES // MiB} MiB); RSS {before:.0f} → {after:.0f} MiB",
               examples=problems[:5])


# --- 10. slow bodies, 11. early refusal, 12. master kill --------------------------------------

SLOW_BODY_BYTES_PER_SECOND = 2048
"""What each slow body sends a second: twice the default minimum rate (1,024), so only the
total deadline (30 s) ends it."""
SLOW_BODY_LENGTH = 1_000_000
"""What each slow body declares: under the lab's max_body_bytes (1 MiB), so nothing refuses it
at once, and never whole at that pace within the probe."""
MASTER_KILL_BOUND_SECONDS = 5.0


def _raise_open_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the attack sockets are ours


def probe_slow_bodies(url: str, sizes: Sizes) -> Row:
    _raise_open_file_limit()
    port = int(url.rsplit(":", 1)[1])
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
            f"authorization: Bearer {bench_connections.KEY}\r\n"
            f"content-type: application/json\r\ncontent-length: {SLOW_BODY_LENGTH}\r\n\r\n"
            ).encode()
    sockets: list[socket.socket] = []
    with legitimate_traffic(url) as (latencies, failures):
        for _ in range(sizes.slow_body_sockets):
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                sock.sendall(head + b'{"model": "fake", "messages": [')
                sockets.append(sock)
            except OSError:
                break
        opened = len(sockets)
        ends = time.monotonic() + sizes.slow_body_seconds
        while time.monotonic() < ends:
            for sock in sockets:
                with contextlib.suppress(OSError):  # one the server closed
                    sock.send(b" " * SLOW_BODY_BYTES_PER_SECOND)
            time.sleep(1)
    alive = timed_out = 0
    for sock in sockets:
        sock.setblocking(False)
        try:
            answer = sock.recv(4096)
            timed_out += b"body_timeout" in answer
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
        sock.close()
    served = len(latencies) / max(1, len(latencies) + len(failures))
    return Row(f"slow bodies ({opened} sockets, {sizes.slow_body_seconds:g} s)",
               len(latencies) + len(failures), len(failures),
               note=f"legitimate requests, {served:.1%} served; {alive} slow bodies still open "
                    f"at the end, {timed_out} answered 408 body_timeout (the body deadline is "
                    "30 s)", examples=failures[:5])


def _early_refusal(port: int, key: str, body_bytes: int) -> str | None:
    """One refusal before the body was read, on a keep-alive connection: what went wrong."""
    body = b"x" * body_bytes
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sender = threading.Thread(target=lambda: _send_ignoring_errors(sock, head + body))
        sender.start()
        received = b""
        try:
            while True:
                piece = sock.recv(65536)
                if not piece:
                    break
                received += piece
        except ConnectionResetError:
            return f"reset after {received[:80]!r}"
        finally:
            sender.join()
    answer, _, rest = received.partition(b"\r\n\r\n")
    status = answer.split(b"\r\n", 1)[0].decode(errors="replace")
    if not status.startswith(("HTTP/1.1 401", "HTTP/1.1 413")):
        return f"answered {status!r}"
    if b"connection: close" not in answer.lower():
        return f"{status}: kept the connection alive"
    if b"HTTP/1.1" in rest:
        return f"{status}, then a stray response: {rest[rest.index(b'HTTP/1.1'):][:60]!r}"
    return None


def _send_ignoring_errors(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the server stops reading once it has answered
        sock.sendall(data)


def probe_early_refusal(url: str, sizes: Sizes) -> Row:
    port = int(url.rsplit(":", 1)[1])
    problems: list[str] = []
    attempts = 0
    for index in range(sizes.early_refusals):
        for key, body_bytes in (("wrong-key-0123456789abcdef", 200 * 1024),  # 401
                                (bench_connections.KEY, 2 * MiB)):  # 413: over max_body_bytes
            attempts += 1
            problem = _early_refusal(port, key, body_bytes)
            if problem is None:  # and the next connection serves
                status = httpx.post(f"{url}/v1/chat/completions", json=bench_connections.CHAT,
                                    timeout=30, headers={
                                        "authorization": f"Bearer {bench_connections.KEY}"}
                                    ).status_code
                problem = None if status == 200 else f"the next connection got {status}"
            if problem:
                problems.append(f"#{index}: {problem}")
    return Row("early refusal (401 and 413 before a 200 KiB / 2 MiB body, keep-alive)",
               attempts, len(problems),
               note="each closed cleanly with connection: close, and a new connection served"
               if not problems else f"{len(problems)} went wrong", examples=problems[:5])


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def probe_master_kill(lab: Lab) -> Row:
    problems: list[str] = []
    gone_after: list[float] = []
    serving_after: list[float] = []
    directory = lab.directory / "master-kill"
    directory.mkdir()
    config, store = directory / "basguard.yaml", directory / "decisions.sqlite3"
    config.write_text(yaml.safe_dump(lab.config()))
    argv = ["--config", str(config), "--store", str(store), "--workers", "2"]
    env = {"BASGUARD_RELOAD_INTERVAL_SECONDS": "0", "FAKE_UPSTREAM_KEY": "sk-fake-0123",
           "PROMETHEUS_MULTIPROC_DIR": str(directory / "metrics")}
    port = free_port()
    for run in range(lab.sizes.master_kills):
        workers: list[int] = []
        server = ServerProcess(argv, env=env, log=directory / f"run-{run}.log", port=port)
        try:
            server.wait_ready()
            for _ in range(20):  # traffic, so that both workers are busy when it happens
                httpx.post(f"{server.url}/v1/chat/completions", json=bench_connections.CHAT,
                           timeout=30, headers={"authorization": f"Bearer {bench_connections.KEY}"})
            workers = [pid for pid in worker_pids(server.process.pid) if pid != server.process.pid]
            server.process.kill()
            server.process.wait()
            killed = time.monotonic()
            while any(_running(pid) for pid in workers) and (
                    time.monotonic() - killed < MASTER_KILL_BOUND_SECONDS):
                time.sleep(0.02)
            if any(_running(pid) for pid in workers):
                problems.append(f"run {run}: workers {workers} alive "
                                f"{MASTER_KILL_BOUND_SECONDS:g} s after the master's SIGKILL")
            else:
                gone_after.append(time.monotonic() - killed)
        finally:
            server.close()
            for pid in workers:  # never leave an orphan holding the port
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        restarted = ServerProcess(argv, env=env, log=directory / f"restart-{run}.log", port=port)
        try:
            serving_after.append(restarted.wait_ready(timeout=60))
        except AssertionError as exc:
            problems.append(f"run {run}: the restart did not serve: {str(exc)[-300:]}")
        finally:
            if restarted.process.poll() is None:
                restarted.stop(signal.SIGTERM, timeout=90)
            restarted.close()
    gone = f"workers gone {max(gone_after):.1f} s after the kill at most" if gone_after else ""
    ready = (f"restart on the same port serving after {max(serving_after):.1f} s at most"
             if serving_after else "")
    return Row(f"master kill -9, --workers 2, restart ({lab.sizes.master_kills} runs)",
               lab.sizes.master_kills, len(problems),
               note="; ".join(part for part in (gone, ready) if part), examples=problems[:5])


# --- 13. path spellings ------------------------------------------------------------------------


SPELLING_KEYS = {"open": "key-spell-open-0123456789abcdef",
                 "embeds": "key-spell-embeds-0123456789abcdef"}
"""The path probe's tenants: one with every passthrough family, one with embeddings only."""


def probe_path_spellings(lab: Lab) -> Row:
    """Random spellings of paths (separators raw and encoded, dot segments, case) against a
    real ``basguard serve`` in front of an upstream that records every raw request target: a
    failure is a request outside the upstream's base path, a tenant header forwarded, a guarded
    endpoint relayed by the passthrough, a family the tenant may not use reached, or a raw answer
    without a decision (tests/support/path_attacks.py)."""
    directory = lab.directory / "path-spellings"
    directory.mkdir()
    upstream = RecordingUpstream()
    tenants = {name: {"api_keys": [{"sha256": hashlib.sha256(key.encode()).hexdigest()}],
                      "risk": {"threshold": 0.5}, "default_model": "m"}
               for name, key in SPELLING_KEYS.items()}
    tenants["embeds"]["passthrough"] = ["embeddings"]
    rng = random.Random(20)
    problems: list[str] = []
    with serve_in_thread(upstream) as upstream_url:
        config = directory / "basguard.yaml"
        config.write_text(yaml.safe_dump({
            "version": 1, "tenants": tenants,
            "models": {"m": {"base_url": f"{upstream_url}{BASE_PATH}", "timeout_seconds": 5}}}))
        server = ServerProcess(["--config", str(config), "--store",
                                str(directory / "decisions.sqlite3")],
                               env={"BASGUARD_RELOAD_INTERVAL_SECONDS": "0"},
                               log=directory / "server.log")
        try:
            server.wait_ready()
            sent = 0
            for _ in range(lab.sizes.path_spellings):
                target = random_spelling(rng)
                tenant = rng.choice(sorted(SPELLING_KEYS))
                upstream.clear()
                try:
                    status, headers, body = send_raw(server.url, rng.choice(["GET", "POST"]),
                                                     target, SPELLING_KEYS[tenant])
                except http.client.InvalidURL:
                    continue  # the client refuses to send it (a space, a control character)
                sent += 1
                found = violations(upstream.clear(), status=status, headers=headers, body=body,
                                   allowed_family="embeddings" if tenant == "embeds" else None)
                problems.extend(f"{target} ({tenant}): {problem}" for problem in found)
        finally:
            server.stop(signal.SIGTERM, timeout=60)
            server.close()
    return Row(f"path spellings ({lab.sizes.path_spellings} random, two tenants)", sent,
               len(problems), note="no spelling reached a guarded endpoint unguarded or left "
               "the base path" if not problems else f"{len(problems)} violations",
               examples=problems[:5])


# --- running and printing ---------------------------------------------------------------------

SHARED_PROBES = ("fuzz", "faults", "slowloris", "huge-headers", "slow-bodies", "early-refusal",
                 "endless")
"""Probes that share one gateway (they do not stop or reconfigure it)."""
OWN_PROBES = ("sigterm", "sigkill", "master-kill", "path-spellings", "reload", "soak")
PROBES = SHARED_PROBES + OWN_PROBES


def run_probes(lab: Lab, only: Sequence[str] = PROBES,
               report: Callable[[Row], None] = lambda row: None) -> list[Row]:
    """Run the chosen probes in the table's order; ``report`` sees each row as it is done."""
    rows: list[Row] = []

    def add(row: Row) -> None:
        rows.append(row)
        report(row)

    if any(name in only for name in SHARED_PROBES):
        with lab.gateway("shared") as (server, _, _):
            if "fuzz" in only:
                add(probe_fuzz(server.url, lab.sizes))
            if "faults" in only:
                add(probe_faults(server.url))
            if "slowloris" in only:
                add(probe_slowloris(server.url, lab.sizes))
            if "huge-headers" in only:
                add(probe_huge_headers(server, lab.sizes))
            if "slow-bodies" in only:
                add(probe_slow_bodies(server.url, lab.sizes))
            if "early-refusal" in only:
                add(probe_early_refusal(server.url, lab.sizes))
            if "endless" in only:  # last: on a server without bounds it never recovers
                add(probe_endless(server, lab.sizes))
    if "sigterm" in only:
        add(probe_sigterm(lab))
    if "sigkill" in only:
        add(probe_sigkill(lab))
    if "master-kill" in only:
        add(probe_master_kill(lab))
    if "path-spellings" in only:
        add(probe_path_spellings(lab))
    if "reload" in only:
        add(probe_reload(lab))
    if "soak" in only:
        for workers in (1, 2):
            add(probe_soak(lab, workers))
    return rows


def table(rows: Sequence[Row]) -> str:
    lines = ["| probe | requests | failures | lost | note |", "|---|---:|---:|---|---|"]
    for row in rows:
        lost = f"{row.lost} ({row.lost_what})" if row.lost_what != "–" else "–"
        lines.append(f"| {row.probe} | {row.requests} | {row.failures} | {lost} | {row.note} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short versions of every probe")
    parser.add_argument("--soak-seconds", type=float,
                        help="length of each soak (default 60, 5 with --quick)")
    parser.add_argument("--only", default=",".join(PROBES),
                        help=f"comma-separated probes to run, of: {', '.join(PROBES)}")
    args = parser.parse_args(argv)
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(only) - set(PROBES)
    if unknown:
        parser.error(f"unknown probes: {', '.join(sorted(unknown))}")
    if "soak" in only and shutil.which("wrk") is None:
        parser.error("the soak needs wrk (apt-get install wrk)")
    # A SIGTERM (a timeout, Ctrl-C's cousin) unwinds the with-blocks: no server is left behind.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the slowloris sockets are ours
    sizes = Sizes.of(args.quick, args.soak_seconds)
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    with ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="reliability-")))
        the_lab = stack.enter_context(lab(directory, sizes))
        rows = run_probes(the_lab, only, report=lambda row: print(
            f"done: {row.probe}: {row.requests} requests, {row.failures} failures", flush=True))
    print(f"\nbasguard reliability probes{' (--quick)' if args.quick else ''}: "
          f"{time.monotonic() - started:.0f} s, load average {load_before:.1f} at start, "
          f"{os.getloadavg()[0]:.1f} at end, {os.cpu_count()} CPUs\n")
    print(table(rows))
    for row in rows:
        for example in row.examples:
            print(f"\n{row.probe}: {example}")
    return 1 if any(row.failures or row.lost for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
