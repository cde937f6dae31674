"""No spelling of a path gets around the guard, and nothing passed through leaves ``base_url``.

Attacks over real sockets: request targets written byte for byte (``http.client`` sends the
path as given; httpx would normalise it first), a gateway in front of an upstream that records
every raw request target it gets and answers every path with a chat completion. The upstream's
reading of a target is a lenient server's: percent-decoded until stable, dot segments removed,
cut at ``?``, ``#`` and ``;``, without case. Whatever reaches the upstream must read as a path
below its ``base_url``, and a guarded endpoint (or a path below one) may be reached only
through the guard, never relayed raw by the passthrough.
"""

from __future__ import annotations

import hashlib
import http.client
import posixpath
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.errors import InvalidPath
from proxy.wire.paths import canonical_path
from tests.support.gateway import serve_gateway
from tests.support.loopback import serve_in_thread
from tests.support.path_attacks import (
    BASE_PATH,
    SPELLING_PIECES,
    RecordingUpstream,
    guarded_reading,
    lenient_reading,
    send_raw,
    violations,
)

KEYS = {"open": "key-open-0123456789abcdef", "embeds": "key-embeds-0123456789abcdef"}
UPSTREAM_KEY = "sk-upstream-secret-0123456789"


@pytest.fixture(scope="module")
def recording() -> Iterator[tuple[RecordingUpstream, str]]:
    upstream = RecordingUpstream()
    with serve_in_thread(upstream) as url:
        yield upstream, url


@pytest.fixture(scope="module")
def gateway(
    recording: tuple[RecordingUpstream, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RecordingUpstream, str]]:
    upstream, url = recording

    def tenant(name: str, **policy: Any) -> dict[str, Any]:
        digest = hashlib.sha256(KEYS[name].encode()).hexdigest()
        return {"api_keys": [{"sha256": digest}], "risk": {"threshold": 0.5},
                "default_model": "m", **policy}

    config = {
        "version": 1,
        "models": {"m": {"base_url": f"{url}{BASE_PATH}", "api_key_env": "ATTACK_UPSTREAM_KEY",
                         "timeout_seconds": 5}},
        "tenants": {"open": tenant("open"),
                    "embeds": tenant("embeds", passthrough=["embeddings"])},
    }
    mp = pytest.MonkeyPatch()
    mp.setenv("ATTACK_UPSTREAM_KEY", UPSTREAM_KEY)
    try:
        with serve_gateway(tmp_path_factory.mktemp("attack"), config) as gateway_url:
            yield upstream, gateway_url
    finally:
        mp.undo()


def assert_guarded(upstream: RecordingUpstream, target: str, tenant: str,
                   status: int, headers: dict[str, str], body: bytes) -> None:
    """What reached the upstream stays below its base path, carries no tenant header, and a
    guarded endpoint only ever answers through the guard."""
    family = "embeddings" if tenant == "embeds" else None
    problems = violations(upstream.clear(), status=status, headers=headers, body=body,
                          allowed_family=family)
    assert problems == [], (target, tenant, problems)


def attack(url: str, method: str, target: str, tenant: str) -> tuple[int, dict[str, str],
                                                                     bytes]:
    return send_raw(url, method, target, KEYS[tenant])


REPORTED_BYPASSES = [
    "/v1/chat/completions%3F", "/v1/chat/completions%23", "/v1/./chat/completions",
    "/v1/x/%2e%2e/chat/completions", "/v1/responses%3F", "/v1/embeddings/%2e%2e/chat/completions",
    "/v1/%2e%2e/admin/secret", "/v1/chat/completions/", "/v1/chat//completions",
    "/v1/chat%2Fcompletions", "/v1/Chat/Completions", "/v1/chat/completions;x",
    "/v1/chat/completions%253F", "/v1/responses/resp_123", "/v1/chat/completions/chatcmpl-1",
    "/v1/embeddings/..%5C..%5Cchat/completions", "/v1/chat/completions%20",
]


@pytest.mark.parametrize("target", REPORTED_BYPASSES)
@pytest.mark.parametrize("method", ["POST", "GET"])
def test_reported_spellings_never_pass_a_guarded_endpoint(
    gateway: tuple[RecordingUpstream, str], target: str, method: str
) -> None:
    upstream, url = gateway
    upstream.clear()
    for tenant in KEYS:
        status, headers, body = attack(url, method, target, tenant)
        assert "x-basguard-passthrough" not in headers, (target, tenant, status)
        assert b"RAW-UPSTREAM-ANSWER" not in body, (target, tenant)
        assert_guarded(upstream, target, tenant, status, headers, body)
        error = orjson.loads(body)["error"]  # every refusal is the envelope
        assert error["code"] in {"invalid_path", "guarded_endpoint", "not_found",
                                 "method_not_allowed", "endpoint_not_allowed"}, error


def test_the_canonical_guarded_path_still_decides(gateway: tuple[RecordingUpstream, str]) -> None:
    upstream, url = gateway
    upstream.clear()
    status, headers, body = attack(url, "POST", "/v1/chat/completions", "embeds")
    assert status == 200 and headers["x-basguard-decision"] == "answer", body
    [seen] = upstream.clear()
    assert seen["target"] == f"{BASE_PATH}/chat/completions"
    assert seen["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_a_passthrough_path_reaches_the_upstream_below_its_base(
    gateway: tuple[RecordingUpstream, str]
) -> None:
    upstream, url = gateway
    upstream.clear()
    status, headers, _ = attack(url, "GET", "/v1/files/file-AbC%3A1?limit=2&after=x%2Fy",
                                  "open")
    assert status == 200 and headers["x-basguard-passthrough"] == "files"
    [seen] = upstream.clear()
    # An escape of a character a segment may hold is read once: the upstream sees it plainly.
    assert seen["target"] == f"{BASE_PATH}/files/file-AbC:1?limit=2&after=x%2Fy"


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(pieces=st.lists(st.sampled_from(SPELLING_PIECES), min_size=1, max_size=8),
       method=st.sampled_from(["POST", "GET"]), tenant=st.sampled_from(sorted(KEYS)))
def test_no_spelling_reaches_a_guarded_endpoint_unguarded_or_leaves_the_base(
    gateway: tuple[RecordingUpstream, str], pieces: list[str], method: str, tenant: str
) -> None:
    upstream, url = gateway
    upstream.clear()
    # A raw ? or # starts a query or fragment on the request line: still a fair attack.
    target = "/v1/" + "".join(pieces)
    try:
        status, headers, body = attack(url, method, target, tenant)
    except http.client.InvalidURL:
        return  # the client itself refuses to send it (control characters, spaces)
    assert_guarded(upstream, target, tenant, status, headers, body)
    if status >= 400:
        assert "error" in orjson.loads(body), body


# The canonical reading, checked against other readers without a server.
_RAW_SEGMENT_PIECES = st.sampled_from([
    "a", "B", "chat", "~", "-", "_", ".", "..", "%2e", "%2E", "%2f", "%3F", "%23", "%25", "%41",
    "%7e", "%3A", ":", "@", "!", ";", "%3b", "\\", "%5C", "%", "%g1", "é", " ", "+", "%2B",
])


@given(segments=st.lists(st.lists(_RAW_SEGMENT_PIECES, max_size=4).map("".join), min_size=1,
                         max_size=5))
def test_a_canonical_path_reads_the_same_to_every_reader(segments: list[str]) -> None:
    raw = "/" + "/".join(segments)
    try:
        encoded = raw.encode("ascii")
    except UnicodeEncodeError:
        encoded = raw.encode("utf-8")
    try:
        path = canonical_path(encoded)
    except InvalidPath:
        return
    # Decoding once more, removing dot segments, or cutting at a separator changes nothing.
    assert unquote(path) == path
    assert posixpath.normpath(path) == path
    assert not any(separator in path for separator in ("?", "#", ";", "\\", "%", " "))
    assert path == "/" or ("//" not in path and not path.endswith("/"))
    assert lenient_reading(path) == path.lower()


def test_a_non_canonical_websocket_is_refused_before_anything_opens(
    gateway: tuple[RecordingUpstream, str]
) -> None:
    upstream, url = gateway
    upstream.clear()
    for target in ("/v1/%2e%2e/admin/ws", "/v1/embeddings/%2e%2e/realtime?model=m",
                   "/v1/Realtime?model=m"):
        parts = urlsplit(url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        connection.putrequest("GET", target)
        for name, value in (("upgrade", "websocket"), ("connection", "Upgrade"),
                            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
                            ("sec-websocket-version", "13"),
                            ("authorization", f"Bearer {KEYS['embeds']}")):
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        body = response.read()
        connection.close()
        assert response.status in (400, 403, 404), (target, response.status)
        assert "error" in orjson.loads(body)
    assert upstream.clear() == []


def test_the_recording_upstream_reads_leniently() -> None:
    # The test's own reader must catch what the issue reported, or it proves nothing.
    assert guarded_reading(lenient_reading(f"{BASE_PATH}/chat/completions%3F")) is not None
    assert guarded_reading(lenient_reading(f"{BASE_PATH}/x/%2e%2e/chat/completions")) is not None
    assert lenient_reading(f"{BASE_PATH}/%2e%2e/%2e%2e/admin") == "/admin"


@pytest.mark.parametrize("argument", [
    {"api_base": "{evil}/v1"}, {"base_url": "{evil}/v1"},
    {"extra_headers": {"x-evil": "1"}}, {"custom_llm_provider": "openai", "api_base": "{evil}"},
])
def test_a_body_cannot_steer_litellm_or_its_key(
    recording: tuple[RecordingUpstream, str], tmp_path_factory: pytest.TempPathFactory,
    argument: dict[str, Any],
) -> None:
    # litellm reads its own arguments (api_base, ...) from the request's keywords: a model with
    # no base_url of its own would send the upstream's key wherever the body said.
    evil, evil_url = recording
    evil.clear()
    digest = hashlib.sha256(KEYS["open"].encode()).hexdigest()
    config = {
        "version": 1,
        "models": {"claude": {"provider": "litellm", "model": "anthropic/claude-x",
                              "api_key_env": "ATTACK_UPSTREAM_KEY", "timeout_seconds": 5}},
        "tenants": {"open": {"api_keys": [{"sha256": digest}], "risk": {"threshold": 0.5}}},
    }
    attack = orjson.loads(orjson.dumps(argument).replace(b"{evil}", evil_url.encode()))
    mp = pytest.MonkeyPatch()
    mp.setenv("ATTACK_UPSTREAM_KEY", UPSTREAM_KEY)
    try:
        with serve_gateway(tmp_path_factory.mktemp("litellm-attack"), config) as url:
            response = httpx.post(
                f"{url}/v1/chat/completions", timeout=30,
                headers={"authorization": f"Bearer {KEYS['open']}"},
                json={"model": "claude", "messages": [{"role": "user", "content": "hi"}],
                      **attack})
    finally:
        mp.undo()
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] is None and error["param"] in attack, error
    assert evil.clear() == []
