"""Closing a connection whose client is still sending: first the response, then the close.

A server that closes a TCP socket with unread data in it makes the kernel send a reset, and a
reset can destroy a response the client has not read yet. That happens when the server answers
before reading the whole body (a 401 or a 413 on a large upload) and then closes. So, as nginx's
``lingering_close`` does: shut down the sending half (the client sees the response, then the
end), read and drop what the client still sends until it closes its end, and close for good
then, or after :data:`LINGER_SECONDS` or :data:`LINGER_BYTES` at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket

__all__ = ["LINGER_BYTES", "LINGER_SECONDS", "close_lingering"]

LINGER_SECONDS = 2.0
"""Long enough for a client to read its answer and stop sending; short enough that lingering
sockets cost nothing much."""
LINGER_BYTES = 4 * 1_048_576
"""What the server reads and drops at most before it closes anyway."""
_READ_SIZE = 65536


def close_lingering(loop: asyncio.AbstractEventLoop, transport: asyncio.BaseTransport) -> None:
    """Linger on ``transport``'s socket; call from ``connection_lost``, before the transport
    closes its own file descriptor (asyncio and uvloop both close it right after)."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    try:
        # A descriptor of our own keeps the socket open once the transport has closed its one.
        lingering = socket.socket(fileno=os.dup(sock.fileno()))
    except OSError:
        return
    try:
        lingering.setblocking(False)
        lingering.shutdown(socket.SHUT_WR)  # after what the kernel still has to send
    except OSError:
        lingering.close()
        return
    _Lingering(loop, lingering)


class _Lingering:
    """One socket read and dropped until its client closes, or the bounds are reached."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        self._loop = loop
        self._sock = sock
        self._dropped = 0
        loop.add_reader(sock.fileno(), self._drop)
        self._timer = loop.call_later(LINGER_SECONDS, self._close)

    def _drop(self) -> None:
        while True:
            try:
                data = self._sock.recv(_READ_SIZE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            self._dropped += len(data)
            if not data or self._dropped >= LINGER_BYTES:
                self._close()
                return

    def _close(self) -> None:
        if self._sock.fileno() < 0:
            return
        self._timer.cancel()
        with contextlib.suppress(OSError, ValueError):
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
