"""The rest of the OpenAI surface, passed through unguarded (#9 item 2), over loopback.

Real clients (the openai SDK, httpx) through basguard to the fake upstream, which records what
reached it; streaming both ways is shown with an upstream that holds its body until the test
has seen the first piece, and a request body whose second half is sent only once the upstream
has the first.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import SDK, gateway_config, serve_gateway
from tests.support.waiting import wait_until

UPSTREAM_KEY = "sk-upstream-secret-0123456789"
KEYS = {name: f"key-{name}-0123456789abcdef" for name in (
    "open", "closed", "listed", "nodefault")}


def _tenant(name: str, **policy: Any) -> dict[str, Any]:
    digest = hashlib.sha256(KEYS[name].encode()).hexdigest()
    return {"api_keys": [{"sha256": digest}], "risk": {"threshold": 0.5}, **policy}


@pytest.fixture(scope="module")
def gateway_url(
    fake_upstream: tuple[FakeUpstream, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    mp = pytest.MonkeyPatch()
    mp.setenv("FAKE_UPSTREAM_KEY", UPSTREAM_KEY)
    config = gateway_config(fake_upstream[1], tenants={
        "open": _tenant("open", default_model="keyed"),
        "closed": _tenant("closed", passthrough="none", default_model="keyed"),
        "listed": _tenant("listed", passthrough=["embeddings", "files"], default_model="fake"),
        "nodefault": _tenant("nodefault"),
    })
    config["models"]["litellm-only"] = {"provider": "litellm", "model": "anthropic/claude-x"}
    config["models"]["keyed"] |= {"organization": "org-basguard", "project": "proj-basguard"}
    try:
        with serve_gateway(tmp_path_factory.mktemp("passthrough"), config) as url:
            yield url
    finally:
        mp.undo()


@pytest.fixture
def client(gateway_url: str, sdk_client: SDK, upstream: FakeUpstream) -> Callable[[str], Any]:
    return lambda tenant: sdk_client(f"{gateway_url}/v1", KEYS[tenant])


def auth(tenant: str) -> dict[str, str]:
    return {"authorization": f"Bearer {KEYS[tenant]}"}


def test_embeddings_reach_the_models_upstream_with_its_key(
    client: Callable[[str], openai.OpenAI], upstream: FakeUpstream
) -> None:
    raw = client("open").embeddings.with_raw_response.create(
        model="fake", input=["one", "three"])
    embeddings = raw.parse()
    assert [e.embedding for e in embeddings.data] == [[3.0, 0.5, -0.25], [5.0, 0.5, -0.25]]
    assert raw.headers["x-basguard-passthrough"] == "embeddings"
    (seen,) = upstream.passed
    assert json.loads(seen["body"])["model"] == "fake-model"  # the upstream's name for it
    assert "authorization" not in seen["headers"]  # `fake` has no key; the tenant's never goes
    client("open").embeddings.create(model="keyed", input="x")
    assert upstream.passed[1]["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_moderations_and_multipart_audio_pass_through(
    client: Callable[[str], openai.OpenAI], upstream: FakeUpstream
) -> None:
    moderation = client("open").moderations.create(model="fake", input="hello")
    assert moderation.results[0].flagged is False
    audio = b"RIFF" + bytes(range(256)) * 40
    transcript = client("open").audio.transcriptions.create(
        model="whisper-1", file=("clip.wav", audio, "audio/wav"))
    seen = upstream.passed[-1]
    assert seen["path"] == "/v1/audio/transcriptions"
    assert audio in seen["body"] and b'name="model"' in seen["body"]
    assert transcript.text == f"{len(seen['body'])} bytes of {seen['headers']['content-type']}"
    # No JSON model: the tenant's default_model (keyed) routed it, with keyed's key.
    assert seen["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_a_response_streams_back_as_it_arrives(
    gateway_url: str, upstream: FakeUpstream
) -> None:
    with httpx.stream("GET", f"{gateway_url}/v1/files/file-1/content", headers=auth("open"),
                      timeout=60) as response:
        assert response.status_code == 200
        pieces = response.iter_raw()
        # The upstream holds the rest until released: this read returns only if basguard
        # forwards the first piece without waiting for the whole body.
        assert next(pieces) == b"first piece;"
        upstream.release()
        assert b"".join(pieces) == b"the rest"


def test_a_request_body_streams_up_as_it_is_sent(
    gateway_url: str, upstream: FakeUpstream
) -> None:
    first, second = b"a" * 5000, b"b" * 3000  # more than max_body_bytes: never held whole

    def parts() -> Iterator[bytes]:
        yield first
        wait_until(lambda: upstream.upload_progress >= len(first),
                   what="the first part to reach the upstream", interval=0.01)
        yield second

    response = httpx.post(f"{gateway_url}/v1/uploads/up-1/parts", content=parts(),
                          headers={**auth("open"), "content-type": "application/octet-stream"},
                          timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["bytes"] == len(first) + len(second)
    assert upstream.passed[-1]["body"] == first + second


def test_any_other_path_passes_with_its_query_and_only_allowlisted_headers(
    gateway_url: str, upstream: FakeUpstream
) -> None:
    response = httpx.post(
        f"{gateway_url}/v1/vector_stores/vs_1/search?limit=3", json={"query": "q"},
        headers={**auth("open"), "connection": "keep-alive, openai-beta",
                 "openai-beta": "assistants=v2", "idempotency-key": "idem-1",
                 "x-stainless-retry-count": "0", "x-keep": "2"}, timeout=10)
    assert response.status_code == 200
    echo = response.json()
    assert (echo["method"], echo["path"], echo["query"]) == (
        "POST", "/v1/vector_stores/vs_1/search", "limit=3")
    headers = upstream.passed[-1]["headers"]
    assert headers["idempotency-key"] == "idem-1"
    assert headers["x-stainless-retry-count"] == "0"
    assert "openai-beta" not in headers  # the Connection header named it: hop-by-hop
    assert "x-keep" not in headers  # not on the allowlist
    assert headers["authorization"] == f"Bearer {UPSTREAM_KEY}"  # default_model: keyed


def test_the_tenants_identity_headers_never_reach_the_upstream(
    gateway_url: str, upstream: FakeUpstream
) -> None:
    response = httpx.post(
        f"{gateway_url}/v1/embeddings", json={"model": "keyed", "input": "x"},
        headers={**auth("open"), "openai-organization": "org-tenant",
                 "openai-project": "proj-tenant", "cookie": "session=tenant",
                 "openai-beta": "assistants=v2", "x-api-key": "tenant-key"}, timeout=10)
    assert response.status_code == 200, response.text
    headers = upstream.passed[-1]["headers"]
    assert headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert headers["openai-beta"] == "assistants=v2"
    # The organization and project basguard's key acts for are the model's config's.
    assert (headers["openai-organization"], headers["openai-project"]) == (
        "org-basguard", "proj-basguard")
    for name in ("cookie", "x-api-key"):
        assert name not in headers, name


def test_the_passthrough_setting_is_applied(
    client: Callable[[str], openai.OpenAI], gateway_url: str
) -> None:
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client("closed").embeddings.create(model="fake", input="x")
    assert caught.value.code == "endpoint_not_allowed"
    assert client("listed").embeddings.create(model="fake", input="x").data
    with pytest.raises(openai.PermissionDeniedError):
        client("listed").moderations.create(model="fake", input="x")
    # Chat is guarded, not passed through: `none` leaves it working.
    response = httpx.post(f"{gateway_url}/v1/chat/completions", headers=auth("closed"),
                          json={"model": "fake", "messages": [{"role": "user", "content": "hi"}]},
                          timeout=10)
    assert response.status_code == 200


@pytest.mark.parametrize(("tenant", "request_args", "status", "code"), [
    ("nodefault", {"method": "GET", "url": "/v1/files"}, 400, None),
    ("open", {"method": "POST", "url": "/v1/embeddings",
              "json": {"model": "nope", "input": "x"}}, 404, "model_not_found"),
    ("open", {"method": "POST", "url": "/v1/embeddings",
              "json": {"model": "litellm-only", "input": "x"}}, 400, "passthrough_unavailable"),
    ("open", {"method": "POST", "url": "/v1/embeddings",
              "json": {"model": "fake", "input": "x" * 5000}}, 413, "payload_too_large"),
    ("open", {"method": "POST", "url": "/v1/embeddings", "content": b"{not json",
              "headers": {"content-type": "application/json"}}, 400, None),
    (None, {"method": "GET", "url": "/v1/embeddings"}, 401, "invalid_api_key"),
])
def test_requests_that_cannot_be_routed_get_the_envelope(
    gateway_url: str, tenant: str | None, request_args: dict[str, Any], status: int,
    code: str | None,
) -> None:
    args = {**request_args, "url": gateway_url + request_args["url"]}
    args["headers"] = {**(auth(tenant) if tenant else {}), **args.get("headers", {})}
    response = httpx.request(**args, timeout=10)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code


def test_litellm_models_with_a_base_url_pass_through(
    client: Callable[[str], openai.OpenAI], upstream: FakeUpstream
) -> None:
    assert client("open").embeddings.create(model="via-litellm", input="x").data
    assert json.loads(upstream.passed[-1]["body"])["model"] == "openai/fake-model"


def test_upstream_errors_are_sanitised(client: Callable[[str], openai.OpenAI]) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client("open").embeddings.create(model="fake", input="fail")
    assert caught.value.status_code == 502
    assert "/srv/fake" not in caught.value.response.text
    assert "fake" in caught.value.message  # names the model, not the upstream's internals


def test_models_list_and_retrieve(client: Callable[[str], openai.OpenAI]) -> None:
    ids = {model.id for model in client("open").models.list()}
    assert ids == {"fake", "keyed", "unreachable", "via-litellm", "litellm-only"}
    assert client("open").models.retrieve("fake").id == "fake"
    with pytest.raises(openai.NotFoundError) as caught:
        client("open").models.retrieve("gpt-9")
    assert caught.value.code == "model_not_found"


def test_passthrough_is_counted_by_endpoint_family(
    gateway_url: str, client: Callable[[str], openai.OpenAI]
) -> None:
    def count(endpoint: str, outcome: str) -> float:
        text = httpx.get(f"{gateway_url}/metrics", timeout=10).text
        wanted = (f'basguard_passthrough_requests_total{{endpoint="{endpoint}",'
                  f'outcome="{outcome}",tenant="open"}}')
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(wanted))

    before = count("embeddings", "2xx"), count("other", "2xx"), count("embeddings", "5xx")
    client("open").embeddings.create(model="fake", input="x")
    httpx.get(f"{gateway_url}/v1/some-new-endpoint", headers=auth("open"), timeout=10)
    with pytest.raises(openai.InternalServerError):
        client("open").embeddings.create(model="fake", input="fail")
    after = count("embeddings", "2xx"), count("other", "2xx"), count("embeddings", "5xx")
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 1]


def test_a_body_that_breaks_off_upstream_is_cut_not_ended(
    gateway_url: str, upstream: FakeUpstream
) -> None:
    def internal_errors() -> float:
        text = httpx.get(f"{gateway_url}/metrics", timeout=10).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("basguard_internal_errors_total{"))

    before = internal_errors()
    received = b""
    with pytest.raises(httpx.TransportError), httpx.stream(
            "GET", f"{gateway_url}/v1/files/broken/content", headers=auth("open"),
            timeout=60) as response:
        for piece in response.iter_raw():
            received += piece
    assert received == b"first piece;"  # and then an error, not a clean end
    assert internal_errors() == before
