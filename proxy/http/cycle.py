"""uvicorn's request-response cycle, with a response's head and body written together.

uvicorn writes a response's status line and headers as soon as the app sends
``http.response.start``, and its body on the next message: two writes, so two system calls and
two TCP segments for every answer, and the client woken twice. It also checks each header name
and value with its own regular-expression search (twenty-odd searches for a guarded answer's
headers). Written by hand for speed, on every response (see docs/benchmarks.md):

- a response that declares its ``content-length`` (every complete answer: Starlette's
  ``Response`` sets it) has its head held until the first body message, then both go out in one
  write;
- a stream's head and events are written once per turn of the event loop, not once each: what
  is sent in one turn (a buffered answer replayed after its decision: the head and every event
  at once) goes out in one write, and the body's last piece takes what is pending with it. A
  head or an event sent on its own (a live stream, one token a turn) still goes out at the end
  of the turn it was sent in, so a stream's client sees the headers before the first token
  comes; what one turn holds back is bounded by :data:`_CORK_BYTES`;
- all names are checked at once over their concatenation, and all values likewise: uvicorn's
  patterns are single character classes, so a concatenation holds a refused byte exactly when
  one of its parts does. The bytes they allow are derived from the patterns at import, and a
  concatenation is checked by deleting those (``bytes.translate``, a C loop: half the time of
  the regular-expression search): a header uvicorn refuses is still refused.

Everything else is uvicorn's ``send``, unchanged: the access log, keep-alive and
``connection: close``, chunked encoding, ``HEAD``, 204 and 304, the content-length checks, flow
control and the response's completion.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    RequestResponseCycle,
)
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

__all__ = ["GatewayCycle"]

_NO_BODY_STATUSES = frozenset({204, 304})
_NAME_BYTES = bytes(byte for byte in range(256) if not HEADER_RE.match(bytes([byte])))
"""The bytes uvicorn allows in a header name."""
_VALUE_BYTES = bytes(byte for byte in range(256) if not HEADER_VALUE_RE.match(bytes([byte])))
"""The bytes uvicorn allows in a header value."""
_CORK_BYTES = 65_536
"""The most bytes of a stream held back for the end of the event loop's turn."""


class GatewayCycle(RequestResponseCycle):
    """One request and its response on a connection (see the module docstring)."""

    held_head: bytes | None = None
    """A response's head, waiting to be written with the first piece of its body."""
    corked: list[bytes] | None = None
    """A stream's pieces sent in this turn of the event loop, written together at its end."""
    corked_bytes = 0

    async def send(self, message: Any) -> None:  # ASGISendEvent: a TypedDict union
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        if not self.response_started:
            if message["type"] != "http.response.start":
                raise RuntimeError(
                    f"Expected ASGI message 'http.response.start', but got '{message['type']}'.")
            self._start(message)
        elif not self.response_complete:
            if message["type"] != "http.response.body":
                raise RuntimeError(
                    f"Expected ASGI message 'http.response.body', but got '{message['type']}'.")
            self._body(message.get("body", b""), message.get("more_body", False))
        else:
            raise RuntimeError(
                f"Unexpected ASGI message '{message['type']}' sent, after response already "
                "completed.")

    def _start(self, message: Any) -> None:
        self.response_started = True
        self.waiting_for_100_continue = False
        status_code = message["status"]
        headers = [*self.default_headers, *message.get("headers", ())]
        if b"".join([name for name, _ in headers]).translate(None, _NAME_BYTES):
            raise RuntimeError("Invalid HTTP header name.")
        if b"".join([value for _, value in headers]).translate(None, _VALUE_BYTES):
            raise RuntimeError("Invalid HTTP header value.")
        if self.access_log:
            self.access_logger.info(
                '%s - "%s %s HTTP/%s" %d', get_client_addr(self.scope), self.scope["method"],
                get_path_with_query_string(self.scope), self.scope["http_version"], status_code)
        content = [STATUS_LINE[status_code]]
        has_connection_close = False
        for name, value in headers:
            name = name.lower()
            if name == b"content-length" and self.chunked_encoding is None:
                self.expected_content_length = int(value.decode())
                self.chunked_encoding = False
            elif name == b"transfer-encoding" and value.lower() == b"chunked":
                self.expected_content_length = 0
                self.chunked_encoding = True
            elif name == b"connection":
                tokens = [token.lower().strip() for token in value.split(b",")]
                if b"close" in tokens:
                    self.keep_alive = False
                    has_connection_close = True
            content.extend([name, b": ", value, b"\r\n"])
        if not self.keep_alive and not has_connection_close:
            content.append(b"connection: close\r\n")
        if (self.chunked_encoding is None and self.scope["method"] != "HEAD"
                and status_code not in _NO_BODY_STATUSES):
            self.chunked_encoding = True
            content.append(b"transfer-encoding: chunked\r\n")
        content.append(b"\r\n")
        head = b"".join(content)
        if self.chunked_encoding is False and self.scope["method"] != "HEAD":
            self.held_head = head  # written with the body's first piece
        else:
            self._cork([head])  # with the events sent in this turn, if any

    def _body(self, body: bytes, more_body: bool) -> None:
        if self.scope["method"] == "HEAD":
            self.expected_content_length = 0
            pieces = []
        elif self.chunked_encoding:
            pieces = [b"%x\r\n" % len(body), body, b"\r\n"] if body else []
            if not more_body:
                pieces.append(b"0\r\n\r\n")
        else:
            if len(body) > self.expected_content_length:
                raise RuntimeError("Response content longer than Content-Length")
            self.expected_content_length -= len(body)
            pieces = [body]
        head = self.held_head
        if head is not None:
            self.held_head = None
            pieces.insert(0, head)
        if more_body:
            self._cork(pieces)
            return
        if self.corked:  # the body's end takes what is pending with it
            pieces[:0] = self.corked
            self.corked = None
        if pieces:
            self.transport.writelines(pieces)  # one system call for them all
        if self.expected_content_length != 0:
            raise RuntimeError("Response content shorter than Content-Length")
        self.response_complete = True
        self.message_event.set()
        if not self.keep_alive:
            self.transport.close()
        self.on_response()

    def _cork(self, pieces: list[bytes]) -> None:
        if not pieces:
            return
        if self.corked is None:
            self.corked = pieces
            self.corked_bytes = 0
            asyncio.get_running_loop().call_soon(self._uncork)
        else:
            self.corked += pieces
        self.corked_bytes += sum(map(len, pieces))
        if self.corked_bytes > _CORK_BYTES:
            self._uncork()

    def _uncork(self) -> None:
        pieces, self.corked = self.corked, None
        if pieces and not self.disconnected and not self.transport.is_closing():
            self.transport.writelines(pieces)
