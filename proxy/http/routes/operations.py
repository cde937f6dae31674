"""The operational endpoints: Prometheus metrics, liveness and readiness. They take no request
slot (see :class:`proxy.http.concurrency.ConcurrencyLimit`), so probes answer under overload."""

from __future__ import annotations

from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from proxy.errors import ServiceNotReady
from proxy.http.routes.context import config_store, decision_store, gateway_metrics, metrics_key
from proxy.runtime.state import RuntimeState
from proxy.store import DecisionStore

__all__ = ["healthz", "prometheus_metrics", "readyz"]


async def prometheus_metrics(request: Request) -> Response:
    """Prometheus exposition of the gateway's metrics (needs the metrics key, if one is set)."""
    metrics_key(request).require(request.headers.get("authorization"))
    registry = gateway_metrics(request).registry
    # Scraping reads the decision store's totals: off the event loop, like any disk read.
    exposition = await run_in_threadpool(generate_latest, registry)
    return Response(exposition, media_type=CONTENT_TYPE_LATEST)


async def healthz(request: Request) -> Response:
    """Liveness: the process serves HTTP."""
    return Response(b'{"status":"ok"}', media_type="application/json")


async def readyz(request: Request) -> Response:
    """Readiness: a config is loaded with its calibrators, and upstreams are configured.

    The status is open (probes carry no key); the detail (tenants, models, calibrator
    versions) is shown only to the metrics key.
    """
    state = config_store(request).current
    if not state.models or not state.tenants:
        raise ServiceNotReady("no upstream models or tenants are configured")
    _require_store(decision_store(request))
    document: dict[str, Any] = {"status": "ready", "store": "ok"}
    if metrics_key(request).presented(request.headers.get("authorization")):
        document |= _readiness_detail(state)
    return Response(orjson.dumps(document), media_type="application/json")


def _require_store(decisions: DecisionStore) -> None:
    if not decisions.writer_alive:
        raise ServiceNotReady("the decision store's writer has stopped: decisions are not "
                              "stored (see the log)", code="store_unavailable")
    if not decisions.connected:
        # Not ready, so that a rollout with a wrong database URL stalls instead of replacing
        # working pods; the process keeps serving the traffic it gets and queues decisions.
        raise ServiceNotReady("the decision store is unreachable: decisions are queued, "
                              "labels get 503 (see the log)", code="store_unavailable")


def _readiness_detail(state: RuntimeState) -> dict[str, Any]:
    """The loaded tenants, models and calibrator versions: for the metrics key only."""
    return {
        "tenants": sorted(state.tenants),
        "models": sorted(state.models),
        "calibrators": {
            name: {
                "default": tenant.default_calibrator.version,
                **{model: c.version for model, c in tenant.model_calibrators.items()},
            }
            for name, tenant in state.tenants.items()
        },
    }
