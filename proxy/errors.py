"""The gateway's error hierarchy and its one mapping to the OpenAI error envelope.

::

    GatewayError                     status  type / code
    ├── InvalidRequest                 400   invalid_request_error
    ├── AuthenticationFailed           401   authentication_error / invalid_api_key
    ├── ModelNotFound                  404   invalid_request_error / model_not_found
    ├── EndpointNotFound               404   invalid_request_error / not_found
    ├── MethodNotAllowed               405   invalid_request_error / method_not_allowed
    ├── PayloadTooLarge                413   invalid_request_error / payload_too_large
    ├── AnswerWithheld                 422   abstention / answer_withheld
    ├── ServiceNotReady                503   service_unavailable
    └── UpstreamError                  502   upstream_error
        ├── UpstreamRejected           4xx   the upstream's own client error, passed on
        ├── UpstreamRateLimited        429   rate_limit_error / upstream_rate_limited
        ├── UpstreamTimeout            504   upstream_error / upstream_timeout
        └── ConfidenceUnavailable      502   upstream_error / confidence_unavailable
    ServerBusy (ServiceNotReady)       503   service_unavailable / server_busy
    ShuttingDown (ServiceNotReady)     503   service_unavailable / shutting_down
    RequestHeadTimeout (InvalidRequest) 408  invalid_request_error / request_timeout
    HeadersTooLarge (InvalidRequest)   431   invalid_request_error / headers_too_large
    MalformedHTTP (InvalidRequest)     400   invalid_request_error / malformed_http

The last five are raised by the HTTP server itself (``proxy.http_protocol``, ``proxy.server``)
before or around the app, and written in the same envelope.

The HTTP status carries the number (the openai SDK picks its exception class by status); ``code``
is a short string. Messages never contain keys: anything from an upstream passes through
:func:`sanitize` first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import orjson
from starlette.responses import Response

__all__ = [
    "AnswerWithheld",
    "AuthenticationFailed",
    "ConfidenceUnavailable",
    "DecisionNotFound",
    "EndpointNotFound",
    "GatewayError",
    "HeadersTooLarge",
    "InvalidRequest",
    "MalformedHTTP",
    "MethodNotAllowed",
    "ModelNotFound",
    "PayloadTooLarge",
    "RequestHeadTimeout",
    "ServerBusy",
    "ServiceNotReady",
    "ShuttingDown",
    "StoreUnavailable",
    "UpstreamError",
    "UpstreamRateLimited",
    "UpstreamRejected",
    "UpstreamTimeout",
    "error_payload",
    "error_response",
    "sanitize",
]


class GatewayError(Exception):
    """Base of every error the gateway reports to a client."""

    status_code = 500
    error_type = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class InvalidRequest(GatewayError):
    status_code = 400
    error_type = "invalid_request_error"


class AuthenticationFailed(GatewayError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class ModelNotFound(GatewayError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class EndpointNotFound(GatewayError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "not_found"


class DecisionNotFound(GatewayError):
    """No decision with this id belongs to the caller's tenant (another tenant's looks the same)."""

    status_code = 404
    error_type = "invalid_request_error"
    code = "decision_not_found"


class StoreUnavailable(GatewayError):
    """The decision store could not take the write (disk full, database locked too long)."""

    status_code = 503
    error_type = "service_unavailable"
    code = "store_unavailable"


class MethodNotAllowed(GatewayError):
    status_code = 405
    error_type = "invalid_request_error"
    code = "method_not_allowed"


class PayloadTooLarge(GatewayError):
    status_code = 413
    error_type = "invalid_request_error"
    code = "payload_too_large"


class AnswerWithheld(GatewayError):
    """The tenant's ``abstain_action: error``: abstention as an error instead of a message.

    Carries the decision's headers (``x-basguard-id`` among them), so the client can still send
    feedback on the answer it did not get.
    """

    status_code = 422
    error_type = "abstention"
    code = "answer_withheld"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.headers = headers


class ServiceNotReady(GatewayError):
    status_code = 503
    error_type = "service_unavailable"


class UpstreamError(GatewayError):
    status_code = 502
    error_type = "upstream_error"
    code = "upstream_error"


class UpstreamRejected(UpstreamError):
    """A client error the upstream found in the request (for example an unsupported field)."""

    error_type = "invalid_request_error"
    code = "upstream_rejected"

    def __init__(self, message: str, *, status_code: int, param: str | None = None):
        super().__init__(message, param=param)
        self.status_code = status_code


class UpstreamRateLimited(UpstreamError):
    status_code = 429
    error_type = "rate_limit_error"
    code = "upstream_rate_limited"


class UpstreamTimeout(UpstreamError):
    status_code = 504
    code = "upstream_timeout"


class ConfidenceUnavailable(UpstreamError):
    """No logprobs came back and the tenant's policy is ``on_missing_confidence: error``."""

    code = "confidence_unavailable"


class ServerBusy(ServiceNotReady):
    """More requests in flight than ``max_concurrent_requests``, or connections than allowed."""

    code = "server_busy"


class ShuttingDown(ServiceNotReady):
    """The server is draining for a stop; ends a stream still open at the grace deadline."""

    code = "shutting_down"


class RequestHeadTimeout(InvalidRequest):
    """The request line and headers did not arrive within ``header_timeout_seconds``."""

    status_code = 408
    code = "request_timeout"


class HeadersTooLarge(InvalidRequest):
    """The request line and headers exceed ``max_header_bytes``."""

    status_code = 431
    code = "headers_too_large"


class MalformedHTTP(InvalidRequest):
    """Bytes that do not parse as an HTTP/1.1 request."""

    code = "malformed_http"


_SECRET_PATTERNS = re.compile(
    r"(sk-[A-Za-z0-9_\-]{6,}|(?i:bearer)\s+[A-Za-z0-9._\-]{6,}|(?i:api[_-]?key)[=:]\s*\S+)"
)


def sanitize(message: str, secrets: Iterable[str] = ()) -> str:
    """``message`` without known secret values or anything shaped like an API key."""
    for secret in secrets:
        if secret:
            message = message.replace(secret, "***")
    return _SECRET_PATTERNS.sub("***", message)


def error_payload(error: GatewayError) -> dict[str, dict[str, str | None]]:
    """The OpenAI error envelope of ``error``."""
    return {
        "error": {
            "message": error.message,
            "type": error.error_type,
            "param": error.param,
            "code": error.code,
        }
    }


def error_response(error: GatewayError, headers: dict[str, str] | None = None) -> Response:
    """The one place a :class:`GatewayError` becomes an HTTP response."""
    return Response(
        orjson.dumps(error_payload(error)),
        status_code=error.status_code,
        media_type="application/json",
        headers=headers,
    )
