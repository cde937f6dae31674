"""The gateway's parts the routes call, built once by :func:`proxy.http.app.create_app`."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.http.draining import InFlight
from proxy.http.responses_socket import ResponsesSocket
from proxy.observability.metrics import GatewayMetrics
from proxy.observability.metrics_key import MetricsKey
from proxy.runtime.reload import ConfigStore
from proxy.services.completions import GuardedCompletions
from proxy.services.passthrough import Passthrough
from proxy.services.realtime import WebSocketPassthrough
from proxy.services.responses import GuardedResponses
from proxy.store import DecisionStore

__all__ = ["GatewayServices"]


@dataclass(frozen=True, slots=True)
class GatewayServices:
    """What a route reads from its app (``request.app.services``, see
    :mod:`proxy.http.routes.context`).

    Typed attributes rather than Starlette's ``app.state``, whose every read is a failed lookup
    and a call of its ``__getattr__``: a guarded request reads four of them.
    """

    config: ConfigStore
    decisions: DecisionStore
    metrics: GatewayMetrics
    metrics_key: MetricsKey
    in_flight: InFlight
    completions: GuardedCompletions
    responses: GuardedResponses
    responses_socket: ResponsesSocket
    passthrough: Passthrough
    websockets: WebSocketPassthrough
