"""Logging in and out of the console in a browser: the key for a short-lived session cookie.

The cookie is HttpOnly (no script reads it), SameSite=Strict (no other site's page sends it),
scoped to the console's path, and Secure when the request came over HTTPS. The login form has a
CSRF token of its own, bound to a nonce cookie, and attempts are throttled per client address.
"""

from __future__ import annotations

import logging
import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from proxy.admin.context import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    AdminParts,
    PageCaller,
    Parts,
    admin_keys,
    base_path,
)
from proxy.admin.pages import render
from proxy.errors import TooManyAttempts

__all__ = ["router"]

logger = logging.getLogger("basguard.admin")
router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)

_LOGIN_FORM_SECONDS = 600


def _cookie_path(request: Request) -> str:
    return base_path(request) or "/"


def _login_form(request: Request, parts: AdminParts, *, next_path: str,
                message: str | None = None, status: int = 200) -> HTMLResponse:
    keys = admin_keys(parts.config.current)
    nonce = secrets.token_urlsafe(16)
    response = render(request, "login.html", "Log in", status=status,
                      login_token=parts.sessions.login_form_token(nonce), next=next_path,
                      session_minutes=round(keys.session_seconds / 60), message=message,
                      message_kind="error")
    response.set_cookie(LOGIN_COOKIE, nonce, max_age=_LOGIN_FORM_SECONDS,
                        path=_cookie_path(request), secure=request.url.scheme == "https",
                        httponly=True, samesite="strict")
    return response


def _safe_next(request: Request, given: str) -> str:
    """Where to go after logging in: a page of the console (a plain path below it, no dot
    segments or escapes), never another site or another part of the gateway."""
    base = base_path(request)
    path, _, _ = given.partition("?")
    segments = path.removeprefix(f"{base}/").split("/")
    if (given.startswith(f"{base}/") and "\\" not in given and "%" not in path
            and all(segment not in ("", ".", "..") for segment in segments)
            and segments[0] != "login"):
        return given
    return f"{base}/tenants"


@router.get("/login")
async def login_page(request: Request, parts: Parts, next: str = "") -> HTMLResponse:
    return _login_form(request, parts, next_path=_safe_next(request, next))


@router.post("/login")
async def log_in(
    request: Request, parts: Parts, key: Annotated[str, Form(max_length=512)],
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    client = request.client.host if request.client is not None else "unknown"
    wait = parts.throttle.retry_after(client)
    if wait is not None:
        raise TooManyAttempts(f"too many login attempts; try again in {wait:.0f} s",
                              headers={"Retry-After": str(max(1, round(wait)))})
    target = _safe_next(request, next)
    if not parts.sessions.login_form_valid(request.cookies.get(LOGIN_COOKIE), csrf_token):
        return _login_form(request, parts, next_path=target, status=403,
                           message="The login form expired: enter the key again.")
    keys = admin_keys(parts.config.current)
    principal = keys.authenticate(key.strip())
    if principal is None:
        logger.warning("ops console: a failed login from %s", client)
        return _login_form(request, parts, next_path=target, status=401,
                           message="That key opens no console (a tenant key never does).")
    token, _ = parts.sessions.issue(principal, keys.session_seconds)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(SESSION_COOKIE, token, max_age=round(keys.session_seconds),
                        path=_cookie_path(request), secure=request.url.scheme == "https",
                        httponly=True, samesite="strict")
    response.delete_cookie(LOGIN_COOKIE, path=_cookie_path(request))
    logger.info("ops console: %s logged in from %s", principal.who, client)
    return response


@router.post("/logout")
async def log_out(request: Request, caller: PageCaller) -> Response:
    response = RedirectResponse(f"{base_path(request)}/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=_cookie_path(request), httponly=True,
                           samesite="strict")
    logger.info("ops console: %s logged out", caller.principal.who)
    return response
