"""Large non-streamed ``/v1/responses`` replies judged in the offload process, as chat's are.

Two gateways on loopback in front of the same fake upstream: one sends every reply above 1 KiB
to its offload process, the other handles every reply in the worker (``offload_processes: 0``).
Whatever the reply and the tenant's policy, both must answer the same: status, decision headers
and body, byte for byte once the ids and timestamps each request gets anew are set aside.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from openai.types.responses import Response

import proxy.judging.offload
from proxy.judging.offload import ReplyOffload, judge_response
from proxy.runtime.state import build_runtime
from proxy.services.responses import GuardedResponses
from proxy.signals.base import SignalRequest
from proxy.wire.responses import ResponsesFormat
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import SDK, TENANT_KEYS, gateway_config, serve_gateway
from tests.support.processes import HEAVY_MODULES, offload_processes, wait_until_exited

SMALLEST_OFFLOADED = 1024
LOGPROBS = ["message.output_text.logprobs"]
CONFIDENT = {"content": "Par is", "logprobs": [-0.01, -0.02]}
UNSURE = {"content": "Lyo ns", "logprobs": [-1.5, -2.5]}
MESSAGE = "I won't guess."
KEYS = {**TENANT_KEYS, **{name: f"key-{name}-0123456789abcdef" for name in (
    "refusing", "json-error", "decider", "verbal", "as-content")}}
JSON_TEXT = {"format": {"type": "json_object"}}
TOOLS = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]
# Long enough arguments for a function call reply past the offload's threshold.
LONG_CALL = {"name": "get_weather", "arguments": json.dumps({"city": "Paris " * 200})}


def config_for(upstream_url: str) -> dict[str, Any]:
    config = gateway_config(upstream_url)
    for name in ("keyed", "via-litellm"):  # no key to set, no litellm to load
        del config["models"][name]
    config["models"]["fake"]["timeout_seconds"] = 60
    # An upstream without the Responses API (the fake's paths under /chat-only are all 404).
    config["models"]["chat-only"] = {"base_url": f"{upstream_url}/chat-only/v1",
                                     "timeout_seconds": 60}

    def tenant(name: str, **policy: Any) -> dict[str, Any]:
        return {"api_keys": [{"sha256": hashlib.sha256(KEYS[name].encode()).hexdigest()}],
                "risk": {"threshold": 0.5}, "abstention_message": MESSAGE, **policy}

    config["tenants"].update({
        "refusing": tenant("refusing", withheld_shape="refusal"),
        "json-error": tenant("json-error", withheld_shape="error"),
        "as-content": tenant("as-content", withheld_shape="content"),
        "decider": tenant("decider", tool_calls="decide"),
        # A signal that makes a call, which needs the answer before the judgement.
        "verbal": tenant("verbal", on_missing_confidence="answer",
                         confidence={"signals": ["verbalized"], "timeout_seconds": 1.5}),
    })
    return config


@pytest.fixture(scope="module")
def gateways(
    fake_upstream: tuple[FakeUpstream, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """(offloading every reply above 1 KiB, handling every reply in the worker)."""
    config = config_for(fake_upstream[1])
    with serve_gateway(tmp_path_factory.mktemp("offloading"), config,
                       offload_processes=1, offload_reply_bytes=SMALLEST_OFFLOADED) as offloading, \
            serve_gateway(tmp_path_factory.mktemp("in-worker"), config,
                          offload_processes=0) as in_worker:
        yield offloading, in_worker


@pytest.fixture
def jobs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The jobs the gateways hand to an offload pool (a spy on the hand-over: the gateways
    run in this process's threads)."""
    handed: list[str] = []
    original = ReplyOffload.run

    async def spy(self: ReplyOffload, job: Callable[..., Any], *args: Any) -> Any:
        handed.append(job.__name__)
        return await original(self, job, *args)

    monkeypatch.setattr(ReplyOffload, "run", spy)
    return handed


def script(**fake: Any) -> str:
    return json.dumps({"fake": fake})


def post(url: str, tenant: str, body: dict[str, Any], timeout: float = 120) -> httpx.Response:
    return httpx.post(f"{url}/v1/responses", json={"model": "fake", **body}, timeout=timeout,
                      headers={"authorization": f"Bearer {KEYS[tenant]}"})


# What differs on every request: the upstream's ids (and basguard's for a withheld response),
# the creation time, the decision's id and how long the signals' calls took.
_VARYING = re.compile(rb'"(id|call_id|basguard_id|created_at|seconds)":("[^"]*"|[0-9.e-]+)')


def comparable(response: httpx.Response) -> tuple[int, dict[str, str], bytes]:
    """Status, decision headers and the body's bytes, without what differs on every request."""
    headers = {k: v for k, v in response.headers.items()
               if (k.startswith("x-basguard-") and k != "x-basguard-id") or k == "content-type"}
    return (response.status_code, headers,
            _VARYING.sub(lambda m: b'"' + m.group(1) + b'":0', response.content))


def verbal_body(**main: Any) -> dict[str, Any]:
    """A request whose answer is ``main`` and whose verbalized follow-up call says 85%."""
    return {"instructions": script(**main),
            "input": script(followup={"content": "85%"}) + "\nWhat is the capital of France?"}


CASES: dict[str, tuple[str, dict[str, Any], list[str]]] = {
    # name: (tenant, request, the jobs the offloading gateway hands its pool)
    "confident, logprobs asked for": ("enforcer", {
        "input": script(**CONFIDENT, repeat=200), "include": LOGPROBS, "top_logprobs": 2},
        ["judge_response"]),
    "confident, logprobs not asked for (stripped)": (
        "enforcer", {"input": script(**CONFIDENT, repeat=200)}, ["judge_response"]),
    "unsure, withheld": ("enforcer", {
        "input": script(**UNSURE, repeat=200), "include": LOGPROBS}, ["judge_response"]),
    "unsure, withheld as a refusal": (
        "refusing", {"input": script(**UNSURE, repeat=200)}, ["judge_response"]),
    "unsure, annotated": ("annotator", {
        "input": script(**UNSURE, repeat=200), "include": LOGPROBS, "top_logprobs": 1},
        ["judge_response"]),
    "unsure, shadowed": ("shadower", {"input": script(**UNSURE, repeat=200)},
                         ["judge_response"]),
    "a function call, passed": (
        "enforcer", {"input": script(tool_call=LONG_CALL), "tools": TOOLS}, ["judge_response"]),
    "a function call, decided": (
        "decider", {"input": script(tool_call=LONG_CALL), "tools": TOOLS}, ["judge_response"]),
    "structured output, withheld as a refusal": (
        "enforcer", {"input": script(**UNSURE, repeat=200), "text": JSON_TEXT},
        ["judge_response"]),
    "structured output, withheld as a JSON object": (
        "as-content", {"input": script(**UNSURE, repeat=200), "text": JSON_TEXT},
        ["judge_response"]),
    "structured output, withheld as an error": (
        "json-error", {"input": script(**UNSURE, repeat=200), "text": JSON_TEXT},
        ["judge_response"]),
    "all withheld, as an error": (
        "refuser", {"input": script(**UNSURE, repeat=200)}, ["judge_response"]),
    "no logprobs, answered": (
        "lenient", {"input": script(**CONFIDENT, repeat=200, omit_logprobs=True)},
        ["judge_response"]),
    "no logprobs, as an error": (
        "strict", {"input": script(**CONFIDENT, repeat=200, omit_logprobs=True)},
        ["judge_response"]),
    "several MiB of logprobs": ("enforcer", {
        "input": script(**CONFIDENT, repeat=8000), "include": LOGPROBS, "top_logprobs": 5},
        ["judge_response"]),
    "a signal that makes a call": (
        "verbal", verbal_body(**UNSURE, repeat=200), ["read_response_answer", "judge_response"]),
    "a signal that makes a call, a function call": (
        "verbal", {**verbal_body(tool_call=LONG_CALL), "tools": TOOLS},
        ["read_response_answer", "judge_response"]),
    "not JSON": ("enforcer", {"input": script(**UNSURE, repeat=200, malformed="truncated")},
                 ["judge_response"]),
    "an invalid shape": ("enforcer", {
        "input": script(**UNSURE, repeat=200, malformed="text_not_string"),
        "include": LOGPROBS}, ["judge_response"]),
    "not JSON, with a signal that makes a call": (
        "verbal", verbal_body(**UNSURE, repeat=400, malformed="truncated"),
        ["read_response_answer"]),
    "an upstream without the Responses API": (
        "enforcer", {"model": "chat-only", "input": "hi"}, []),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_large_response_is_answered_as_in_the_worker(
    gateways: tuple[str, str], upstream: FakeUpstream, jobs: list[str], case: str
) -> None:
    offloading, in_worker = gateways
    tenant, body, offloaded = CASES[case]
    answer = post(offloading, tenant, body)
    assert jobs == offloaded
    followups = len(upstream.received)
    reference = post(in_worker, tenant, body)
    assert jobs == offloaded, "the in-worker gateway offloaded"
    assert len(upstream.received) == 2 * followups, "the two made different calls"
    assert comparable(answer) == comparable(reference)
    if answer.status_code == 200:
        assert answer.headers["x-basguard-decision"] == reference.headers["x-basguard-decision"]
        Response.model_validate(answer.json())
        assert answer.content.endswith(b"}}")  # the decision last, as the worker puts it
    else:
        assert set(answer.json()) == {"error"}  # the envelope


def test_what_the_cases_show(gateways: tuple[str, str]) -> None:
    """The cases above decide what their names say (the same both ways, shown above)."""
    offloading, _ = gateways

    def decided(case: str) -> httpx.Response:
        tenant, body, _ = CASES[case]
        return post(offloading, tenant, body)

    asked = decided("confident, logprobs asked for").json()
    logprobs = asked["output"][0]["content"][0]["logprobs"]
    assert len(logprobs) == 400 and all(len(entry["top_logprobs"]) == 2 for entry in logprobs)
    stripped = decided("confident, logprobs not asked for (stripped)").json()
    assert stripped["output"][0]["content"][0]["logprobs"] == []
    assert stripped["basguard"]["decision"] == "answer"
    withheld = Response.model_validate(decided("unsure, withheld").json())
    assert withheld.output_text == MESSAGE and withheld.id.startswith("resp_bg")
    refused = decided("unsure, withheld as a refusal").json()
    assert refused["output"][0]["content"] == [  # plain text: the message and the refusal
        {"type": "output_text", "text": MESSAGE, "annotations": [], "logprobs": []},
        {"type": "refusal", "refusal": MESSAGE}]
    structured = decided("structured output, withheld as a refusal").json()
    assert structured["output"][0]["content"] == [{"type": "refusal", "refusal": MESSAGE}]
    assert structured["metadata"]["basguard_decision"] == "abstain"
    assert structured["metadata"]["basguard_id"] == structured["basguard"]["id"]
    annotated = decided("unsure, annotated").json()
    assert annotated["output"][0]["content"][0]["text"] == "Lyo ns" * 200
    assert annotated["basguard"]["decision"] == "abstain"
    passed = decided("a function call, passed").json()
    assert passed["output"][0]["type"] == "function_call"
    assert passed["basguard"]["decision"] == "not_applicable"
    decided_call = decided("a function call, decided").json()
    assert [item["type"] for item in decided_call["output"]] == ["message"]
    as_json = Response.model_validate(
        decided("structured output, withheld as a JSON object").json())
    assert json.loads(as_json.output_text) == {"basguard_withheld": True, "message": MESSAGE}
    for case, status, code in [
        ("structured output, withheld as an error", 422, "answer_withheld"),
        ("all withheld, as an error", 422, "answer_withheld"),
        ("no logprobs, as an error", 502, "confidence_unavailable"),
        ("not JSON", 502, "upstream_invalid_response"),
        ("an invalid shape", 502, "upstream_invalid_response"),
        ("not JSON, with a signal that makes a call", 502, "upstream_invalid_response"),
        ("an upstream without the Responses API", 404, "upstream_rejected"),
    ]:
        failed = decided(case)
        assert (failed.status_code, failed.json()["error"]["code"]) == (status, code), case
    assert "Lyo" not in decided("all withheld, as an error").text
    assert "may serve only chat completions" in decided(
        "an upstream without the Responses API").text
    verbal = decided("a signal that makes a call").json()["basguard"]
    assert verbal["confidence"] == pytest.approx(0.85)
    assert verbal["signals"]["extra_calls"] == 1
    # A function call is passed undecided: no follow-up call judges it.
    assert decided("a signal that makes a call, a function call").json()["basguard"][
        "decision"] == "not_applicable"
    huge = decided("several MiB of logprobs")
    assert len(huge.content) > 3 * 1_048_576 and huge.json()["basguard"]["decision"] == "answer"


def test_a_response_below_the_threshold_stays_in_the_worker(
    gateways: tuple[str, str], jobs: list[str]
) -> None:
    offloading, in_worker = gateways
    body = {"input": script(content="Paris", logprobs=[-0.01])}
    answer = post(offloading, "enforcer", body)
    assert answer.status_code == 200
    upstream_reply = {**answer.json(), "metadata": {}}  # as the upstream sent it
    del upstream_reply["basguard"]
    assert len(json.dumps(upstream_reply, separators=(",", ":"))) < SMALLEST_OFFLOADED
    assert jobs == []
    assert comparable(answer) == comparable(post(in_worker, "enforcer", body))


def die_in_the_pool(*args: object) -> None:
    """Stands in for the judgement: a response whose processing kills the pool's process."""
    os._exit(70)


def test_a_large_response_is_judged_in_another_process(
    gateways: tuple[str, str], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture
) -> None:
    """The proof that the judgement runs in the pool's process: the job that kills its
    process costs that response a 500, and the gateway, whose process it is not, lives on
    with a new pool."""
    offloading, in_worker = gateways
    body = {"input": script(**UNSURE, repeat=200)}
    assert post(offloading, "enforcer", body).status_code == 200
    before = offload_processes()
    assert before and os.getpid() not in before
    monkeypatch.setattr(proxy.judging.offload, "judge_response", die_in_the_pool)
    failed = post(offloading, "enforcer", body)
    assert failed.status_code == 500
    assert failed.json()["error"]["code"] == "internal_error"
    assert "a reply offload process died" in caplog.text
    monkeypatch.undo()
    wait_until_exited(before, what="the dead pool")
    again = post(offloading, "enforcer", body)
    assert comparable(again) == comparable(post(in_worker, "enforcer", body))
    assert offload_processes() and offload_processes().isdisjoint(before)


def test_the_openai_sdk_reads_an_offloaded_response(
    gateways: tuple[str, str], sdk_client: SDK, jobs: list[str]
) -> None:
    offloading, _ = gateways
    client = sdk_client(f"{offloading}/v1", KEYS["enforcer"])
    raw = client.responses.with_raw_response.create(
        model="fake", input=script(**CONFIDENT, repeat=2000), include=LOGPROBS,
        top_logprobs=1)
    response = raw.parse()
    assert jobs == ["judge_response"]
    assert response.output_text == "Par is" * 2000
    logprobs = response.output[0].content[0].logprobs  # type: ignore[union-attr]
    assert logprobs is not None and len(logprobs) == 4000
    report = (response.model_extra or {})["basguard"]
    assert report["decision"] == raw.headers["x-basguard-decision"] == "answer"
    assert report["id"] == raw.headers["x-basguard-id"]
    withheld = client.responses.create(model="fake", input=script(**UNSURE, repeat=2000))
    assert withheld.output_text == MESSAGE
    with pytest.raises(openai.InternalServerError) as caught:
        client.responses.create(model="fake",
                                input=script(**UNSURE, repeat=200, malformed="truncated"))
    assert caught.value.code == "upstream_invalid_response"
    assert jobs == ["judge_response"] * 3


def test_the_pool_process_stays_lean_and_judges_a_response_as_the_worker(
    fake_upstream: tuple[FakeUpstream, str], tmp_path: Path
) -> None:
    """What the child imports to judge a response (see the chat twin in test_offload.py), and
    the same result there as here."""
    path = tmp_path / "basguard.yaml"
    path.write_text(yaml.safe_dump(config_for(fake_upstream[1])))
    tenant = build_runtime(path).authenticate(f"Bearer {KEYS['refusing']}")
    body: dict[str, Any] = {"model": "fake", "input": "Where?", "include": LOGPROBS}
    plan = tenant.signal_plan_for("fake")
    judging = GuardedResponses._judging(
        tenant, "fake", plan, SignalRequest("fake", ResponsesFormat, body, plan.wanted), body,
        terms=tenant.terms_for("fake"))
    reply = {"id": "resp_x", "object": "response", "created_at": 1, "status": "completed",
             "model": "fake", "basguard": "the upstream's own",
             "output": [{"id": "msg_x", "type": "message", "role": "assistant",
                         "status": "completed", "content": [{
                             "type": "output_text", "text": "Lyo ns", "annotations": [],
                             "logprobs": [{"token": t, "logprob": lp, "bytes": [],
                                           "top_logprobs": []}
                                          for t, lp in (("Lyo", -1.5), (" ns", -2.5))]}]}]}
    raw = json.dumps(reply).encode()

    async def in_the_pool() -> tuple[Any, Any, list[str]]:
        offload = ReplyOffload(processes=1, min_bytes=SMALLEST_OFFLOADED)
        try:
            answer = await offload.response_answer(raw, "fake")
            judged = await offload.judge_response(raw, judging)
            modules = await offload.run(eval, "sorted(__import__('sys').modules)")
            return answer, judged, modules
        finally:
            await offload.aclose()

    answer, judged, modules = asyncio.run(in_the_pool())
    assert [m for m in HEAVY_MODULES if m in modules] == []
    assert (answer.text, answer.calls_tools, answer.tokens()) == ("Lyo ns", False, None)
    here = judge_response(raw, judging)
    assert (judged.outcome, judged.abstained) == (here.outcome, here.abstained)
    assert judged.outcome.decision == "abstain" and judged.abstained == {0: "Lyo ns"}
    # The withheld response gets a new id each time; the rest is the same.
    there_document, here_document = json.loads(judged.encoded), json.loads(here.encoded)
    assert there_document.pop("id") != here_document.pop("id")
    assert there_document["output"][0].pop("id") != here_document["output"][0].pop("id")
    assert there_document == here_document
    assert "basguard" not in there_document
    assert there_document["output"][0]["content"] == [
        {"type": "output_text", "text": MESSAGE, "annotations": [], "logprobs": []},
        {"type": "refusal", "refusal": MESSAGE}]
    assert there_document["metadata"] == {
        "basguard_id": judging.decision_id, "basguard_decision": "abstain",
        "basguard_confidence": f"{judged.outcome.confidence:.4f}"}
