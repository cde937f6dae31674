"""Who may open the console, and what they see: no page or endpoint answers a tenant key or a
request without a key or session; POSTs need the session's CSRF token; logins are throttled; a
scoped reviewer sees and labels only its tenants; withheld answers appear in the review queue
and nowhere else the console or the gateway serves."""

from __future__ import annotations

import io
import re
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi.routing import APIRoute

from proxy.admin import api, login, pages
from proxy.admin.context import SESSION_COOKIE
from proxy.admin.sessions import LoginThrottle
from tests.support.admin_console import (
    ADMIN,
    ADMIN_KEY,
    REVIEWER,
    REVIEWER_KEY,
    ask,
    bearer,
    labelled_traffic,
    serve_console,
)
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import TENANT_KEYS
from tests.support.waiting import wait_until

TENANT = bearer(TENANT_KEYS["enforcer"])
QUERY = {"tenant": "enforcer"}


Clients = Callable[[str], httpx.Client]


@pytest.fixture
def clients() -> Iterator[Clients]:
    """``clients(url)``: a client that keeps cookies and follows no redirect, as a browser
    session does, closed when the test ends."""
    made: list[httpx.Client] = []

    def new(url: str) -> httpx.Client:
        made.append(httpx.Client(base_url=url, follow_redirects=False, timeout=60))
        return made[-1]

    yield new
    for client in made:
        client.close()


def console_routes() -> list[tuple[str, str]]:
    """Every (method, path) the console serves but the login form, from its routers."""
    found = [(method, route.path) for router in (api.router, pages.router, login.router)
             for route in router.routes if isinstance(route, APIRoute)
             for method in route.methods]
    found += [("GET", "/openapi.json")]
    return [(method, path) for method, path in found if path != "/login"]


def test_the_route_list_covers_every_page_and_endpoint() -> None:
    routes = console_routes()
    assert ("POST", "/api/review/label") in routes and ("GET", "/tenants") in routes
    assert ("POST", "/calibrators/promote") in routes and ("POST", "/logout") in routes
    assert len(routes) == 19  # 9 API endpoints, 8 pages and forms, logout, the schema


@pytest.mark.parametrize("credentials", [TENANT, {}, bearer("x" * 40)],
                         ids=["tenant key", "no key", "unknown key"])
def test_no_page_or_endpoint_answers_without_an_admin_key_or_session(
        console: str, credentials: dict[str, str]) -> None:
    ask(console, "enforcer", "q", content="SECRET-ANSWER", logprob=-2.3)
    for method, path in console_routes():
        response = httpx.request(method, f"{console}/admin{path}", headers=credentials,
                                 params=QUERY, data={"tenant": "enforcer", "model": "fake"},
                                 follow_redirects=False)
        where = f"{method} {path}"
        if path.startswith("/api/") or path == "/openapi.json" or method == "POST":
            assert response.status_code == 401, where
            assert response.headers["content-type"].startswith(
                "application/json" if path.startswith("/api/") or path == "/openapi.json"
                else "text/html"), where
        else:  # a page: to the login form
            assert response.status_code == 303, where
            assert response.headers["location"].startswith("/admin/login?next="), where
        assert "SECRET-ANSWER" not in response.text and "enforcer" not in response.text, where


def test_the_console_is_not_there_without_an_admin_section(gateway: str) -> None:
    base = gateway.removesuffix("/v1")
    for path in ("/admin/api/whoami", "/admin/tenants", "/admin/login"):
        response = httpx.get(base + path, headers=TENANT)
        assert response.status_code == 404, path
    assert httpx.get(base + "/admin/api/whoami").json()["error"]["code"] == "not_found"


def browser_login(client: httpx.Client, key: str = ADMIN_KEY) -> tuple[httpx.Client, str]:
    """Log in as a browser does: the form, its token and cookie, then the session cookie.
    Returns the client (now holding the cookie) and a CSRF token from a page."""
    form = client.get("/admin/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token is not None
    response = client.post("/admin/login", data={"key": key, "csrf_token": token.group(1),
                                                 "next": "/admin/review"})
    assert response.status_code == 303 and response.headers["location"] == "/admin/review"
    page = client.get("/admin/review")
    assert page.status_code == 200
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf is not None
    return client, csrf.group(1)


def test_a_login_gives_a_short_lived_http_only_strict_cookie(console: str, clients: Clients) -> None:
    client = clients(console)
    form = client.get("/admin/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token is not None
    response = client.post("/admin/login", data={"key": ADMIN_KEY, "csrf_token": token.group(1)})
    assert response.status_code == 303 and response.headers["location"] == "/admin/tenants"
    cookie = next(v for v in response.headers.get_list("set-cookie")
                  if v.startswith(SESSION_COOKIE))
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "samesite", "path", "max-age"} <= attributes
    assert "SameSite=strict" in cookie or "samesite=strict" in cookie.lower()
    assert "Path=/admin" in cookie and "Max-Age=1800" in cookie
    assert ADMIN_KEY not in cookie
    whoami = client.get("/admin/api/whoami").json()
    assert whoami["name"] == "admin" and whoami["session_expires"] > time.time() + 1700


@pytest.mark.parametrize("key", [TENANT_KEYS["enforcer"], "not-a-key-0123456789"],
                         ids=["tenant key", "unknown key"])
def test_a_login_with_another_key_is_refused(console: str, key: str,
                                             clients: Clients) -> None:
    client = clients(console)
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/admin/login").text)
    assert token is not None
    response = client.post("/admin/login", data={"key": key, "csrf_token": token.group(1)})
    assert response.status_code == 401 and "opens no console" in response.text
    assert SESSION_COOKIE not in response.headers.get("set-cookie", "")


def test_a_login_form_without_its_token_is_refused(console: str) -> None:
    response = httpx.post(f"{console}/admin/login", data={"key": ADMIN_KEY})
    assert response.status_code == 403 and "expired" in response.text
    assert SESSION_COOKIE not in response.headers.get("set-cookie", "")


def test_login_attempts_are_throttled(console: str, clients: Clients) -> None:
    client = clients(console)
    statuses = [client.post("/admin/login", data={"key": "wrong-0123456789abcdef"}).status_code
                for _ in range(LoginThrottle().attempts + 1)]
    assert statuses[:-1] == [403] * LoginThrottle().attempts
    assert statuses[-1] == 429
    limited = client.post("/admin/login", data={"key": ADMIN_KEY})
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1


def test_the_throttle_forgets_attempts_after_its_window() -> None:
    now = [0.0]
    throttle = LoginThrottle(attempts=2, window_seconds=60, clock=lambda: now[0])
    assert throttle.retry_after("a") is None and throttle.retry_after("a") is None
    assert throttle.retry_after("a") == pytest.approx(60)
    assert throttle.retry_after("b") is None  # per client
    now[0] = 60.5
    assert throttle.retry_after("a") is None


def test_posts_without_the_sessions_csrf_token_are_refused(console: str, clients: Clients) -> None:
    decided = ask(console, "enforcer", "q", content="x", logprob=-2.3)
    client, csrf = browser_login(clients(console))
    body = {"id": decided.id, "choice": 0, "correct": True, "expected": None}
    for headers in ({}, {"x-csrf-token": "forged"}):
        refused = client.post("/admin/api/review/label", json=body, headers=headers)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "csrf_failed"
    form = {"id": decided.id, "choice": "0", "correct": "true", "expected": ""}
    assert client.post("/admin/review/label", data=form).status_code == 403
    assert client.post("/admin/logout").status_code == 403
    # Another session's token is not this one's.
    _, other = browser_login(clients(console))
    assert other != csrf
    assert client.post("/admin/api/review/label", json=body,
                       headers={"x-csrf-token": other}).status_code == 403
    assert client.get("/admin/api/review/queue").json()["data"][0]["correct"] is None
    done = client.post("/admin/review/label", data={**form, "csrf_token": csrf})
    assert done.status_code == 303 and "done=correct" in done.headers["location"]
    # Logging out ends the session in the browser.
    out = client.post("/admin/logout", data={"csrf_token": csrf})
    assert out.status_code == 303
    assert client.get("/admin/api/whoami").status_code == 401


def test_a_session_ends_when_its_key_leaves_the_config(
        fake_upstream: tuple[FakeUpstream, str], console_dir: Path, clients: Clients) -> None:
    with serve_console(console_dir, fake_upstream[1], reload_interval_seconds=0.05) as url:
        client, _ = browser_login(clients(url), REVIEWER_KEY)
        assert client.get("/admin/api/whoami").status_code == 200
        path = console_dir / "basguard.yaml"
        config = yaml.safe_load(path.read_text())
        del config["admin"]["reviewers"]
        path.write_text(yaml.safe_dump(config))
        wait_until(lambda: client.get("/admin/api/whoami").status_code == 401,
                   what="the reload to end the reviewer's session")
        assert httpx.get(f"{url}/admin/api/whoami", headers=ADMIN).status_code == 200


def test_after_login_the_browser_goes_only_to_a_console_page(console: str, clients: Clients) -> None:
    client = clients(console)
    for target in ("//evil.example/x", "https://evil.example/", "/admin/../v1/models",
                   "/admin/%2e%2e/v1/models", "/admin//evil.example", "/adminx", "/admin/login",
                   "/admin/review?tenant=enforcer"):
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/admin/login").text)
        assert token is not None
        response = client.post("/admin/login", data={"key": ADMIN_KEY, "next": target,
                                                     "csrf_token": token.group(1)})
        expected = target if target == "/admin/review?tenant=enforcer" else "/admin/tenants"
        assert response.headers["location"] == expected, target


def test_a_scoped_reviewer_sees_and_labels_only_its_tenants(console: str) -> None:
    theirs = ask(console, "annotator", "q", content="theirs", logprob=-2.3)
    other = ask(console, "enforcer", "q", content="SECRET-OTHER-TENANT", logprob=-2.3)
    queue = httpx.get(f"{console}/admin/api/review/queue", headers=REVIEWER).json()["data"]
    assert [item["id"] for item in queue] == [theirs.id]
    refused = httpx.get(f"{console}/admin/api/review/queue", headers=REVIEWER,
                        params={"tenant": "enforcer"})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "tenant_not_found"
    label = httpx.post(f"{console}/admin/api/review/label", headers=REVIEWER,
                       json={"id": other.id, "choice": 0, "correct": True, "expected": None})
    assert label.status_code == 404 and label.json()["error"]["code"] == "decision_not_found"
    unchanged = httpx.get(f"{console}/admin/api/review/queue", headers=ADMIN,
                          params={"tenant": "enforcer"}).json()["data"]
    assert unchanged[0]["id"] == other.id and unchanged[0]["correct"] is None
    tenants = httpx.get(f"{console}/admin/api/tenants", headers=REVIEWER).json()["tenants"]
    assert [t["name"] for t in tenants] == ["annotator"]
    for path, params in (("/admin/api/simulate", QUERY), ("/admin/api/simulate/card", QUERY),
                         ("/admin/simulator", QUERY), ("/admin/review", QUERY)):
        response = httpx.get(f"{console}{path}", headers=REVIEWER, params=params)
        assert response.status_code == 400, path
        assert "SECRET-OTHER-TENANT" not in response.text
    page = httpx.get(f"{console}/admin/review", headers=REVIEWER)
    assert "theirs" in page.text and "SECRET-OTHER-TENANT" not in page.text
    assert httpx.post(f"{console}/admin/api/review/label", headers=REVIEWER, json={
        "id": theirs.id, "choice": 0, "correct": True, "expected": None}).status_code == 200
    forbidden = httpx.post(f"{console}/admin/api/calibrators/fit", headers=REVIEWER,
                           json={"tenant": "annotator", "model": "fake"})
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "operator_only"


def test_withheld_answers_show_in_the_review_queue_and_nowhere_else(console: str) -> None:
    secret = "SECRET-WITHHELD-ANSWER-42"
    labelled_traffic(console, "enforcer", 10)
    chat = httpx.post(f"{console}/v1/chat/completions", headers=TENANT, json={
        "model": "fake", "messages": [{"role": "user", "content": '{"fake": {"content": "'
                                       + secret + '", "logprobs": [-3.0]}}'}]})
    assert chat.status_code == 200 and secret not in chat.text
    shown = [httpx.get(f"{console}/admin/api/review/queue", headers=ADMIN),
             httpx.get(f"{console}/admin/review", headers=ADMIN)]
    for response in shown:
        assert secret in response.text
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["referrer-policy"] == "no-referrer"
    elsewhere: list[httpx.Response] = [
        httpx.get(f"{console}/metrics"),
        httpx.get(f"{console}/readyz"),
        httpx.get(f"{console}/admin/api/tenants", headers=ADMIN),
        httpx.get(f"{console}/admin/tenants", headers=ADMIN),
        httpx.get(f"{console}/admin/api/simulate", headers=ADMIN, params=QUERY),
        httpx.get(f"{console}/admin/simulator", headers=ADMIN, params=QUERY),
        httpx.get(f"{console}/admin/calibrators", headers=ADMIN),
        httpx.get(f"{console}/admin/openapi.json", headers=ADMIN),
    ]
    for response in elsewhere:
        assert response.status_code == 200, response.url
        assert secret not in response.text, response.url
    card = httpx.get(f"{console}/admin/api/simulate/card", headers=ADMIN, params=QUERY,
                     timeout=120)
    archive = zipfile.ZipFile(io.BytesIO(card.content))
    assert all(secret.encode() not in archive.read(name) for name in archive.namelist())
    # The page's links and forms never put it in a URL (a referrer, a log line).
    assert secret not in " ".join(re.findall(r'href="([^"]*)"', shown[1].text))


def test_every_console_response_forbids_framing_sniffing_and_inline_script(console: str) -> None:
    responses: list[Any] = [httpx.get(f"{console}/admin/login"),
                            httpx.get(f"{console}/admin/api/whoami", headers=ADMIN),
                            httpx.get(f"{console}/admin/api/whoami")]
    for response in responses:
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert response.headers["cache-control"] == "no-store"
    assert "<script>" not in responses[0].text  # only <script src=...>


def test_the_api_schema_and_docs_need_the_key(console: str) -> None:
    assert httpx.get(f"{console}/admin/openapi.json").status_code == 401
    assert httpx.get(f"{console}/admin/openapi.json", headers=TENANT).status_code == 401
    assert httpx.get(f"{console}/admin/openapi.json", headers=ADMIN).status_code == 200
    docs = httpx.get(f"{console}/admin/docs", follow_redirects=False)
    assert docs.status_code == 303 and docs.headers["location"].startswith("/admin/login")
    page = httpx.get(f"{console}/admin/docs", headers=ADMIN)
    assert page.status_code == 200 and "swagger-ui-bundle.js" in page.text
    assert "cdn" not in page.text.lower()
    static = httpx.get(f"{console}/admin/static/swagger-ui/swagger-ui-bundle.js")
    assert static.status_code == 200 and "cache-control" not in static.headers
