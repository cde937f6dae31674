"""The gateway's routes, in the order Starlette matches them.

Each route is thin: it parses the request, calls a service (built once by
:func:`proxy.http.app.create_app` and found on ``app.state``), and maps the result to a response.
One module per concern: the guarded endpoints, feedback, models, the passthrough (HTTP and
WebSockets) and the operational endpoints.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Route, WebSocketRoute

from proxy.http.routes import feedback, guarded, models, operations, passthrough

__all__ = ["guarded_routes", "routes"]

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
