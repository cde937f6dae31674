"""The OpenAI endpoints basguard does not decide on, forwarded unguarded to a model's upstream.

Embeddings, moderations, audio, images, files, batches and any other ``/v1/...`` path: the
tenant's key is checked and its ``passthrough`` setting applied, the upstream's key comes from
the environment (as for chat), and bodies flow through without being held whole:

- a JSON body is read (bounded by ``max_body_bytes``) because its ``model`` field picks the
  upstream, and is sent on with the upstream's name for the model; any other body (multipart
  audio and file uploads, binary parts) streams up as it arrives, routed to the tenant's
  ``default_model``, as is a request without a body;
- the upstream's response streams back chunk by chunk, its bytes untouched (compressed bodies
  stay compressed: the session does not decompress);
- the path is the canonical one the request was routed by (:mod:`proxy.http.request_path`), below
  the model's ``base_url`` (:meth:`proxy.upstream.target.UpstreamTarget.url_for`); the guarded
  endpoints and everything below them (stored chat completions and responses, which can hold
  a withheld answer) are never passed, however their names are cased;
- only an allowlist of the client's headers goes up (content negotiation, the OpenAI beta and
  idempotency headers, the SDKs' own): never its ``Authorization``, ``OpenAI-Organization``,
  ``OpenAI-Project`` or ``Cookie``, since the request goes out with the upstream's key, and the
  organization and project that key acts for come from the model's config; hop-by-hop headers
  (RFC 9110 §7.6.1, and any the ``Connection`` header names) are not sent back;
- an upstream error status becomes the gateway's envelope, through the one translation of
  upstream statuses (:func:`proxy.upstream.failures.upstream_status_error`): its body goes to
  the log, sanitised, never to the client. A failure after the response started cuts the connection
  (the body's own format, binary or not, has no error event).

Timeouts: connecting, and each read, wait at most the model's ``timeout_seconds``; the whole
exchange has no total deadline (a large file download may take longer than one answer).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from starlette.requests import ClientDisconnect
from starlette.responses import StreamingResponse
from starlette.types import Send

from policies.schema import PASSTHROUGH_FAMILIES
from proxy.errors import (
    EndpointNotAllowed,
    EndpointNotFound,
    GatewayError,
    InvalidRequest,
    MethodNotAllowed,
    ModelNotFound,
    PayloadTooLarge,
)
from proxy.runtime.state import RuntimeState, TenantRuntime
from proxy.upstream.failures import TRANSPORT_ERRORS, transport_error, upstream_status_error
from proxy.upstream.target import UpstreamTarget

__all__ = [
    "GUARDED_PATHS",
    "ForwardedResponse",
    "Passthrough",
    "PassthroughReply",
    "endpoint_family",
    "forwarded_headers",
    "headers_sent_up",
]

logger = logging.getLogger("basguard.passthrough")

GUARDED_PATHS = frozenset({"chat/completions", "completions", "responses"})
"""Paths basguard decides on: never passed through, whatever the method."""
_OWN_PATHS = frozenset({"feedback", "feedback/withheld", "models"})
"""basguard's own routes (a method they do not serve is a 405, not a passthrough)."""
_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
    "te", "trailer", "transfer-encoding", "upgrade",
})
SENT_UP = frozenset({
    # content negotiation, and a body's own description (its length is set apart)
    "accept", "accept-encoding", "accept-language", "content-type", "content-encoding",
    # what the OpenAI API reads beside the body: beta features, safe retries, the API version
    "openai-beta", "idempotency-key", "openai-version",
    "user-agent",
})
"""The client's headers a passed-through request carries up. An allowlist: anything else a
client sends (its key, ``OpenAI-Organization``, ``OpenAI-Project``, ``Cookie``, a header some
upstream reads as identity) could steer what basguard's key acts for."""
SENT_UP_PREFIXES = ("x-stainless-",)
"""The openai SDKs' own request metadata (retry count, language, timeout): harmless, and what
upstream logs use."""
# Not sent back: hop-by-hop, and what the gateway's server writes itself.
_NOT_SENT_BACK = _HOP_BY_HOP | {"date", "server"}
_ERROR_BODY_BYTES = 65_536
_BODYLESS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})


def endpoint_family(path: str) -> str:
    """The bounded name of ``path`` (after ``/v1/``): its first segment if it is a known OpenAI
    endpoint family, whatever its case (an upstream may route without case), else ``other``."""
    first = path.split("/", 1)[0].lower()
    return first if first in PASSTHROUGH_FAMILIES else "other"


def headers_sent_up(headers: Mapping[str, str]) -> dict[str, str]:
    """The client's headers a passed-through request (or WebSocket) carries upstream: only
    those of :data:`SENT_UP`, or with a prefix of :data:`SENT_UP_PREFIXES`, that the
    ``Connection`` header does not name."""
    named = _connection_tokens(headers)
    return {name: value for name, value in headers.items()
            if (name.lower() in SENT_UP or name.lower().startswith(SENT_UP_PREFIXES))
            and name.lower() not in named}


def _connection_tokens(headers: Mapping[str, str]) -> set[str]:
    value = headers.get("connection", "")
    return {token.strip().lower() for token in value.split(",") if token.strip()}


def forwarded_headers(headers: Mapping[str, str], dropped: frozenset[str]) -> dict[str, str]:
    """``headers`` without ``dropped`` ones and without those the Connection header names."""
    named = _connection_tokens(headers)
    return {name: value for name, value in headers.items()
            if name.lower() not in dropped and name.lower() not in named}


@dataclass(frozen=True)
class PassthroughReply:
    """An upstream response on its way back: status, headers, and its body as it arrives."""

    status: int
    headers: dict[str, str]
    body: AsyncIterator[bytes]
    family: str


class Passthrough:
    """Forwards requests to a model's upstream over its own pooled aiohttp session."""

    def __init__(self, on_forwarded: Callable[[str, str, str], None] | None = None) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._on_forwarded = on_forwarded or (lambda tenant, family, outcome: None)

    def session(self) -> aiohttp.ClientSession:
        """The pooled session passed-through requests (and WebSockets) go out on."""
        # Its own session: bodies pass as bytes (no decompression), and created on first use,
        # inside the server's event loop, as aiohttp requires.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=30),
                auto_decompress=False, skip_auto_headers=("User-Agent", "Accept-Encoding"),
            )
        return self._session

    @staticmethod
    def check_path(method: str, path: str) -> str:
        """The endpoint family of ``path``; guarded and gateway paths, and everything below a
        guarded one, are never passed through, however they are cased."""
        lowered = path.lower()
        for guarded in GUARDED_PATHS | _OWN_PATHS:
            if lowered != guarded:
                continue
            if path != guarded:  # a route exists for the lower-case spelling only
                raise EndpointNotFound(f"no such endpoint: /v1/{path} (paths are "
                                       f"case-sensitive: /v1/{guarded})")
            raise MethodNotAllowed(f"{method} is not allowed on /v1/{path}")
        for guarded in GUARDED_PATHS:
            if lowered.startswith(guarded + "/"):
                raise EndpointNotAllowed(
                    f"/v1/{path} is not passed through: basguard guards /v1/{guarded}, and "
                    "what lies below it (stored completions and responses) can hold an answer "
                    "it withheld", code="guarded_endpoint")
        return endpoint_family(path)

    @staticmethod
    def target(state: RuntimeState, tenant: TenantRuntime, model: Any) -> UpstreamTarget:
        """The upstream of ``model`` (the body's), or of the tenant's ``default_model``."""
        if model is None:
            model = tenant.drop_in.default_model
            if model is None:
                raise InvalidRequest(
                    "this request names no model, and the tenant has no default_model to "
                    "route it to", param="model")
        target = state.models.get(model) if isinstance(model, str) else None
        if target is None:
            raise ModelNotFound(
                f"the model {model!r} does not exist; available: {', '.join(sorted(state.models))}",
                param="model")
        if target.base_url is None:
            raise InvalidRequest(
                f"the model {target.public_name!r} is served through litellm without a base_url; "
                "only chat and completions reach it (passthrough needs an OpenAI-compatible "
                "base URL)", code="passthrough_unavailable")
        return target

    async def forward(
        self, *, state: RuntimeState, tenant: TenantRuntime, method: str, path: str,
        query: str, headers: Mapping[str, str], body: AsyncIterator[bytes], max_json_bytes: int,
    ) -> PassthroughReply:
        """Send the request upstream; returns once the upstream's status and headers are in."""
        family = self.check_path(method, path)
        if not tenant.drop_in.passes(family):
            raise EndpointNotAllowed(
                f"/v1/{path} is not enabled for this tenant (its passthrough setting)")
        content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        sent_headers = headers_sent_up(headers)
        data: bytes | AsyncIterator[bytes] | None
        if method in _BODYLESS:
            target, data = self.target(state, tenant, None), None
        elif content_type == "application/json":
            document = await _read_json_body(body, max_json_bytes)
            model = document.get("model") if isinstance(document, dict) else None
            target = self.target(state, tenant, model)
            if model is not None:
                document["model"] = target.model
            data = orjson.dumps(document)
        else:
            target, data = self.target(state, tenant, None), body
            if "content-length" in headers:
                # Streamed up with its declared length, not re-chunked.
                sent_headers["content-length"] = headers["content-length"]
        sent_headers.update(target.identity_headers())
        url = target.url_for(path, query)
        timeout = aiohttp.ClientTimeout(
            total=None, connect=min(5.0, target.timeout_seconds),
            sock_read=target.timeout_seconds)
        try:
            response = await self.session().request(
                method, url, data=data, headers=sent_headers, timeout=timeout,
                allow_redirects=False)
        except TRANSPORT_ERRORS as exc:
            if _client_left(exc):
                # The upload broke off on the client's side (it left, or the server ended a
                # body too slow): no upstream failure, and nobody to answer.
                raise ClientDisconnect from exc
            self._on_forwarded(tenant.name, family, "error")
            raise transport_error(target, exc) from exc
        if response.status >= 400:
            try:
                raw = await response.content.read(_ERROR_BODY_BYTES)
            except TRANSPORT_ERRORS:
                raw = b""
            finally:
                response.close()
            self._on_forwarded(tenant.name, family, f"{response.status // 100}xx")
            raise upstream_status_error(target, response.status, raw, response.headers)
        self._on_forwarded(tenant.name, family, f"{response.status // 100}xx")
        back = forwarded_headers(response.headers, _NOT_SENT_BACK)
        back["x-basguard-passthrough"] = family
        return PassthroughReply(response.status, back, _body(target, response), family)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


async def _read_json_body(body: AsyncIterator[bytes], limit: int) -> Any:
    received = bytearray()
    async for piece in body:
        received += piece
        if len(received) > limit:
            raise PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")
    if not received:
        return {}
    try:
        return orjson.loads(received)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None


def _client_left(error: BaseException) -> bool:
    """Whether ``error`` (aiohttp's, sending a streamed body) came from the client's body."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ClientDisconnect):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class _UpstreamCut(Exception):
    """The upstream's body broke off after the response had started."""


async def _body(target: UpstreamTarget, response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The upstream's body as it arrives; closing it (a client that left) drops the upstream
    connection, which stops the upstream's work."""
    try:
        async for piece in response.content.iter_any():
            yield piece
    except TRANSPORT_ERRORS as exc:
        error: GatewayError = transport_error(target, exc)
        logger.warning("passthrough for model %r broke off: %s", target.public_name,
                       error.message)
        raise _UpstreamCut from exc
    finally:
        response.close()


class ForwardedResponse(StreamingResponse):
    """A passed-through body. If the upstream's body breaks off, the response is left
    incomplete, so the server closes the connection: the client sees a cut, never a body that
    ends as if it were whole (and it is no internal error of the gateway)."""

    async def stream_response(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        try:
            async for chunk in self.body_iterator:
                assert isinstance(chunk, bytes)  # _body yields bytes
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except _UpstreamCut:
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})
