"""What a route reads besides its path: the gateway's parts (its app's
:class:`~proxy.http.services.GatewayServices`), the authenticated tenant, and the JSON body."""

from __future__ import annotations

from typing import Any

from starlette.requests import ClientDisconnect, HTTPConnection, Request

from proxy.http.draining import InFlight
from proxy.observability.metrics import GatewayMetrics
from proxy.observability.metrics_key import MetricsKey
from proxy.runtime.reload import ConfigStore
from proxy.runtime.state import RuntimeState, TenantRuntime
from proxy.store import DecisionStore
from proxy.wire.request_body import check_size, json_object

__all__ = [
    "authenticated",
    "config_store",
    "decision_store",
    "gateway_metrics",
    "header",
    "in_flight",
    "is_ascii_digits",
    "metrics_key",
    "read_json",
]


def config_store(connection: HTTPConnection) -> ConfigStore:
    config: ConfigStore = connection.app.services.config
    return config


def decision_store(request: Request) -> DecisionStore:
    decisions: DecisionStore = request.app.services.decisions
    return decisions


def gateway_metrics(request: Request) -> GatewayMetrics:
    metrics: GatewayMetrics = request.app.services.metrics
    return metrics


def in_flight(request: Request) -> InFlight:
    tracked: InFlight = request.app.services.in_flight
    return tracked


def metrics_key(request: Request) -> MetricsKey:
    key: MetricsKey = request.app.services.metrics_key
    return key


def authenticated(request: Request) -> tuple[RuntimeState, TenantRuntime]:
    """The current config and the tenant whose key the request carries.

    The config is read once: the request finishes on it, whatever a reload swaps in meanwhile.
    """
    state = config_store(request).current
    return state, state.authenticate(header(request, b"authorization"))


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object, refused (413) as soon as it is known to exceed ``limit``."""
    declared = header(request, b"content-length")
    if declared is not None and is_ascii_digits(declared):
        check_size(int(declared), limit)
    # From ``receive`` itself rather than Starlette's ``stream()``: a body nearly always comes
    # in one message (the server holds a request back until its body is whole, or 64 KiB of it
    # have come), and is then parsed as it came, with no async generator and no copy.
    pieces: list[bytes] = []
    size = 0
    while True:
        message = await request.receive()
        if message["type"] != "http.request":
            raise ClientDisconnect  # the only other message a request's receive() gives
        piece = message.get("body", b"")
        size += len(piece)
        check_size(size, limit)
        if not message.get("more_body", False):
            break
        pieces.append(piece)
    return json_object(b"".join([*pieces, piece]) if pieces else piece, limit)


def header(connection: HTTPConnection, name: bytes) -> str | None:
    """The first value of the header ``name`` (lowercase, as ASGI servers give every name), read
    from the scope itself: Starlette's ``headers`` builds a mapping for each request, and its
    ``get`` raises and catches a ``KeyError`` for a header that is not there (a guarded request
    reads three, one of them usually absent)."""
    for key, value in connection.scope["headers"]:
        if key == name:
            return value.decode("latin-1")  # type: ignore[no-any-return]
    return None


def is_ascii_digits(value: str) -> bool:
    # str.isdigit alone also accepts other scripts' digits ("²", "١٢").
    return value.isascii() and value.isdigit()
