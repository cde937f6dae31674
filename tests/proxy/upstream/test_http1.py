"""basguard's HTTP/1.1 client against a server that answers with exactly the bytes a test scripts.

Every test talks over a real loopback socket; the server records each request it reads and
each connection it accepts, so connection reuse is observed, not assumed.
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import ssl
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
import trustme
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.upstream.http1 import (
    MAX_HEAD_BYTES,
    ConnectFailed,
    ConnectionPool,
    Disconnected,
    MalformedResponse,
    ResponseTooLarge,
    default_tls,
    request_head,
)
from proxy.upstream.openai_compatible import HTTPUpstream
from proxy.upstream.target import UpstreamTarget

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Server"], Awaitable[None]]


@dataclass
class Server:
    """A loopback server: ``handler`` answers each request however the test wants."""

    handler: Handler
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    async def read_request(self, reader: asyncio.StreamReader) -> bytes | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        request = head + await reader.readexactly(length)
        self.requests.append(request)
        return request

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer, self)
        finally:
            writer.close()
            self.closed.set()


def reply(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    lines = [f"HTTP/1.1 {status}", *headers, f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def answering(*responses: bytes) -> Handler:
    """A handler that answers each request on a connection with the next of ``responses``."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      server: Server) -> None:
        for response in responses:
            if await server.read_request(reader) is None:
                return
            writer.write(response)
            await writer.drain()
        await reader.read()  # hold the connection until the client closes it
    return handler


def once(response: bytes = b"", *, hold: bool = False) -> Handler:
    """A handler that reads one request and writes ``response`` (perhaps nothing, perhaps not
    an HTTP response at all), then holds the connection open or closes it."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      server: Server) -> None:
        await server.read_request(reader)
        writer.write(response)
        if hold:
            await reader.read()
    return handler


@asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[Server]:
    server = Server(handler)
    listening = await asyncio.start_server(server.serve, "127.0.0.1", 0)
    server.port = listening.sockets[0].getsockname()[1]
    async with listening:
        yield server


async def post(pool: ConnectionPool, server: Server, body: bytes = b"{}", *,
               timeout: float = 5.0, limit: int = 1 << 20) -> tuple[int, bytes]:
    origin, head = request_head(f"http://127.0.0.1:{server.port}/v1/chat/completions", {})
    response = await pool.send(origin, head, body, deadline=pool.loop.time() + timeout,
                               connect_timeout=timeout)
    try:
        return response.status, await response.read(limit)
    finally:
        response.finish()


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 30))


def test_a_reply_is_read_and_its_connection_kept_for_the_next_request() -> None:
    async def test() -> None:
        async with serving(answering(reply(b'{"a": 1}'), reply(b'{"b": 2}'))) as server:
            pool = ConnectionPool()
            assert await post(pool, server, b'{"q": 1}') == (200, b'{"a": 1}')
            assert await post(pool, server) == (200, b'{"b": 2}')
            assert server.connections == 1
            assert server.requests[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
            assert server.requests[0].endswith(b'Content-Length: 8\r\n\r\n{"q": 1}')
            await pool.aclose()
    run(test)


def test_a_chunked_reply_is_read_whole() -> None:
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    async def test() -> None:
        async with serving(answering(chunked, chunked)) as server:
            pool = ConnectionPool()
            assert await post(pool, server) == (200, b"hello world")
            assert await post(pool, server) == (200, b"hello world")
            assert server.connections == 1
    run(test)


def test_a_reply_delimited_by_the_connection_closing_is_read_and_not_pooled() -> None:
    handler = once(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
    async def test() -> None:
        async with serving(handler) as server:
            pool = ConnectionPool()
            assert await post(pool, server) == (200, b"until the end")
            assert await post(pool, server) == (200, b"until the end")
            assert server.connections == 2
    run(test)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_compressed_reply_is_decompressed(encoding: str) -> None:
    body = b'{"answer": "Paris"}' * 50
    packed = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
    async def test() -> None:
        async with serving(answering(reply(packed, f"Content-Encoding: {encoding}"))) as server:
            assert await post(ConnectionPool(), server) == (200, body)
    run(test)


def test_identity_is_asked_for_and_the_host_named_with_its_port() -> None:
    async def test() -> None:
        async with serving(answering(reply(b"{}"))) as server:
            await post(ConnectionPool(), server)
            head = server.requests[0].lower()
            assert b"accept-encoding: identity\r\n" in head
            assert f"host: 127.0.0.1:{server.port}\r\n".encode() in head
    run(test)


def test_a_compressed_body_cannot_expand_past_the_limit() -> None:
    bomb = gzip.compress(b"0" * 10_000_000)  # about 10 KB that expand to 10 MB
    async def test() -> None:
        async with serving(answering(reply(bomb, "Content-Encoding: gzip"))) as server:
            with pytest.raises(ResponseTooLarge):
                await post(ConnectionPool(), server, limit=100_000)
    run(test)


def test_an_unknown_content_encoding_is_malformed() -> None:
    async def test() -> None:
        async with serving(answering(reply(b"xx", "Content-Encoding: br"))) as server:
            with pytest.raises(MalformedResponse):
                await post(ConnectionPool(), server)
    run(test)


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_read() -> None:
    handler = once(b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n{", hold=True)
    async def test() -> None:
        async with serving(handler) as server:
            with pytest.raises(ResponseTooLarge):
                await post(ConnectionPool(), server, limit=1000)
    run(test)


def test_a_chunked_body_over_the_limit_is_refused_as_it_passes_it() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      server: Server) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(100):  # far more than the limit, and never ended
            writer.write(b"400\r\n" + b"x" * 1024 + b"\r\n")
            await writer.drain()
        await reader.read()
    async def test() -> None:
        async with serving(handler) as server:
            with pytest.raises(ResponseTooLarge):
                await post(ConnectionPool(), server, limit=10_000)
    run(test)


@pytest.mark.parametrize("response", [
    b"SPDY/3 200 OK\r\n\r\n",
    b"HTTP/1.1 abc OK\r\nContent-Length: 2\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
])
def test_a_malformed_response_is_named_so(response: bytes) -> None:
    async def test() -> None:
        async with serving(answering(response)) as server:
            with pytest.raises(MalformedResponse):
                await post(ConnectionPool(), server)
    run(test)


def test_a_head_without_end_is_refused_past_its_bound() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      server: Server) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for index in range(MAX_HEAD_BYTES // 80 + 10):  # each line is over 90 bytes
            writer.write(f"X-Filler-{index}: {'y' * 80}\r\n".encode())
            await writer.drain()
        await reader.read()
    async def test() -> None:
        async with serving(handler) as server:
            with pytest.raises(MalformedResponse, match="head over"):
                await post(ConnectionPool(), server)
    run(test)


def test_a_body_cut_short_is_a_disconnection() -> None:
    handler = once(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"partial\"")
    async def test() -> None:
        async with serving(handler) as server:
            with pytest.raises(Disconnected):
                await post(ConnectionPool(), server)
    run(test)


def test_an_upstream_that_never_answers_meets_the_deadline() -> None:
    handler = once(hold=True)
    async def test() -> None:
        async with serving(handler) as server:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(TimeoutError):
                await post(ConnectionPool(), server, timeout=0.3)
            assert 0.3 <= loop.time() - started < 2
            await asyncio.wait_for(server.closed.wait(), 5)  # the connection was dropped
    run(test)


def test_a_request_meeting_a_pooled_connection_the_server_just_closed_is_sent_again() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      server: Server) -> None:
        # Answers one request with keep-alive, then closes as soon as the next one arrives,
        # before reading it: what a server's idle timeout does at the wrong moment.
        await server.read_request(reader)
        writer.write(reply(b'{"n": 1}'))
        await writer.drain()
        await reader.read(1)
    async def test() -> None:
        async with serving(handler) as server:
            pool = ConnectionPool()
            assert await post(pool, server) == (200, b'{"n": 1}')
            assert await post(pool, server) == (200, b'{"n": 1}')
            assert server.connections == 2
    run(test)


def test_a_new_connection_closed_without_an_answer_is_not_retried() -> None:
    handler = once()
    async def test() -> None:
        async with serving(handler) as server:
            with pytest.raises(Disconnected):
                await post(ConnectionPool(), server)
            assert len(server.requests) == 1
    run(test)


def test_an_unreachable_upstream_fails_to_connect() -> None:
    async def test() -> None:
        listening = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = listening.sockets[0].getsockname()[1]
        listening.close()
        await listening.wait_closed()
        origin, head = request_head(f"http://127.0.0.1:{port}/v1/x", {})
        pool = ConnectionPool()
        with pytest.raises(ConnectFailed):
            await pool.send(origin, head, b"{}", deadline=pool.loop.time() + 5,
                            connect_timeout=5)
    run(test)


def test_an_interim_response_is_skipped() -> None:
    async def test() -> None:
        response = b"HTTP/1.1 100 Continue\r\n\r\n" + reply(b'{"ok": true}')
        async with serving(answering(response)) as server:
            assert await post(ConnectionPool(), server) == (200, b'{"ok": true}')
    run(test)


def test_bytes_sent_on_an_idle_connection_keep_it_out_of_the_pool() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      server: Server) -> None:
        while await server.read_request(reader) is not None:
            writer.write(reply(b"{}") + b"HTTP/1.1 200 OK\r\n")  # a stray second response
            await writer.drain()
    async def test() -> None:
        async with serving(handler) as server:
            pool = ConnectionPool()
            await post(pool, server)
            await asyncio.sleep(0)  # let the stray bytes arrive, whenever they do
            assert await post(pool, server) == (200, b"{}")
            assert server.connections == 2
    run(test)


def test_idle_connections_are_closed_after_the_keepalive() -> None:
    async def test() -> None:
        async with serving(answering(reply(b"{}"))) as server:
            pool = ConnectionPool(keepalive_seconds=0.2)
            await post(pool, server)
            await asyncio.wait_for(server.closed.wait(), 5)
    run(test)


def test_at_most_limit_exchanges_run_at_once() -> None:
    release = asyncio.Event()
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      server: Server) -> None:
        while await server.read_request(reader) is not None:
            await release.wait()
            writer.write(reply(b"{}"))
            await writer.drain()
    async def test() -> None:
        async with serving(handler) as server:
            pool = ConnectionPool(limit=1)
            first = asyncio.create_task(post(pool, server))
            second = asyncio.create_task(post(pool, server))
            while len(server.requests) < 1:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)
            assert len(server.requests) == 1  # the second waits for the first's slot
            release.set()
            assert await first == (200, b"{}")
            assert await second == (200, b"{}")
            assert server.connections == 1
    run(test)


def test_a_cancelled_request_frees_its_slot_and_drops_its_connection() -> None:
    handler = once(hold=True)
    async def test() -> None:
        async with serving(handler) as server:
            pool = ConnectionPool(limit=1)
            task = asyncio.create_task(post(pool, server))
            while not server.requests:
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.wait_for(server.closed.wait(), 5)
            async with serving(answering(reply(b"{}"))) as other:
                assert await post(pool, other) == (200, b"{}")  # the slot came back
    run(test)


def sse(*events: bytes) -> list[bytes]:
    return [b"data: " + event + b"\n\n" for event in events]


async def read_lines(pool: ConnectionPool, server: Server, budget: int = 1 << 20,
                     stop_at_done: bool = False) -> list[bytes]:
    origin, head = request_head(f"http://127.0.0.1:{server.port}/v1/chat/completions", {})
    response = await pool.send(origin, head, b"{}", deadline=pool.loop.time() + 5,
                               connect_timeout=5)
    lines = []
    try:
        async for line in response.lines(budget):
            lines.append(line)
            if stop_at_done and line == b"data: [DONE]\n":
                response.end_seen()
                break
    finally:
        response.finish()
    return lines


def streaming(pieces: list[bytes], *, end: bool = True, gap: float = 0.0) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      server: Server) -> None:
        while await server.read_request(reader) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n")
            for piece in pieces:
                writer.write(b"%x\r\n%b\r\n" % (len(piece), piece))
                await writer.drain()
                await asyncio.sleep(gap)
            if not end:
                return
            writer.write(b"0\r\n\r\n")
            await writer.drain()
    return handler


def test_stream_lines_are_whole_however_the_packets_split_them() -> None:
    events = b"".join(sse(b'{"a": 1}', b'{"b": 2}', b"[DONE]"))
    pieces = [events[index:index + 7] for index in range(0, len(events), 7)]
    async def test() -> None:
        async with serving(streaming(pieces, gap=0.001)) as server:
            lines = await read_lines(ConnectionPool(), server)
            assert lines == [b'data: {"a": 1}\n', b"\n", b'data: {"b": 2}\n', b"\n",
                             b"data: [DONE]\n", b"\n"]
    run(test)


def test_a_stream_past_its_budget_is_refused() -> None:
    async def test() -> None:
        async with serving(streaming(sse(*[b"x" * 100] * 50))) as server:
            with pytest.raises(ResponseTooLarge):
                await read_lines(ConnectionPool(), server, budget=1000)
    run(test)


def test_an_unfinished_line_longer_than_the_budget_is_refused_before_it_ends() -> None:
    async def test() -> None:
        async with serving(streaming([b"data: " + b"x" * 5000], end=False)) as server:
            with pytest.raises(ResponseTooLarge):
                await read_lines(ConnectionPool(), server, budget=1000)
    run(test)


def test_a_stream_cut_short_is_a_disconnection() -> None:
    async def test() -> None:
        async with serving(streaming(sse(b"{}"), end=False)) as server:
            with pytest.raises(Disconnected):
                await read_lines(ConnectionPool(), server)
    run(test)


def test_a_stream_read_to_its_last_event_goes_back_to_the_pool_when_its_body_ends() -> None:
    # The chunked body's end comes in a packet after [DONE], as uvicorn and others send it.
    async def test() -> None:
        async with serving(streaming(sse(b"{}", b"[DONE]"), gap=0.05)) as server:
            pool = ConnectionPool()
            for _ in range(3):
                await read_lines(pool, server, stop_at_done=True)
                await asyncio.sleep(0.1)
            assert server.connections == 1
    run(test)


def test_a_stream_left_before_its_end_closes_its_connection() -> None:
    async def test() -> None:
        async with serving(streaming(sse(b"{}", b"{}", b"[DONE]"), gap=0.05)) as server:
            pool = ConnectionPool()
            origin, head = request_head(f"http://127.0.0.1:{server.port}/v1/x", {})
            response = await pool.send(origin, head, b"{}", deadline=pool.loop.time() + 5,
                                       connect_timeout=5)
            async for _ in response.lines(1 << 20):
                break
            response.finish()
            await asyncio.wait_for(server.closed.wait(), 5)
    run(test)


def test_request_heads_name_the_host_and_refuse_header_injection() -> None:
    origin, head = request_head("http://user:pw@[::1]:8080/base/v1/chat/completions",
                                {"OpenAI-Project": "p"})
    assert (origin.host, origin.port, origin.tls) == ("::1", 8080, False)
    assert head.startswith(b"POST /base/v1/chat/completions HTTP/1.1\r\nHost: [::1]:8080\r\n")
    assert b"Authorization: Basic dXNlcjpwdw==\r\n" in head
    assert head.endswith(b"OpenAI-Project: p\r\nContent-Length: ")
    assert request_head("https://api.example.com/v1", {})[0].port == 443
    with pytest.raises(ValueError, match="one line"):
        request_head("http://h/v1", {"authorization": "Bearer k\r\nX-Evil: 1"})
    with pytest.raises(ValueError, match="http or https"):
        request_head("ftp://h/v1", {})


def test_the_upstream_sends_the_configured_identity_and_maps_statuses() -> None:
    async def test() -> None:
        error = reply(b'{"error": {"message": "slow down"}}', "Retry-After: 7",
                      status="429 Too Many Requests")
        async with serving(answering(reply(b'{"id": "x"}'), error)) as server:
            target = UpstreamTarget(
                public_name="m", provider="openai", model="real-model",
                base_url=f"http://127.0.0.1:{server.port}/v1", api_key="sk-secret",
                timeout_seconds=5, top_logprobs=0, organization="org-1")
            upstream = HTTPUpstream()
            reply_ = await upstream.complete(target, "chat/completions", {"messages": []})
            assert reply_.document == {"id": "x"}
            request = server.requests[0]
            assert b"authorization: Bearer sk-secret\r\n" in request
            assert b"openai-organization: org-1\r\n" in request
            assert request.endswith(b'{"messages":[],"model":"real-model"}')
            with pytest.raises(Exception) as failure:
                await upstream.complete(target, "chat/completions", {"messages": []})
            assert failure.value.status_code == 429  # type: ignore[attr-defined]
            assert failure.value.headers == {"retry-after": "7"}  # type: ignore[attr-defined]
            await upstream.aclose()
    run(test)


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


@asynccontextmanager
async def serving_tls(authority: trustme.CA, handler: Handler,
                      name: str = "127.0.0.1") -> AsyncIterator[Server]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert(name).configure_cert(context)
    server = Server(handler)
    listening = await asyncio.start_server(server.serve, "127.0.0.1", 0, ssl=context)
    server.port = listening.sockets[0].getsockname()[1]
    async with listening:
        yield server


def trusting(authority: trustme.CA) -> ssl.SSLContext:
    context = default_tls()
    authority.configure_trust(context)
    return context


async def post_tls(pool: ConnectionPool, server: Server) -> tuple[int, bytes]:
    origin, head = request_head(f"https://127.0.0.1:{server.port}/v1/chat/completions", {})
    response = await pool.send(origin, head, b"{}", deadline=pool.loop.time() + 5,
                               connect_timeout=5)
    try:
        return response.status, await response.read(1 << 20)
    finally:
        response.finish()


def test_an_https_upstream_is_reached_and_its_connection_kept(authority: trustme.CA) -> None:
    async def test() -> None:
        async with serving_tls(authority, answering(reply(b'{"a": 1}'), reply(b"{}"))) as server:
            pool = ConnectionPool(tls=trusting(authority))
            assert await post_tls(pool, server) == (200, b'{"a": 1}')
            assert await post_tls(pool, server) == (200, b"{}")
            assert server.connections == 1
            await pool.aclose()
    run(test)


def test_an_upstream_certificate_no_trusted_authority_signed_is_refused(
        authority: trustme.CA) -> None:
    async def test() -> None:
        async with serving_tls(authority, answering(reply(b"{}"))) as server:
            with pytest.raises(ConnectFailed, match="CERTIFICATE_VERIFY_FAILED"):
                await post_tls(ConnectionPool(), server)  # the system's authorities only
    run(test)


def test_an_upstream_certificate_for_another_host_is_refused(authority: trustme.CA) -> None:
    async def test() -> None:
        async with serving_tls(authority, answering(reply(b"{}")),
                               name="api.example.com") as server:
            with pytest.raises(ConnectFailed, match="CERTIFICATE_VERIFY_FAILED"):
                await post_tls(ConnectionPool(tls=trusting(authority)), server)
    run(test)


def packets(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at ``cuts`` (positions, any order, repeats allowed)."""
    edges = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    return [data[start:end] for start, end in itertools.pairwise(edges)]


def sending(pieces: list[bytes]) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      server: Server) -> None:
        await server.read_request(reader)
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0)
        await reader.read()
    return handler


@settings(max_examples=60, deadline=None)
@given(body=st.binary(max_size=3000), sizes=st.lists(st.integers(1, 700), max_size=8),
       cuts=st.lists(st.integers(0, 10_000), max_size=12), chunked_body=st.booleans())
def test_a_body_reads_back_whole_however_it_is_framed_and_cut(
        body: bytes, sizes: list[int], cuts: list[int], chunked_body: bool) -> None:
    if chunked_body:
        frames, rest = [], body
        for size in sizes:
            frames.append(rest[:size])
            rest = rest[size:]
        frames.append(rest)
        raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"".join(
            b"%x\r\n%b\r\n" % (len(frame), frame) for frame in frames if frame) + b"0\r\n\r\n"
    else:
        raw = reply(body)

    async def test() -> None:
        async with serving(sending(packets(raw, cuts))) as server:
            assert await post(ConnectionPool(), server) == (200, body)
    run(test)


@settings(max_examples=60, deadline=None)
@given(lines=st.lists(st.binary(max_size=200).map(lambda b: b.replace(b"\n", b"") + b"\n"),
                      max_size=20),
       cuts=st.lists(st.integers(0, 10_000), max_size=12))
def test_stream_lines_read_back_whole_however_they_are_cut(
        lines: list[bytes], cuts: list[int]) -> None:
    body = b"".join(lines)
    raw = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
           b"Content-Length: %d\r\n\r\n%b" % (len(body), body))

    async def test() -> None:
        async with serving(sending(packets(raw, cuts))) as server:
            assert await read_lines(ConnectionPool(), server) == lines
    run(test)
