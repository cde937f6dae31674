"""The gateway's error hierarchy and its one mapping to the OpenAI error envelope.

::

    GatewayError                       status  type / code
    ├── InvalidRequest                   400   invalid_request_error
    │   ├── MalformedHTTP                400   invalid_request_error / malformed_http
    │   ├── InvalidPath                  400   invalid_request_error / invalid_path
    │   ├── RequestHeadTimeout           408   invalid_request_error / request_timeout
    │   ├── RequestBodyTimeout           408   invalid_request_error / body_timeout
    │   └── HeadersTooLarge              431   invalid_request_error / headers_too_large
    ├── AuthenticationFailed             401   authentication_error / invalid_api_key
    ├── ModelNotFound                    404   invalid_request_error / model_not_found
    ├── EndpointNotFound                 404   invalid_request_error / not_found
    ├── DecisionNotFound                 404   invalid_request_error / decision_not_found
    ├── Forbidden                        403   permission_error / forbidden
    ├── Conflict                         409   invalid_request_error / conflict
    │   └── LabelConflict                409   invalid_request_error / label_conflict
    ├── TooManyAttempts                  429   rate_limit_error / too_many_attempts
    ├── EndpointNotAllowed               403   permission_error / endpoint_not_allowed
    ├── MethodNotAllowed                 405   invalid_request_error / method_not_allowed
    ├── PayloadTooLarge                  413   invalid_request_error / payload_too_large
    ├── AnswerWithheld                   422   abstention / answer_withheld
    ├── InternalError                    500   server_error / internal_error
    ├── ConfidenceUnavailable            502   upstream_error / confidence_unavailable
    ├── StoreUnavailable                 503   service_unavailable / store_unavailable
    ├── ServiceNotReady                  503   service_unavailable
    │   ├── ServerBusy                   503   service_unavailable / server_busy
    │   └── ShuttingDown                 503   service_unavailable / shutting_down
    └── UpstreamError                    502   upstream_error
        ├── UpstreamRejected             4xx   the upstream's own client error, passed on
        ├── UpstreamRateLimited          429   rate_limit_error / upstream_rate_limited
        ├── UpstreamTimeout              504   upstream_error / upstream_timeout
        ├── UpstreamInvalidResponse      502   upstream_error / upstream_invalid_response
        └── UpstreamResponseTooLarge     502   upstream_error / upstream_response_too_large

MalformedHTTP, RequestHeadTimeout, RequestBodyTimeout, HeadersTooLarge and ServerBusy (for
connections) are raised by
the HTTP server itself (``proxy.http.protocol``, ``proxy.http.server``) around the app, and
written in the same envelope.

The HTTP status carries the number (the openai SDK picks its exception class by status); ``code``
is a short string. Messages are fixed texts naming the model: what an upstream said goes to the
log (through :func:`sanitize`), never to the client, since it can quote keys and internals.

``ConfidenceUnavailable`` keeps the 502 and ``upstream_error`` type it always had, but it is not
an :class:`UpstreamError`: the upstream answered, the decision is recorded (as
``no_confidence``), and it is not counted as an upstream failure.
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
    "Conflict",
    "DecisionNotFound",
    "EndpointNotAllowed",
    "EndpointNotFound",
    "Forbidden",
    "GatewayError",
    "HeadersTooLarge",
    "InternalError",
    "InvalidPath",
    "InvalidRequest",
    "LabelConflict",
    "MalformedHTTP",
    "MethodNotAllowed",
    "ModelNotFound",
    "PayloadTooLarge",
    "RequestBodyTimeout",
    "RequestHeadTimeout",
    "ServerBusy",
    "ServiceNotReady",
    "ShuttingDown",
    "StoreUnavailable",
    "TooManyAttempts",
    "UpstreamError",
    "UpstreamInvalidResponse",
    "UpstreamRateLimited",
    "UpstreamRejected",
    "UpstreamResponseTooLarge",
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
    headers: dict[str, str] | None = None
    """Extra response headers (``Retry-After``, a decision's ``x-basguard-*``)."""

    def __init__(
        self, message: str, *, param: str | None = None, code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if headers is not None:
            self.headers = headers


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


class EndpointNotAllowed(GatewayError):
    """An endpoint the tenant's ``passthrough`` setting does not open."""

    status_code = 403
    error_type = "permission_error"
    code = "endpoint_not_allowed"


class DecisionNotFound(GatewayError):
    """No decision with this id belongs to the caller's tenant (another tenant's looks the same)."""

    status_code = 404
    error_type = "invalid_request_error"
    code = "decision_not_found"


class Forbidden(GatewayError):
    """The caller is known but may not do this (the ops console: a missing CSRF token, a
    reviewer asking to promote a calibrator)."""

    status_code = 403
    error_type = "permission_error"
    code = "forbidden"


class Conflict(GatewayError):
    """What the request was based on has changed since (a calibrator promoted meanwhile)."""

    status_code = 409
    error_type = "invalid_request_error"
    code = "conflict"


class LabelConflict(Conflict):
    """The decision's label is no longer the one the reviewer saw: someone labelled it since
    (the ops console's review queue; ``/v1/feedback`` keeps its last-label-wins)."""

    code = "label_conflict"


class TooManyAttempts(GatewayError):
    """Too many attempts from one client in a short time (the ops console's login)."""

    status_code = 429
    error_type = "rate_limit_error"
    code = "too_many_attempts"


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



class ServiceNotReady(GatewayError):
    status_code = 503
    error_type = "service_unavailable"


class InternalError(GatewayError):
    """A bug or an unforeseen failure in the gateway itself; the details are in the log."""

    code = "internal_error"


class ConfidenceUnavailable(GatewayError):
    """No confidence could be computed and the tenant's policy is ``on_missing_confidence: error``.

    Carries the decision's headers: the decision is recorded, so it can be labelled.
    """

    status_code = 502
    error_type = "upstream_error"
    code = "confidence_unavailable"


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


class UpstreamInvalidResponse(UpstreamError):
    """The upstream's reply is not the OpenAI wire format (bad JSON, wrong shapes)."""

    code = "upstream_invalid_response"


class UpstreamResponseTooLarge(UpstreamError):
    """The upstream's reply exceeds the model's ``max_response_bytes``."""

    code = "upstream_response_too_large"


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


class RequestBodyTimeout(InvalidRequest):
    """The request body did not arrive within ``body_timeout_seconds``, or slower than
    ``body_min_rate_bytes_per_second``."""

    status_code = 408
    code = "body_timeout"


class HeadersTooLarge(InvalidRequest):
    """The request line and headers exceed ``max_header_bytes``."""

    status_code = 431
    code = "headers_too_large"


class MalformedHTTP(InvalidRequest):
    """Bytes that do not parse as an HTTP/1.1 request."""

    code = "malformed_http"


class InvalidPath(InvalidRequest):
    """A request path with more than one reading (see :mod:`proxy.http.request_path`)."""

    code = "invalid_path"


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
