"""What the console's routes are given: the gateway's parts (built once by
:func:`proxy.http.app.create_app`), and who is asking, as FastAPI dependencies.

Two ways in: ``Authorization: Bearer KEY`` (scripts; no cookie, so no CSRF check), or the session
cookie a browser got from the login form, with the session's CSRF token on every POST (in the
``X-CSRF-Token`` header or the form's ``csrf_token`` field). A tenant key is never an admin key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.templating import Jinja2Templates

from proxy.admin.promotion import CalibratorPromotions
from proxy.admin.sessions import LoginThrottle, SessionSigner
from proxy.errors import AuthenticationFailed, EndpointNotFound, Forbidden
from proxy.runtime.admin_access import AdminKeys, AdminPrincipal
from proxy.runtime.bearer import bearer_key
from proxy.runtime.reload import ConfigStore
from proxy.runtime.state import RuntimeState
from proxy.store import DecisionStore

__all__ = [
    "CSRF_FIELD",
    "CSRF_HEADER",
    "LOGIN_COOKIE",
    "SESSION_COOKIE",
    "AdminParts",
    "ApiCaller",
    "Caller",
    "Operator",
    "PageCaller",
    "PageOperator",
    "Parts",
    "admin_keys",
    "base_path",
]

SESSION_COOKIE = "basguard_admin_session"
LOGIN_COOKIE = "basguard_admin_login"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class AdminParts:
    """The gateway's parts the console uses, and its own."""

    config: ConfigStore
    decisions: DecisionStore
    sessions: SessionSigner
    throttle: LoginThrottle
    promotions: CalibratorPromotions
    templates: Jinja2Templates


def _parts(request: Request) -> AdminParts:
    parts: AdminParts = request.app.state.parts
    return parts


Parts = Annotated[AdminParts, Depends(_parts)]


def base_path(request: Request) -> str:
    """Where the console is mounted (``/admin``), for the links it renders."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def admin_keys(state: RuntimeState) -> AdminKeys:
    """The config's console keys; without an ``admin:`` section the console does not exist."""
    if state.admin is None:
        raise EndpointNotFound("no such endpoint: the config has no `admin:` section")
    return state.admin


@dataclass(frozen=True)
class Caller:
    """Who is asking, and how: with a bearer key, or in a browser session."""

    principal: AdminPrincipal
    session: str | None = None
    """The session token (None: a bearer key)."""
    expires: float | None = None


async def _caller(request: Request, parts: AdminParts) -> Caller:
    keys = admin_keys(parts.config.current)
    authorization = request.headers.get("authorization")
    if authorization is not None:
        principal = keys.authenticate(bearer_key(authorization))
        if principal is None:
            raise AuthenticationFailed("this needs an admin or reviewer key (the config's "
                                       "`admin:` section): a tenant key does not open /admin")
        return Caller(principal)
    token = request.cookies.get(SESSION_COOKIE)
    claims = parts.sessions.verify(token)
    principal = None if claims is None else keys.principal(claims.name, claims.key_id)
    if token is None or claims is None or principal is None:
        raise AuthenticationFailed("log in at /admin/login, or send an admin key as "
                                   "'Authorization: Bearer KEY'")
    if request.method not in _SAFE_METHODS:
        presented = request.headers.get(CSRF_HEADER)
        if presented is None and request.headers.get("content-type", "").startswith(
                ("application/x-www-form-urlencoded", "multipart/form-data")):
            field = (await request.form()).get(CSRF_FIELD)
            presented = field if isinstance(field, str) else None
        if not parts.sessions.csrf_valid(token, presented):
            raise Forbidden("missing or wrong CSRF token: reload the page and try again",
                            code="csrf_failed")
    return Caller(principal, token, claims.expires)


_bearer = HTTPBearer(auto_error=False, scheme_name="adminKey",
                     description="An admin or reviewer key from the config's `admin:` section.")


async def _api_caller(
    request: Request, parts: Parts,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    return await _caller(request, parts)


async def _page_caller(request: Request, parts: Parts) -> Caller:
    """As :func:`_api_caller`, but a browser without a session is sent to the login form."""
    try:
        return await _caller(request, parts)
    except AuthenticationFailed:
        if request.method not in _SAFE_METHODS:
            raise
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise HTTPException(303, headers={
            "Location": f"{base_path(request)}/login?next={quote(target, safe='')}"}) from None


def _must_promote(caller: Caller) -> Caller:
    if not caller.principal.can_promote:
        raise Forbidden("fitting and promoting calibrators needs an operator key "
                        "(`admin: api_keys`); reviewers label decisions and read figures",
                        code="operator_only")
    return caller


async def _api_operator(caller: Annotated[Caller, Depends(_api_caller)]) -> Caller:
    return _must_promote(caller)


async def _page_operator(caller: Annotated[Caller, Depends(_page_caller)]) -> Caller:
    return _must_promote(caller)


ApiCaller = Annotated[Caller, Depends(_api_caller)]
PageCaller = Annotated[Caller, Depends(_page_caller)]
Operator = Annotated[Caller, Depends(_api_operator)]
PageOperator = Annotated[Caller, Depends(_page_operator)]
