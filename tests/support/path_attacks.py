"""Attacking the gateway with path spellings: an upstream that records every raw request
target, how a forgiving server could read one, and what must hold of what reached it.

Shared by tests/proxy/test_guard_paths.py (Hypothesis over spellings) and the ``path
spellings`` row of benchmarks/reliability.py (a seeded random sample against ``basguard
serve``).
"""

from __future__ import annotations

import http.client
import posixpath
import random
import threading
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson

__all__ = [
    "BASE_PATH",
    "GUARDED",
    "SPELLING_PIECES",
    "TENANT_ORGANIZATION",
    "RecordingUpstream",
    "guarded_reading",
    "lenient_reading",
    "random_spelling",
    "send_raw",
    "violations",
]

BASE_PATH = "/api/v1"
"""The path of the recording upstream's ``base_url``: nothing may reach outside it."""
GUARDED = ("chat/completions", "completions", "responses")
TENANT_ORGANIZATION = "org-of-the-tenant"
"""The ``OpenAI-Organization`` every attack sends: it must never reach the upstream."""
SPELLING_PIECES = (
    "chat", "completions", "responses", "embeddings", "realtime", "admin", "x", "CHAT", "Chat",
    "/", "//", ".", "..", "%2e", "%2E", "%2e%2e", ".%2e", "%2f", "%2F", "%3f", "%3F", "%23",
    "%25", "%252f", "%5c", "\\", ";", "%3b", "?", "#", "%63hat", "%00", "%20", "~", "%7E",
)
"""What an attacker spells a path from: separators raw and encoded, dot segments, case."""


def lenient_reading(target: str) -> str:
    """How a forgiving upstream could read a request target: the path it would route."""
    path = target
    for _ in range(4):  # servers that decode more than once
        path = unquote(path)
    for separator in ("?", "#", ";"):
        path = path.split(separator, 1)[0]
    path = path.replace("\\", "/")
    normalised = posixpath.normpath(path) if path else "/"
    return normalised.lower().rstrip("/") or "/"


def guarded_reading(reading: str) -> str | None:
    """The guarded endpoint ``reading`` (a :func:`lenient_reading` below :data:`BASE_PATH`)
    reaches, itself or a path below it, if any."""
    below_base = reading.removeprefix(BASE_PATH.lower() + "/")
    for guarded in GUARDED:
        if below_base == guarded or below_base.startswith(guarded + "/"):
            return guarded
    return None


class RecordingUpstream:
    """Any path, any method: recorded raw, answered with a confident chat completion."""

    def __init__(self) -> None:
        self.targets: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        raw = scope["raw_path"].decode("latin-1")
        query = scope["query_string"].decode("latin-1")
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        with self._lock:
            self.targets.append({"target": raw + (f"?{query}" if query else ""),
                                 "headers": headers, "type": scope["type"]})
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.close", "code": 1008})
            return
        while (await receive()).get("more_body"):
            pass
        body = orjson.dumps({
            "id": "chatcmpl-raw", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "RAW-UPSTREAM-ANSWER"},
                         "logprobs": {"content": [{"token": "RAW", "logprob": -0.01,
                                                   "bytes": None, "top_logprobs": []}]}}],
        })
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    def clear(self) -> list[dict[str, Any]]:
        with self._lock:
            seen, self.targets = self.targets, []
        return seen


def random_spelling(rng: random.Random, *, most: int = 8) -> str:
    """A target below ``/v1/`` made of up to ``most`` of :data:`SPELLING_PIECES`."""
    return "/v1/" + "".join(rng.choice(SPELLING_PIECES) for _ in range(rng.randint(1, most)))


def send_raw(gateway_url: str, method: str, target: str, key: str
             ) -> tuple[int, dict[str, str], bytes]:
    """One request with ``target`` written as given on the request line (httpx would
    normalise it), carrying the tenant's key and an organization header of its own."""
    parts = urlsplit(gateway_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                             "input": "hi", "prompt": "hi"})
        connection.putrequest(method, target, skip_accept_encoding=True)
        connection.putheader("authorization", f"Bearer {key}")
        connection.putheader("openai-organization", TENANT_ORGANIZATION)
        connection.putheader("content-type", "application/json")
        connection.putheader("content-length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def violations(seen: list[dict[str, Any]], *, status: int, headers: dict[str, str],
               body: bytes, allowed_family: str | None = None) -> list[str]:
    """What went wrong with one attack, given the requests the upstream saw for it: a request
    outside the base path, a tenant header forwarded, a guarded endpoint relayed by the
    passthrough, a family the tenant may not use reached, or the upstream's raw answer sent
    without a decision or a passthrough mark."""
    problems = []
    for request in seen:
        reading = lenient_reading(request["target"])
        if not reading.startswith(BASE_PATH.lower() + "/"):
            problems.append(f"left the base path: {request['target']}")
        if TENANT_ORGANIZATION in request["headers"].values():
            problems.append(f"forwarded the tenant's organization: {request['target']}")
        if guarded_reading(reading) is not None:
            if "x-basguard-passthrough" in headers:  # only the guard's own call may reach it
                problems.append(f"a guarded endpoint passed through: {request['target']}")
        elif allowed_family is not None and not reading.startswith(
                f"{BASE_PATH}/{allowed_family}".lower()):
            problems.append(f"reached {reading}, not {allowed_family}")
    if b"RAW-UPSTREAM-ANSWER" in body and status < 300 and not (
            "x-basguard-decision" in headers or "x-basguard-passthrough" in headers):
        problems.append("the upstream's answer sent raw, with no decision")
    return problems
