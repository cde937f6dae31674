"""The gateway over real sockets: the official openai SDK -> basguard -> a fake upstream."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from proxy.wire.schema import ChatCompletionChunk, ChatCompletionResponse, CompletionResponse
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import TENANT_KEYS
from tests.support.waiting import wait_until

Client = Callable[[str], openai.OpenAI]
CONFIDENT = [-0.01, -0.01, -0.01]  # token_prob = e^-0.01 ≈ 0.99
UNSURE = [-2.0, -2.0, -2.0]  # token_prob = e^-2 ≈ 0.135


def script(**fake: Any) -> list[dict[str, str]]:
    """Messages whose last content tells the fake upstream what to do."""
    return [{"role": "user", "content": json.dumps({"fake": fake})}]


def chat(client: openai.OpenAI, **kwargs: Any) -> Any:
    return client.chat.completions.create(model=kwargs.pop("model", "fake"), **kwargs)


def decision_of(response: Any) -> dict[str, Any]:
    extra = response.model_extra or {}
    return extra["basguard"]


# -- answering and abstaining ------------------------------------------------------------------


def test_answers_above_the_threshold(client_for: Client, upstream: FakeUpstream) -> None:
    raw = client_for("enforcer").chat.completions.with_raw_response.create(
        model="fake", messages=script(content="Paris", logprobs=CONFIDENT)
    )
    response = raw.parse()
    assert response.choices[0].message.content == "Paris"
    assert response.choices[0].logprobs is None  # the client did not ask for them
    decision = decision_of(response)
    assert decision["decision"] == "answer"
    assert decision["confidence"] == pytest.approx(math.exp(-0.01))
    assert decision["threshold"] == 0.5
    assert decision["tenant"] == "enforcer"
    assert decision["calibrator"]["method"] == "identity"
    assert raw.headers["x-basguard-decision"] == "answer"
    assert float(raw.headers["x-basguard-confidence"]) == pytest.approx(0.99, abs=1e-3)
    assert raw.headers["x-basguard-threshold"] == "0.5000"
    assert raw.headers["x-basguard-tenant"] == "enforcer"
    assert raw.headers["x-basguard-calibrator-version"] == decision["calibrator"]["version"]
    # basguard asked the upstream for logprobs although the client did not.
    assert upstream.received[-1]["body"]["logprobs"] is True
    ChatCompletionResponse.model_validate(response.model_dump())


def test_abstains_below_the_threshold(client_for: Client) -> None:
    response = chat(client_for("enforcer"), messages=script(content="Lyon", logprobs=UNSURE))
    assert response.choices[0].message.content == "I won't guess."
    assert response.choices[0].finish_reason == "stop"
    assert decision_of(response)["decision"] == "abstain"
    assert decision_of(response)["confidence"] == pytest.approx(math.exp(-2.0))


@pytest.mark.parametrize(("tenant", "mode"), [("annotator", "annotate"), ("shadower", "shadow")])
def test_annotate_and_shadow_pass_the_answer_through(
    client_for: Client, tenant: str, mode: str
) -> None:
    response = chat(client_for(tenant), messages=script(content="Lyon", logprobs=UNSURE))
    assert response.choices[0].message.content == "Lyon"
    decision = decision_of(response)
    assert decision["decision"] == "abstain"
    assert decision["mode"] == mode


def test_abstain_action_error_is_a_422(client_for: Client) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        chat(client_for("refuser"), messages=script(content="Lyon", logprobs=UNSURE))
    assert caught.value.code == "answer_withheld"
    assert chat(client_for("refuser"), messages=script(content="Paris", logprobs=CONFIDENT)
                ).choices[0].message.content == "Paris"


def test_each_of_n_choices_is_decided(client_for: Client) -> None:
    response = chat(
        client_for("enforcer"), n=2,
        messages=script(choices=[{"content": "Paris", "logprobs": CONFIDENT},
                                 {"content": "Lyon", "logprobs": UNSURE}]),
    )
    assert [c.message.content for c in response.choices] == ["Paris", "I won't guess."]
    assert [c["decision"] for c in decision_of(response)["choices"]] == ["answer", "abstain"]


def test_the_clients_own_logprobs_request_is_honoured(client_for: Client, upstream: FakeUpstream) -> None:
    response = chat(client_for("enforcer"), logprobs=True, top_logprobs=2,
                    messages=script(content="Paris", logprobs=CONFIDENT))
    content = response.choices[0].logprobs.content
    assert [t.logprob for t in content] == CONFIDENT
    assert all(len(t.top_logprobs) == 2 for t in content)
    assert upstream.received[-1]["body"]["top_logprobs"] == 2


def test_withheld_answers_do_not_leak_through_logprobs(client_for: Client) -> None:
    response = chat(client_for("enforcer"), logprobs=True,
                    messages=script(content="Lyon", logprobs=UNSURE))
    assert response.choices[0].logprobs is None


# -- missing confidence ------------------------------------------------------------------------


def test_missing_logprobs_abstain_by_default(client_for: Client) -> None:
    response = chat(client_for("enforcer"), messages=script(content="Paris", omit_logprobs=True))
    decision = decision_of(response)
    assert response.choices[0].message.content == "I won't guess."
    assert decision["confidence"] is None
    assert "no token logprobs" in decision["choices"][0]["reason"]


def test_missing_logprobs_answer_when_the_policy_says_so(client_for: Client) -> None:
    response = chat(client_for("lenient"), messages=script(content="Paris", omit_logprobs=True))
    assert response.choices[0].message.content == "Paris"
    assert decision_of(response)["decision"] == "answer"
    assert decision_of(response)["confidence"] is None


def test_missing_logprobs_error_when_the_policy_says_so(client_for: Client) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        chat(client_for("strict"), messages=script(content="Paris", omit_logprobs=True))
    assert caught.value.status_code == 502
    assert caught.value.code == "confidence_unavailable"


# -- streaming ---------------------------------------------------------------------------------


def collect(stream: Any) -> tuple[str, list[Any], dict[str, Any] | None]:
    text, chunks, decision = "", [], None
    for chunk in stream:
        chunks.append(chunk)
        ChatCompletionChunk.model_validate(chunk.model_dump())
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if (chunk.model_extra or {}).get("basguard"):
            decision = chunk.model_extra["basguard"]
    return text, chunks, decision


@pytest.mark.parametrize(
    ("tenant", "logprobs", "text", "decision"),
    [
        ("enforcer", CONFIDENT, "Paris is it", "answer"),
        ("enforcer", UNSURE, "I won't guess.", "abstain"),
        ("annotator", UNSURE, "Paris is it", "abstain"),
        ("shadower", UNSURE, "Paris is it", "abstain"),
        ("annotator", CONFIDENT, "Paris is it", "answer"),
    ],
)
def test_streaming_in_every_mode(
    client_for: Client, tenant: str, logprobs: list[float], text: str, decision: str
) -> None:
    stream = chat(client_for(tenant), stream=True,
                  messages=script(content="Paris is it", logprobs=logprobs))
    streamed, chunks, report = collect(stream)
    assert streamed == text
    assert report is not None and report["decision"] == decision
    # The decision rides on the last chunk, which still has its choice (the finish_reason).
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert (chunks[-1].model_extra or {})["basguard"] == report


def test_streamed_enforce_decision_is_in_the_headers(client_for: Client) -> None:
    raw = client_for("enforcer").chat.completions.with_raw_response.create(
        model="fake", stream=True, messages=script(content="Paris", logprobs=UNSURE))
    assert raw.headers["x-basguard-decision"] == "abstain"
    collect(raw.parse())


def test_streaming_with_client_logprobs_and_n(client_for: Client) -> None:
    stream = chat(client_for("annotator"), stream=True, n=2, logprobs=True,
                  messages=script(choices=[{"content": "Paris", "logprobs": CONFIDENT},
                                           {"content": "Lyon", "logprobs": UNSURE}]))
    _, chunks, report = collect(stream)
    assert [c["decision"] for c in report["choices"]] == ["answer", "abstain"]  # type: ignore[index]
    assert any(c.choices and c.choices[0].logprobs for c in chunks)


def test_streaming_without_logprobs_follows_the_policy(client_for: Client) -> None:
    _, _, report = collect(chat(client_for("enforcer"), stream=True,
                                messages=script(content="Paris", omit_logprobs=True)))
    assert report is not None and report["confidence"] is None


def test_error_after_headers_is_one_sse_error_event(gateway: str) -> None:
    body = {"model": "fake", "stream": True,
            "messages": script(content="a b c d e f", logprobs=[-0.1] * 6, stream_error_after=2)}
    with httpx.stream("POST", f"{gateway}/chat/completions", json=body,
                      headers={"authorization": f"Bearer {TENANT_KEYS['annotator']}"}, timeout=10) as response:
        assert response.status_code == 200
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    error = json.loads(events[-2][6:])
    assert error["error"]["type"] == "upstream_error"
    assert all("error" not in json.loads(e[6:]) for e in events[:-2])


def test_a_client_that_goes_away_cancels_the_upstream(gateway: str, upstream: FakeUpstream) -> None:
    body = {"model": "fake", "stream": True,
            "messages": script(content="x" * 40, logprobs=[-0.1] * 40, stream_delay=0.05)}
    with httpx.stream("POST", f"{gateway}/chat/completions", json=body,
                      headers={"authorization": f"Bearer {TENANT_KEYS['annotator']}"}, timeout=10) as response:
        for line in response.iter_lines():
            if '"content":"x' in line:
                break  # leave after the first token
    wait_until(lambda: upstream.disconnected, what="the upstream to see the client leave")


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "enforce-stream"])
def test_a_client_that_goes_away_while_waiting_cancels_the_upstream(
    gateway: str, upstream: FakeUpstream, stream: bool
) -> None:
    body = {"model": "fake", "stream": stream, "messages": script(content="Paris", delay=3)}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{gateway}/chat/completions", json=body, timeout=0.5,
                   headers={"authorization": f"Bearer {TENANT_KEYS['enforcer']}"})
    wait_until(lambda: upstream.disconnected, what="the upstream to see the client leave")


# -- legacy completions ------------------------------------------------------------------------


def test_completions_answer_and_abstain(client_for: Client) -> None:
    client = client_for("enforcer")
    sure = client.completions.create(
        model="fake", prompt=json.dumps({"fake": {"content": "Paris", "logprobs": CONFIDENT}}))
    unsure = client.completions.create(
        model="fake", prompt=json.dumps({"fake": {"content": "Lyon", "logprobs": UNSURE}}),
        logprobs=2)
    assert sure.choices[0].text == "Paris"
    assert unsure.choices[0].text == "I won't guess."
    assert decision_of(unsure)["decision"] == "abstain"
    CompletionResponse.model_validate(sure.model_dump())


def test_streamed_completions(client_for: Client) -> None:
    stream = client_for("annotator").completions.create(
        model="fake", stream=True,
        prompt=json.dumps({"fake": {"content": "Paris", "logprobs": CONFIDENT}}))
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Paris"
    assert (chunks[-1].model_extra or {})["basguard"]["decision"] == "answer"


# -- authentication and errors -----------------------------------------------------------------


def test_missing_and_unknown_keys_are_401(gateway: str, client_for: Client) -> None:
    response = httpx.post(f"{gateway}/chat/completions", json={"model": "fake"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        chat(client_for("not-a-key"), messages=script(content="x"))
    with pytest.raises(openai.AuthenticationError):
        client_for("not-a-key").models.list()


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "bEaReR"])
def test_the_auth_scheme_is_case_insensitive(gateway: str, scheme: str) -> None:
    """HTTP auth schemes are case-insensitive (RFC 9110, 11.1): any spelling of Bearer works."""
    response = httpx.post(f"{gateway}/chat/completions",
                          json={"model": "fake", "messages": script(content="x")},
                          headers={"authorization": f"{scheme} {TENANT_KEYS['enforcer']}"})
    assert response.status_code == 200, response.text
    listed = httpx.get(f"{gateway}/models",
                       headers={"authorization": f"{scheme}  {TENANT_KEYS['enforcer']}"})
    assert listed.status_code == 200, listed.text


@pytest.mark.parametrize("authorization", ["Basic a2V5LWVuZm9yY2VyLTAxMjM0NTY3ODlhYmNkZWY=",
                                           "Bearerkey-enforcer-0123456789abcdef",
                                           "key-enforcer-0123456789abcdef"])
def test_a_key_without_the_bearer_scheme_is_401(gateway: str, authorization: str) -> None:
    response = httpx.get(f"{gateway}/models", headers={"authorization": authorization})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_models_lists_the_public_names(client_for: Client) -> None:
    assert sorted(m.id for m in client_for("enforcer").models.list()) == [
        "fake", "keyed", "unreachable", "via-litellm"]


def test_health_and_readiness(gateway: str) -> None:
    root = gateway.removesuffix("/v1")
    assert httpx.get(f"{root}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{root}/readyz").json()
    assert ready["status"] == "ready"
    assert "tenants" not in ready  # the detail needs the metrics key: tests/proxy/test_metrics.py


@pytest.mark.parametrize(
    ("content", "status", "message"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "must be a JSON object"),
        (b'{"model": "fake", "messages": []}', 400, "messages"),
        (b'{"model": "fake", "messages": [{"role": "user", "content": "x"}], "n": 0}', 400, "n"),
        (b'{"model": "nope", "messages": [{"role": "user", "content": "x"}]}', 404, "'nope' does not exist"),
        (b'{"model": "fake", "messages": [{"role": "user", "content": "' + b"x" * 5000 + b'"}]}', 413, "larger than"),
    ],
)
def test_bad_requests_get_the_openai_envelope(
    gateway: str, content: bytes, status: int, message: str
) -> None:
    response = httpx.post(f"{gateway}/chat/completions", content=content,
                          headers={"authorization": f"Bearer {TENANT_KEYS['enforcer']}",
                                   "content-type": "application/json"})
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert message in error["message"]


def test_unknown_endpoint_and_wrong_method_get_the_envelope(gateway: str) -> None:
    missing = httpx.get(f"{gateway.removesuffix('/v1')}/nothing-here")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    # Any other /v1 path is passed through to an upstream: for tenants only.
    anonymous = httpx.get(f"{gateway}/nothing-here")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "invalid_api_key"
    wrong = httpx.get(f"{gateway}/chat/completions")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize(("path", "status", "code"), [
    ("/v1", 404, "not_found"),
    # A trailing slash is no canonical path: refused before routing.
    ("/healthz/", 400, "invalid_path"), ("/readyz/", 400, "invalid_path"),
    ("/metrics/", 400, "invalid_path"), ("/v1/models/", 400, "invalid_path"),
])
def test_no_path_is_redirected(gateway: str, path: str, status: int, code: str) -> None:
    """A redirect would be built from the Host header (an open redirect): a path that matches
    only with a slash added or removed is an error in the envelope, like any wrong path."""
    root = gateway.removesuffix("/v1")
    response = httpx.get(f"{root}{path}", headers={"host": "evil.example"},
                         follow_redirects=False)
    assert "location" not in response.headers
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


@pytest.mark.parametrize(
    ("fake", "model", "exception", "status"),
    [
        ({"status": 429}, "fake", openai.RateLimitError, 429),
        ({"status": 500}, "fake", openai.InternalServerError, 502),
        ({"status": 503}, "fake", openai.InternalServerError, 502),
        ({"delay": 3}, "fake", openai.InternalServerError, 504),
        ({}, "unreachable", openai.InternalServerError, 502),
    ],
)
def test_upstream_failures_map_to_statuses(
    client_for: Client, fake: dict[str, Any], model: str, exception: type[Exception], status: int
) -> None:
    with pytest.raises(exception) as caught:
        chat(client_for("enforcer"), model=model, messages=script(content="x", **fake))
    assert caught.value.status_code == status  # type: ignore[attr-defined]


def test_upstream_failures_before_streaming_get_a_real_status(client_for: Client) -> None:
    with pytest.raises(openai.RateLimitError):
        list(chat(client_for("annotator"), stream=True, messages=script(status=429)))


def test_upstream_keys_never_reach_the_client(client_for: Client, upstream: FakeUpstream) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        chat(client_for("enforcer"), model="keyed",
             messages=script(status=500, echo_key=True, error_message="boom"))
    assert upstream.received[-1]["authorization"] == "Bearer sk-upstream-secret-0123456789"
    assert "sk-upstream-secret" not in caught.value.response.text
    assert "boom" not in caught.value.response.text  # the upstream's words go to the log


# -- providers that need translation go through litellm -------------------------------------


def test_litellm_path_answers_and_abstains(client_for: Client, upstream: FakeUpstream) -> None:
    sure = chat(client_for("enforcer"), model="via-litellm",
                messages=script(content="Paris", logprobs=CONFIDENT))
    unsure = chat(client_for("enforcer"), model="via-litellm",
                  messages=script(content="Lyon", logprobs=UNSURE))
    assert sure.choices[0].message.content == "Paris"
    assert decision_of(sure)["confidence"] == pytest.approx(math.exp(-0.01))
    assert unsure.choices[0].message.content == "I won't guess."
    assert upstream.received[-1]["body"]["model"] == "fake-model"
    assert upstream.received[-1]["authorization"] == "Bearer sk-upstream-secret-0123456789"


def test_litellm_path_streams(client_for: Client) -> None:
    text, _, report = collect(chat(client_for("annotator"), model="via-litellm", stream=True,
                                   messages=script(content="Paris is it", logprobs=CONFIDENT)))
    assert text == "Paris is it"
    assert report is not None and report["decision"] == "answer"


def test_litellm_path_maps_upstream_errors(client_for: Client) -> None:
    with pytest.raises(openai.RateLimitError):
        chat(client_for("enforcer"), model="via-litellm", messages=script(status=429))


@pytest.mark.parametrize("field, value", [
    ("stream", "false"), ("stream", 1), ("n", "2"), ("logprobs", "true"), ("top_logprobs", "5"),
    ("model", 5),
])
def test_fields_that_steer_the_gateway_are_not_coerced(
    gateway: str, field: str, value: object
) -> None:
    """``"stream": "false"`` is truthy as a string: coerced, it would stream unasked."""
    body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], field: value}
    response = httpx.post(f"{gateway}/chat/completions", json=body, timeout=10,
                          headers={"authorization": f"Bearer {TENANT_KEYS['enforcer']}"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == field
