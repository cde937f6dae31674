"""The Realtime API's WebSocket, relayed unguarded to the model's upstream (#9 item 2), over
loopback: the official openai SDK's realtime client and the ``websockets`` library (as a browser
connects, key in a subprotocol) through basguard to the fake upstream's ``/v1/realtime``."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from starlette.applications import Starlette
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from proxy.services import realtime
from proxy.services.realtime import WebSocketPassthrough
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import gateway_app, gateway_config, serve_gateway
from tests.support.loopback import serve_in_thread, serve_process
from tests.support.waiting import wait_until

UPSTREAM_KEY = "sk-upstream-secret-0123456789"
KEYS = {name: f"key-{name}-0123456789abcdef" for name in ("open", "closed", "listed")}
SMALL_MESSAGES = 4096


def _tenant(name: str, **policy: Any) -> dict[str, Any]:
    digest = hashlib.sha256(KEYS[name].encode()).hexdigest()
    return {"api_keys": [{"sha256": digest}], "risk": {"threshold": 0.5}, **policy}


def realtime_config(upstream_url: str) -> dict[str, Any]:
    config = gateway_config(upstream_url, tenants={
        "open": _tenant("open", default_model="keyed"),
        "closed": _tenant("closed", passthrough="none", default_model="keyed"),
        "listed": _tenant("listed", passthrough=["embeddings"], default_model="keyed"),
    })
    config["models"]["refusing"] = {"base_url": f"{upstream_url}/v1", "model": "refuse-401",
                                    "api_key_env": "FAKE_UPSTREAM_KEY"}
    config["models"]["overloaded"] = {"base_url": f"{upstream_url}/v1", "model": "refuse-429"}
    config["models"]["litellm-only"] = {"provider": "litellm", "model": "anthropic/claude-x"}
    return config


@pytest.fixture(scope="module")
def realtime_app(
    fake_upstream: tuple[FakeUpstream, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Starlette]:
    """The app ``gateway_url`` serves: a test reaches its relay through ``app.services``."""
    mp = pytest.MonkeyPatch()
    mp.setenv("FAKE_UPSTREAM_KEY", UPSTREAM_KEY)
    try:
        yield gateway_app(tmp_path_factory.mktemp("realtime"), realtime_config(
            fake_upstream[1]), websocket_max_message_bytes=SMALL_MESSAGES)
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def gateway_url(realtime_app: Starlette) -> Iterator[str]:
    with serve_in_thread(realtime_app) as url:
        yield url


def ws_url(gateway_url: str, query: str = "model=keyed", path: str = "realtime") -> str:
    return f"{gateway_url.replace('http://', 'ws://')}/v1/{path}" + (f"?{query}" if query else "")


def open_socket(gateway_url: str, tenant: str | None = "open", **kwargs: Any) -> ClientConnection:
    headers = {"authorization": f"Bearer {KEYS[tenant]}"} if tenant else {}
    return connect(kwargs.pop("url", ws_url(gateway_url)), additional_headers=headers,
                   open_timeout=30, **kwargs)


def refusal(gateway_url: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    """The HTTP status and envelope a refused handshake got."""
    with pytest.raises(InvalidStatus) as refused:
        open_socket(gateway_url, **kwargs).close()
    response = refused.value.response
    return response.status_code, json.loads(response.body)


def events(socket: ClientConnection, until: str) -> list[dict[str, Any]]:
    received: list[dict[str, Any]] = []
    while not received or received[-1]["type"] != until:
        received.append(json.loads(socket.recv(timeout=30)))
    return received


def test_the_openai_sdk_holds_a_realtime_conversation_through_basguard(
    gateway_url: str, upstream: FakeUpstream
) -> None:
    client = openai.OpenAI(base_url=f"{gateway_url}/v1", api_key=KEYS["open"], max_retries=0)
    with client, client.realtime.connect(model="keyed") as connection:
        created = connection.recv()
        assert created.type == "session.created"
        connection.session.update(session={"type": "realtime", "instructions": "Be brief."})
        assert connection.recv().type == "session.updated"
        connection.conversation.item.create(item={
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "hello there"}]})
        assert connection.recv().type == "conversation.item.created"
        connection.response.create()
        deltas, done = [], None
        for event in connection:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
            if event.type == "response.done":
                done = event
                break
    assert "".join(deltas) == "You said: hello there"
    assert done is not None and done.response.status == "completed"
    [seen] = upstream.realtime
    # Routed by the query's model, under the upstream's name for it, with the upstream's key:
    # the tenant's key never reaches the upstream.
    assert seen.model == "keyed"
    assert seen.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert KEYS["open"] not in json.dumps(seen.headers)
    assert [event["type"] for event in seen.events] == [
        "session.update", "conversation.item.create", "response.create"]


def test_a_browser_sends_its_key_as_a_subprotocol_which_stays_with_basguard(
    gateway_url: str, upstream: FakeUpstream
) -> None:
    with open_socket(gateway_url, tenant=None, url=ws_url(gateway_url, "model=fake"),
                     subprotocols=["realtime", f"openai-insecure-api-key.{KEYS['open']}"],
                     ) as socket:
        assert socket.subprotocol == "realtime"  # the upstream's choice
        assert events(socket, "session.created")[-1]["session"]["model"] == "fake-model"
    [seen] = upstream.realtime
    assert seen.subprotocols == ["realtime"]
    assert KEYS["open"] not in json.dumps(seen.headers)


def test_without_a_model_the_tenant_default_model_is_used(
    gateway_url: str, upstream: FakeUpstream
) -> None:
    with open_socket(gateway_url, url=ws_url(gateway_url, "")) as socket:
        events(socket, "session.created")
    assert upstream.realtime[0].model == "keyed"


def test_other_query_parameters_reach_the_upstream(
    gateway_url: str, upstream: FakeUpstream
) -> None:
    with open_socket(gateway_url, url=ws_url(gateway_url, "model=fake&call_id=rtc_1")) as s:
        events(s, "session.created")
    assert dict(p.split("=") for p in upstream.realtime[0].query.split("&")) == {
        "model": "fake-model", "call_id": "rtc_1"}


@pytest.mark.parametrize(("kwargs", "status", "code"), [
    ({"tenant": None}, 401, "invalid_api_key"),
    ({"tenant": "closed"}, 403, "endpoint_not_allowed"),
    ({"tenant": "listed"}, 403, "endpoint_not_allowed"),
    ({"query": "model=nonexistent"}, 404, "model_not_found"),
    ({"query": "model=unreachable"}, 502, "upstream_error"),
    ({"query": "model=litellm-only"}, 400, "passthrough_unavailable"),
    ({"path": "completions"}, 400, "websocket_not_supported"),
    ({"path": "chat/completions"}, 400, "websocket_not_supported"),
    ({"query": "model=overloaded"}, 429, "upstream_rate_limited"),
])
def test_a_refused_handshake_gets_the_error_envelope(
    gateway_url: str, upstream: FakeUpstream, kwargs: dict[str, Any], status: int, code: str
) -> None:
    url = ws_url(gateway_url, kwargs.pop("query", "model=keyed"), kwargs.pop("path", "realtime"))
    got_status, envelope = refusal(gateway_url, url=url, **kwargs)
    assert (got_status, envelope["error"]["code"]) == (status, code), envelope


def test_an_upstream_refusal_is_sanitised(gateway_url: str, upstream: FakeUpstream) -> None:
    status, envelope = refusal(gateway_url, url=ws_url(gateway_url, "model=refusing"))
    assert upstream.realtime[0].model == "refuse-401"
    assert (status, envelope["error"]["code"]) == (502, "upstream_error"), envelope
    assert "credentials" in envelope["error"]["message"]
    text = json.dumps(envelope)
    assert "/srv" not in text and UPSTREAM_KEY not in text
    assert envelope["error"]["message"]


def test_binary_messages_are_relayed_both_ways(gateway_url: str, upstream: FakeUpstream) -> None:
    with open_socket(gateway_url) as socket:
        events(socket, "session.created")
        socket.send(b"\x00\x01audio\xff")
        assert socket.recv(timeout=30) == b"\x00\x01audio\xff"


def test_the_client_close_code_reaches_the_upstream(
    gateway_url: str, upstream: FakeUpstream
) -> None:
    with open_socket(gateway_url) as socket:
        events(socket, "session.created")
        socket.close(code=4000, reason="user hung up")
    wait_until(lambda: upstream.realtime[0].client_close_code is not None,
               what="the upstream's close")
    assert upstream.realtime[0].client_close_code == 4000


@pytest.mark.parametrize(("event", "code"), [
    ({"type": "fake.close", "code": 4001}, 4001),  # the upstream's own code
    ({"type": "fake.close", "code": 1000}, 1000),
    ({"type": "fake.drop"}, 1014),  # no close frame: bad gateway
    ({"type": "fake.big", "bytes": SMALL_MESSAGES * 2}, 1014),  # over the message limit
])
def test_the_upstream_ending_closes_the_client(
    gateway_url: str, upstream: FakeUpstream, event: dict[str, Any], code: int
) -> None:
    with open_socket(gateway_url) as socket:
        events(socket, "session.created")
        socket.send(json.dumps(event))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                socket.recv(timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == code


def _metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_sessions_are_counted_and_gauged(gateway_url: str, upstream: FakeUpstream) -> None:
    def metrics() -> str:
        return httpx.get(f"{gateway_url}/metrics", timeout=10).text

    before = _metric(metrics(), "basguard_passthrough_requests_total", tenant="open",
                     endpoint="realtime", outcome="1xx")
    with open_socket(gateway_url) as socket:
        events(socket, "session.created")
        assert _metric(metrics(), "basguard_passthrough_websockets_open", tenant="open") == 1
    wait_until(lambda: _metric(metrics(), "basguard_passthrough_websockets_open",
                               tenant="open") == 0, what="the gauge to drop")
    after = _metric(metrics(), "basguard_passthrough_requests_total", tenant="open",
                    endpoint="realtime", outcome="1xx")
    assert after == before + 1


@pytest.mark.slow
def test_basguard_serve_relays_realtime_and_closes_sessions_on_a_stop(
    fake_upstream: tuple[FakeUpstream, str], tmp_path: Path
) -> None:
    """Under ``basguard serve`` (its own HTTP protocol, connection limits and drain): a session
    outlives the head and keep-alive timeouts, the client's message limit applies, and SIGTERM
    closes an open session with 1012 (service restart) and exits 0."""
    path = tmp_path / "basguard.yaml"
    path.write_text(yaml.safe_dump(realtime_config(fake_upstream[1])))
    env = {"BASGUARD_RELOAD_INTERVAL_SECONDS": "0", "FAKE_UPSTREAM_KEY": UPSTREAM_KEY,
           "BASGUARD_WEBSOCKET_MAX_MESSAGE_BYTES": str(SMALL_MESSAGES),
           "BASGUARD_HEADER_TIMEOUT_SECONDS": "0.5", "BASGUARD_KEEP_ALIVE_TIMEOUT_SECONDS": "1"}
    with serve_process(["--config", str(path), "--store", str(tmp_path / "d.sqlite3")],
                       env=env, log=tmp_path / "server.log") as server:
        server.wait_ready()
        with open_socket(server.url) as socket:
            events(socket, "session.created")
            time.sleep(1.5)  # past both timeouts: they are the HTTP connection's, not the session's
            socket.send(json.dumps({"type": "fake.big", "bytes": 10}))
            assert socket.recv(timeout=30) == "x" * 10
            socket.send("y" * (SMALL_MESSAGES * 2))  # the client's message over the limit
            with pytest.raises(ConnectionClosed) as closed:
                socket.recv(timeout=30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009, server.output()
        # The HTTP side is unchanged beside it: a plain request on the same port.
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
        with open_socket(server.url) as socket:
            events(socket, "session.created")
            server.process.send_signal(15)
            with pytest.raises(ConnectionClosed) as closed:
                socket.recv(timeout=60)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
        assert server.stop() == 0, server.output()
        assert not re.search(r"Traceback|Exception in ASGI", server.output()), server.output()


def _internal_errors(gateway_url: str) -> float:
    text = httpx.get(f"{gateway_url}/metrics", timeout=10).text
    return _metric(text, "basguard_internal_errors_total", where="websocket")


def test_a_bug_before_the_handshake_is_a_counted_500_envelope(
    gateway_url: str, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken_open(*args: Any, **kwargs: Any) -> None:
        raise ValueError("a bug with /internal/details")

    monkeypatch.setattr(WebSocketPassthrough, "open", broken_open)
    before = _internal_errors(gateway_url)
    status, envelope = refusal(gateway_url)
    assert (status, envelope["error"]["code"]) == (500, "internal_error")
    assert "/internal" not in envelope["error"]["message"]
    assert _internal_errors(gateway_url) == before + 1


def test_a_bug_during_a_session_closes_it_with_1011(
    gateway_url: str, realtime_app: Starlette, upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken_relay(upstream_socket: Any, client: Any) -> None:
        raise ValueError("a bug in the relay")

    monkeypatch.setattr(realtime_app.services.websockets, "upstream_to_client", broken_relay)
    before = _internal_errors(gateway_url)
    with open_socket(gateway_url) as socket, pytest.raises(ConnectionClosed) as closed:
        socket.recv(timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    wait_until(lambda: _internal_errors(gateway_url) == before + 1, what="the count")
    # The upstream's socket was closed too, not left open.
    wait_until(lambda: upstream.realtime[0].client_close_code is not None,
               what="the upstream's close")


def _reloads(url: str) -> float:
    return _metric(httpx.get(f"{url}/metrics", timeout=10).text,
                   "basguard_config_reloads_total", result="success")


@pytest.mark.parametrize(("revoke", "reason"), [
    (lambda tenant: tenant.update(api_keys=[
        {"sha256": hashlib.sha256(b"a-new-key-0123456789abcdef").hexdigest()}]),
     "invalid API key"),
    (lambda tenant: tenant.update(passthrough=["embeddings"]), "realtime is no longer enabled"),
])
def test_a_reload_that_revokes_an_open_session_closes_it_with_1008(
    fake_upstream: tuple[FakeUpstream, str], upstream: FakeUpstream, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, revoke: Callable[[dict[str, Any]], None], reason: str,
) -> None:
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", UPSTREAM_KEY)
    monkeypatch.setattr(realtime, "REVOCATION_CHECK_SECONDS", 0.05)
    config = realtime_config(fake_upstream[1])

    def reload_with(change: Callable[[dict[str, Any]], None]) -> None:
        before = _reloads(url)
        change(config["tenants"]["open"])
        (tmp_path / "basguard.yaml").write_text(yaml.safe_dump(config))
        wait_until(lambda: _reloads(url) > before, what="the reload")

    with serve_gateway(tmp_path, config, reload_interval_seconds=0.05) as url, \
            open_socket(url) as socket:
        events(socket, "session.created")
        # A reload that leaves the session its permission leaves it open.
        reload_with(lambda tenant: tenant["risk"].update(threshold=0.6))
        socket.send(json.dumps({"type": "session.update", "session": {"type": "realtime"}}))
        events(socket, "session.updated")
        reload_with(revoke)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                socket.recv(timeout=30)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1008
    assert reason.lower() in closed.value.rcvd.reason.lower()
    # The upstream's socket is closed too (normally: the upstream did nothing wrong).
    wait_until(lambda: upstream.realtime[0].client_close_code is not None,
               what="the upstream's close")
    assert upstream.realtime[0].client_close_code == 1000
