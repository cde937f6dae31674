"""OpenAI-compatible servers (OpenAI, vLLM, llama.cpp, Ollama, TGI, ...), called directly.

Over basguard's own pooled HTTP/1.1 client (:mod:`proxy.upstream.http1`) with orjson: on this
path every microsecond is overhead the application pays per request, and LiteLLM's translation
layer costs milliseconds we don't need for a server that already speaks the wire format.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson

from proxy.errors import UpstreamError, sanitize
from proxy.upstream.failures import (
    TRANSPORT_ERRORS,
    error_message,
    invalid_json,
    parse_reply,
    too_large,
    transport_error,
    upstream_status_error,
)
from proxy.upstream.http1 import ConnectionPool, Origin, Response, ResponseTooLarge, request_head
from proxy.upstream.target import Chunk, UpstreamReply, UpstreamTarget
from proxy.wire.schema import Endpoint

__all__ = ["HTTPUpstream"]

logger = logging.getLogger("basguard.upstream")

_ERROR_BODY_BYTES = 65_536  # enough of an error body for the log
_MAX_HEADS = 1024
"""Request heads kept, one per upstream and endpoint: far more than a config names."""


class HTTPUpstream:
    """OpenAI-compatible upstreams over one connection pool.

    Neither httpx nor aiohttp on this path: measured here, an httpx.AsyncClient request costs
    about 0.5 ms of CPU, and aiohttp's client about 85 µs, against about 30 µs for
    :mod:`proxy.upstream.http1` (``benchmarks/bench_upstream_client.py``).
    """

    def __init__(self) -> None:
        self._pool: ConnectionPool | None = None
        self._heads: dict[tuple[UpstreamTarget, str], tuple[Origin, bytes]] = {}

    async def _send(self, target: UpstreamTarget, endpoint: Endpoint,
                    body: dict[str, Any]) -> Response:
        """The request sent and the response's head received, its status checked."""
        if self._pool is None:  # created on first use, inside the server's event loop
            self._pool = ConnectionPool(limit=512, keepalive_seconds=30)
        key = (target, endpoint)
        if (prepared := self._heads.get(key)) is None:
            if len(self._heads) >= _MAX_HEADS:  # reloads with ever new keys, say
                self._heads.clear()
            prepared = self._heads[key] = request_head(
                f"{target.base_url}/{endpoint}", target.identity_headers())
        origin, head = prepared
        # The deadline spans the whole exchange, reading the body included: a stream that
        # trickles chunks past it ends there, however fast each chunk comes.
        response = await self._pool.send(
            origin, head, orjson.dumps(body), connect_timeout=min(5.0, target.timeout_seconds),
            deadline=self._pool.loop.time() + target.timeout_seconds)
        if response.status >= 400:
            try:
                raw = await response.read_some(_ERROR_BODY_BYTES)
            finally:
                response.finish()
            raise upstream_status_error(target, response.status, raw, response.headers)
        return response

    async def complete(
        self, target: UpstreamTarget, endpoint: Endpoint, body: dict[str, Any]
    ) -> UpstreamReply:
        return parse_reply(target, await self.complete_raw(target, endpoint, body))

    async def complete_raw(
        self, target: UpstreamTarget, endpoint: Endpoint, body: dict[str, Any]
    ) -> bytes:
        """The reply's body as received (status and size checked), for the caller to parse:
        a large one is parsed off the event loop (:mod:`proxy.judging.offload`)."""
        try:
            response = await self._send(target, endpoint, {**body, "model": target.model})
            try:
                return await response.read(target.max_response_bytes)
            finally:
                response.finish()
        except ResponseTooLarge as exc:
            raise too_large(target) from exc
        except TRANSPORT_ERRORS as exc:
            raise transport_error(target, exc) from exc

    @asynccontextmanager
    async def stream(
        self, target: UpstreamTarget, endpoint: Endpoint, body: dict[str, Any]
    ) -> AsyncIterator[AsyncIterator[Chunk]]:
        """Open a streamed completion; the status is checked before the first chunk is read."""
        try:
            response = await self._send(
                target, endpoint, {**body, "model": target.model, "stream": True})
        except TRANSPORT_ERRORS as exc:
            raise transport_error(target, exc) from exc
        try:
            yield self._chunks(target, response, ends_with_done=endpoint != "responses")
        finally:
            # A stream read to its end leaves its connection to the pool; any other is
            # closed, which cancels the upstream generation when the client has gone away.
            response.finish()

    async def _chunks(
        self, target: UpstreamTarget, response: Response, *, ends_with_done: bool = True,
    ) -> AsyncIterator[Chunk]:
        # Every line counts against max_response_bytes: it bounds what a stream can make the
        # gateway hold (the enforce buffer, the decision's accumulated answer), and a line
        # longer than what is left is refused before it is read whole.
        try:
            async for raw_line in response.lines(target.max_response_bytes):
                if not raw_line.startswith(b"data:"):
                    continue
                data = raw_line[5:].strip()
                if data == b"[DONE]":
                    response.end_seen()
                    return
                chunk = orjson.loads(data)
                if isinstance(chunk, dict) and "error" in chunk:
                    logger.warning(
                        "upstream for model %r failed mid-stream: %s", target.public_name,
                        sanitize(error_message(data, 502), target.secrets))
                    raise UpstreamError(
                        f"the upstream for model {target.public_name!r} failed mid-stream")
                yield chunk
        except ResponseTooLarge as exc:
            raise too_large(target) from exc
        except orjson.JSONDecodeError as exc:
            raise invalid_json(target.public_name) from exc
        except TRANSPORT_ERRORS as exc:
            raise transport_error(target, exc) from exc
        if not ends_with_done:
            # A Responses stream has no [DONE]: proxy.services.responses checks its last event.
            return
        # The stream closed without [DONE]: the upstream died mid-answer.
        raise UpstreamError(
            f"the upstream for model {target.public_name!r} ended the stream early")

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
