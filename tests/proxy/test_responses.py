"""``POST /v1/responses`` over real sockets: the official openai SDK -> basguard -> the fake."""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from proxy.wire.schema import AbstentionReport
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import SDK, TENANT_KEYS, gateway_config, serve_gateway
from tests.support.waiting import wait_until

Client = Callable[[str], openai.OpenAI]
CONFIDENT = [-0.01, -0.01, -0.01]  # token_prob = e^-0.01 ≈ 0.99
UNSURE = [-2.0, -2.0, -2.0]  # token_prob = e^-2 ≈ 0.135
LOGPROBS = ["message.output_text.logprobs"]
STREAM_EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)


def script(**fake: Any) -> str:
    """An input whose text tells the fake upstream what to do."""
    return json.dumps({"fake": fake})


def create(client: openai.OpenAI, **kwargs: Any) -> Any:
    return client.responses.create(model=kwargs.pop("model", "fake"), **kwargs)


def decision_of(response: Any) -> dict[str, Any]:
    report: dict[str, Any] = (response.model_extra or {})["basguard"]
    AbstentionReport.model_validate(report)
    return report


def post(gateway: str, tenant: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{gateway}/responses", json={"model": "fake", **body}, timeout=10,
                      headers={"authorization": f"Bearer {TENANT_KEYS[tenant]}"})


def raw_events(gateway: str, tenant: str, body: dict[str, Any]) -> tuple[httpx.Response, str]:
    """The raw text of a streamed response (with its response, for the status and headers)."""
    with httpx.stream("POST", f"{gateway}/responses", timeout=10,
                      json={"model": "fake", "stream": True, **body},
                      headers={"authorization": f"Bearer {TENANT_KEYS[tenant]}"}) as response:
        text = "".join(response.iter_text())
    return response, text


def parsed_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """Each event's ``event:`` name and ``data:`` document."""
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def check_stream_wire(text: str) -> list[dict[str, Any]]:
    """The stream's events, after checking what every client relies on."""
    events = parsed_events(text)
    assert "[DONE]" not in text  # a Responses stream has no [DONE] line
    for name, event in events:
        assert name == event["type"]
        # Only the Responses API's own event types: the npm SDK's helper throws on others.
        assert not name.startswith("basguard")
        if event["type"] != "error":
            STREAM_EVENT.validate_python(event)  # the SDK's own types, validated strictly
    numbers = [event["sequence_number"] for _, event in events]
    assert numbers == list(range(len(numbers)))  # numbered from 0, without a gap
    return [event for _, event in events]


# -- non-streamed ------------------------------------------------------------------------------


def test_answers_above_the_threshold(client_for: Client, upstream: FakeUpstream) -> None:
    raw = client_for("enforcer").responses.with_raw_response.create(
        model="fake", input=script(content="Paris", logprobs=CONFIDENT))
    response = raw.parse()
    assert response.output_text == "Paris"
    # The client did not ask for logprobs: none reach it, although basguard asked for them.
    assert response.output[0].content[0].logprobs == []  # type: ignore[union-attr]
    sent = upstream.received[-1]["body"]
    assert sent["include"] == LOGPROBS and sent["top_logprobs"] >= 1
    decision = decision_of(response)
    assert decision["decision"] == "answer"
    assert decision["confidence"] == pytest.approx(math.exp(-0.01))
    assert raw.headers["x-basguard-decision"] == "answer"
    assert float(raw.headers["x-basguard-confidence"]) == pytest.approx(0.99, abs=1e-3)
    assert raw.headers["x-basguard-id"] == decision["id"]
    assert raw.headers["x-basguard-tenant"] == "enforcer"
    assert raw.headers["x-basguard-mode"] == "enforce"
    Response.model_validate(json.loads(raw.text))


def test_a_withheld_answer_leaks_nothing(gateway: str, client_for: Client) -> None:
    raw = post(gateway, "enforcer", {"input": script(content="Lyonnaise", logprobs=UNSURE),
                                     "include": LOGPROBS, "top_logprobs": 2})
    assert raw.status_code == 200
    assert "Lyonnaise" not in raw.text and "Lyo" not in raw.text
    response = Response.model_validate(raw.json())
    assert response.output_text == "I won't guess."
    assert response.output[0].content[0].logprobs == []  # type: ignore[union-attr]
    assert raw.headers["x-basguard-decision"] == "abstain"
    assert decision_of(response)["confidence"] == pytest.approx(math.exp(-2.0))
    # Through the SDK, the app reads the abstention as the text.
    sdk = create(client_for("enforcer"), input=script(content="Lyonnaise", logprobs=UNSURE))
    assert sdk.output_text == "I won't guess."
    assert decision_of(sdk)["decision"] == "abstain"


@pytest.mark.parametrize(("tenant", "mode"), [("annotator", "annotate"), ("shadower", "shadow")])
def test_annotate_and_shadow_pass_the_answer_through(
    client_for: Client, tenant: str, mode: str
) -> None:
    response = create(client_for(tenant), input=script(content="Lyon", logprobs=UNSURE))
    assert response.output_text == "Lyon"
    decision = decision_of(response)
    assert (decision["decision"], decision["mode"]) == ("abstain", mode)


def test_abstain_action_error_is_a_422(client_for: Client) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        create(client_for("refuser"), input=script(content="Lyon", logprobs=UNSURE))
    error = caught.value
    assert error.code == "answer_withheld"
    assert error.response.headers["x-basguard-decision"] == "abstain"
    assert "Lyon" not in error.response.text


def test_the_clients_own_logprobs_request_is_honoured(
    client_for: Client, upstream: FakeUpstream
) -> None:
    response = create(client_for("enforcer"), input=script(content="Paris", logprobs=CONFIDENT),
                      include=LOGPROBS, top_logprobs=2)
    logprobs = response.output[0].content[0].logprobs
    assert [entry.logprob for entry in logprobs] == CONFIDENT
    assert all(len(entry.top_logprobs) == 2 for entry in logprobs)
    assert upstream.received[-1]["body"]["top_logprobs"] == 2
    assert upstream.received[-1]["body"]["include"] == LOGPROBS


def test_input_items_are_read_for_the_question(gateway: str, client_for: Client) -> None:
    question = script(content="Lyon", logprobs=UNSURE) + "\nWhere is the Louvre?"
    response = create(client_for("annotator"), input=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "input_text", "text": question}]},
    ])
    assert response.output_text == "Lyon"
    withheld = httpx.get(f"{gateway}/feedback/withheld", timeout=10,
                         headers={"authorization": f"Bearer {TENANT_KEYS['annotator']}"})
    stored = next(row for row in withheld.json()["data"]
                  if row["id"] == decision_of(response)["id"])
    assert stored["prompt"] == question and stored["answer"] == "Lyon"
    # Feedback on a Responses decision, as on a chat one.
    label = httpx.post(f"{gateway}/feedback", timeout=10,
                       json={"id": stored["id"], "correct": True},
                       headers={"authorization": f"Bearer {TENANT_KEYS['annotator']}"})
    assert label.status_code == 200 and label.json()["outcome"] == "abstained_correct"


def test_missing_logprobs_follow_the_policy(client_for: Client) -> None:
    unknown = script(content="Paris", omit_logprobs=True)
    withheld = create(client_for("enforcer"), input=unknown)
    assert withheld.output_text == "I won't guess."
    assert decision_of(withheld)["confidence"] is None
    assert create(client_for("lenient"), input=unknown).output_text == "Paris"
    with pytest.raises(openai.APIStatusError) as caught:
        create(client_for("strict"), input=unknown)
    assert caught.value.status_code == 502
    assert caught.value.code == "confidence_unavailable"


def test_a_tool_call_passes_undecided(client_for: Client, upstream: FakeUpstream) -> None:
    tool = {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    raw = client_for("enforcer").responses.with_raw_response.create(
        model="fake", input=script(tool_call=tool), tools=[{
            "type": "function", "name": "get_weather", "parameters": {"type": "object"}}])
    response = raw.parse()
    call = response.output[0]
    assert call.type == "function_call"
    assert (call.name, call.arguments) == ("get_weather", '{"city": "Paris"}')
    assert raw.headers["x-basguard-decision"] == "not_applicable"
    decision = decision_of(response)
    assert decision["decision"] == "not_applicable" and decision["confidence"] is None
    assert "tool_calls: pass" in decision["choices"][0]["reason"]


@pytest.mark.parametrize(("directive", "status", "error"), [
    ({"status": 429}, 429, openai.RateLimitError),
    ({"status": 400}, 400, openai.BadRequestError),
    ({"status": 500, "echo_key": True}, 502, openai.InternalServerError),
    ({"malformed": "not_json"}, 502, openai.InternalServerError),
    ({"malformed": "no_output"}, 502, openai.InternalServerError),
    ({"malformed": "output_string"}, 502, openai.InternalServerError),
    ({"malformed": "text_not_string"}, 502, openai.InternalServerError),
])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_upstream_failures_get_a_real_status_in_the_envelope(
    client_for: Client, directive: dict[str, Any], status: int, error: type[Exception],
    stream: bool,
) -> None:
    with pytest.raises(error) as caught:
        create(client_for("enforcer"), input=script(**directive), stream=stream)
    assert isinstance(caught.value, openai.APIStatusError)
    assert caught.value.status_code == status
    body = caught.value.response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert "sk-upstream" not in caught.value.response.text


@pytest.mark.parametrize(("field", "value"), [
    ("stream", "true"), ("top_logprobs", "5"), ("top_logprobs", 21), ("include", "logprobs"),
    ("model", 5), ("input", 5),
])
def test_fields_that_steer_the_gateway_are_not_coerced(
    gateway: str, field: str, value: object
) -> None:
    response = post(gateway, "enforcer", {"input": "hi", field: value})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"].split(".")[0] == field


def test_background_responses_are_refused_with_a_reason(gateway: str) -> None:
    response = post(gateway, "enforcer", {"input": "hi", "background": True})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "background" and "cannot be guarded" in error["message"]


def test_a_withheld_response_gets_a_new_id(client_for: Client, upstream: FakeUpstream) -> None:
    """The upstream stored the answer under its id: the app must not be able to fetch it."""
    response = create(client_for("enforcer"), input=script(content="Lyon", logprobs=UNSURE))
    assert response.id.startswith("resp_bg")
    answered = create(client_for("enforcer"), input=script(content="Paris", logprobs=CONFIDENT))
    assert answered.id.startswith("resp_") and not answered.id.startswith("resp_bg")


def test_a_withheld_json_answer_is_a_refusal(client_for: Client) -> None:
    response = create(client_for("enforcer"), input=script(content="Lyon", logprobs=UNSURE),
                      text={"format": {"type": "json_object"}})
    (item,) = response.output
    (part,) = item.content  # type: ignore[union-attr]
    assert (part.type, part.refusal) == ("refusal", "I won't guess.")  # type: ignore[union-attr]
    assert response.output_text == ""


# -- streamed ----------------------------------------------------------------------------------


def collect(stream: Any) -> tuple[str, list[Any], dict[str, Any] | None]:
    """The text an app reads from a Responses stream, every event, and the decision on the
    terminal event's response."""
    text, events, report = "", [], None
    for event in stream:
        events.append(event)
        if event.type == "response.output_text.delta":
            text += event.delta
        if event.type == "response.completed":
            report = (event.response.model_extra or {})["basguard"]
    return text, events, report


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
    raw = client_for(tenant).responses.with_raw_response.create(
        model="fake", stream=True, input=script(content="Paris is it", logprobs=logprobs))
    streamed, events, report = collect(raw.parse())
    assert streamed == text
    assert report is not None and report["decision"] == decision
    AbstentionReport.model_validate(report)
    # The completed response, the last event, carries the decision, in metadata too.
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.output_text == text
    assert completed.response.metadata["basguard_decision"] == decision
    assert completed.response.metadata["basguard_id"] == report["id"]
    if tenant == "enforcer":
        assert raw.headers["x-basguard-decision"] == decision
        assert raw.headers["x-basguard-id"] == report["id"]
    else:  # passed through as it comes: the decision is not known when the headers go
        assert "x-basguard-decision" not in raw.headers
        assert raw.headers["x-basguard-mode"] in ("annotate", "shadow")


@pytest.mark.parametrize("tenant", ["enforcer", "annotator"])
@pytest.mark.parametrize("asked", [False, True], ids=["unasked", "asked"])
def test_streamed_logprobs_reach_only_a_client_that_asked(
    gateway: str, upstream: FakeUpstream, tenant: str, asked: bool
) -> None:
    extra = {"include": LOGPROBS, "top_logprobs": 1} if asked else {}
    response, text = raw_events(gateway, tenant, {
        "input": script(content="Paris is it", logprobs=CONFIDENT), **extra})
    assert response.status_code == 200
    events = check_stream_wire(text)
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    if asked:
        assert [e["logprobs"][0]["logprob"] for e in deltas] == CONFIDENT
        assert all(len(e["logprobs"][0]["top_logprobs"]) == 1 for e in deltas)
    else:
        assert all(e["logprobs"] == [] for e in deltas)
        assert '"top_logprobs":[{' not in text  # not in any done event or response either
    assert upstream.received[-1]["body"]["include"] == LOGPROBS


def test_a_withheld_stream_leaks_nothing(gateway: str) -> None:
    response, text = raw_events(gateway, "enforcer", {
        "input": script(content="Lyonnaise", logprobs=UNSURE), "include": LOGPROBS,
        "top_logprobs": 3})
    assert response.status_code == 200
    assert "Lyonnaise" not in text and "Lyo" not in text
    events = check_stream_wire(text)
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.completed"]
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "I won't guess."
    assert events[-1]["response"]["basguard"]["decision"] == "abstain"


@pytest.mark.parametrize(("logprobs", "text", "decision"), [
    (CONFIDENT, "Paris is it", "answer"), (UNSURE, "I won't guess.", "abstain")])
def test_the_sdk_stream_helper_completes_with_the_decision(
    client_for: Client, logprobs: list[float], text: str, decision: str
) -> None:
    with client_for("enforcer").responses.stream(
            model="fake", input=script(content="Paris is it", logprobs=logprobs)) as stream:
        types = [event.type for event in stream]
        final = stream.get_final_response()
    assert types[-1] == "response.completed"
    assert final.output_text == text
    assert (final.model_extra or {})["basguard"]["decision"] == decision
    assert final.metadata is not None and final.metadata["basguard_decision"] == decision


@pytest.mark.parametrize("tenant", ["enforcer", "annotator"])
def test_a_streamed_tool_call_passes_undecided(gateway: str, tenant: str) -> None:
    tool = {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    response, text = raw_events(gateway, tenant, {"input": script(tool_call=tool)})
    assert response.status_code == 200
    events = check_stream_wire(text)
    kinds = [e["type"] for e in events]
    assert "response.function_call_arguments.delta" in kinds
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert done["arguments"] == '{"city": "Paris"}'
    assert events[-1]["response"]["basguard"]["decision"] == "not_applicable"
    assert events[-1]["response"]["output"][0]["type"] == "function_call"


def test_a_stream_without_text_deltas_is_decided_on_its_final_response(
    client_for: Client,
) -> None:
    text, events, report = collect(create(
        client_for("annotator"), stream=True,
        input=script(content="Paris", logprobs=UNSURE, no_text_deltas=True)))
    assert text == ""  # no deltas: the app reads the text from the completed response
    assert events[-1].response.output_text == "Paris"
    assert report is not None and report["decision"] == "abstain"
    assert report["confidence"] == pytest.approx(math.exp(-2.0))


def test_an_error_after_the_headers_is_one_error_event(
    gateway: str, client_for: Client
) -> None:
    body = {"input": script(content="a b c d e f", logprobs=[-0.1] * 6, stream_error_after=6)}
    response, text = raw_events(gateway, "annotator", body)
    assert response.status_code == 200
    events = check_stream_wire(text)
    error = events[-1]
    assert error["type"] == "error"
    assert error["code"] == "upstream_error" and error["error"]["type"] == "upstream_error"
    assert all(e["type"] != "error" for e in events[:-1])
    # The SDK raises it rather than ending the stream quietly.
    with pytest.raises(openai.APIError, match="closed the connection"):
        collect(create(client_for("annotator"), stream=True, **body))


def test_a_failed_upstream_response_is_an_error(gateway: str) -> None:
    response, text = raw_events(gateway, "annotator",
                                {"input": script(malformed="failed_event")})
    assert response.status_code == 200
    error = check_stream_wire(text)[-1]
    assert error["type"] == "error" and error["code"] == "upstream_error"
    assert "/srv/model" not in text  # the upstream's message goes to the log only
    # Before the headers (enforce buffers), it is a status.
    response, text = raw_events(gateway, "enforcer", {"input": script(malformed="failed_event")})
    assert response.status_code == 502 and "/srv/model" not in text


def test_a_client_that_goes_away_cancels_the_upstream(
    gateway: str, upstream: FakeUpstream
) -> None:
    body = {"model": "fake", "stream": True,
            "input": script(content="x" * 40, logprobs=[-0.1] * 40, stream_delay=0.05)}
    with httpx.stream("POST", f"{gateway}/responses", json=body, timeout=10,
                      headers={"authorization": f"Bearer {TENANT_KEYS['annotator']}"}) as response:
        for line in response.iter_lines():
            if "response.output_text.delta" in line:
                break  # leave after the first token
    wait_until(lambda: any(d.startswith("resp_") for d in upstream.disconnected),
               what="the upstream to see the client leave")


def test_a_client_that_leaves_while_enforce_buffers_cancels_the_upstream(
    gateway: str, upstream: FakeUpstream
) -> None:
    body = {"model": "fake", "stream": True,
            "input": script(content="x" * 20, logprobs=[-0.1] * 20, stream_delay=0.05)}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{gateway}/responses", json=body, timeout=0.3,
                   headers={"authorization": f"Bearer {TENANT_KEYS['enforcer']}"})
    wait_until(lambda: any(d.startswith("resp_") for d in upstream.disconnected),
               what="the upstream to see the client leave")


# -- providers behind litellm ------------------------------------------------------------------


def test_litellm_path_answers_and_abstains(client_for: Client, upstream: FakeUpstream) -> None:
    sure = create(client_for("enforcer"), model="via-litellm",
                  input=script(content="Paris", logprobs=CONFIDENT))
    assert sure.output_text == "Paris"
    assert decision_of(sure)["confidence"] == pytest.approx(math.exp(-0.01))
    unsure = create(client_for("enforcer"), model="via-litellm",
                    input=script(content="Lyon", logprobs=UNSURE))
    assert unsure.output_text == "I won't guess."
    assert upstream.received[-1]["body"]["model"] == "fake-model"
    assert upstream.received[-1]["authorization"] == "Bearer sk-upstream-secret-0123456789"


def test_litellm_path_streams(client_for: Client) -> None:
    text, _, report = collect(create(client_for("annotator"), model="via-litellm", stream=True,
                                     input=script(content="Paris is it", logprobs=CONFIDENT)))
    assert text == "Paris is it"
    assert report is not None and report["decision"] == "answer"


def test_litellm_without_responses_support_says_so(
    client_for: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No seam: a litellm from before its Responses support is this one without `aresponses`.
    import litellm

    monkeypatch.delattr(litellm, "aresponses")
    with pytest.raises(openai.BadRequestError) as caught:
        create(client_for("enforcer"), model="via-litellm", input="hi")
    assert "no Responses API support" in caught.value.message
    assert caught.value.response.json()["error"]["code"] == "upstream_rejected"


# -- large replies, metrics, signals that sample -------------------------------------------------


@pytest.mark.parametrize(("tenant", "decision"), [("lenient", "answer"), ("enforcer", "abstain")])
def test_a_large_reply_is_judged_off_the_event_loop(
    gateway: str, tenant: str, decision: str
) -> None:
    word = "x" * 1023 + " "
    content = word * 1100  # 1.1 MB: past OFFLOAD_BYTES, within max_response_bytes
    # Without logprobs (a token's would carry its bytes, past max_response_bytes), so the
    # tenant's on_missing_confidence decides.
    raw = post(gateway, tenant, {"input": script(content=word, repeat=1100, omit_logprobs=True)})
    assert raw.status_code == 200
    response = Response.model_validate(raw.json())
    assert raw.headers["x-basguard-decision"] == decision
    assert response.output_text == (content if decision == "answer" else "I won't guess.")


def test_tool_calls_are_counted_as_not_applicable(gateway: str) -> None:
    def count() -> float:
        text = httpx.get(gateway.removesuffix("/v1") + "/metrics", timeout=10).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("basguard_requests_total{")
                   and 'decision="not_applicable"' in line and 'tenant="strict"' in line)

    before = count()
    tool = {"name": "get_weather", "arguments": "{}"}
    # Under on_missing_confidence: error too: a tool call has no confidence to miss.
    raw = post(gateway, "strict", {"input": script(tool_call=tool)})
    assert raw.status_code == 200 and raw.headers["x-basguard-decision"] == "not_applicable"
    assert count() == before + 1


SAMPLER_KEY = "key-sampler-0123456789abcdef"


@pytest.fixture(scope="module")
def sampling_gateway(
    fake_upstream: tuple[FakeUpstream, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """basguard with a tenant whose confidence is the agreement of five samples, and a model
    without the Responses API."""
    config = gateway_config(fake_upstream[1])
    # Room for the samples' own timeout (shorter than the model's); and a model whose upstream
    # has no Responses API (the fake's paths under /chat-only are all 404).
    config["models"] = {
        "fake": {**config["models"]["fake"], "timeout_seconds": 60},
        "chat-only": {"base_url": f"{fake_upstream[1]}/chat-only/v1", "timeout_seconds": 60},
    }
    config["tenants"]["sampler"] = {
        "api_keys": [{"sha256": hashlib.sha256(SAMPLER_KEY.encode()).hexdigest()}],
        "risk": {"threshold": 0.5},
        "confidence": {"signals": ["consistency"], "timeout_seconds": 30,
                       "consistency": {"samples": 5, "temperature": 1.0}},
    }
    with serve_gateway(tmp_path_factory.mktemp("sampling"), config) as url:
        yield f"{url}/v1"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_consistency_samples_the_responses_api(
    sampling_gateway: str, upstream: FakeUpstream, sdk_client: SDK, stream: bool
) -> None:
    answers, seed = ["Paris", "Paris", "Lyon"], 7
    drawn = [random.Random(f"{seed}:{i}").choice(answers) for i in range(5)]
    client = sdk_client(sampling_gateway, SAMPLER_KEY)
    response = create(client, stream=stream, input=script(
        content="Paris", omit_logprobs=True, sample_answers=answers, sample_seed=seed))
    if stream:
        _, _, report = collect(response)
    else:
        report = decision_of(response)
    assert report is not None
    assert report["confidence"] == pytest.approx(drawn.count("Paris") / 5, abs=1e-5)
    assert report["signals"]["extra_calls"] == 5
    assert {call["result"] for call in report["signals"]["calls"]} == {"ok"}
    samples = [r["body"] for r in upstream.received if r["body"].get("temperature") == 1.0]
    assert len(samples) == 5 and all(not s.get("stream") for s in samples)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_an_upstream_without_the_responses_api_is_explained(
    sampling_gateway: str, sdk_client: SDK, stream: bool
) -> None:
    client = sdk_client(sampling_gateway, SAMPLER_KEY)
    with pytest.raises(openai.NotFoundError) as caught:
        create(client, model="chat-only", input="hi", stream=stream)
    assert "may serve only chat completions" in caught.value.message
    assert caught.value.code == "upstream_rejected"
