"""A faulty upstream, a faulty client and a faulty gateway, over real sockets.

Every failure reaches the client in the OpenAI envelope (or, after a stream's headers, as one
error event followed by ``[DONE]``), bounded in time and size, and says nothing of the
upstream's own words.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import openai
import pytest

from proxy.http.app import create_app
from proxy.runtime.settings import ServerSettings
from tests.support.fake_upstream import EMPTY_STREAMS, MALFORMED, MALFORMED_REPLIES, FakeUpstream
from tests.support.gateway import SDK, TENANT_KEYS, gateway_config
from tests.support.loopback import serve_in_thread
from tests.support.metrics import scrape
from tests.support.waiting import wait_until

CONFIDENT = [-0.01, -0.01, -0.01]


def script(**fake: Any) -> list[dict[str, str]]:
    return [{"role": "user", "content": json.dumps({"fake": fake})}]


class Gateway:
    """basguard on loopback with models that have small limits; its app is reachable."""

    def __init__(self, url: str, app: Any) -> None:
        self.url = url
        self.app = app

    def post(self, tenant: str, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
        return httpx.post(f"{self.url}/v1/chat/completions", json=body, timeout=30,
                          headers={"authorization": f"Bearer {TENANT_KEYS[tenant]}"}, **kwargs)

    def events(self, tenant: str, body: dict[str, Any]) -> tuple[int, list[str]]:
        """Status and the ``data:`` payloads of a streamed request."""
        with httpx.stream("POST", f"{self.url}/v1/chat/completions", json=body, timeout=30,
                          headers={"authorization": f"Bearer {TENANT_KEYS[tenant]}"}) as response:
            lines = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
            return response.status_code, lines


@pytest.fixture(scope="module")
def gateway(fake_upstream: tuple[FakeUpstream, str],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    url = fake_upstream[1]
    base = gateway_config(url, max_body_bytes=1_048_576)
    base["models"].update({
        "capped": {"base_url": f"{url}/v1", "timeout_seconds": 10,
                   "max_response_bytes": 65_536},
        "quick": {"base_url": f"{url}/v1", "timeout_seconds": 1.5},
        "litellm-quick": {"provider": "litellm", "model": "openai/fake-model",
                          "base_url": f"{url}/v1", "api_key_env": "FAKE_UPSTREAM_KEY",
                          "timeout_seconds": 1.5},
        "litellm-unreachable": {"provider": "litellm", "model": "openai/x",
                                "base_url": "http://127.0.0.1:9/v1", "api_key_env": "FAKE_UPSTREAM_KEY",
                                "timeout_seconds": 5},
    })
    directory = tmp_path_factory.mktemp("faults")
    path = directory / "basguard.yaml"
    path.write_text(json.dumps(base))
    mp = pytest.MonkeyPatch()
    mp.setenv("FAKE_UPSTREAM_KEY", "sk-upstream-secret-0123456789")
    try:
        app = create_app(ServerSettings(config=path, store=directory / "decisions.sqlite3",
                                        reload_interval_seconds=0))
        with serve_in_thread(app) as gateway_url:
            gateway = Gateway(gateway_url, app)
            # litellm's first call loads half of litellm, in a thread, for seconds on a busy
            # machine; past a model's short deadline that call is abandoned and its coroutine
            # is never awaited (a warning). Warm it up once.
            gateway.post("enforcer", {"model": "via-litellm", "messages": script(content="x")})
            yield gateway
    finally:
        mp.undo()


def assert_envelope(response: httpx.Response, status: int, code: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    return error


def assert_error_event_then_done(status: int, events: list[str], code: str) -> None:
    assert status == 200
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["code"] == code
    assert all("error" not in json.loads(e) for e in events[:-2])


# -- malformed upstream replies ----------------------------------------------------------------


@pytest.mark.parametrize("shape", [*(s for s in MALFORMED if s != "long_line"),
                                   *MALFORMED_REPLIES])
def test_a_malformed_reply_is_a_502(gateway: Gateway, shape: str) -> None:
    response = gateway.post("enforcer", {"model": "fake", "messages": script(malformed=shape)})
    assert_envelope(response, 502, "upstream_invalid_response")


@pytest.mark.parametrize("shape", MALFORMED)
def test_a_malformed_stream_is_a_502_before_the_headers(gateway: Gateway, shape: str) -> None:
    response = gateway.post("enforcer", {"model": "fake", "stream": True,
                                         "messages": script(malformed=shape)})
    assert_envelope(response, 502, "upstream_invalid_response")


@pytest.mark.parametrize("shape", MALFORMED)
def test_a_malformed_stream_ends_with_an_error_event_after_the_headers(
    gateway: Gateway, shape: str
) -> None:
    status, events = gateway.events("annotator", {"model": "fake", "stream": True,
                                                  "messages": script(malformed=shape)})
    assert_error_event_then_done(status, events, "upstream_invalid_response")


@pytest.mark.parametrize("shape", EMPTY_STREAMS)
@pytest.mark.parametrize("tenant", ["enforcer", "annotator"])
def test_an_empty_stream_is_a_502(gateway: Gateway, shape: str, tenant: str) -> None:
    response = gateway.post(tenant, {"model": "fake", "stream": True,
                                     "messages": script(malformed=shape)})
    assert_envelope(response, 502, "upstream_invalid_response")


def test_malformed_replies_are_counted_as_upstream_errors(gateway: Gateway) -> None:
    before = scrape(gateway.url)
    gateway.post("enforcer", {"model": "fake", "messages": script(malformed="choice_int")})
    key = ("basguard_upstream_errors_total",
           (("kind", "upstream_invalid_response"), ("model", "fake")))
    assert scrape(gateway.url)[key] == before.get(key, 0.0) + 1


def test_a_long_sound_stream_line_is_not_refused(gateway: Gateway) -> None:
    # aiohttp refuses lines over 128 KiB by default; max_response_bytes is the limit here.
    content = "x" * 600_000
    status, events = gateway.events("annotator", {"model": "fake", "stream": True,
                                                  "messages": script(content=content,
                                                                     logprobs=[-0.01])})
    assert status == 200 and events[-1] == "[DONE]"
    assert "".join(json.loads(e)["choices"][0]["delta"].get("content") or ""
                   for e in events[:-1] if json.loads(e)["choices"]) == content


# -- bounded in time and size -----------------------------------------------------------------


TRICKLE = {"content": "x" * 20, "logprobs": [-0.01] * 20, "stream_delay": 0.2}
"""20 chunks, 0.2 s apart: each arrives well within the 1.5 s timeout, the whole does not."""


@pytest.mark.parametrize("model", ["quick", "litellm-quick"])
def test_an_enforce_stream_past_its_deadline_is_a_504(gateway: Gateway, model: str) -> None:
    response = gateway.post("enforcer", {"model": model, "stream": True,
                                         "messages": script(**TRICKLE)})
    assert_envelope(response, 504, "upstream_timeout")


@pytest.mark.parametrize("model", ["quick", "litellm-quick"])
def test_a_passthrough_stream_past_its_deadline_ends_with_an_error_event(
    gateway: Gateway, model: str
) -> None:
    status, events = gateway.events("annotator", {"model": model, "stream": True,
                                                  "messages": script(**TRICKLE)})
    assert_error_event_then_done(status, events, "upstream_timeout")


BIG = {"content": "x" * 100_000, "logprobs": [-0.01] * 10}
"""100 kB of answer in 10 chunks, against the capped model's 64 KiB."""


def test_a_reply_over_max_response_bytes_is_a_502(gateway: Gateway) -> None:
    response = gateway.post("enforcer", {"model": "capped", "messages": script(**BIG)})
    assert_envelope(response, 502, "upstream_response_too_large")
    assert gateway.post("enforcer", {"model": "capped", "messages": script(content="ok")}
                        ).status_code == 200


def test_an_enforce_stream_over_max_response_bytes_is_a_502(gateway: Gateway) -> None:
    response = gateway.post("enforcer", {"model": "capped", "stream": True,
                                         "messages": script(**BIG)})
    assert_envelope(response, 502, "upstream_response_too_large")


def test_a_passthrough_stream_over_max_response_bytes_ends_with_an_error_event(
    gateway: Gateway,
) -> None:
    status, events = gateway.events("shadower", {"model": "capped", "stream": True,
                                                 "messages": script(**BIG)})
    assert_error_event_then_done(status, events, "upstream_response_too_large")


# -- what the client is told -------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_passes_through(gateway: Gateway, status: int) -> None:
    response = gateway.post("enforcer", {"model": "fake",
                                         "messages": script(status=status, retry_after="7")})
    assert response.status_code == (429 if status == 429 else 502)
    assert response.headers["retry-after"] == "7"


def test_an_upstream_rejection_says_why_without_the_key(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="basguard.upstream")
    response = gateway.post("enforcer", {"model": "keyed", "messages": script(
        status=400, echo_key=True, error_message="bad field frobnicate")})
    error = assert_envelope(response, 400, "upstream_rejected")
    # The reason reaches the app (it can act on it); the key it quoted does not.
    assert error["message"] == ("the upstream for model 'keyed' rejected the request (HTTP 400):"
                                " bad field frobnicate (received Bearer ***)")
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "bad field frobnicate" in logged
    assert "sk-upstream-secret" not in logged + response.text


@pytest.mark.parametrize("stream", [False, True])
def test_a_rejection_keeps_its_reason_without_traceback_or_paths(
    gateway: Gateway, stream: bool
) -> None:
    said = ("response_format json_schema is not supported in /srv/llm/server.py\n"
            "Traceback (most recent call last):\n  File \"/srv/llm/app.py\", line 3")
    response = gateway.post("enforcer", {"model": "fake", "stream": stream, "messages": script(
        status=400, error_message=said)})
    error = assert_envelope(response, 400, "upstream_rejected")
    assert error["message"] == (
        "the upstream for model 'fake' rejected the request (HTTP 400): response_format "
        "json_schema is not supported in <path>")


def test_an_upstream_failure_still_says_nothing_of_its_internals(gateway: Gateway) -> None:
    response = gateway.post("enforcer", {"model": "fake", "messages": script(
        status=500, error_message="CUDA out of memory at /srv/engine.py")})
    error = assert_envelope(response, 502, "upstream_error")
    assert error["message"] == "the upstream for model 'fake' failed (HTTP 500)"


@pytest.mark.parametrize("stream", [False, True])
def test_a_validation_error_answered_with_500_is_a_400_with_its_reason(
    gateway: Gateway, stream: bool
) -> None:
    """llama-cpp-python answers a request its schema refuses with HTTP 500 and pydantic's
    error (the text below is what it sent for response_format json_schema): basguard answers
    400, which SDKs do not retry, naming the field."""
    said = ("1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format',"
            " 'type'), 'msg': \"Input should be 'text' or 'json_object'\", 'input': "
            "'json_schema', 'ctx': {'expected': \"'text' or 'json_object'\"}}\n\n  File "
            "\"/venv/lib/python3.11/site-packages/llama_cpp/server/app.py\", line 376, in "
            "create_chat_completion\n    POST /v1/chat/completions")
    response = gateway.post("enforcer", {"model": "fake", "stream": stream, "messages": script(
        status=500, error_message=said)})
    error = assert_envelope(response, 400, "upstream_rejected")
    assert error["message"] == (
        "the upstream for model 'fake' rejected the request (HTTP 500): response_format.type: "
        "Input should be 'text' or 'json_object'")
    assert error["param"] == "response_format.type"


@pytest.mark.parametrize("model", ["unreachable", "litellm-unreachable"])
def test_an_unreachable_upstream_is_named_plainly(gateway: Gateway, model: str) -> None:
    response = gateway.post("enforcer", {"model": model, "messages": script(content="x")})
    error = assert_envelope(response, 502, "upstream_error")
    assert error["message"] == f"could not connect to the upstream for model {model!r}"


def test_an_upstream_that_drops_the_stream_is_an_error_event(gateway: Gateway) -> None:
    status, events = gateway.events("annotator", {"model": "fake", "stream": True, "messages":
                                                  script(content="a b c d", logprobs=[-0.1] * 4,
                                                         stream_error_after=2)})
    assert_error_event_then_done(status, events, "upstream_error")
    assert "closed the connection" in json.loads(events[-2])["error"]["message"]


# -- missing confidence under `on_missing_confidence: error` ------------------------------------


def test_a_decision_without_confidence_is_recorded_and_not_an_upstream_error(
    gateway: Gateway, sdk_client: SDK
) -> None:
    before = scrape(gateway.url)
    response = gateway.post("strict", {"model": "fake",
                                       "messages": script(content="Paris", omit_logprobs=True)})
    error = assert_envelope(response, 502, "confidence_unavailable")
    assert "no token logprobs" in error["message"]
    after = scrape(gateway.url)
    no_confidence = ("basguard_no_confidence_decisions_total",
                     (("model", "fake"), ("tenant", "strict")))
    assert after[no_confidence] == before.get(no_confidence, 0.0) + 1
    assert not any(name == "basguard_upstream_errors_total" and dict(labels)["kind"] ==
                   "confidence_unavailable" for name, labels in after)
    # Recorded: the decision can be labelled like any other.
    client = sdk_client(f"{gateway.url}/v1", TENANT_KEYS["strict"])
    receipt = client.post("/feedback", body={"id": response.headers["x-basguard-id"],
                                             "correct": True}, cast_to=object)
    assert receipt["outcome"] == "abstained_correct"  # type: ignore[index]


# -- requests the gateway refuses ---------------------------------------------------------------


def nested(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = [value]
    return value


def test_a_deeply_nested_request_is_a_400(gateway: Gateway) -> None:
    body = {"model": "fake", "messages": script(content="Paris"), "metadata": nested(300)}
    response = httpx.post(f"{gateway.url}/v1/chat/completions", content=json.dumps(body),
                          headers={"authorization": f"Bearer {TENANT_KEYS['enforcer']}"})
    assert_envelope(response, 400, None)
    assert "nested deeper than 64" in response.json()["error"]["message"]
    ordinary = {"model": "fake", "messages": script(content="Paris"), "metadata": nested(40)}
    assert gateway.post("enforcer", ordinary).status_code == 200


@pytest.mark.parametrize("query", ["limit=²", "limit=١٢", "limit= 5", "before=１２",
                                   "before=1_000", "before=nan", "before=1e999"])
def test_query_parameters_are_parsed_strictly(gateway: Gateway, query: str) -> None:
    response = httpx.get(f"{gateway.url}/v1/feedback/withheld?{query}",
                         headers={"authorization": f"Bearer {TENANT_KEYS['enforcer']}"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == query.split("=")[0]


# -- the failure boundary -----------------------------------------------------------------------


class Exploding:
    """A decision observer with a bug: the seam to make the gateway fail unexpectedly."""

    def decided(self, record: Any) -> None:
        raise RuntimeError("observer bug")

    def upstream_failed(self, model: str, kind: str) -> None:
        return None


@pytest.fixture
def exploding(gateway: Gateway) -> Iterator[None]:
    completions = gateway.app.services.completions
    observers = completions._observer._observers
    completions._observer._observers = (*observers, Exploding())
    try:
        yield
    finally:
        completions._observer._observers = observers


def internal_errors(url: str, where: str) -> float:
    return scrape(url).get(("basguard_internal_errors_total", (("where", where),)), 0.0)


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.usefixtures("exploding")
def test_an_unexpected_error_is_a_logged_counted_500(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    before = internal_errors(gateway.url, "request")
    response = gateway.post("enforcer", {"model": "fake", "messages": script(content="x")})
    error = assert_envelope(response, 500, "internal_error")
    assert "observer bug" not in error["message"]
    assert internal_errors(gateway.url, "request") == before + 1
    [logged] = errors_logged(caplog)
    assert logged.exc_info is not None and "observer bug" in str(logged.exc_info[1])


@pytest.mark.usefixtures("exploding")
def test_an_unexpected_error_in_a_stream_is_one_error_event(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    before = internal_errors(gateway.url, "stream")
    status, events = gateway.events("annotator", {"model": "fake", "stream": True,
                                                  "messages": script(content="x y")})
    assert_error_event_then_done(status, events, "internal_error")
    assert internal_errors(gateway.url, "stream") == before + 1
    assert len(errors_logged(caplog)) == 1


def test_a_client_that_leaves_mid_body_is_one_info_line(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="basguard")
    address = urlsplit(gateway.url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
                     b"authorization: Bearer " + TENANT_KEYS["enforcer"].encode() +
                     b"\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n"
                     b'{"model": ')
        # The gateway reads the body before the client leaves.
        wait_until(lambda: len(gateway.app.services.in_flight) > 0,
                   what="the gateway to take the request")
    wait_until(lambda: any("disconnected" in r.getMessage() for r in caplog.records),
               what="the disconnect to be logged")
    [line] = [r for r in caplog.records if "disconnected" in r.getMessage()]
    assert line.levelno == logging.INFO
    assert not errors_logged(caplog)


# -- streams the ordinary `choices[0]` loop can read ---------------------------------------------

Client = Callable[[str], openai.OpenAI]


@pytest.fixture
def client_of(gateway: Gateway, sdk_client: SDK) -> Client:
    return lambda tenant: sdk_client(f"{gateway.url}/v1", TENANT_KEYS[tenant])


@pytest.mark.parametrize("tenant", ["enforcer", "annotator", "shadower"])
@pytest.mark.parametrize("n", [1, 2])
def test_the_plain_streaming_loop_works_and_the_decision_rides_on_the_last_chunk(
    client_of: Client, tenant: str, n: int
) -> None:
    stream = client_of(tenant).chat.completions.create(
        model="fake", stream=True, n=n, messages=script(content="Paris", logprobs=CONFIDENT,
                                                        always_usage=True))
    text, chunks = "", []
    for chunk in stream:  # what most code in the wild does
        chunks.append(chunk)
        text += chunk.choices[0].delta.content or ""
    assert "Paris" in text
    last = chunks[-1]
    assert last.choices and any(c.finish_reason for c in last.choices)
    assert (last.model_extra or {})["basguard"]["decision"] == "answer"
    assert len((last.model_extra or {})["basguard"]["choices"]) == n
    assert all(not (c.model_extra or {}).get("basguard") for c in chunks[:-1])
    assert all(c.usage is None for c in chunks)  # the upstream's usage was not asked for


@pytest.mark.parametrize("tenant", ["enforcer", "annotator", "shadower"])
def test_with_include_usage_the_last_chunk_has_usage_and_the_decision(
    client_of: Client, tenant: str
) -> None:
    chunks = list(client_of(tenant).chat.completions.create(
        model="fake", stream=True, stream_options={"include_usage": True},
        messages=script(content="Paris", logprobs=CONFIDENT)))
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None and last.usage.completion_tokens == 3
    assert (last.model_extra or {})["basguard"]["decision"] == "answer"
    assert all(c.choices for c in chunks[:-1])


def test_completions_streams_carry_the_decision_on_the_last_choice(client_of: Client) -> None:
    chunks = list(client_of("annotator").completions.create(
        model="fake", stream=True,
        prompt=json.dumps({"fake": {"content": "Paris", "logprobs": CONFIDENT}})))
    assert "".join(c.choices[0].text for c in chunks) == "Paris"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert (chunks[-1].model_extra or {})["basguard"]["decision"] == "answer"
