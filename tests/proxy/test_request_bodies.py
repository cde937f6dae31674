"""Request bodies over raw sockets against ``basguard serve``: deadlines, slots, early refusals.

A body that never comes (or trickles) is answered 408 and frees what it held; a request waiting
for its body holds no request slot and can be pushed out under connection pressure; a response
sent before the body was read closes the connection cleanly instead of parsing the unread body
as the next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import TENANT_KEYS, openai_only_config, write_config
from tests.support.loopback import ServerProcess, serve_in_thread, serve_process
from tests.support.metrics import scrape
from tests.support.raw_http import envelope, read_until_closed

KEY = TENANT_KEYS["lenient"]
CHAT = json.dumps({"model": "fake", "messages": [{"role": "user", "content": "hi"}]}).encode()


def post_head(path: str, length: int, *, key: str = KEY, content_type: str = "application/json",
              extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\n"
            f"content-type: {content_type}\r\ncontent-length: {length}\r\n{extra}\r\n").encode()


def connect(server: ServerProcess, timeout: float = 30.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=timeout)


def read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """One response (its head, lower-cased, and its body by content-length) off a live socket."""
    received = b""
    while b"\r\n\r\n" not in received:
        piece = sock.recv(65536)
        assert piece, f"closed before a whole head: {received!r}"
        received += piece
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.lower().split(b"\r\n")
                  if line.startswith(b"content-length:"))
    while len(body) < length:
        piece = sock.recv(65536)
        assert piece, "closed mid-body"
        body += piece
    assert len(body) == length, "more bytes than the response's length"
    return head.lower(), body


def refusals(server: ServerProcess) -> dict[str, float]:
    return {dict(labels)["reason"]: value for (name, labels), value in scrape(server.url).items()
            if name == "basguard_connections_refused_total"}


def internal_errors(server: ServerProcess) -> float:
    return sum(value for (name, _), value in scrape(server.url).items()
               if name == "basguard_internal_errors_total")


SLUGGISH_SECONDS = 6.0


async def sluggish_upload(request: Request) -> Response:
    """An upstream that reads an upload only after a while: the gateway must stop reading."""
    await asyncio.sleep(SLUGGISH_SECONDS)
    return JSONResponse({"text": f"{len(await request.body())} bytes"})


@pytest.fixture(scope="module")
def sluggish() -> Iterator[str]:
    app = Starlette(routes=[Route("/v1/audio/transcriptions", sluggish_upload, methods=["POST"])])
    with serve_in_thread(app) as url:
        yield url


@contextlib.contextmanager
def start(directory: Path, upstream_url: str, env: dict[str, str], *,
          sluggish_url: str | None = None) -> Iterator[ServerProcess]:
    config = openai_only_config(upstream_url)
    config["tenants"]["lenient"]["default_model"] = "fake"  # routes uploads without a JSON model
    if sluggish_url is not None:
        config["models"]["sluggish"] = {"base_url": f"{sluggish_url}/v1", "timeout_seconds": 60}
        config["tenants"]["annotator"]["default_model"] = "sluggish"
    path = write_config(directory, config)
    with serve_process(["--config", str(path), "--store", str(directory / "d.sqlite3")],
                       env={"FAKE_UPSTREAM_KEY": "sk-x", "BASGUARD_RELOAD_INTERVAL_SECONDS": "0",
                            **env},
                       log=directory / "server.log") as server:
        server.wait_ready()
        yield server


@pytest.fixture(scope="module")
def timed(fake_upstream: tuple[FakeUpstream, str], sluggish: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Short body deadlines: 4 s in all, and at least 1,000 bytes a second over 1 s windows."""
    with start(tmp_path_factory.mktemp("timed"), fake_upstream[1], {
        "BASGUARD_BODY_TIMEOUT_SECONDS": "4", "BASGUARD_BODY_MIN_RATE_BYTES_PER_SECOND": "1000",
        "BASGUARD_BODY_RATE_WINDOW_SECONDS": "1"}, sluggish_url=sluggish) as server:
        yield server


@pytest.fixture(scope="module")
def crowded(fake_upstream: tuple[FakeUpstream, str],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Few slots and connections, and body deadlines far beyond any test: only the design
    (no slot while a body is awaited; pushing out under pressure) can let a request through."""
    with start(tmp_path_factory.mktemp("crowded"), fake_upstream[1], {
        "BASGUARD_MAX_CONCURRENT_REQUESTS": "4", "BASGUARD_MAX_CONNECTIONS": "16",
        "BASGUARD_HEADER_TIMEOUT_SECONDS": "60", "BASGUARD_BODY_TIMEOUT_SECONDS": "600",
        "BASGUARD_BODY_MIN_RATE_BYTES_PER_SECOND": "0"}) as server:
        yield server


def slow_bodies(server: ServerProcess, count: int) -> list[socket.socket]:
    """``count`` connections that send a whole head and 10 of the body's 1,000 bytes."""
    sockets = []
    for _ in range(count):
        sock = connect(server)
        sock.sendall(post_head("/v1/chat/completions", 1000) + b'{"model":')
        sockets.append(sock)
    return sockets


def trickle(sock: socket.socket, piece: bytes, *, seconds: float) -> None:
    """Send ``piece`` every 0.25 s until the server answers (or ``seconds`` pass)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if select.select([sock], [], [], 0.25)[0]:
            return  # an answer is waiting: sending on would only reset the connection
        sock.sendall(piece)


def chat_ok(server: ServerProcess) -> int:
    response = httpx.post(f"{server.url}/v1/chat/completions", content=CHAT, timeout=30,
                          headers={"authorization": f"Bearer {KEY}",
                                   "content-type": "application/json"})
    return response.status_code


# -- slow bodies -------------------------------------------------------------------------------


def test_requests_waiting_for_their_body_hold_no_request_slot(crowded: ServerProcess) -> None:
    """12 slow bodies against 4 slots: every legitimate request is still served."""
    hostile = slow_bodies(crowded, 12)
    try:
        statuses = [chat_ok(crowded) for _ in range(3)]
        with httpx.Client(timeout=30) as client:  # and at once, all 4 slots
            threads = [threading.Thread(target=lambda: statuses.append(chat_ok(crowded)))
                       for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert client.get(f"{crowded.url}/healthz").status_code == 200
        assert statuses == [200] * 7
    finally:
        for sock in hostile:
            sock.close()


def test_slow_bodies_beyond_the_connection_limit_are_pushed_out(crowded: ServerProcess) -> None:
    """16 slow bodies fill all 16 connections: a new one pushes out the oldest, with a 408."""
    before = refusals(crowded)
    hostile = slow_bodies(crowded, 16)
    try:
        assert [chat_ok(crowded) for _ in range(3)] == [200] * 3
        status, error = envelope(read_until_closed(hostile[0]))
        assert (status, error["code"]) == (408, "body_timeout")
        for sock in hostile[1:]:  # one made room for all three (one after the other)
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(1)
    finally:
        for sock in hostile:
            sock.close()
    assert refusals(crowded)["body_timeout"] == before["body_timeout"] + 1


def test_a_body_that_stops_gets_408_and_is_counted(timed: ServerProcess) -> None:
    before = refusals(timed)
    with connect(timed) as sock:
        started = time.monotonic()
        sock.sendall(post_head("/v1/chat/completions", 1000) + b'{"model":')
        answer = read_until_closed(sock)
    took = time.monotonic() - started
    status, error = envelope(answer)
    assert (status, error["code"]) == (408, "body_timeout")
    assert b"connection: close" in answer.lower()
    assert "bytes a second" in error["message"]  # the rate check, before the 4 s deadline
    assert took < 20  # 1 s window; generous for a loaded machine
    assert refusals(timed)["body_timeout"] == before.get("body_timeout", 0) + 1


def test_a_trickling_body_gets_408_before_the_total_deadline(timed: ServerProcess) -> None:
    with connect(timed) as sock:
        sock.sendall(post_head("/v1/chat/completions", 4000))
        trickle(sock, b" " * 50, seconds=30)  # 200 bytes a second, under the 1,000 required
        status, error = envelope(read_until_closed(sock))
    assert (status, error["code"]) == (408, "body_timeout")
    assert "bytes a second" in error["message"]


def test_a_body_fast_enough_but_too_long_gets_408_at_the_total_deadline(
        timed: ServerProcess) -> None:
    with connect(timed) as sock:
        sock.sendall(post_head("/v1/audio/transcriptions", 1_000_000,
                               content_type="application/octet-stream"))
        trickle(sock, b" " * 1000, seconds=60)  # 4,000 bytes a second: 250 s for the body
        status, error = envelope(read_until_closed(sock))
    assert (status, error["code"]) == (408, "body_timeout")
    assert "within 4 s" in error["message"]


def test_a_streamed_upload_that_stalls_gets_408_and_no_internal_error(
        timed: ServerProcess) -> None:
    """Past the first 64 KiB the passthrough streams the body upstream; then the client stops.
    The app sees a disconnect: no 500, no error in the log."""
    errors_before = internal_errors(timed)
    boundary = "b0undary"
    start_part = (f"--{boundary}\r\ncontent-disposition: form-data; name=\"model\"\r\n\r\n"
                  f"fake\r\n--{boundary}\r\ncontent-disposition: form-data; name=\"file\"; "
                  f"filename=\"a.wav\"\r\ncontent-type: audio/wav\r\n\r\n").encode()
    with connect(timed) as sock:
        sock.sendall(post_head("/v1/audio/transcriptions", 10_000_000,
                               content_type=f"multipart/form-data; boundary={boundary}")
                     + start_part + b"\0" * 200_000)
        status, error = envelope(read_until_closed(sock))
    assert (status, error["code"]) == (408, "body_timeout")
    assert internal_errors(timed) == errors_before
    log = timed.output()
    assert "Traceback" not in log and "unexpected error" not in log, log[-3000:]
    assert "client disconnected before sending its whole request" in log
    assert "upstream for model" not in log, log[-3000:]  # the client left, not the upstream


def test_a_large_upload_passes_through_in_pieces(timed: ServerProcess) -> None:
    """1 MiB of multipart audio, sent in 100 kB pieces, reaches the upstream whole."""
    audio = b"RIFF" + bytes(range(256)) * 4096
    request = httpx.Request("POST", f"{timed.url}/v1/audio/transcriptions",
                            data={"model": "fake"}, files={"file": ("a.wav", audio, "audio/wav")})
    body = request.read()
    response = httpx.post(
        f"{timed.url}/v1/audio/transcriptions", timeout=60,
        content=iter([body[i:i + 100_000] for i in range(0, len(body), 100_000)]),
        headers={"authorization": f"Bearer {KEY}", "content-length": str(len(body)),
                 "content-type": request.headers["content-type"]})
    assert response.status_code == 200, response.text
    assert response.json()["text"].startswith(f"{len(body)} bytes of multipart/form-data")


@pytest.mark.slow
def test_time_the_server_spends_not_reading_is_not_the_clients(timed: ServerProcess) -> None:
    """16 MiB sent at once to an upstream that reads nothing for 6 s: the gateway stops reading
    meanwhile (its buffers are full), the upload takes longer than the 4 s deadline, and it is
    no 408: the client was never the one waiting."""
    upload = b"\0" * 16 * 1_048_576
    started = time.monotonic()
    response = httpx.post(f"{timed.url}/v1/audio/transcriptions", content=upload, timeout=60,
                          headers={"authorization": f"Bearer {TENANT_KEYS['annotator']}",
                                   "content-type": "application/octet-stream"})
    assert response.status_code == 200, response.text
    assert response.json()["text"] == f"{len(upload)} bytes"
    assert time.monotonic() - started > SLUGGISH_SECONDS


def test_a_client_that_expects_100_continue_gets_it_then_an_answer(timed: ServerProcess) -> None:
    """Such a client sends its body only when told to: it must reach the app at once."""
    with connect(timed) as sock:
        sock.sendall(post_head("/v1/chat/completions", len(CHAT), extra="expect: 100-continue\r\n"))
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(CHAT)
        head, _ = read_response(sock)
        assert head.startswith(b"http/1.1 200") and b"connection: close" not in head
        # Then refused before sending the body, as 100-continue is for: and closed after.
        sock.sendall(post_head("/v1/chat/completions", 10_000, key="wrong-key-0123456789abc",
                               extra="expect: 100-continue\r\n"))
        head, _ = read_response(sock)
        assert head.startswith(b"http/1.1 401") and b"connection: close" in head
        assert sock.recv(65536) == b""


@pytest.mark.slow
def test_a_stop_answers_requests_still_waiting_for_their_body_at_once(
        fake_upstream: tuple[FakeUpstream, str], tmp_path: Path) -> None:
    """They never reached the app, so there is nothing to drain: 503 shutting_down, and the
    stop does not wait for them (the grace period is 30 s)."""
    with start(tmp_path, fake_upstream[1], {"BASGUARD_SHUTDOWN_GRACE_SECONDS": "30"}) as server:
        hostile = slow_bodies(server, 3)
        try:
            assert chat_ok(server) == 200  # the slow bodies' heads have been read by now
            stopped = time.monotonic()
            assert server.stop() == 0, server.output()
            assert time.monotonic() - stopped < 15, server.output()
            for sock in hostile:
                status, error = envelope(read_until_closed(sock))
                assert (status, error["code"]) == (503, "shutting_down")
        finally:
            for sock in hostile:
                sock.close()


# -- responses before the body was read ---------------------------------------------------------


@pytest.mark.parametrize(("key", "status", "code"), [
    ("wrong-key-0123456789abcdef", 401, "invalid_api_key"),
    (KEY, 413, "payload_too_large"),  # the declared length is over max_body_bytes (4,096)
], ids=["401", "413"])
def test_a_refusal_before_the_body_was_read_closes_the_connection_cleanly(
        timed: ServerProcess, key: str, status: int, code: str) -> None:
    body = b"x" * 200 * 1024
    with connect(timed) as sock:
        sender = threading.Thread(target=lambda: _send_quietly(
            sock, post_head("/v1/chat/completions", len(body), key=key) + body))
        sender.start()
        head, answer = read_response(sock)
        assert head.startswith(b"http/1.1 %d" % status), head
        assert json.loads(answer)["error"]["code"] == code
        assert b"connection: close" in head
        # Then the end of the connection: no stray response made of the unread body (a 431),
        # no reset that could have cost the client the answer it was sent.
        assert sock.recv(65536) == b""
        sender.join()
    assert chat_ok(timed) == 200  # a new connection serves


def test_a_refusal_after_the_whole_body_arrived_keeps_the_connection(
        timed: ServerProcess) -> None:
    """A body that was there in full is drained: the connection serves the next request."""
    with connect(timed) as sock:
        sock.sendall(post_head("/v1/chat/completions", len(CHAT), key="wrong-key-0123456789abc")
                     + CHAT)
        head, _ = read_response(sock)
        assert head.startswith(b"http/1.1 401") and b"connection: close" not in head
        sock.sendall(post_head("/v1/chat/completions", len(CHAT)) + CHAT)
        head, answer = read_response(sock)
        assert head.startswith(b"http/1.1 200"), answer


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the server may stop reading and close
        sock.sendall(data)
