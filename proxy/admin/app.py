"""The ops console's application: FastAPI, mounted at ``/admin`` beside the ``/v1`` routes.

FastAPI here and not on ``/v1``: the console is an API with typed request and response models,
dependencies for who may do what, and an OpenAPI schema, which is what FastAPI is for; the chat
path is plain Starlette because FastAPI's routing and dependency injection cost about 17 % of
its CPU per request. The ``/v1`` routes match before the mount, so none of this runs for them.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.admin import api, login, pages
from proxy.admin.context import AdminParts, ApiCaller, base_path
from proxy.admin.promotion import CalibratorPromotions
from proxy.admin.sessions import LoginThrottle, SessionSigner
from proxy.errors import (
    EndpointNotFound,
    GatewayError,
    InvalidRequest,
    MethodNotAllowed,
    error_response,
)
from proxy.runtime.reload import ConfigStore
from proxy.store import DecisionStore

__all__ = ["ADMIN_PATH", "create_admin_app"]

ADMIN_PATH = "/admin"
"""Where :func:`proxy.http.app.create_app` mounts the console."""
_HERE = Path(__file__).parent
_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; "
    "object-src 'none'")


def create_admin_app(config: ConfigStore, decisions: DecisionStore, *,
                     session_secret: bytes) -> FastAPI:
    """The console over the gateway's config and decision store."""
    app = FastAPI(
        title="basguard ops console", version="1",
        summary="Tenants' live figures, the review queue, the policy simulator, and calibrator "
        "refits and promotions. Every endpoint needs an admin or reviewer key (the gateway "
        "config's `admin:` section) as `Authorization: Bearer KEY`, or a browser session.",
        openapi_url=None, docs_url=None, redoc_url=None,  # served below, behind the key
        exception_handlers={GatewayError: _gateway_error,
                            RequestValidationError: _validation_error,
                            StarletteHTTPException: _http_error},
    )
    app.state.parts = AdminParts(
        config=config, decisions=decisions, sessions=SessionSigner(session_secret),
        throttle=LoginThrottle(), promotions=CalibratorPromotions(config, decisions),
        templates=_templates())
    app.include_router(api.router)
    app.include_router(login.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=_HERE / "static"), name="static")

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request, caller: ApiCaller) -> JSONResponse:
        schema = {**app.openapi(), "servers": [{"url": base_path(request) or "/"}]}
        return JSONResponse(schema)

    app.add_middleware(SecurityHeaders)
    return app


def _templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=_HERE / "templates")
    templates.env.filters.update(num=_num, pct=_pct, signed=_signed, when=_when)
    return templates


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _num(value: Any, digits: int = 3) -> str:
    number = _finite(value)
    return "n/a" if number is None else f"{number:.{digits}f}"


def _pct(value: Any) -> str:
    number = _finite(value)
    return "n/a" if number is None else f"{100 * number:.1f} %"


def _signed(value: Any) -> str:
    number = _finite(value)
    return "n/a" if number is None else f"{number:+.3f}"


def _when(value: Any) -> str:
    number = _finite(value)
    return "n/a" if number is None else time.strftime("%Y-%m-%d %H:%M:%S UTC",
                                                      time.gmtime(number))


def _wants_json(request: Request) -> bool:
    path = request.url.path.removeprefix(base_path(request))
    return path.startswith("/api/") or path == "/openapi.json"


def _page_error(request: Request, error: GatewayError) -> Response:
    response = pages.render(request, "error.html", "Something went wrong",
                            status=error.status_code, message=error.message,
                            message_kind="error")
    for name, value in (error.headers or {}).items():
        response.headers[name] = value
    return response


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    if _wants_json(request):
        return error_response(exc, exc.headers)
    return _page_error(request, exc)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    where = [str(part) for part in first.get("loc", ()) if part not in ("body", "query")]
    error = InvalidRequest(f"{'.'.join(where) or 'request'}: {first.get('msg')}",
                           param=".".join(where) or None)
    return await _gateway_error(request, error)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code in (302, 303, 307) and exc.headers and "Location" in exc.headers:
        return RedirectResponse(exc.headers["Location"], status_code=exc.status_code)
    if exc.status_code == 405:
        return await _gateway_error(
            request, MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}"))
    return await _gateway_error(request,
                                EndpointNotFound(f"no such endpoint: {request.url.path}"))


class SecurityHeaders:
    """Headers on every console response: no framing, no sniffing, no referrer, a strict
    Content-Security-Policy (no inline script), and no caching except of the static files."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].removeprefix(str(scope.get("root_path", ""))).startswith(
            "/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"x-content-type-options", b"nosniff"),
                            (b"referrer-policy", b"no-referrer"),
                            (b"x-frame-options", b"DENY"),
                            (b"content-security-policy", _CONTENT_SECURITY_POLICY.encode())]
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
