"""The gateway's response cycle over a real socket: how many writes an answer or a stream takes.

The cycle writes to a real loopback connection through a wrapper that counts its writes (the
transport is the only seam there is); the peer reads what arrived and checks it is the HTTP
response the app sent.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from uvicorn.protocols.http.flow_control import FlowControl

from proxy.http.cycle import GatewayCycle


class CountingTransport:
    """A real transport, with each write (one system call for uvloop and asyncio) counted."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.transport.write(data)

    def writelines(self, pieces: list[bytes]) -> None:
        self.writes.append(b"".join(pieces))
        self.transport.writelines(pieces)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


async def exchange(app: Callable[[GatewayCycle, CountingTransport, socket.socket],
                                 Awaitable[None]]) -> bytes:
    """Run ``app`` on a cycle whose transport is one end of a loopback connection; returns
    every byte the other end received."""
    loop = asyncio.get_running_loop()
    server, client = socket.socketpair()
    server.setblocking(False)
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, server)
    counting = CountingTransport(transport)  # type: ignore[arg-type]
    cycle = GatewayCycle(
        {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": [],
         "http_version": "1.1", "asgi": {"version": "3.0"}},  # type: ignore[typeddict-item]
        counting, FlowControl(transport), logging.getLogger("test"),  # type: ignore[arg-type]
        logging.getLogger("test.access"), False, [], asyncio.Event(), False, True, lambda: None)
    await app(cycle, counting, client)
    await asyncio.sleep(0.05)
    client.setblocking(False)
    received = b""
    try:
        while chunk := client.recv(65_536):
            received += chunk
    except BlockingIOError:
        pass
    transport.close()
    client.close()
    return received


EVENTS = [b'data: {"n": %d}\n\n' % index for index in range(5)]


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%b\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


def test_a_complete_answer_is_one_write_head_and_body() -> None:
    async def app(cycle: GatewayCycle, transport: CountingTransport, _: socket.socket) -> None:
        await cycle.send({"type": "http.response.start", "status": 200,
                          "headers": [(b"content-length", b"2")]})
        assert transport.writes == []  # held for the body
        await cycle.send({"type": "http.response.body", "body": b"{}"})
        assert len(transport.writes) == 1

    received = asyncio.run(exchange(app))
    assert received == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"


def test_a_head_and_events_sent_in_one_turn_go_out_in_one_write_with_the_body_end() -> None:
    # A buffered answer replayed after its decision: the head and every event at once.
    async def app(cycle: GatewayCycle, transport: CountingTransport, _: socket.socket) -> None:
        await cycle.send({"type": "http.response.start", "status": 200,
                          "headers": [(b"content-type", b"text/event-stream")]})
        for event in EVENTS:
            await cycle.send({"type": "http.response.body", "body": event, "more_body": True})
        await cycle.send({"type": "http.response.body", "body": b""})
        assert len(transport.writes) == 1

    received = asyncio.run(exchange(app))
    head, body = received.split(b"\r\n\r\n", 1)
    assert b"transfer-encoding: chunked" in head
    assert body == chunked(*EVENTS)


def test_an_event_sent_alone_reaches_the_client_in_its_turn() -> None:
    # A live stream: each event must arrive while the next is still being generated.
    async def app(cycle: GatewayCycle, transport: CountingTransport,
                  client: socket.socket) -> None:
        await cycle.send({"type": "http.response.start", "status": 200,
                          "headers": [(b"content-type", b"text/event-stream")]})
        await asyncio.sleep(0)  # the turn ends: the head leaves before any token is there
        client.settimeout(5)
        assert client.recv(65_536).startswith(b"HTTP/1.1 200 OK\r\n")
        for event in EVENTS[:2]:
            await cycle.send({"type": "http.response.body", "body": event, "more_body": True})
            await asyncio.sleep(0)  # the turn ends
            assert client.recv(65_536) == b"%x\r\n%b\r\n" % (len(event), event)
        await cycle.send({"type": "http.response.body", "body": b""})
        assert len(transport.writes) == 4

    asyncio.run(exchange(app))


def test_what_one_turn_holds_back_is_bounded() -> None:
    async def app(cycle: GatewayCycle, transport: CountingTransport, _: socket.socket) -> None:
        await cycle.send({"type": "http.response.start", "status": 200,
                          "headers": [(b"content-type", b"text/event-stream")]})
        piece = b"x" * 20_000
        for _ in range(4):  # 80 KB in one turn: written once it passes 64 KiB
            await cycle.send({"type": "http.response.body", "body": piece, "more_body": True})
        assert len(transport.writes) == 1
        await cycle.send({"type": "http.response.body", "body": b""})

    received = asyncio.run(exchange(app))
    assert received.endswith(b"0\r\n\r\n")
