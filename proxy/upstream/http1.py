"""A pooled HTTP/1.1 client for the guarded request path: a JSON body out, a JSON or SSE reply in.

Written here rather than taken from aiohttp because it is the largest cost of a guarded
request: ``benchmarks/bench_upstream_client.py`` measures aiohttp's client at about 85 µs of
CPU for a 1.2 KB reply, three times what this module spends on the same exchange. The part that
needs care, parsing the response, is not hand-written: it is httptools (llhttp, the parser of
Node.js, installed with ``uvicorn[standard]``). What this module adds is what an OpenAI-style
upstream needs and no more: keep-alive connections pooled per origin, TLS, one deadline over the
whole exchange, a bound on the response head and on what a reader leaves buffered, a streamed
body read line by line with flow control, and a retry of a request that met a pooled connection
the server had just closed. No redirects, proxies, cookies or HTTP/2; passthrough, which relays
any method and body and WebSockets, keeps aiohttp's client.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httptools
from yarl import URL

__all__ = [
    "ConnectFailed",
    "ConnectionPool",
    "Disconnected",
    "HTTPClientError",
    "MalformedResponse",
    "Origin",
    "Response",
    "ResponseTooLarge",
    "default_tls",
    "request_head",
]

MAX_HEAD_BYTES = 65_536
"""The most bytes of a response's status line and headers: a larger head is malformed."""

_PAUSE_BYTES = 262_144
"""A stream's unread bytes above which the socket stops being read until the reader catches up."""

_LINGER_SECONDS = 1.0
"""How long a connection whose reader has seen the stream's last event waits for the message's
end (a chunked body's last chunk often comes in a packet of its own) to be pooled again."""


class HTTPClientError(Exception):
    """A failure to exchange a request and a response with an upstream."""


class ConnectFailed(HTTPClientError):
    """No connection could be opened (refused, unresolvable, TLS handshake failed)."""


class Disconnected(HTTPClientError):
    """The upstream closed the connection before its response ended."""


class MalformedResponse(HTTPClientError):
    """What came back is not an HTTP/1.x response."""


class ResponseTooLarge(HTTPClientError):
    """The body passed the size its reader allows."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where connections go: requests to one origin share its pooled connections."""

    scheme: str
    host: str
    port: int

    @property
    def tls(self) -> bool:
        return self.scheme == "https"


def _header_value(name: str, value: str) -> str:
    # A CR or LF in a value would let a config's key write headers of its own.
    if "\r" in value or "\n" in value or not value.isascii():
        raise ValueError(f"the {name} header's value must be printable ASCII on one line")
    return value


def request_head(url: str, headers: dict[str, str]) -> tuple[Origin, bytes]:
    """The origin of ``url`` and the head of a JSON ``POST`` to it, up to ``Content-Length``.

    Built once per upstream and endpoint and reused: only the length differs between requests.
    Credentials in the URL become Basic authorization unless ``headers`` carry their own.
    """
    parsed = URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.raw_host:
        raise ValueError(f"{url!r} is not an http or https URL")
    origin = Origin(parsed.scheme, parsed.raw_host, parsed.port or 0)
    host = f"[{origin.host}]" if ":" in origin.host else origin.host
    if parsed.explicit_port is not None:
        host += f":{parsed.explicit_port}"
    lines = [f"POST {parsed.raw_path or '/'} HTTP/1.1", f"Host: {host}",
             "Content-Type: application/json", "Accept-Encoding: identity"]
    names = {name.lower() for name in headers}
    if parsed.raw_user and "authorization" not in names:
        secret = f"{parsed.user or ''}:{parsed.password or ''}".encode()
        lines.append(f"Authorization: Basic {base64.b64encode(secret).decode()}")
    lines += [f"{name}: {_header_value(name, value)}" for name, value in headers.items()]
    return origin, ("\r\n".join(lines) + "\r\nContent-Length: ").encode("ascii")


def default_tls() -> ssl.SSLContext:
    """Certificates checked against the system's authorities, the host name included; HTTP/1.1
    offered by ALPN, so a server that also speaks HTTP/2 answers in the version spoken here."""
    context = ssl.create_default_context()
    context.set_alpn_protocols(["http/1.1"])
    return context


class _Connection(asyncio.Protocol):
    """One keep-alive connection, and the state of the response arriving on it.

    The protocol's callbacks (socket events, then httptools' parse events) only record and wake
    the one coroutine reading the response; that coroutine does the rest.
    """

    def __init__(self, pool: ConnectionPool, origin: Origin) -> None:
        self.pool = pool
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self.reusable = True
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._paused = False
        self._lingering: asyncio.TimerHandle | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.head_complete = False
        self.complete = False
        self.error: BaseException | None = None
        self.received = 0
        self.pieces: list[bytes] = []
        self.buffered = 0
        self.streaming = False
        self.reader_done = False
        self._until_close = False

    # -- socket events --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.complete or self.error is not None:
            # Bytes with no request waiting for them: this connection cannot be trusted again.
            self.reusable = False
            self.close()
            return
        self.received += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(MalformedResponse(str(exc) or type(exc).__name__))
            return
        # Checked after parsing, since one read can hold the head and the body's beginning:
        # what the parser holds of an unfinished head stays bounded by one read beyond this.
        if not self.head_complete and self.received > MAX_HEAD_BYTES:
            self._fail(MalformedResponse(f"a response head over {MAX_HEAD_BYTES} bytes"))

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost says what that means

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        if self.complete or self.error is not None:
            return
        if self.head_complete and self._until_close:
            self.complete = True  # a body delimited by the end of the connection
            self._wake()
        else:
            self._fail(Disconnected("the upstream closed the connection mid-response"))

    def pause_writing(self) -> None:  # a request body is small: the kernel's buffer takes it
        pass

    def resume_writing(self) -> None:
        pass

    # -- parse events (httptools) ---------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:  # a second response to one request, in the same read
            self.reusable = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        if self.status < 200:
            return  # an interim response (100 Continue, 103 Early Hints): the real one follows
        self.head_complete = True
        self.reusable = self.reusable and self._parser.should_keep_alive()
        self._until_close = ("content-length" not in self.headers
                             and "transfer-encoding" not in self.headers
                             and self.status not in (204, 304))
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self._lingering is not None:
            return  # past the stream's last event: nobody reads it
        self.pieces.append(body)
        self.buffered += len(body)
        if self.streaming and self.buffered > _PAUSE_BYTES and not self._paused:
            self._paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]
        self._wake()

    def on_message_complete(self) -> None:
        if not self.head_complete:  # the end of an interim response
            self.headers = {}
            return
        self.complete = True
        if self._lingering is not None:
            self._lingering.cancel()
            self._lingering = None
            self.pool.park(self)
            return
        self._wake()

    # -- the reading coroutine's side -----------------------------------------------------

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _fail(self, error: BaseException) -> None:
        self.error = error
        self.reusable = False
        self.close()
        self._wake()

    def _expire(self) -> None:
        self._fail(TimeoutError("the upstream's deadline passed"))

    def begin(self, deadline: float) -> None:
        """Start an exchange that must end by ``deadline`` (the loop's clock)."""
        self._reset()
        loop = self.pool.loop
        self._deadline = loop.call_at(deadline, self._expire)

    async def next_event(self) -> None:
        """Wait for the response to move on: more body, its end, or a failure (raised)."""
        if self.error is None:
            self._waiter = self.pool.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self.error is not None:
            raise self.error

    def take(self) -> bytes:
        """The body received and not yet taken."""
        data = self.pieces[0] if len(self.pieces) == 1 else b"".join(self.pieces)
        self.pieces.clear()
        self.buffered = 0
        if self._paused:
            self._paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]
        return data

    def end_exchange(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def linger(self) -> None:
        """Wait a moment for the message's end before going back to the pool, else close."""
        self.pieces.clear()
        self._lingering = self.pool.loop.call_later(_LINGER_SECONDS, self.close)

    def close(self) -> None:
        self.reusable = False
        if self._lingering is not None:
            self._lingering.cancel()
            self._lingering = None
        if self.transport is not None:
            self.transport.close()


class Response:
    """An upstream's response: the status and headers, then the body read one way.

    :meth:`finish` must end every response (``async with`` does): it puts a connection whose
    response was read to its end back in the pool and closes any other, which also stops an
    upstream generating an answer nobody will read.
    """

    __slots__ = ("_connection", "_decoder", "headers", "status")

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self.status = connection.status
        self.headers = connection.headers
        encoding = self.headers.get("content-encoding", "identity").lower()
        # Identity is asked for; a server that compresses anyway is still understood.
        self._decoder = (None if encoding == "identity" else zlib.decompressobj(
            {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS}.get(encoding, 0)))
        if encoding not in ("identity", "gzip", "x-gzip", "deflate"):
            connection._fail(MalformedResponse(f"an unknown content-encoding {encoding!r}"))

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("content-length", "")
        return int(value) if value.isdigit() else None

    def _decoded(self, data: bytes, limit: int) -> bytes:
        """``data`` as sent; decompressed (to at most ``limit + 1`` bytes, so that a small
        compressed body cannot expand past what its reader allows unnoticed) if it was not."""
        if self._decoder is None:
            return data
        try:
            return self._decoder.decompress(data, limit + 1)
        except zlib.error as exc:
            raise MalformedResponse(f"a body that does not decompress: {exc}") from None

    async def read(self, limit: int) -> bytes:
        """The whole body; :class:`ResponseTooLarge` as soon as it passes ``limit`` bytes."""
        connection = self._connection
        if (length := self.content_length) is not None and length > limit:
            raise ResponseTooLarge(f"a body of {length} bytes")
        pieces: list[bytes] = []
        size = 0
        while True:
            if connection.pieces:
                piece = self._decoded(connection.take(), limit - size)
                size += len(piece)
                if size > limit:
                    raise ResponseTooLarge(f"a body over {limit} bytes")
                pieces.append(piece)
            elif connection.complete:
                return pieces[0] if len(pieces) == 1 else b"".join(pieces)
            else:
                await connection.next_event()

    async def read_some(self, limit: int) -> bytes:
        """Up to ``limit`` bytes of the body, however it ends: an error's text, for the log."""
        connection = self._connection
        try:
            while not connection.complete and connection.buffered < limit:
                await connection.next_event()
        except (HTTPClientError, TimeoutError):
            pass  # the status already says what happened; what arrived is enough to log
        try:
            return self._decoded(connection.take(), limit)[:limit]
        except MalformedResponse:
            return b""

    async def lines(self, budget: int) -> AsyncIterator[bytes]:
        """The body line by line (each with its ``\\n``), for Server-Sent Events.

        :class:`ResponseTooLarge` once the lines read pass ``budget`` bytes in all, or as soon
        as an unfinished line could not fit in what is left of it.
        """
        connection = self._connection
        connection.streaming = True
        buffer = bytearray()
        while True:
            if connection.pieces:
                buffer += self._decoded(connection.take(), max(budget, 0))
                start = 0
                while (end := buffer.find(b"\n", start)) != -1:
                    line = bytes(buffer[start:end + 1])
                    start = end + 1
                    budget -= len(line)
                    if budget < 0:
                        raise ResponseTooLarge("the stream's lines pass their budget")
                    yield line
                del buffer[:start]
                if len(buffer) > budget:
                    raise ResponseTooLarge("a stream line longer than its budget")
            elif connection.complete:
                if buffer:
                    yield bytes(buffer)
                return
            else:
                await connection.next_event()

    def end_seen(self) -> None:
        """Say the reader met the stream's last event (``[DONE]``) and reads no further: the
        connection may then go back to the pool when the message ends, instead of closing."""
        self._connection.reader_done = True

    def finish(self) -> None:
        """End the exchange: the connection back to the pool if it can carry another."""
        connection = self._connection
        connection.end_exchange()
        connection.pool.release(connection)


class ConnectionPool:
    """Keep-alive connections per origin, at most ``limit`` exchanges at once.

    Created inside the event loop that uses it. An idle connection is reused newest first and
    closed once it has idled ``keepalive_seconds`` (a sweep, not a timer per request). ``tls``
    checks https upstreams' certificates; by default the system's trusted authorities (and
    ``SSL_CERT_FILE``/``SSL_CERT_DIR``), with the host name checked, as aiohttp does.
    """

    def __init__(self, *, limit: int = 512, keepalive_seconds: float = 30.0,
                 tls: ssl.SSLContext | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self._slots = asyncio.Semaphore(limit)
        self._keepalive = keepalive_seconds
        self._idle: dict[Origin, list[_Connection]] = {}
        self._sweep: asyncio.TimerHandle | None = None
        self._tls = tls
        self._closed = False

    async def send(self, origin: Origin, head: bytes, body: bytes, *, deadline: float,
                   connect_timeout: float) -> Response:
        """Send a request (``head`` from :func:`request_head`) and wait for its response's head.

        The connection stays the response's until :meth:`Response.finish`.
        """
        message = b"%b%d\r\n\r\n%b" % (head, len(body), body)
        await self._slots.acquire()
        connection: _Connection | None = None
        try:
            connection = self._take_idle(origin)
            reused = connection is not None
            if connection is None:
                connection = await self._connect(origin, deadline, connect_timeout)
            try:
                return await self._exchange(connection, message, deadline)
            except Disconnected:
                if not reused or connection.received:
                    raise
                connection.end_exchange()
                # The server closed this idle connection as the request went out, before it
                # could have read it (nothing came back): the request was never served, so it
                # is sent once more on a new connection, as browsers do.
                connection = await self._connect(origin, deadline, connect_timeout)
                return await self._exchange(connection, message, deadline)
        except BaseException:
            if connection is not None:
                connection.end_exchange()
                connection.close()
            self._slots.release()
            raise

    async def _exchange(self, connection: _Connection, message: bytes,
                        deadline: float) -> Response:
        connection.begin(deadline)
        connection.transport.write(message)  # type: ignore[union-attr]
        while not connection.head_complete:
            await connection.next_event()
        return Response(connection)

    async def _connect(self, origin: Origin, deadline: float,
                       connect_timeout: float) -> _Connection:
        timeout = max(0.0, min(connect_timeout, deadline - self.loop.time()))
        tls = None
        if origin.tls:
            if self._tls is None:
                # Loading the trusted authorities reads files: once, and not on the loop.
                self._tls = await asyncio.to_thread(default_tls)
            tls = self._tls
        try:
            async with asyncio.timeout(timeout):
                _, connection = await self.loop.create_connection(
                    lambda: _Connection(self, origin), origin.host, origin.port, ssl=tls,
                    server_hostname=origin.host if tls else None)
        except OSError as exc:
            raise ConnectFailed(f"{type(exc).__name__}: {exc}") from exc
        return connection

    def _take_idle(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            if connection.reusable and not connection.transport.is_closing():  # type: ignore[union-attr]
                return connection
        return None

    def release(self, connection: _Connection) -> None:
        """A response's end: its slot freed, its connection pooled, lingering or closed."""
        self._slots.release()
        if (not self._closed and not connection.complete and connection.reader_done
                and connection.reusable and connection.error is None):
            connection.linger()
            return
        self.park(connection)

    def park(self, connection: _Connection) -> None:
        """Pool a connection whose response ended, or close it if it cannot carry another."""
        if (self._closed or not connection.complete or not connection.reusable
                or connection.pieces or connection.transport.is_closing()):  # type: ignore[union-attr]
            connection.close()
            return
        connection.idle_since = self.loop.time()
        self._idle.setdefault(connection.origin, []).append(connection)
        if self._sweep is None:
            self._sweep = self.loop.call_later(self._keepalive, self._close_stale)

    def _close_stale(self) -> None:
        self._sweep = None
        oldest = self.loop.time() - self._keepalive
        for idle in self._idle.values():
            for connection in [c for c in idle if c.idle_since <= oldest or not c.reusable]:
                idle.remove(connection)
                connection.close()
        if any(self._idle.values()):
            self._sweep = self.loop.call_later(self._keepalive, self._close_stale)

    async def aclose(self) -> None:
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
