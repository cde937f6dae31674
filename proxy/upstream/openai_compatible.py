"""OpenAI-compatible servers (OpenAI, vLLM, llama.cpp, Ollama, TGI, ...), called directly.

One pooled aiohttp session with orjson: on this path every microsecond is overhead the
application pays per request, and LiteLLM's translation layer costs milliseconds we don't need
for a server that already speaks the wire format.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson
from aiohttp.http_exceptions import LineTooLong

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
from proxy.upstream.target import Chunk, UpstreamReply, UpstreamTarget
from proxy.wire.schema import Endpoint

__all__ = ["HTTPUpstream"]

logger = logging.getLogger("basguard.upstream")

_ERROR_BODY_BYTES = 65_536  # enough of an error body for the log
_READ_PIECE = 65_536


async def _read_capped(response: aiohttp.ClientResponse, target: UpstreamTarget) -> bytes:
    """The body, refused as soon as it passes ``max_response_bytes`` (never read whole first)."""
    cap = target.max_response_bytes
    if response.content_length is not None and response.content_length > cap:
        raise too_large(target)
    pieces: list[bytes] = []
    size = 0
    async for piece in response.content.iter_chunked(_READ_PIECE):
        size += len(piece)
        if size > cap:
            raise too_large(target)
        pieces.append(piece)
    return b"".join(pieces)


class HTTPUpstream:
    """OpenAI-compatible upstreams over one pooled aiohttp session.

    aiohttp rather than httpx on this path: measured here, an httpx.AsyncClient request costs
    about 0.5 ms of CPU and caps a one-worker proxy near 550 requests/s, several times what
    aiohttp's client costs for the same request.
    """

    def __init__(self, session: aiohttp.ClientSession | None = None) -> None:
        self._session = session

    def _client(self) -> aiohttp.ClientSession:
        # Created on first use, inside the server's event loop, which aiohttp requires.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=512, keepalive_timeout=30),
                skip_auto_headers=("User-Agent",),
                raise_for_status=False,
            )
        return self._session

    @staticmethod
    def _headers(target: UpstreamTarget) -> dict[str, str]:
        return {"content-type": "application/json", **target.identity_headers()}

    @staticmethod
    def _timeout(target: UpstreamTarget) -> aiohttp.ClientTimeout:
        # `total` spans the whole exchange, reading the body included: a stream that trickles
        # chunks past the deadline ends there, however fast each chunk comes.
        return aiohttp.ClientTimeout(
            total=target.timeout_seconds, connect=min(5.0, target.timeout_seconds)
        )

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
            async with self._client().post(
                f"{target.base_url}/{endpoint}",
                data=orjson.dumps({**body, "model": target.model}),
                headers=self._headers(target),
                timeout=self._timeout(target),
            ) as response:
                if response.status >= 400:
                    raw = await response.content.read(_ERROR_BODY_BYTES)
                    raise upstream_status_error(target, response.status, raw, response.headers)
                return await _read_capped(response, target)
        except TRANSPORT_ERRORS as exc:
            raise transport_error(target, exc) from exc

    @asynccontextmanager
    async def stream(
        self, target: UpstreamTarget, endpoint: Endpoint, body: dict[str, Any]
    ) -> AsyncIterator[AsyncIterator[Chunk]]:
        """Open a streamed completion; the status is checked before the first chunk is read."""
        try:
            response = await self._client().post(
                f"{target.base_url}/{endpoint}",
                data=orjson.dumps({**body, "model": target.model, "stream": True}),
                headers=self._headers(target),
                timeout=self._timeout(target),
            )
        except TRANSPORT_ERRORS as exc:
            raise transport_error(target, exc) from exc
        try:
            if response.status >= 400:
                try:
                    raw = await response.content.read(_ERROR_BODY_BYTES)
                except TRANSPORT_ERRORS:
                    raw = b""
                raise upstream_status_error(target, response.status, raw, response.headers)
            yield self._chunks(target, response, ends_with_done=endpoint != "responses")
        finally:
            # Closing (not releasing) drops the connection mid-stream, which cancels the
            # upstream generation when the client has gone away.
            response.close()

    async def _chunks(
        self, target: UpstreamTarget, response: aiohttp.ClientResponse, *,
        ends_with_done: bool = True,
    ) -> AsyncIterator[Chunk]:
        content = response.content
        # Every line counts against max_response_bytes: it bounds what a stream can make the
        # gateway hold (the enforce buffer, the decision's accumulated answer), and a line
        # longer than what is left is refused before it is read whole.
        budget = target.max_response_bytes
        try:
            while raw_line := await content.readline(max_line_length=budget):
                budget -= len(raw_line)
                if budget < 0:
                    raise too_large(target)
                if not raw_line.startswith(b"data:"):
                    continue
                data = raw_line[5:].strip()
                if data == b"[DONE]":
                    return
                chunk = orjson.loads(data)
                if isinstance(chunk, dict) and "error" in chunk:
                    logger.warning(
                        "upstream for model %r failed mid-stream: %s", target.public_name,
                        sanitize(error_message(data, 502), target.secrets))
                    raise UpstreamError(
                        f"the upstream for model {target.public_name!r} failed mid-stream")
                yield chunk
        except LineTooLong as exc:
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
        if self._session is not None:
            await self._session.close()
