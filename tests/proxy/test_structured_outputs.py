"""Structured output and forced tool calls: decided by default, withheld in the shape the request
asked for (#21), through the official openai SDK over loopback against the fake upstream.

- plain text withheld: the abstention message as content, never empty;
- structured output withheld (a JSON format, ``parse()``, a forced tool call): OpenAI's refusal,
  so ``parse()`` gives ``parsed=None`` and the refusal instead of raising;
- a forced tool call is an answer: decided on its arguments (their logprobs, or consistency
  over the arguments), recorded, withheld without its call; a call the model chose
  (``tool_choice`` auto) still passes;
- a tenant's ``withheld_shape`` fixes one shape for every request instead.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import SDK, gateway_config, serve_gateway

CONFIDENT = [-0.01, -0.01, -0.01]
UNSURE = [-3.0, -3.0, -3.0]
MESSAGE = "I won't guess."
ARGS = '{"city": "Paris"}'
KEYS = {name: f"key-{name}-0123456789abcdef" for name in (
    "enforcer", "annotator", "shadower", "as-content", "refusing", "as-error", "passing",
    "sampler", "judged")}


class City(BaseModel):
    city: str


def _tenant(name: str, **policy: Any) -> dict[str, Any]:
    digest = hashlib.sha256(KEYS[name].encode()).hexdigest()
    return {"api_keys": [{"sha256": digest}], "risk": {"threshold": 0.5},
            "abstention_message": MESSAGE, **policy}


@pytest.fixture(scope="module")
def gateway_url(
    fake_upstream: tuple[FakeUpstream, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    config = gateway_config(fake_upstream[1], tenants={
        "enforcer": _tenant("enforcer"),
        "annotator": _tenant("annotator", mode="annotate"),
        "shadower": _tenant("shadower", mode="shadow"),
        "as-content": _tenant("as-content", withheld_shape="content"),
        "refusing": _tenant("refusing", withheld_shape="refusal"),
        "as-error": _tenant("as-error", withheld_shape="error"),
        "passing": _tenant("passing", structured_output="pass"),
        # Black-box signals, for outputs without logprobs (Responses function calls).
        "sampler": _tenant("sampler", confidence={
            "signals": ["consistency"], "timeout_seconds": 20,
            "consistency": {"samples": 5, "temperature": 1.0}}),
        "judged": _tenant("judged", confidence={
            "signals": ["judge"], "judge": {"model": "fake"}, "timeout_seconds": 5}),
    })
    config["models"] = {"fake": {**config["models"]["fake"], "timeout_seconds": 60}}
    with serve_gateway(tmp_path_factory.mktemp("structured"), config) as url:
        yield url


@pytest.fixture
def client(gateway_url: str, sdk_client: SDK, upstream: FakeUpstream
           ) -> Callable[[str], openai.OpenAI]:
    return lambda tenant: sdk_client(f"{gateway_url}/v1", KEYS[tenant])


def ask(**fake: Any) -> list[dict[str, str]]:
    return [{"role": "user", "content": json.dumps({"fake": fake}) + "\nWhere is the Louvre?"}]


def called(logprobs: list[float] | None = None, **extra: Any) -> list[dict[str, str]]:
    """A question the fake answers with a call of ``City`` (its arguments' tokens scripted)."""
    script: dict[str, Any] = {"tool_calls": [{"name": "City", "arguments": ARGS}], **extra}
    if logprobs is not None:
        script["logprobs"] = logprobs
    return ask(**script)


TOOLS: list[Any] = [openai.pydantic_function_tool(City)]
FORCED = {"type": "function", "function": {"name": "City"}}


def report(item: Any) -> dict[str, Any]:
    return dict((item.model_extra or {})["basguard"])


def stored_withheld(gateway_url: str, tenant: str, decision_id: str) -> dict[str, Any]:
    listing = httpx.get(f"{gateway_url}/v1/feedback/withheld", timeout=10,
                        headers={"authorization": f"Bearer {KEYS[tenant]}"}).json()
    (row,) = [row for row in listing["data"] if row["id"] == decision_id]
    return dict(row)


# -- chat: what a withheld answer looks like, per request ----------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_a_withheld_plain_answer_is_the_message_as_content(
    client: Callable[[str], openai.OpenAI], stream: bool
) -> None:
    sdk = client("enforcer")
    if stream:
        with sdk.chat.completions.stream(model="fake", messages=ask(
                content="Lyon", logprobs=UNSURE)) as events:
            message = events.get_final_completion().choices[0].message
    else:
        message = sdk.chat.completions.create(
            model="fake", messages=ask(content="Lyon", logprobs=UNSURE)).choices[0].message
    assert (message.content, message.refusal) == (MESSAGE, None)


def test_parse_gives_parsed_none_and_the_refusal(client: Callable[[str], openai.OpenAI]) -> None:
    completion = client("enforcer").chat.completions.parse(
        model="fake", messages=ask(content='{"city": "Lyon"}', logprobs=UNSURE),
        response_format=City)
    message = completion.choices[0].message
    assert (message.parsed, message.refusal, message.content) == (None, MESSAGE, None)
    assert completion.choices[0].finish_reason == "stop"
    assert report(completion)["decision"] == "abstain"
    answered = client("enforcer").chat.completions.parse(
        model="fake", messages=ask(content='{"city": "Paris"}', logprobs=CONFIDENT),
        response_format=City)
    assert answered.choices[0].message.parsed == City(city="Paris")


def test_the_stream_helper_with_a_schema_ends_with_the_refusal(
    client: Callable[[str], openai.OpenAI]
) -> None:
    with client("enforcer").chat.completions.stream(
            model="fake", messages=ask(content='{"city": "Lyon"}', logprobs=UNSURE),
            response_format=City) as events:
        kinds = [event.type for event in events]
        final = events.get_final_completion()
    assert "refusal.done" in kinds and "content.delta" not in kinds
    message = final.choices[0].message
    assert (message.parsed, message.refusal) == (None, MESSAGE)


@pytest.mark.parametrize("stream", [False, True])
def test_json_mode_withheld_is_a_refusal_with_null_content(
    client: Callable[[str], openai.OpenAI], stream: bool
) -> None:
    arguments: dict[str, Any] = {"model": "fake", "response_format": {"type": "json_object"},
                                 "messages": ask(content='{"city": "Lyon"}', logprobs=UNSURE)}
    if stream:
        chunks = list(client("enforcer").chat.completions.create(stream=True, **arguments))
        deltas = [choice.delta for chunk in chunks for choice in chunk.choices]
        assert "".join(d.refusal or "" for d in deltas) == MESSAGE
        assert not any(d.content for d in deltas)
        return
    message = client("enforcer").chat.completions.create(**arguments).choices[0].message
    assert (message.content, message.refusal) == (None, MESSAGE)


# -- chat: a forced tool call is an answer --------------------------------------------------------


@pytest.mark.parametrize("tool_choice", [FORCED, "required"], ids=["named", "required"])
@pytest.mark.parametrize("stream", [False, True])
def test_an_unsure_forced_tool_call_is_withheld_as_a_refusal_and_recorded(
    client: Callable[[str], openai.OpenAI], gateway_url: str, tool_choice: Any, stream: bool
) -> None:
    sdk = client("enforcer")
    if stream:
        raw = sdk.chat.completions.with_raw_response.create(
            model="fake", messages=called(UNSURE), tools=TOOLS, tool_choice=tool_choice,
            stream=True)
        chunks = list(raw.parse())
        deltas = [choice.delta for chunk in chunks for choice in chunk.choices]
        assert not any(d.tool_calls for d in deltas)
        assert "".join(d.refusal or "" for d in deltas) == MESSAGE
        assert "Paris" not in json.dumps([c.model_dump() for c in chunks])
        decision = report(chunks[-1])
    else:
        raw = sdk.chat.completions.with_raw_response.create(
            model="fake", messages=called(UNSURE), tools=TOOLS, tool_choice=tool_choice)
        completion = raw.parse()
        choice = completion.choices[0]
        assert (choice.message.tool_calls, choice.message.content) == (None, None)
        assert (choice.message.refusal, choice.finish_reason) == (MESSAGE, "stop")
        decision = report(completion)
    assert raw.headers["x-basguard-decision"] == "abstain"
    assert decision["decision"] == "abstain" and decision["confidence"] < 0.5
    # Recorded like any withheld answer, for a reviewer to label.
    row = stored_withheld(gateway_url, "enforcer", decision["id"])
    assert row["answer"] == f"[tool call] City({ARGS})"


@pytest.mark.parametrize("stream", [False, True])
def test_a_confident_forced_tool_call_is_answered(
    client: Callable[[str], openai.OpenAI], stream: bool
) -> None:
    result = client("enforcer").chat.completions.create(
        model="fake", messages=called(CONFIDENT), tools=TOOLS, tool_choice=FORCED, stream=stream)
    if stream:
        chunks = list(result)  # type: ignore[call-overload]
        arguments = "".join(call.function.arguments or "" for chunk in chunks
                            for choice in chunk.choices for call in choice.delta.tool_calls or [])
        assert arguments == ARGS
        assert report(chunks[-1])["decision"] == "answer"
        return
    choice = result.choices[0]  # type: ignore[union-attr]
    assert choice.message.tool_calls[0].function.arguments == ARGS
    assert report(result)["decision"] == "answer"


def test_parse_with_a_forced_strict_tool_gives_the_refusal(
    client: Callable[[str], openai.OpenAI]
) -> None:
    """What instructor's TOOLS mode and Pydantic AI's tool output send: a strict tool, forced."""
    sdk = client("enforcer")
    withheld = sdk.chat.completions.parse(model="fake", messages=called(UNSURE), tools=TOOLS,
                                          tool_choice=FORCED)
    message = withheld.choices[0].message
    assert (message.tool_calls, message.refusal) == (None, MESSAGE)
    answered = sdk.chat.completions.parse(model="fake", messages=called(CONFIDENT), tools=TOOLS,
                                          tool_choice=FORCED)
    (call,) = answered.choices[0].message.tool_calls or []
    assert call.function.parsed_arguments == City(city="Paris")


def test_a_tool_call_the_model_chose_still_passes(client: Callable[[str], openai.OpenAI]) -> None:
    for tool_choice in (openai.omit, "auto"):
        completion = client("enforcer").chat.completions.create(
            model="fake", messages=called(UNSURE), tools=TOOLS, tool_choice=tool_choice)
        assert completion.choices[0].message.tool_calls is not None
        assert report(completion)["decision"] == "not_applicable"
        assert "tool_calls: pass" in report(completion)["choices"][0]["reason"]


@pytest.mark.parametrize("tenant", ["annotator", "shadower"])
@pytest.mark.parametrize("stream", [False, True])
def test_annotate_and_shadow_pass_a_forced_tool_call_with_its_decision(
    client: Callable[[str], openai.OpenAI], tenant: str, stream: bool
) -> None:
    result = client(tenant).chat.completions.create(
        model="fake", messages=called(UNSURE), tools=TOOLS, tool_choice=FORCED, stream=stream)
    if stream:
        chunks = list(result)  # type: ignore[call-overload]
        assert any(choice.delta.tool_calls for chunk in chunks for choice in chunk.choices)
        assert report(chunks[-1])["decision"] == "abstain"
        return
    assert result.choices[0].message.tool_calls is not None  # type: ignore[union-attr]
    assert report(result)["decision"] == "abstain"


def test_structured_output_pass_passes_a_forced_tool_call(
    client: Callable[[str], openai.OpenAI]
) -> None:
    completion = client("passing").chat.completions.create(
        model="fake", messages=called(UNSURE), tools=TOOLS, tool_choice=FORCED)
    assert completion.choices[0].message.tool_calls is not None
    assert report(completion)["decision"] == "not_applicable"
    assert "structured_output: pass" in report(completion)["choices"][0]["reason"]


def test_consistency_decides_a_forced_call_on_its_arguments(
    client: Callable[[str], openai.OpenAI], upstream: FakeUpstream
) -> None:
    """Without logprobs, the samples' calls are compared with the answer's: the same arguments
    written another way (key order, spaces) agree; other arguments do not."""
    same = ['{"city":"Paris"}', '{ "city" : "Paris" }']
    agreeing = client("sampler").chat.completions.create(
        model="fake", tools=TOOLS, tool_choice=FORCED,
        messages=called(omit_logprobs=True, sample_answers=same))
    assert report(agreeing)["confidence"] == pytest.approx(1.0, abs=1e-5)
    assert agreeing.choices[0].message.tool_calls is not None
    others = ['{"city": "Lyon"}', '{"city": "Nice"}', '{"city": "Paris"}']
    seed = 3
    drawn = [random.Random(f"{seed}:{i}").choice(others) for i in range(5)]
    assert drawn.count('{"city": "Paris"}') <= 2  # most samples call it with another city
    split = client("sampler").chat.completions.create(
        model="fake", tools=TOOLS, tool_choice=FORCED,
        messages=called(omit_logprobs=True, sample_answers=others, sample_seed=seed))
    assert report(split)["confidence"] == pytest.approx(drawn.count('{"city": "Paris"}') / 5,
                                                     abs=1e-5)
    assert (split.choices[0].message.tool_calls, split.choices[0].message.refusal) == (
        None, MESSAGE)
    samples = [r["body"] for r in upstream.received if r["body"].get("temperature") == 1.0]
    assert len(samples) == 10 and all(s["tool_choice"] == FORCED for s in samples)


def test_the_judge_is_shown_the_forced_call(
    client: Callable[[str], openai.OpenAI], upstream: FakeUpstream
) -> None:
    judge_says = json.dumps({"fake": {"followup": {"content": "True"}}})
    messages = [{"role": "system", "content": json.dumps({"fake": {
        "tool_calls": [{"name": "City", "arguments": ARGS}], "omit_logprobs": True}})},
        {"role": "user", "content": f"{judge_says}\nWhere is the Louvre?"}]
    completion = client("judged").chat.completions.create(
        model="fake", messages=messages, tools=TOOLS, tool_choice=FORCED)
    assert report(completion)["decision"] == "answer"
    assert completion.choices[0].message.tool_calls is not None
    (judge,) = [r["body"] for r in upstream.received if "Proposed answer" in json.dumps(r)]
    assert 'Proposed answer: City({"city":"Paris"})' in judge["messages"][-1]["content"]


# -- chat: a tenant's withheld_shape --------------------------------------------------------------


def test_a_content_tenant_gets_content_in_every_shape(
    client: Callable[[str], openai.OpenAI]
) -> None:
    sdk = client("as-content")
    forced = sdk.chat.completions.create(model="fake", messages=called(UNSURE), tools=TOOLS,
                                         tool_choice=FORCED).choices[0]
    assert (forced.message.content, forced.message.tool_calls, forced.message.refusal) == (
        MESSAGE, None, None)
    as_json = sdk.chat.completions.create(
        model="fake", response_format={"type": "json_object"},
        messages=ask(content='{"city": "Lyon"}', logprobs=UNSURE)).choices[0].message
    assert json.loads(as_json.content or "") == {"basguard_withheld": True, "message": MESSAGE}


@pytest.mark.parametrize("stream", [False, True])
def test_an_error_tenant_gets_422_for_structured_output_only(
    client: Callable[[str], openai.OpenAI], stream: bool
) -> None:
    sdk = client("as-error")
    for arguments in ({"tools": TOOLS, "tool_choice": FORCED, "messages": called(UNSURE)},
                      {"response_format": City, "messages": ask(content="{}", logprobs=UNSURE)}):
        with pytest.raises(openai.UnprocessableEntityError) as caught:
            if "response_format" in arguments:
                sdk.chat.completions.parse(model="fake", **arguments)
            else:
                result = sdk.chat.completions.create(model="fake", stream=stream, **arguments)
                if stream:
                    list(result)  # type: ignore[call-overload]
        assert caught.value.code == "answer_withheld"
        assert caught.value.response.headers["x-basguard-decision"] == "abstain"
    prose = sdk.chat.completions.create(model="fake", messages=ask(content="x", logprobs=UNSURE))
    assert prose.choices[0].message.content == MESSAGE


def test_a_refusal_tenant_keeps_content_for_plain_text(
    client: Callable[[str], openai.OpenAI]
) -> None:
    plain = client("refusing").chat.completions.create(
        model="fake", messages=ask(content="Lyon", logprobs=UNSURE)).choices[0].message
    assert (plain.content, plain.refusal) == (MESSAGE, MESSAGE)
    structured = client("refusing").chat.completions.parse(
        model="fake", messages=ask(content="{}", logprobs=UNSURE), response_format=City)
    assert (structured.choices[0].message.content, structured.choices[0].message.refusal) == (
        None, MESSAGE)


# -- the Responses API ------------------------------------------------------------------------------


def script(**fake: Any) -> str:
    return json.dumps({"fake": fake})


RESPONSE_TOOLS: list[Any] = [{"type": "function", "name": "City", "strict": True,
                              "parameters": City.model_json_schema() | {
                                  "additionalProperties": False}}]


def test_responses_parse_gives_no_parsed_output_and_a_refusal(
    client: Callable[[str], openai.OpenAI]
) -> None:
    sdk = client("enforcer")
    withheld = sdk.responses.parse(model="fake", text_format=City,
                                   input=script(content='{"city": "Lyon"}', logprobs=UNSURE))
    assert withheld.output_parsed is None
    (item,) = withheld.output
    assert [part.type for part in item.content] == ["refusal"]  # type: ignore[union-attr]
    assert withheld.metadata == {"basguard_id": report(withheld)["id"],
                                 "basguard_decision": "abstain",
                                 "basguard_confidence": f"{report(withheld)['confidence']:.4f}"}
    answered = sdk.responses.parse(model="fake", text_format=City,
                                   input=script(content='{"city": "Paris"}', logprobs=CONFIDENT))
    assert answered.output_parsed == City(city="Paris")
    assert answered.metadata is not None and answered.metadata["basguard_decision"] == "answer"


@pytest.mark.parametrize(("logprobs", "decision"), [(CONFIDENT, "answer"), (UNSURE, "abstain")])
def test_the_responses_stream_helper_completes_with_a_schema(
    client: Callable[[str], openai.OpenAI], logprobs: list[float], decision: str
) -> None:
    with client("enforcer").responses.stream(
            model="fake", text_format=City,
            input=script(content='{"city": "Paris"}', logprobs=logprobs)) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[-1] == "response.completed"
    assert all(kind.startswith(("response.", "error")) for kind in kinds)
    assert final.metadata is not None and final.metadata["basguard_decision"] == decision
    if decision == "answer":
        assert final.output_parsed == City(city="Paris")
    else:
        assert final.output_parsed is None
        assert "response.refusal.done" in kinds and "response.output_text.delta" not in kinds


def test_the_apps_own_metadata_is_kept_beside_the_decision(
    client: Callable[[str], openai.OpenAI]
) -> None:
    response = client("annotator").responses.create(
        model="fake", input=script(content="Paris", logprobs=UNSURE),
        metadata={"ticket": "T-7"})
    assert response.metadata is not None
    assert response.metadata["ticket"] == "T-7"
    assert response.metadata["basguard_decision"] == "abstain"


@pytest.mark.parametrize("stream", [False, True])
def test_a_forced_function_call_without_logprobs_follows_on_missing_confidence(
    client: Callable[[str], openai.OpenAI], stream: bool
) -> None:
    """The Responses API gives function calls no logprobs: a tenant on logprobs alone has no
    confidence for a forced call, and abstains (on_missing_confidence: abstain)."""
    result = client("enforcer").responses.create(
        model="fake", tools=RESPONSE_TOOLS, tool_choice={"type": "function", "name": "City"},
        input=script(tool_call={"name": "City", "arguments": ARGS}), stream=stream)
    response = ([e for e in result if e.type == "response.completed"][-1].response  # type: ignore[union-attr]
                if stream else result)
    assert [item.type for item in response.output] == ["message"]  # type: ignore[union-attr]
    assert response.output[0].content[0].type == "refusal"  # type: ignore[union-attr]
    decision = report(response)
    assert (decision["decision"], decision["confidence"]) == ("abstain", None)
    assert "logprobs" in decision["choices"][0]["reason"]


@pytest.mark.parametrize("stream", [False, True])
def test_consistency_decides_a_forced_function_call(
    client: Callable[[str], openai.OpenAI], stream: bool
) -> None:
    answered = client("sampler").responses.create(
        model="fake", tools=RESPONSE_TOOLS, tool_choice="required", stream=stream,
        input=script(tool_call={"name": "City", "arguments": ARGS},
                     sample_answers=['{"city":"Paris"}']))
    response = ([e for e in answered if e.type == "response.completed"][-1].response  # type: ignore[union-attr]
                if stream else answered)
    assert response.output[0].type == "function_call"  # type: ignore[union-attr]
    assert report(response)["decision"] == "answer"
    assert report(response)["confidence"] == pytest.approx(1.0, abs=1e-5)
    withheld = client("sampler").responses.create(
        model="fake", tools=RESPONSE_TOOLS, tool_choice="required",
        input=script(tool_call={"name": "City", "arguments": ARGS},
                     sample_answers=['{"city":"Lyon"}']))
    assert [item.type for item in withheld.output] == ["message"]
    assert report(withheld)["confidence"] == pytest.approx(0.0, abs=1e-5)


def test_a_function_call_the_model_chose_still_passes(
    client: Callable[[str], openai.OpenAI]
) -> None:
    response = client("enforcer").responses.create(
        model="fake", tools=RESPONSE_TOOLS,
        input=script(tool_call={"name": "City", "arguments": ARGS}))
    assert response.output[0].type == "function_call"
    assert response.metadata is not None
    assert response.metadata["basguard_decision"] == "not_applicable"
    assert response.metadata["basguard_confidence"] == "none"
