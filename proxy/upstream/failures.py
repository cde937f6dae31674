"""Upstream failures, translated in one place: error statuses, transport failures, bad bodies.

Every provider reports through these, so a client sees the same envelope for the same failure
whichever provider served it; what an upstream said goes to the log sanitised, and only a
cleaned reason of a 4xx (:mod:`proxy.upstream.reason`) reaches the client.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import aiohttp
import orjson
from aiohttp.http_exceptions import HttpProcessingError

from proxy.errors import (
    GatewayError,
    UpstreamError,
    UpstreamInvalidResponse,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamResponseTooLarge,
    UpstreamTimeout,
    sanitize,
)
from proxy.upstream.http1 import ConnectFailed, Disconnected, HTTPClientError, MalformedResponse
from proxy.upstream.reason import rejection_reason, validation_failure
from proxy.upstream.target import UpstreamReply, UpstreamTarget

__all__ = [
    "TRANSPORT_ERRORS",
    "error_message",
    "invalid_json",
    "parse_reply",
    "too_large",
    "transport_error",
    "upstream_status_error",
]

logger = logging.getLogger("basguard.upstream")


def error_message(raw: bytes, status: int) -> str:
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
    message = error_message(raw, status)
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


TRANSPORT_ERRORS = (
    aiohttp.ClientError, HttpProcessingError, HTTPClientError, OSError, TimeoutError)
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
    if (isinstance(exc, aiohttp.ClientConnectorError | ConnectFailed)
            or type(exc) is aiohttp.ClientConnectionError):
        return UpstreamError(f"could not connect to the upstream for model {name!r}")
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError | OSError
                  | aiohttp.ClientPayloadError | Disconnected):
        # A payload error is a body cut short: the connection closed mid-response.
        return UpstreamError(f"the upstream for model {name!r} closed the connection")
    if isinstance(exc, aiohttp.ClientResponseError | HttpProcessingError | MalformedResponse):
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
