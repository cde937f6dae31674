"""Where basguard's request path spends its CPU, under load: a breakdown by part.

Starts the fake upstream and basguard (``enforce``, the demo calibrator, the decision store on,
as ``bench_gateway.py`` runs it), drives it with ``wrk`` at concurrency 32, and samples the
gateway meanwhile with ``py-spy`` (``pip install py-spy``; it attaches to the process without
pausing it, so the gateway runs unmodified). Each sample of the event loop's thread is charged to
the innermost frame that belongs to a known part (:data:`RULES`: the server layer, the gateway's
ASGI entry, Starlette, body read, validation, auth, upstream client, decision, metrics, store,
...); frames of asyncio, contextlib and the like are looked through to their caller. A C call
(a socket write, orjson) is charged to the Python frame that made it. Samples of other threads
(the store's writer) are shown apart: off the request path, but they share the CPU.

Prints each part's share of the samples and its CPU microseconds per request (the share times
the CPU per request measured from ``/proc`` meanwhile), and the hottest functions;
``--stream`` profiles streamed requests too; ``--collapsed FILE`` keeps py-spy's raw stacks (for
a flame graph); ``--checkout DIR`` profiles another checkout of basguard (a candidate patch,
say). ``bench_gateway.py --profile`` prints the same breakdown for its basguard targets.

Run: python benchmarks/profile_gateway.py [--seconds N] [--rate HZ] [--stream] [--checkout DIR]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench_gateway import (
    KEY,
    REPOSITORY,
    UPSTREAM,
    WrkResult,
    basguard,
    server,
    write_basguard_config,
    wrk,
)

from proxy.tools.local_model import free_port

# (part, file pattern, function pattern): the first rule matching a frame names its part.
# The parts follow the layers of proxy/ (see docs/architecture.md); a file pattern matches the
# path py-spy shows, relative to its sys.path entry.
RULES: tuple[tuple[str, str, str], ...] = (
    # Only the launch frames under a sample: uvloop's own C code ran (epoll, socket reads,
    # callbacks), or a native call py-spy cannot see into.
    ("event loop (uvloop: epoll, reads, callbacks)",
     r"^uvicorn/(main|server|_compat)\.py|(^|/)proxy/cli/|(^|/)proxy/http/server\.py"
     r"|^<frozen runpy>", r""),
    ("access log", r"^logging/|uvicorn/logging\.py|(^|/)proxy/http/access_log\.py", r""),
    ("server: gateway protocol (limits, deadlines)",
     r"(^|/)proxy/http/(protocol|body_deadline|lingering_close)\.py", r""),
    ("server: uvicorn protocol (httptools) incl. socket writes",
     r"^uvicorn/protocols/|(^|/)proxy/http/cycle\.py", r""),
    ("server: uvicorn proxy-headers middleware", r"^uvicorn/middleware/", r""),
    ("pydantic request validation", r"^pydantic|(^|/)proxy/wire/request_body\.py",
     r"^validated$|^_validate$|^BaseModel|^validate"),
    ("body read + orjson.loads", r"(^|/)proxy/http/routes/context\.py", r"^read_json$"),
    ("body read + orjson.loads", r"(^|/)proxy/wire/request_body\.py", r""),
    ("body read + orjson.loads", r"starlette/requests\.py", r"\.(stream|body)$"),
    ("metrics (prometheus_client)", r"^prometheus_client/|(^|/)proxy/observability/", r""),
    ("disconnect watcher", r"(^|/)proxy/http/(routes/guarded|disconnect)\.py",
     r"_unless_disconnected|watch$|Disconnect"),
    ("drain tracking (in-flight set)", r"(^|/)proxy/http/draining\.py", r""),
    ("auth (sha256 + compare_digest)", r"(^|/)proxy/runtime/(state|bearer)\.py",
     r"authenticate|tenant_for|key"),
    ("auth (sha256 + compare_digest)", r"^hmac\.py|^hashlib\.py", r""),
    ("store hand-off (rows, journal, queue)", r"(^|/)proxy/store/", r""),
    ("confidence features, decision, calibrator predict",
     r"(^|/)proxy/(judging|signals)/|(^|/)calibrators/|(^|/)policies/|^numpy/|^sklearn/"
     r"|^scipy/", r""),
    ("wire format (logprobs, choices)", r"(^|/)proxy/wire/", r""),
    ("service glue (target, upstream body, record)",
     r"(^|/)proxy/services/|^secrets\.py|^random\.py", r""),
    ("upstream client + orjson",
     r"(^|/)proxy/upstream/|^aiohttp/|^multidict/|^yarl/|^propcache/|^aiohappyeyeballs/", r""),
    ("response building (Starlette Response)", r"starlette/responses\.py", r""),
    ("route glue (orjson.dumps, Response call)", r"(^|/)proxy/http/routes/", r""),
    ("errors", r"(^|/)proxy/errors\.py", r""),
    ("HTTP entry: the gateway's ASGI middlewares",
     r"(^|/)proxy/http/(boundary|concurrency|request_path|entry|app)\.py", r""),
    ("Starlette: app, routing, middleware stack, Request",
     r"^starlette/|^anyio/|^sniffio/", r""),
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
        if not count_text.isdigit():
            # A frame whose name held a line break (a lambda's source, a task's repr): its
            # sample's line is split, and the piece without a count is skipped.
            continue
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


@dataclass(frozen=True)
class Profile:
    """One sampled run: the parts' samples, the hottest functions, and what the run cost."""

    parts: Counter[str]
    functions: Counter[str]
    others: Counter[str]
    load: WrkResult

    def per_request(self) -> dict[str, float]:
        """Microseconds of CPU per request of each part: its share of the samples of every
        working thread times the CPU per request measured meanwhile (steadier than the
        samples' own count, which a shared machine's waits for a core inflate)."""
        total = sum(self.parts.values()) + sum(self.others.values())
        scale = self.load.cpu_us_per_request / max(total, 1)
        found = {part: count * scale for part, count in self.parts.most_common()}
        for thread, count in self.others.most_common():
            found[f"other thread: {thread}"] = count * scale
        return found


def profile(url: str, pid: int, *, seconds: int, rate: int, directory: Path,
            stream: bool = False, native: bool = False,
            collapsed: Path | None = None) -> Profile:
    """Sample the server ``pid`` (already warmed up) with py-spy while ``wrk`` loads it at
    concurrency 32 with plain or streamed requests."""
    collapsed = collapsed or directory / f"stacks-{pid}-{'stream' if stream else 'plain'}.txt"
    spy = subprocess.Popen(
        ["py-spy", "record", "--pid", str(pid), "--threads", "--nonblocking", "--rate",
         str(rate), "--duration", str(seconds), "--format", "raw", "-o", str(collapsed),
         *(["--native"] if native else [])],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    load = wrk(url, KEY, connections=32, seconds=seconds, directory=directory, warm_up=False,
               strict=False, pid=pid, stream=stream)
    _, error = spy.communicate(timeout=seconds + 60)
    if spy.returncode != 0:
        sys.exit(f"py-spy failed: {error}")
    return Profile(*breakdown(collapsed), load)


def print_profile(title: str, found: Profile, *, top: int = 0) -> None:
    load = found.load
    print(f"{title}: wrk c=32, {load.requests_per_second:.0f} requests/s, "
          f"CPU {load.cpu_us_per_request:.0f} us/request ({load.system_us_per_request:.0f} in "
          f"the kernel)")
    print(f"{'part of the request path':<58} {'share':>6} {'us/request':>11}")
    per_request = found.per_request()
    for part, micros in per_request.items():
        print(f"{part:<58} {micros / load.cpu_us_per_request:6.1%} {micros:11.1f}")
    if top:
        total = sum(found.functions.values())
        print(f"hottest innermost functions (event-loop thread), top {top}:")
        for function, count in found.functions.most_common(top):
            print(f"  {count / total:6.1%}  {function}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=20, help="length of each profile")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--checkout", type=Path, default=REPOSITORY,
                        help="the basguard checkout to profile")
    parser.add_argument("--collapsed", type=Path,
                        help="also keep py-spy's raw stacks of the plain requests here")
    parser.add_argument("--native", action="store_true",
                        help="sample native frames too (shows the socket system calls)")
    parser.add_argument("--stream", action="store_true",
                        help="also profile streamed requests")
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
        target = basguard(args.checkout.resolve(), config, tmp / "enforce.sqlite3")
        with server(target.command, target.port, target.env, target.ready_path,
                    target.cwd) as gateway:
            found = []
            for stream in (False, True) if args.stream else (False,):
                wrk(gateway.url, KEY, connections=32, seconds=2, directory=tmp,
                    stream=stream)  # warm-up
                found.append((stream, profile(
                    gateway.url, gateway.pid, seconds=args.seconds, rate=args.rate,
                    directory=tmp, stream=stream, native=args.native,
                    collapsed=None if stream else args.collapsed)))
    for stream, result in found:
        print()
        print_profile(f"basguard (enforce{', streamed' if stream else ''}) from "
                      f"{args.checkout}", result, top=args.top)


if __name__ == "__main__":
    main()
