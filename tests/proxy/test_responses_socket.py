"""The Responses API's WebSocket mode through basguard, over loopback: the official openai SDK's
``client.responses.connect()``, the ``websockets`` library, and the OpenAI Agents SDK's
websocket transport running a one-tool agent; the fake upstream is called over HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from starlette.applications import Starlette
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import TENANT_KEYS, gateway_config, serve_gateway
from tests.support.waiting import wait_until

CONFIDENT = [-0.01, -0.01, -0.01]
UNSURE = [-2.0, -2.0, -2.0]
TERMINAL = ("response.completed", "response.incomplete")


def script(**fake: Any) -> str:
    return json.dumps({"fake": fake})


def socket_url(gateway: str) -> str:
    return gateway.replace("http://", "ws://") + "/responses"


def open_socket(gateway: str, tenant: str | None = "enforcer", **kwargs: Any
                ) -> ClientConnection:
    headers = {"authorization": f"Bearer {TENANT_KEYS[tenant]}"} if tenant else {}
    return connect(socket_url(gateway), additional_headers=headers, open_timeout=30, **kwargs)


def turn(socket: ClientConnection, **body: Any) -> list[dict[str, Any]]:
    """Send one ``response.create`` and read its events up to the terminal (or error) one."""
    socket.send(json.dumps({"type": "response.create", "model": "fake", **body}))
    events: list[dict[str, Any]] = []
    while not events or events[-1]["type"] not in (*TERMINAL, "error", "response.failed"):
        events.append(json.loads(socket.recv(timeout=30)))
    return events


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")


def test_the_openai_sdk_gets_a_guarded_answer_and_a_withheld_one_on_one_socket(
    gateway: str, upstream: FakeUpstream
) -> None:
    client = openai.OpenAI(base_url=gateway, api_key=TENANT_KEYS["enforcer"], max_retries=0)
    seen: list[list[Any]] = []
    with client, client.responses.connect() as connection:
        for logprobs in (CONFIDENT, UNSURE):
            connection.response.create(model="fake", input=script(
                content="Paris is it", logprobs=logprobs))
            events: list[Any] = []
            for event in connection:
                events.append(event)
                if event.type in TERMINAL:
                    break
            seen.append(events)
    answered, withheld = seen
    assert "".join(e.delta for e in answered if e.type == "response.output_text.delta") \
        == "Paris is it"
    assert answered[-1].response.output_text == "Paris is it"
    assert answered[-1].response.model_extra["basguard"]["decision"] == "answer"
    assert withheld[-1].response.output_text == "I won't guess."
    assert withheld[-1].response.model_extra["basguard"]["decision"] == "abstain"
    # Nothing of the withheld answer, in any event.
    assert "Paris" not in json.dumps([e.model_dump() for e in withheld])
    # Each turn reached the upstream as a streamed HTTP request asking for logprobs.
    bodies = [r["body"] for r in upstream.received]
    assert [b["stream"] for b in bodies] == [True, True]
    assert all("message.output_text.logprobs" in b["include"] for b in bodies)


@pytest.mark.parametrize(("tenant", "logprobs", "text", "decision"), [
    ("enforcer", CONFIDENT, "Paris is it", "answer"),
    ("enforcer", UNSURE, "I won't guess.", "abstain"),
    ("annotator", UNSURE, "Paris is it", "abstain"),
    ("shadower", UNSURE, "Paris is it", "abstain"),
])
def test_the_terminal_event_carries_the_decision_and_no_event_is_basguards_own(
    gateway: str, upstream: FakeUpstream, tenant: str, logprobs: list[float], text: str,
    decision: str,
) -> None:
    with open_socket(gateway, tenant) as socket:
        events = turn(socket, input=script(content="Paris is it", logprobs=logprobs))
    assert text_of(events) == text
    assert not any(e["type"].startswith("basguard") for e in events)
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["basguard"]["decision"] == decision
    assert events[-1]["response"]["metadata"]["basguard_decision"] == decision
    numbers = [e["sequence_number"] for e in events]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)


@pytest.mark.parametrize(("message", "status", "code"), [
    ({"type": "response.create", "model": "nonexistent", "input": "hi"}, 404,
     "model_not_found"),
    ({"type": "response.steer", "input": "hi", "previous_response_id": "resp_1"}, 400, None),
    ({"type": "response.create", "model": "fake", "input": "hi", "generate": False}, 400,
     None),
    ({"type": "response.create", "model": "fake", "input": "hi", "background": True}, 400,
     None),
    ({"type": "response.create", "model": "fake", "input": script(status=500)}, 502,
     "upstream_error"),
    ("not json", 400, None),
])
def test_an_error_is_one_event_and_the_socket_serves_the_next_turn(
    gateway: str, upstream: FakeUpstream, message: Any, status: int, code: str | None
) -> None:
    with open_socket(gateway) as socket:
        socket.send(message if isinstance(message, str) else json.dumps(message))
        error = json.loads(socket.recv(timeout=30))
        assert error["type"] == "error" and error["status"] == status, error
        assert error["error"]["code"] == code and error["code"] == code
        assert error["message"] == error["error"]["message"]
        assert "/srv" not in json.dumps(error)
        events = turn(socket, input=script(content="Paris is it", logprobs=CONFIDENT))
    assert events[-1]["response"]["basguard"]["decision"] == "answer"


def test_abstain_action_error_is_an_error_event(gateway: str, upstream: FakeUpstream) -> None:
    with open_socket(gateway, "refuser") as socket:
        [error] = turn(socket, input=script(content="Paris is it", logprobs=UNSURE))
    assert (error["status"], error["code"]) == (422, "answer_withheld")


def test_one_response_at_a_time(gateway: str, upstream: FakeUpstream) -> None:
    with open_socket(gateway) as socket:
        slow = script(content="Paris is it", logprobs=CONFIDENT, delay=1.0)
        socket.send(json.dumps({"type": "response.create", "model": "fake", "input": slow}))
        events = turn(socket, input="a second turn, too early")
        assert events[0]["type"] == "error", events
        assert events[0]["code"] == "response_already_in_flight"
        first: list[dict[str, Any]] = []
        while not first or first[-1]["type"] not in TERMINAL:
            first.append(json.loads(socket.recv(timeout=30)))
    assert text_of(first) == "Paris is it"
    assert len(upstream.received) == 1


def test_a_browser_key_in_a_subprotocol_works_and_a_bad_key_is_refused(
    gateway: str, upstream: FakeUpstream
) -> None:
    with connect(socket_url(gateway), open_timeout=30, subprotocols=[
            f"openai-insecure-api-key.{TENANT_KEYS['enforcer']}"]) as socket:
        events = turn(socket, input=script(content="Paris is it", logprobs=CONFIDENT))
    assert events[-1]["response"]["basguard"]["decision"] == "answer"
    with pytest.raises(InvalidStatus) as refused:
        open_socket(gateway, tenant=None).close()
    assert refused.value.response.status_code == 401
    assert json.loads(refused.value.response.body)["error"]["code"] == "invalid_api_key"


def test_a_client_that_leaves_cancels_the_upstream(gateway: str, upstream: FakeUpstream) -> None:
    """Enforce buffers the whole answer before sending anything: the client leaves meanwhile."""
    with open_socket(gateway) as socket:
        socket.send(json.dumps({"type": "response.create", "model": "fake", "input": script(
            content="x" * 40, logprobs=[-0.1] * 40, stream_delay=0.05)}))
        wait_until(lambda: bool(upstream.received), what="the upstream request")
    wait_until(lambda: any(d.startswith("resp_") for d in upstream.disconnected),
               what="the upstream stream to be cancelled")


# -- the Agents SDK on its websocket transport -------------------------------------------------

agents = pytest.importorskip("agents")
ANSWER = "It is sunny in Paris."


@pytest.fixture(autouse=True, scope="module")
def no_tracing() -> Iterator[None]:
    agents.set_tracing_disabled(True)  # the SDK would export traces to OpenAI
    yield


async def run_agent(gateway: str, tenant: str, logprobs: list[float]) -> tuple[Any, list[str]]:
    calls: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return f"Sunny in {city}"

    directive = {"tool_call": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                 "content": ANSWER, "logprobs": [-0.01 if p > -1 else p for p in logprobs] * 2}
    client = openai.AsyncOpenAI(base_url=gateway, api_key=TENANT_KEYS[tenant], max_retries=0,
                                timeout=30)
    provider = agents.OpenAIProvider(openai_client=client, use_responses_websocket=True)
    agent = agents.Agent(name="weather", instructions=json.dumps({"fake": directive}),
                         tools=[get_weather], model="fake")
    try:
        result = await agents.Runner.run(
            agent, "What is the weather in Paris?",
            run_config=agents.RunConfig(model_provider=provider))
    finally:
        await provider.aclose()
        await client.close()
    return result, calls


@pytest.mark.parametrize(("logprobs", "output"), [(CONFIDENT, ANSWER), (UNSURE, "I won't guess.")])
def test_an_agents_sdk_agent_runs_over_the_websocket_transport(
    gateway: str, gateway_application: Starlette, upstream: FakeUpstream, logprobs: list[float],
    output: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    turns: list[str] = []  # a spy: proves the socket served it
    monkeypatch.setattr(gateway_application.services.responses_socket, "on_turn", turns.append)
    result, calls = asyncio.run(run_agent(gateway, "enforcer", logprobs))
    assert len(turns) == 2
    assert calls == ["Paris"]  # the tool call passed undecided; the tool ran
    assert result.final_output == output  # the answer after the tool result was decided
    # Both turns came over one socket and reached the upstream as HTTP requests.
    assert len(upstream.received) == 2


def test_a_turn_is_timed_as_a_request_is(gateway: str, upstream: FakeUpstream) -> None:
    def counts() -> tuple[float, float]:
        text = httpx.get(gateway.removesuffix("/v1") + "/metrics", timeout=10).text
        found = {}
        for line in text.splitlines():
            for name in ("basguard_time_to_first_byte_seconds_count",
                         "basguard_proxy_overhead_seconds_count"):
                if line.startswith(name + "{") and 'model="fake"' in line:
                    found[name] = float(line.rsplit(" ", 1)[1])
        return (found.get("basguard_time_to_first_byte_seconds_count", 0.0),
                found.get("basguard_proxy_overhead_seconds_count", 0.0))

    before = counts()
    with open_socket(gateway) as socket:
        turn(socket, input=script(content="Paris is it", logprobs=CONFIDENT))
    assert counts() == (before[0] + 1, before[1] + 1)


def test_a_key_revoked_by_a_reload_stops_working_on_an_open_socket(
    fake_upstream: tuple[FakeUpstream, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-upstream-secret-0123456789")
    config = gateway_config(fake_upstream[1])
    with serve_gateway(tmp_path, config, reload_interval_seconds=0.1) as url, \
            open_socket(f"{url}/v1") as socket:
        assert turn(socket, input=script(content="Paris", logprobs=CONFIDENT))[-1]["type"] \
            == "response.completed"
        config["tenants"]["enforcer"]["api_keys"] = [
            {"sha256": hashlib.sha256(b"a-new-key-0123456789abcdef").hexdigest()}]
        (tmp_path / "basguard.yaml").write_text(yaml.safe_dump(config))
        wait_until(lambda: httpx.get(f"{url}/v1/models", timeout=10, headers={
            "authorization": f"Bearer {TENANT_KEYS['enforcer']}"}).status_code == 401,
            what="the reload")
        [error] = turn(socket, input=script(content="Paris", logprobs=CONFIDENT))
    assert (error["status"], error["code"]) == (401, "invalid_api_key")
