"""What a route reads besides its path: the gateway's parts on ``app.state`` (built once by
:func:`proxy.http.app.create_app`), the authenticated tenant, and the JSON body."""

from __future__ import annotations

from typing import Any

from starlette.requests import HTTPConnection, Request

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
    "in_flight",
    "is_ascii_digits",
    "metrics_key",
    "read_json",
]


def config_store(connection: HTTPConnection) -> ConfigStore:
    config: ConfigStore = connection.app.state.config
    return config


def decision_store(request: Request) -> DecisionStore:
    decisions: DecisionStore = request.app.state.decisions
    return decisions


def gateway_metrics(request: Request) -> GatewayMetrics:
    metrics: GatewayMetrics = request.app.state.metrics
    return metrics


def in_flight(request: Request) -> InFlight:
    tracked: InFlight = request.app.state.in_flight
    return tracked


def metrics_key(request: Request) -> MetricsKey:
    key: MetricsKey = request.app.state.metrics_key
    return key


def authenticated(request: Request) -> tuple[RuntimeState, TenantRuntime]:
    """The current config and the tenant whose key the request carries.

    The config is read once: the request finishes on it, whatever a reload swaps in meanwhile.
    """
    state = config_store(request).current
    return state, state.authenticate(request.headers.get("authorization"))


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object, refused (413) as soon as it is known to exceed ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None and is_ascii_digits(declared):
        check_size(int(declared), limit)
    body = bytearray()
    async for piece in request.stream():
        body += piece
        check_size(len(body), limit)
    return json_object(body, limit)


def is_ascii_digits(value: str) -> bool:
    # str.isdigit alone also accepts other scripts' digits ("²", "١٢").
    return value.isascii() and value.isdigit()
