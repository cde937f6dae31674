"""The gateway's routes, in the order Starlette matches them.

Each route is thin: it parses the request, calls a service (built once by
:func:`proxy.http.app.create_app` and found on ``app.services``), and maps the result to a response.
One module per concern: the guarded endpoints, feedback, models, the passthrough (HTTP and
WebSockets) and the operational endpoints. The ops console (:mod:`proxy.admin`, a FastAPI
application) is mounted after all of them: a ``/v1`` request is routed by Starlette alone.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.types import ASGIApp

from proxy.http.routes import feedback, guarded, models, operations, passthrough

__all__ = ["gateway_routes", "guarded_routes", "routes"]

guarded_routes = {
    "/v1/chat/completions": guarded.chat_completions,
    "/v1/completions": guarded.completions,
    "/v1/responses": guarded.responses,
}
"""The guarded endpoints (POST only): also served by the fast path of
:class:`proxy.http.entry.GatewayApp`, which the routes below back."""

routes: list[BaseRoute] = [
    *(Route(path, endpoint, methods=["POST"]) for path, endpoint in guarded_routes.items()),
    Route("/v1/feedback", feedback.label, methods=["POST"]),
    Route("/v1/feedback/withheld", feedback.withheld_answers, methods=["GET"]),
    Route("/v1/models", models.list_models, methods=["GET"]),
    Route("/v1/models/{model:path}", models.retrieve_model, methods=["GET"]),
    Route("/metrics", operations.prometheus_metrics, methods=["GET"]),
    Route("/healthz", operations.healthz, methods=["GET"]),
    Route("/readyz", operations.readyz, methods=["GET"]),
    # Last: what no route above serves goes to the model's upstream, if the tenant allows it.
    Route("/v1/{path:path}", passthrough.forward,
          methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
    WebSocketRoute("/v1/{path:path}", passthrough.websocket),
]


async def _to_console(request: Request) -> Response:
    # A relative location (never built from the Host header) to the first page: a path with
    # a trailing slash is not canonical (proxy.wire.paths), so /admin/ is no page.
    return RedirectResponse("admin/tenants", status_code=303)


def gateway_routes(console: ASGIApp | None, path: str = "/admin") -> list[BaseRoute]:
    """The routes above, then the ops console under ``path`` (if there is one)."""
    if console is None:
        return list(routes)
    return [*routes, Route(path, _to_console, methods=["GET"]), Mount(path, app=console)]
