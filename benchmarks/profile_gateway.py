"""Where basguard's request path spends its CPU, under load: a breakdown by part.

Starts the fake upstream and basguard (``enforce``, the demo calibrator, the decision store on,
as ``bench_gateway.py`` runs it), drives it with ``wrk`` at concurrency 32, and samples the
gateway meanwhile with ``py-spy`` (``pip install py-spy``; it attaches to the process, so the
gateway runs unmodified). Each sample of the event loop's thread is charged to the innermost
frame that belongs to a known part (routing, body read, validation, auth, upstream client,
decision math, metrics, store, response building, uvicorn, access log, ...); frames of asyncio,
contextlib and the like are looked through to their caller. Samples of other threads (the
store's writer) are shown apart: they are off the request path but share the CPU.

Prints the share of the event loop's samples per part and the hottest functions, plus the
request rate during the profile; ``--collapsed FILE`` keeps py-spy's raw stacks (for a flame
graph). ``--checkout DIR`` profiles another checkout of basguard (a candidate patch, say).

Run: python benchmarks/profile_gateway.py [--seconds N] [--rate HZ] [--checkout DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from bench_gateway import (
    KEY,
    REPOSITORY,
    UPSTREAM,
    basguard,
    server,
    wait_until_serving,
    write_basguard_config,
    wrk,
)

from proxy.tools.local_model import free_port

# (part, file pattern, function pattern): the first rule matching a frame names its part.
RULES: tuple[tuple[str, str, str], ...] = (
    # Only the launch frames under a sample: uvloop's own C code ran (epoll, socket reads,
    # callbacks), or a native call py-spy cannot see into.
    ("event loop (uvloop: epoll, reads, callbacks)",
     r"^uvicorn/(main|server|_compat)\.py|proxy/cli\.py|^<frozen runpy>", r""),
    ("access log (logging)", r"^logging/|uvicorn/logging\.py", r""),
    # FastAPI >= 0.16x asks OpenTelemetry on every request whether tracing is on.
    ("FastAPI telemetry check (OpenTelemetry)",
     r"^fastapi/telemetry/|^(trace|_logs|metrics/_internal|context)/", r""),
    ("pydantic request validation", r"^pydantic|proxy/http/routes/", r"^_validate$|^BaseModel"),
    ("body read + orjson.loads", r"proxy/http/routes/context\.py", r"^read_json$"),
    ("body read + orjson.loads", r"starlette/requests\.py", r"\.(stream|body)$"),
    ("metrics (prometheus_client)", r"^prometheus_client/|proxy/metrics\.py", r""),
    ("disconnect watcher task", r"proxy/http/routes/guarded\.py", r"_unless_disconnected|watch$"),
    ("auth (sha256 + compare_digest)", r"proxy/runtime/state\.py", r"authenticate$"),
    ("auth (sha256 + compare_digest)", r"^hmac\.py|^hashlib\.py", r""),
    ("store append", r"proxy/store\.py", r""),
    ("confidence features, decision, calibrator predict",
     r"proxy/(decision|confidence)\.py|^calibrators/|^policies/|^numpy/|^sklearn/|^scipy/", r""),
    ("wire format (logprobs, choices)", r"proxy/formats\.py", r""),
    ("service glue (record, headers, id)", r"proxy/serving\.py|^secrets\.py|^random\.py", r""),
    ("aiohttp client + orjson", r"proxy/upstream\.py|^aiohttp/|^multidict/|^yarl/", r""),
    ("response building (Starlette Response)", r"starlette/responses\.py", r""),
    ("route glue (orjson.dumps, Response call)", r"proxy/http/routes/", r""),
    ("errors", r"proxy/errors\.py", r""),
    ("FastAPI/Starlette routing, middleware, Request",
     r"^fastapi/|^starlette/|^anyio/", r""),
    ("uvicorn protocol (httptools) incl. socket writes", r"^uvicorn/protocols/", r""),
    ("uvicorn proxy-headers middleware", r"^uvicorn/middleware/", r""),
)
# Frames seen through to their caller: they do work on someone else's behalf.
TRANSPARENT = re.compile(
    r"^(asyncio|contextlib|typing|abc|functools|enum|concurrent|selectors|weakref|copy|"
    r"dataclasses|_weakrefset|collections|inspect|types|<frozen [^>]*>|<string>|<attrs [^>]*>)"
    r"(/|\.py|$)"
)
# A thread waiting on a lock with a timeout looks busy to py-spy.
IDLE = re.compile(r"^(Condition|Event)\.wait \(threading\.py")
THREAD = re.compile(r"^thread \((\d+)\)(: MainThread)?")
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*):\d+\)$")


def part_of(stack: list[str]) -> tuple[str, str]:
    """(part, innermost function) charged for one sampled stack, root first."""
    leaf = ""
    for frame in reversed(stack):
        match = FRAME.match(frame)
        if match is None:
            continue
        function, file = match["function"], match["file"]
        leaf = leaf or f"{function} ({file})"
        if TRANSPARENT.match(file):
            continue
        for part, file_pattern, function_pattern in RULES:
            if re.search(file_pattern, file) and re.search(function_pattern, function):
                return part, leaf
        return f"other ({file.split('/')[0]})", leaf
    return "event loop (no Python frame)", leaf or "-"


def breakdown(collapsed: Path) -> tuple[Counter[str], Counter[str], Counter[str]]:
    """Samples per part and per innermost function of the event loop's thread (the main
    thread), and samples per other thread."""
    lines = collapsed.read_text(errors="replace").splitlines()
    # py-spy names a thread only once Python has (``thread (ID): MainThread``); its id is
    # on every sample.
    main_ids = {match[1] for line in lines if (match := THREAD.match(line)) and match[2]}
    parts: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    others: Counter[str] = Counter()
    for line in lines:
        stack_text, _, count_text = line.rpartition(" ")
        thread, *stack = stack_text.split(";")
        count = int(count_text)
        match = THREAD.match(thread)
        if match is None or match[1] not in main_ids:
            if not (stack and IDLE.match(stack[-1])):
                others[thread] += count
            continue
        part, leaf = part_of(stack)
        parts[part] += count
        functions[leaf] += count
    return parts, functions, others


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=20, help="length of the profile")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--checkout", type=Path, default=REPOSITORY,
                        help="the basguard checkout to profile")
    parser.add_argument("--collapsed", type=Path, help="also keep py-spy's raw stacks here")
    parser.add_argument("--native", action="store_true",
                        help="sample native frames too (shows the socket system calls)")
    parser.add_argument("--top", type=int, default=25, help="hottest functions listed")
    args = parser.parse_args()
    for tool in ("wrk", "py-spy"):
        if shutil.which(tool) is None:
            sys.exit(f"this profile needs {tool} (apt-get install wrk; pip install py-spy)")
    with tempfile.TemporaryDirectory() as tmp_name, server(
        [sys.executable, "-c", UPSTREAM.format(port=(up_port := free_port()))], up_port
    ) as upstream:
        tmp = Path(tmp_name)
        config = write_basguard_config(tmp, upstream.url, "enforce")
        target = basguard(args.checkout.resolve(), config,
                          tmp / "enforce.sqlite3")
        process = subprocess.Popen(target.command, cwd=target.cwd, env={**os.environ, **target.env},
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{target.port}"
        try:
            wait_until_serving(process, url, target.ready_path)
            wrk(url, KEY, connections=32, seconds=2, directory=tmp)  # warm-up
            collapsed = args.collapsed or tmp / "stacks.txt"
            spy = subprocess.Popen(
                ["py-spy", "record", "--pid", str(process.pid), "--threads", "--rate",
                 str(args.rate), "--duration", str(args.seconds), "--format", "raw",
                 "-o", str(collapsed), *(["--native"] if args.native else [])],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            # A sampled process pauses; a few wrk timeouts then are the profiler's doing.
            load = wrk(url, KEY, connections=32, seconds=args.seconds, directory=tmp,
                       warm_up=False, strict=False)
            _, error = spy.communicate(timeout=args.seconds + 60)
            if spy.returncode != 0:
                sys.exit(f"py-spy failed: {error}")
            parts, functions, others = breakdown(collapsed)
        finally:
            process.terminate()
            process.wait(timeout=20)
    total = sum(parts.values())
    print(f"basguard (enforce) from {args.checkout}, wrk c=32 for {args.seconds} s: "
          f"{load.requests_per_second:.0f} requests/s, p50 {load.p50_ms:.2f} ms")
    print(f"event-loop thread: {total} samples at {args.rate} Hz "
          f"({total / args.rate / args.seconds:.0%} of the wall time on CPU)")
    print()
    print(f"{'part of the request path':<48} {'share':>6} {'us/request':>11}")
    per_request = 1e6 / args.rate / (load.requests_per_second * args.seconds)
    for part, count in parts.most_common():
        print(f"{part:<48} {count / total:6.1%} {count * per_request:11.1f}")
    print()
    print(f"hottest innermost functions (event-loop thread), top {args.top}:")
    for function, count in functions.most_common(args.top):
        print(f"  {count / total:6.1%}  {function}")
    if others:
        print()
        print("other threads (samples while working, off the request path):")
        for thread, count in others.most_common():
            print(f"  {count:7d}  {thread}")


if __name__ == "__main__":
    main()
