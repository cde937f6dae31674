"""Tool calls, structured output and withheld answers, as the app sees them (#9 items 3-5).

Over loopback with the official openai SDK (and raw SSE where the wire itself is the point),
against the fake upstream, which streams tool calls the way OpenAI does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import SDK, gateway_config, serve_gateway

CONFIDENT = [-0.01, -0.01, -0.01]
UNSURE = [-3.0, -3.0, -3.0]
ARGS = '{"city": "Paris"}'
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object",
                                          "properties": {"city": {"type": "string"}}}}}]
MESSAGE = "I won't guess."
KEYS = {name: f"key-{name}-0123456789abcdef" for name in (
    "enforcer", "annotator", "shadower", "decider", "decide-annotate", "decide-shadow",
    "refusing", "filtered", "json-error", "json-pass", "as-content")}


def _tenant(name: str, **policy: Any) -> dict[str, Any]:
    digest = hashlib.sha256(KEYS[name].encode()).hexdigest()
    return {"api_keys": [{"sha256": digest}], "risk": {"threshold": 0.5},
            "abstention_message": MESSAGE, **policy}


@pytest.fixture(scope="module")
def gateway_url(
    fake_upstream: tuple[FakeUpstream, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    mp = pytest.MonkeyPatch()
    mp.setenv("FAKE_UPSTREAM_KEY", "sk-upstream-secret-0123456789")
    config = gateway_config(fake_upstream[1], tenants={
        "enforcer": _tenant("enforcer"),
        "annotator": _tenant("annotator", mode="annotate"),
        "shadower": _tenant("shadower", mode="shadow"),
        "decider": _tenant("decider", tool_calls="decide"),
        "decide-annotate": _tenant("decide-annotate", tool_calls="decide", mode="annotate"),
        "decide-shadow": _tenant("decide-shadow", tool_calls="decide", mode="shadow"),
        "refusing": _tenant("refusing", withheld_shape="refusal"),
        "filtered": _tenant("filtered", withheld_finish_reason="content_filter"),
        "json-error": _tenant("json-error", withheld_shape="error"),
        "json-pass": _tenant("json-pass", structured_output="pass"),
        "as-content": _tenant("as-content", withheld_shape="content"),
    })
    try:
        with serve_gateway(tmp_path_factory.mktemp("tools"), config) as url:
            yield url
    finally:
        mp.undo()


@pytest.fixture
def client(gateway_url: str, sdk_client: SDK, upstream: FakeUpstream) -> Callable[[str], Any]:
    return lambda tenant: sdk_client(f"{gateway_url}/v1", KEYS[tenant])


def directive(**fake: Any) -> list[dict[str, str]]:
    return [{"role": "user", "content": json.dumps({"fake": fake}) + "\nWeather in Paris?"}]


def tool_call(logprobs: list[float], **extra: Any) -> list[dict[str, str]]:
    return directive(tool_calls=[{"name": "get_weather", "arguments": ARGS}], logprobs=logprobs,
                     **extra)


def decision_of(item: Any) -> dict[str, Any]:
    return dict((item.model_extra or {})["basguard"])


def streamed(chunks: list[Any]) -> tuple[str, str, list[str], str | None]:
    """Content, tool-call arguments, tool names and the finish_reason of choice 0."""
    content, arguments, names, finish = "", "", [], None
    for chunk in chunks:
        for choice in chunk.choices:
            content += choice.delta.content or ""
            for call in choice.delta.tool_calls or []:
                arguments += call.function.arguments or ""
                if call.function.name:
                    names.append(call.function.name)
            finish = choice.finish_reason or finish
    return content, arguments, names, finish


@pytest.mark.parametrize("tenant", ["enforcer", "annotator", "shadower"])
def test_a_tool_call_passes_unchanged_and_is_recorded_not_applicable(
    client: Callable[[str], openai.OpenAI], tenant: str
) -> None:
    raw = client(tenant).chat.completions.with_raw_response.create(
        model="fake", messages=tool_call(UNSURE), tools=TOOLS)
    completion = raw.parse()
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    assert choice.message.tool_calls[0].function.arguments == ARGS
    assert choice.message.content is None  # never an abstention message beside the calls
    assert raw.headers["x-basguard-decision"] == "not_applicable"
    report = decision_of(completion)
    assert report["decision"] == "not_applicable" and report["confidence"] is None


@pytest.mark.parametrize("tenant", ["enforcer", "annotator", "shadower", "decide-annotate",
                                    "decide-shadow"])
def test_a_streamed_tool_call_keeps_its_calls_in_every_mode(
    client: Callable[[str], openai.OpenAI], tenant: str
) -> None:
    chunks = list(client(tenant).chat.completions.create(
        model="fake", messages=tool_call(UNSURE), tools=TOOLS, stream=True))
    content, arguments, names, finish = streamed(chunks)
    assert (content, arguments, names, finish) == ("", ARGS, ["get_weather"], "tool_calls")
    expected = "abstain" if tenant.startswith("decide") else "not_applicable"
    assert decision_of(chunks[-1])["decision"] == expected


def test_a_confident_streamed_tool_call_under_decide_is_replayed_whole(
    client: Callable[[str], openai.OpenAI],
) -> None:
    chunks = list(client("decider").chat.completions.create(
        model="fake", messages=tool_call(CONFIDENT), tools=TOOLS, stream=True))
    assert streamed(chunks) == ("", ARGS, ["get_weather"], "tool_calls")
    assert decision_of(chunks[-1])["decision"] == "answer"


@pytest.mark.parametrize("stream", [False, True])
def test_a_withheld_tool_call_under_decide_becomes_the_abstention(
    client: Callable[[str], openai.OpenAI], stream: bool
) -> None:
    sdk = client("decider")
    if stream:
        chunks = list(sdk.chat.completions.create(
            model="fake", messages=tool_call(UNSURE), tools=TOOLS, stream=True))
        assert streamed(chunks) == (MESSAGE, "", [], "stop")
        assert decision_of(chunks[-1])["decision"] == "abstain"
        return
    completion = sdk.chat.completions.create(model="fake", messages=tool_call(UNSURE),
                                             tools=TOOLS)
    choice = completion.choices[0]
    assert (choice.message.content, choice.message.tool_calls, choice.finish_reason) == (
        MESSAGE, None, "stop")


def _sse_documents(response: httpx.Response) -> list[dict[str, Any]]:
    documents = []
    for line in response.text.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            documents.append(json.loads(line[6:]))
    return documents


EXTRA = {"audio": {"id": "audio_1", "transcript": "Paris is"}, "x_vendor": {"trace": 7}}


@pytest.mark.parametrize("logprobs", [CONFIDENT, UNSURE])
def test_enforce_replays_every_delta_field_and_withholds_only_the_answer(
    gateway_url: str, upstream: FakeUpstream, logprobs: list[float]
) -> None:
    response = httpx.post(
        f"{gateway_url}/v1/chat/completions", timeout=10,
        headers={"authorization": f"Bearer {KEYS['enforcer']}"},
        json={"model": "fake", "stream": True, "logprobs": True,
              "messages": directive(content="Paris is the capital", logprobs=logprobs,
                                    extra_delta=EXTRA)})
    assert response.status_code == 200
    documents = _sse_documents(response)
    deltas = [c["delta"] for d in documents for c in d["choices"]]
    vendor = [d["x_vendor"] for d in deltas if "x_vendor" in d]
    assert vendor == [{"trace": 7}]  # an unknown field survives either way
    text = "".join(d.get("content") or "" for d in deltas)
    if logprobs is CONFIDENT:
        assert text == "Paris is the capital"
        assert [d["audio"] for d in deltas if "audio" in d] == [EXTRA["audio"]]
        assert any(c["logprobs"] for d in documents for c in d["choices"])
    else:
        assert text == MESSAGE
        assert "Paris" not in response.text  # not in the text, the audio or the logprobs
        assert not any(c["logprobs"] for d in documents for c in d["choices"])


def test_n_choices_are_replayed_each_as_decided(
    gateway_url: str, upstream: FakeUpstream
) -> None:
    response = httpx.post(
        f"{gateway_url}/v1/chat/completions", timeout=10,
        headers={"authorization": f"Bearer {KEYS['enforcer']}"},
        json={"model": "fake", "stream": True, "n": 2, "messages": directive(choices=[
            {"content": "Paris", "logprobs": CONFIDENT}, {"content": "Lyon", "logprobs": UNSURE}])})
    documents = _sse_documents(response)
    texts: dict[int, str] = {}
    for document in documents:
        for choice in document["choices"]:
            texts[choice["index"]] = texts.get(choice["index"], "") + (
                choice["delta"].get("content") or "")
    assert texts == {0: "Paris", 1: MESSAGE}
    assert [c["decision"] for c in documents[-1]["basguard"]["choices"]] == ["answer", "abstain"]


class City(BaseModel):
    name: str


@pytest.mark.parametrize("stream", [False, True])
def test_a_refusal_tenant_marks_a_withheld_answer_as_openai_does(
    client: Callable[[str], openai.OpenAI], stream: bool
) -> None:
    sdk = client("refusing")
    if not stream:
        completion = sdk.chat.completions.parse(
            model="fake", messages=directive(content='{"name": "Lyon"}', logprobs=UNSURE),
            response_format=City)
        message = completion.choices[0].message
        assert (message.refusal, message.content, message.parsed) == (MESSAGE, None, None)
        assert completion.choices[0].finish_reason == "stop"
        return
    # The SDK's stream helper: the refusal arrives as refusal events, and the decision rides
    # on the chunk with the finish_reason, which the helper hands over.
    with sdk.chat.completions.stream(
            model="fake", messages=directive(content="Lyon", logprobs=UNSURE)) as events:
        kinds = []
        decisions = []
        for event in events:
            kinds.append(event.type)
            if event.type == "chunk" and "basguard" in (event.chunk.model_extra or {}):
                decisions.append(decision_of(event.chunk)["decision"])
        final = events.get_final_completion()
    assert "refusal.done" in kinds
    assert decisions and decisions[-1] == "abstain"
    # Plain text: a refusal, and the message as the content too (never empty content).
    assert final.choices[0].message.refusal == MESSAGE
    assert final.choices[0].message.content == MESSAGE
    assert final.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("stream", [False, True])
def test_a_content_filter_tenant_makes_the_sdk_parser_raise(
    client: Callable[[str], openai.OpenAI], stream: bool
) -> None:
    sdk = client("filtered")
    messages = directive(content='{"name": "Lyon"}', logprobs=UNSURE)
    with pytest.raises(openai.ContentFilterFinishReasonError):
        if stream:
            with sdk.chat.completions.stream(model="fake", messages=messages,
                                             response_format=City) as events:
                for _ in events:
                    pass
        else:
            sdk.chat.completions.parse(model="fake", messages=messages, response_format=City)
    # Without parsing, the withheld choice reads as a filtered one.
    plain = sdk.chat.completions.create(model="fake", messages=messages)
    assert plain.choices[0].finish_reason == "content_filter"
    assert plain.choices[0].message.content == MESSAGE


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("response_format", [
    {"type": "json_object"},
    {"type": "json_schema", "json_schema": {"name": "city", "schema": {"type": "object"}}}])
def test_a_withheld_json_answer_is_json_for_a_content_tenant(
    client: Callable[[str], openai.OpenAI], stream: bool, response_format: dict[str, Any]
) -> None:
    arguments: dict[str, Any] = {"model": "fake", "response_format": response_format,
                                 "messages": directive(content='{"name": "Lyon"}',
                                                       logprobs=UNSURE)}
    if stream:
        chunks = list(client("as-content").chat.completions.create(stream=True, **arguments))
        text = streamed(chunks)[0]
    else:
        text = client("as-content").chat.completions.create(
            **arguments).choices[0].message.content
    assert json.loads(text or "") == {"basguard_withheld": True, "message": MESSAGE}


@pytest.mark.parametrize("stream", [False, True])
def test_a_json_error_tenant_gets_422_for_a_withheld_json_answer(
    client: Callable[[str], openai.OpenAI], stream: bool
) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        result = client("json-error").chat.completions.create(
            model="fake", response_format={"type": "json_object"}, stream=stream,
            messages=directive(content='{"name": "Lyon"}', logprobs=UNSURE))
        if stream:
            list(result)  # type: ignore[arg-type]
    assert caught.value.code == "answer_withheld"
    # Plain prose from the same tenant is still the abstention message.
    prose = client("json-error").chat.completions.create(
        model="fake", messages=directive(content="Lyon", logprobs=UNSURE))
    assert prose.choices[0].message.content == MESSAGE


@pytest.mark.parametrize("stream", [False, True])
def test_a_json_error_tenant_gets_422_for_a_withheld_json_response(
    client: Callable[[str], openai.OpenAI], stream: bool
) -> None:
    """The Responses API follows the same tenant setting (its JSON mode is ``text.format``)."""
    script = json.dumps({"fake": {"content": '{"name": "Lyon"}', "logprobs": UNSURE}})
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        result = client("json-error").responses.create(
            model="fake", input=script, text={"format": {"type": "json_object"}},
            stream=stream)
        if stream:
            list(result)  # type: ignore[call-overload]
    assert caught.value.code == "answer_withheld"
    prose = client("json-error").responses.create(
        model="fake", input=json.dumps({"fake": {"content": "Lyon", "logprobs": UNSURE}}))
    assert prose.output_text == MESSAGE


def test_the_responses_api_follows_tool_calls_and_structured_output(
    client: Callable[[str], openai.OpenAI]
) -> None:
    """The same tenant settings on /v1/responses: a decided tool call without confidence (the
    Responses API gives function calls no logprobs) is withheld whole; structured output under
    `pass` comes back unchanged and undecided."""
    tool = {"name": "get_weather", "arguments": ARGS}
    tools: list[Any] = [{"type": "function", "name": "get_weather",
                         "parameters": {"type": "object"}}]
    withheld = client("decider").responses.create(
        model="fake", input=json.dumps({"fake": {"tool_call": tool}}), tools=tools)
    assert [item.type for item in withheld.output] == ["message"]
    assert withheld.output_text == MESSAGE
    assert (withheld.model_extra or {})["basguard"]["decision"] == "abstain"
    passed = client("enforcer").responses.create(
        model="fake", input=json.dumps({"fake": {"tool_call": tool}}), tools=tools)
    assert passed.output[0].type == "function_call"
    text = '{"name": "Lyon"}'
    unchanged = client("json-pass").responses.create(
        model="fake", input=json.dumps({"fake": {"content": text, "logprobs": UNSURE}}),
        text={"format": {"type": "json_object"}})
    assert unchanged.output_text == text
    assert (unchanged.model_extra or {})["basguard"]["decision"] == "not_applicable"


@pytest.mark.parametrize("stream", [False, True])
def test_a_withheld_response_is_a_refusal_for_a_refusing_tenant(
    client: Callable[[str], openai.OpenAI], stream: bool
) -> None:
    """On /v1/responses `withheld_shape: refusal` gives the Responses API's refusal content part
    (and, streamed, its refusal events), so typed clients see a refusal there too; plain text
    keeps the message as output text beside it."""
    arguments: dict[str, Any] = {
        "model": "fake", "input": json.dumps({"fake": {"content": "Lyon", "logprobs": UNSURE}})}
    if stream:
        events = list(client("refusing").responses.create(stream=True, **arguments))
        (text,) = [event for event in events if event.type == "response.output_text.delta"]
        (delta,) = [event for event in events if event.type == "response.refusal.delta"]
        assert text.delta == delta.delta == MESSAGE
        response = next(e for e in events if e.type == "response.completed").response
    else:
        response = client("refusing").responses.create(**arguments)
    (item,) = response.output
    text_part, refusal_part = item.content
    assert (refusal_part.type, refusal_part.refusal) == ("refusal", MESSAGE)
    assert (text_part.type, text_part.text) == ("output_text", MESSAGE)
    assert response.output_text == MESSAGE
    assert (response.model_extra or {})["basguard"]["decision"] == "abstain"


def test_structured_output_pass_passes_json_unchanged(
    client: Callable[[str], openai.OpenAI],
) -> None:
    raw = client("json-pass").chat.completions.with_raw_response.create(
        model="fake", response_format={"type": "json_object"},
        messages=directive(content='{"name": "Lyon"}', logprobs=UNSURE))
    assert json.loads(raw.parse().choices[0].message.content or "") == {"name": "Lyon"}
    assert raw.headers["x-basguard-decision"] == "not_applicable"


def test_not_applicable_choices_are_counted_and_not_stored(
    gateway_url: str, client: Callable[[str], openai.OpenAI], tmp_path: Path
) -> None:
    def counted() -> float:
        text = httpx.get(f"{gateway_url}/metrics", timeout=10).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith("basguard_requests_total{") and 'tenant="shadower"' in line \
                    and 'decision="not_applicable"' in line:
                total += float(line.rsplit(" ", 1)[1])
        return total

    before = counted()
    completion = client("shadower").chat.completions.create(
        model="fake", messages=tool_call(UNSURE), tools=TOOLS)
    assert counted() == before + 1
    # Nothing to label: feedback on it finds no decision.
    response = httpx.post(f"{gateway_url}/v1/feedback", timeout=10,
                          headers={"authorization": f"Bearer {KEYS['shadower']}"},
                          json={"id": decision_of(completion)["id"], "correct": True})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "decision_not_found"


@pytest.mark.parametrize("response_format", ["json_object", {"type": 1}, {"json": True}])
def test_a_response_format_that_is_not_one_is_a_400(
    gateway_url: str, response_format: object
) -> None:
    response = httpx.post(f"{gateway_url}/v1/chat/completions", timeout=10,
                          headers={"authorization": f"Bearer {KEYS['enforcer']}"},
                          json={"model": "fake", "response_format": response_format,
                                "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"].startswith("response_format")


@pytest.mark.parametrize("stream", [False, True])
def test_a_withheld_tool_call_is_kept_for_review(
    gateway_url: str, client: Callable[[str], openai.OpenAI], stream: bool
) -> None:
    result = client("decider").chat.completions.create(
        model="fake", messages=tool_call(UNSURE), tools=TOOLS, stream=stream)
    last = list(result)[-1] if stream else result  # type: ignore[call-overload]
    decision_id = decision_of(last)["id"]
    listing = httpx.get(f"{gateway_url}/v1/feedback/withheld", timeout=10,
                        headers={"authorization": f"Bearer {KEYS['decider']}"}).json()
    (withheld,) = [row for row in listing["data"] if row["id"] == decision_id]
    assert withheld["answer"] == f"[tool call] get_weather({ARGS})"
