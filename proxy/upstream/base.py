"""Talking to upstream model providers, and translating their failures in one place.

OpenAI-compatible servers (OpenAI, vLLM, llama.cpp, Ollama, TGI, ...) are called directly over one
pooled aiohttp session with orjson: on this path every microsecond is overhead the
application pays per request, and LiteLLM's translation layer costs milliseconds we don't need
for a server that already speaks the wire format. Providers that need translation (Anthropic,
Bedrock, Vertex, ...) go through ``litellm``, imported only when such a model is configured.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import aiohttp
import orjson
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from yarl import URL

from proxy.errors import (
    GatewayError,
    InvalidPath,
    InvalidRequest,
    UpstreamError,
    UpstreamInvalidResponse,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamResponseTooLarge,
    UpstreamTimeout,
    sanitize,
)
from proxy.http.request_path import canonical_path
from proxy.upstream.reason import rejection_reason, validation_failure
from proxy.wire.schema import OPENAI_REQUEST_FIELDS

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "Endpoint",
    "HTTPUpstream",
    "LiteLLMUpstream",
    "Upstream",
    "UpstreamReply",
    "UpstreamTarget",
    "parse_reply",
]

logger = logging.getLogger("basguard.upstream")

Endpoint = Literal["chat/completions", "completions", "responses"]
Chunk = Any
"""A parsed stream event: a dict for a well-formed upstream; proxy.wire.formats checks its shape."""

DEFAULT_MAX_RESPONSE_BYTES = 8 * 1_048_576
_ERROR_BODY_BYTES = 65_536  # enough of an error body for the log
_READ_PIECE = 65_536


@dataclass(frozen=True)
class UpstreamTarget:
    """Where one public model name is served."""

    public_name: str
    provider: Literal["openai", "litellm"]
    model: str
    base_url: str | None
    api_key: str | None
    timeout_seconds: float
    """The total deadline of one request, streams included (connect, send, every chunk)."""
    top_logprobs: int
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    """The most bytes of one reply (a body, or the sum of a stream's lines)."""
    organization: str | None = None
    """The ``OpenAI-Organization`` the upstream's key acts for (the config's, never a tenant's)."""
    project: str | None = None
    """The ``OpenAI-Project`` the upstream's key acts for (the config's, never a tenant's)."""

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self.api_key,) if self.api_key else ()

    def identity_headers(self) -> dict[str, str]:
        """Who the upstream's request acts as: its key, organization and project, all from
        the config. Every request basguard sends upstream carries these and no tenant's."""
        headers: dict[str, str] = {}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        if self.organization:
            headers["openai-organization"] = self.organization
        if self.project:
            headers["openai-project"] = self.project
        return headers

    def url_for(self, path: str, query: str = "") -> URL:
        """The upstream URL of ``path`` (a canonical path below ``/v1/``, see
        :mod:`proxy.http.request_path`) under this model's ``base_url``, with ``query`` as sent.

        Built as an encoded yarl URL, which aiohttp sends as it is (a text URL would be
        re-quoted and have its dot segments removed): what the upstream reads is what was
        routed. The result is checked to stay below ``base_url``'s path whatever ``path`` is.
        """
        if self.base_url is None:
            raise ValueError(f"model {self.public_name!r} has no base_url")
        try:
            plain = canonical_path(f"/{path}".encode("ascii")) == f"/{path}"
        except (UnicodeEncodeError, InvalidPath):
            plain = False
        if not plain:  # the routes only pass canonical paths; this holds whatever calls it
            raise ValueError(f"the path {path!r} is not a canonical path below a base URL")
        base = URL(self.base_url)
        return URL.build(
            scheme=base.scheme, user=base.raw_user, password=base.raw_password,
            host=base.raw_host or "", port=base.explicit_port,
            path=base.raw_path.rstrip("/") + "/" + path, query_string=query, encoded=True,
        )


@dataclass(frozen=True, slots=True)
class UpstreamReply:
    """A non-streamed reply: the parsed JSON (shape unchecked) and its size on the wire."""

    document: Any
    size: int


class Upstream(Protocol):
    """A way to reach upstream models."""

    async def complete(
        self, target: UpstreamTarget, endpoint: Endpoint, body: dict[str, Any]
    ) -> UpstreamReply: ...

    def stream(
        self, target: UpstreamTarget, endpoint: Endpoint, body: dict[str, Any]
    ) -> Any: ...  # an async context manager yielding an async iterator of chunks

    async def aclose(self) -> None: ...


def _error_message(raw: bytes, status: int) -> str:
    try:
        document = orjson.loads(raw)
        message = document["error"]["message"]
        if isinstance(message, str) and message:
            return message
    except (orjson.JSONDecodeError, KeyError, TypeError):
        pass
    return raw[:500].decode("utf-8", "replace") or f"HTTP {status}"


def _retry_after(headers: Mapping[str, str] | None) -> dict[str, str] | None:
    """The upstream's ``Retry-After``, passed on when it is a plain header value."""
    value = (headers or {}).get("retry-after")
    if value and len(value) <= 64 and value.isascii() and value.isprintable():
        return {"retry-after": value}
    return None


def upstream_status_error(
    target: UpstreamTarget, status: int, raw: bytes, headers: Mapping[str, str] | None = None
) -> GatewayError:
    """The gateway error for an upstream's error status (the one translation of statuses).

    The client gets the status mapping and a message naming the model. A refused request (a
    4xx, or a 5xx whose text is the upstream's validation error of the request, as
    llama-cpp-python sends one) is a 4xx ``upstream_rejected`` that says why, so the app can act
    on it and SDKs do not retry it; the reason is cleaned of tracebacks, paths and key-like
    strings (:mod:`proxy.upstream.reason`). Any other failure's text goes to the log only,
    sanitised, since upstream error texts can quote keys and internals.
    """
    name = target.public_name
    message = _error_message(raw, status)
    logger.warning("upstream for model %r answered HTTP %d: %s", name, status,
                   sanitize(message, target.secrets))
    if status >= 500 and (invalid := validation_failure(message, raw, target.secrets)):
        return UpstreamRejected(
            f"the upstream for model {name!r} rejected the request (HTTP {status}): "
            f"{invalid.reason}", status_code=400, param=invalid.param)
    retry = _retry_after(headers)
    if status == 429:
        return UpstreamRateLimited(f"the upstream for model {name!r} is rate limited",
                                   headers=retry)
    if status in (401, 403):
        return UpstreamError(f"the upstream for model {name!r} rejected basguard's credentials")
    if status in (408, 504):
        return UpstreamTimeout(f"the upstream for model {name!r} timed out")
    if 400 <= status < 500:
        said = rejection_reason(message, raw, target.secrets) \
            if message != f"HTTP {status}" else None
        return UpstreamRejected(
            f"the upstream for model {name!r} rejected the request (HTTP {status})"
            + (f": {said.reason}" if said is not None else ""),
            status_code=status, param=said.param if said is not None else None,
        )
    return UpstreamError(f"the upstream for model {name!r} failed (HTTP {status})",
                         headers=retry)


TRANSPORT_ERRORS = (aiohttp.ClientError, HttpProcessingError, OSError, TimeoutError)
"""What talking to an upstream over HTTP can raise (besides the gateway's own errors)."""


def transport_error(target: UpstreamTarget, exc: BaseException) -> GatewayError:
    """The gateway error for a failure to talk to the upstream: a short, accurate message."""
    name = target.public_name
    logger.warning("upstream for model %r: %s: %s", name, type(exc).__name__,
                   sanitize(str(exc), target.secrets))
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout(
            f"the upstream for model {name!r} did not answer within "
            f"{target.timeout_seconds:g} s")
    if isinstance(exc, aiohttp.ClientConnectorError) or type(exc) is aiohttp.ClientConnectionError:
        return UpstreamError(f"could not connect to the upstream for model {name!r}")
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError | OSError
                  | aiohttp.ClientPayloadError):
        # A payload error is a body cut short: the connection closed mid-response.
        return UpstreamError(f"the upstream for model {name!r} closed the connection")
    if isinstance(exc, aiohttp.ClientResponseError | HttpProcessingError):
        return UpstreamInvalidResponse(
            f"the upstream for model {name!r} sent a malformed HTTP response")
    return UpstreamError(f"the request to the upstream for model {name!r} failed")


def too_large(target: UpstreamTarget) -> UpstreamResponseTooLarge:
    return UpstreamResponseTooLarge(
        f"the reply of the upstream for model {target.public_name!r} is larger than its "
        f"max_response_bytes ({target.max_response_bytes})")


def invalid_json(model: str) -> UpstreamInvalidResponse:
    return UpstreamInvalidResponse(f"the upstream for model {model!r} sent invalid JSON")


def parse_reply(target: UpstreamTarget, raw: bytes) -> UpstreamReply:
    """A non-streamed body, parsed. orjson holds the GIL while it parses, so a thread would not
    free the event loop: max_response_bytes bounds this pause, and a reply above
    ``offload_reply_bytes`` is parsed in another process instead (:mod:`proxy.judging.offload`)."""
    try:
        return UpstreamReply(orjson.loads(raw), len(raw))
    except orjson.JSONDecodeError as exc:
        raise invalid_json(target.public_name) from exc


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
                        sanitize(_error_message(data, 502), target.secrets))
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


class LiteLLMUpstream:
    """Providers that need request translation, through the litellm SDK."""

    def __init__(self) -> None:
        import os

        # litellm fetches a model cost map over the network at import unless told not to.
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        # Any: litellm's own annotations are partial, and this class is the one place it is used.
        self._litellm: Any = litellm

    def _arguments(
        self, target: UpstreamTarget, endpoint: Endpoint, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        allowed = OPENAI_REQUEST_FIELDS[endpoint]
        unknown = sorted(name for name in body if name not in allowed)
        if unknown:
            # Never passed on: litellm would read them as its own arguments (see
            # OPENAI_REQUEST_FIELDS), e.g. an api_base that sends the upstream's key elsewhere.
            raise InvalidRequest(
                f"{unknown[0]!r} is not a parameter of OpenAI's /v1/{endpoint}; the model "
                f"{target.public_name!r} is served through litellm, which takes only those",
                param=unknown[0])
        arguments = {**body, "model": target.model, "timeout": target.timeout_seconds}
        if target.api_key:
            arguments["api_key"] = target.api_key
        if target.base_url:
            arguments["api_base"] = target.base_url
        if target.organization:
            arguments["organization"] = target.organization
        if target.project:
            arguments["extra_headers"] = {"OpenAI-Project": target.project}
        return arguments

    def _translate(self, target: UpstreamTarget, exc: BaseException) -> GatewayError:
        """Every litellm exception, by class first (some carry a misleading status), then status.

        litellm's classes mirror the openai SDK's: ``Timeout`` (an ``APIConnectionError``),
        ``APIConnectionError`` (status 500, yet nothing was answered),
        ``APIResponseValidationError``, and ``APIStatusError`` subclasses whose ``status_code``
        is the provider's.
        """
        if isinstance(exc, GatewayError):
            return exc
        errors = self._litellm.exceptions
        if isinstance(exc, errors.APIResponseValidationError):
            logger.warning("upstream for model %r: %s", target.public_name,
                           sanitize(str(exc), target.secrets))
            return UpstreamInvalidResponse(
                f"the upstream for model {target.public_name!r} sent an invalid response")
        # litellm reports a refused connection as an InternalServerError with status 500; the
        # transport failure underneath, if any, says what happened.
        cause = self._transport_cause(exc)
        if cause is not None:
            return transport_error(target, cause)
        status = getattr(exc, "status_code", None)
        if isinstance(status, int) and status >= 400:
            message = getattr(exc, "message", None) or str(exc)
            response = getattr(exc, "response", None)
            headers = getattr(response, "headers", None)
            return upstream_status_error(
                target, status, orjson.dumps({"error": {"message": str(message)}}),
                headers if isinstance(headers, Mapping) else None,
            )
        logger.warning("upstream for model %r: %s: %s", target.public_name,
                       type(exc).__name__, sanitize(str(exc), target.secrets))
        return UpstreamError(f"the request to the upstream for model {target.public_name!r} "
                             "failed")

    def _transport_cause(self, exc: BaseException) -> BaseException | None:
        import httpx  # litellm's own dependency, loaded with it

        errors = self._litellm.exceptions
        link: BaseException | None = exc
        for _ in range(12):  # a chain is a few links; a cycle must not loop forever
            if link is None:
                return None
            if isinstance(link, TimeoutError | errors.Timeout | httpx.TimeoutException):
                return TimeoutError(str(link))
            if isinstance(link, TRANSPORT_ERRORS):
                return link
            if isinstance(link, httpx.ConnectError):
                return aiohttp.ClientConnectionError(str(link))
            if isinstance(link, httpx.TransportError):
                return ConnectionError(str(link))
            link = link.__cause__ or link.__context__
        return None

    def _sized(self, target: UpstreamTarget, document: dict[str, Any]) -> tuple[Any, int]:
        # litellm has read the reply already; the cap still keeps it from going further.
        size = len(orjson.dumps(document))
        if size > target.max_response_bytes:
            raise too_large(target)
        return document, size

    def _call(self, target: UpstreamTarget, endpoint: Endpoint) -> Any:
        if endpoint == "chat/completions":
            return self._litellm.acompletion
        if endpoint == "completions":
            return self._litellm.atext_completion
        call = getattr(self._litellm, "aresponses", None)
        if call is None:  # litellm before its Responses API support
            raise UpstreamRejected(
                f"the model {target.public_name!r} is served through litellm, whose installed "
                "version has no Responses API support (litellm.aresponses); use "
                "/v1/chat/completions for this model", status_code=400)
        return call

    async def complete(
        self, target: UpstreamTarget, endpoint: Endpoint, body: dict[str, Any]
    ) -> UpstreamReply:
        call = self._call(target, endpoint)
        try:
            async with asyncio.timeout(target.timeout_seconds):
                response = await call(**self._arguments(target, endpoint, body))
        except Exception as exc:  # litellm raises many types; all are translated here
            raise self._translate(target, exc) from exc
        return UpstreamReply(*self._sized(target, dict(response.model_dump())))

    @asynccontextmanager
    async def stream(
        self, target: UpstreamTarget, endpoint: Endpoint, body: dict[str, Any]
    ) -> AsyncIterator[AsyncIterator[Chunk]]:
        call = self._call(target, endpoint)
        deadline = asyncio.get_running_loop().time() + target.timeout_seconds
        try:
            async with asyncio.timeout_at(deadline):
                response = await call(**self._arguments(target, endpoint, {**body, "stream": True}))
        except Exception as exc:
            raise self._translate(target, exc) from exc

        async def chunks() -> AsyncIterator[Chunk]:
            budget = target.max_response_bytes
            iterator = aiter(response)
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        chunk = await anext(iterator)
                except StopAsyncIteration:
                    return
                except Exception as exc:
                    raise self._translate(target, exc) from exc
                # warnings=False: litellm's Responses events hold usage of another type than
                # they declare, and pydantic warns about it on every stream.
                document, size = self._sized(target, dict(chunk.model_dump(warnings=False)))
                budget -= size
                if budget < 0:
                    raise too_large(target)
                yield document

        try:
            yield chunks()
        finally:
            # Close the provider's stream (and its connection), as HTTPUpstream does: a
            # stream abandoned at a deadline or by the client must not keep generating.
            close = getattr(response, "aclose", None)
            if close is not None:
                await close()

    async def aclose(self) -> None:
        # litellm caches its provider clients per process; close them with the event loop.
        await self._litellm.close_litellm_async_clients()
