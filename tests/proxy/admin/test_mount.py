"""The console is mounted after the /v1 routes: a chat request never enters FastAPI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.support.admin_console import ADMIN, ask, serve_console
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import TENANT_KEYS


@pytest.fixture
def fastapi_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The path of every request FastAPI's application is called with (no seam but the class:
    the app is built inside create_app)."""
    calls: list[str] = []
    original = FastAPI.__call__

    async def counted(self: FastAPI, scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope.get("path", ""))
        await original(self, scope, receive, send)

    monkeypatch.setattr(FastAPI, "__call__", counted)
    yield calls


def test_chat_and_the_other_v1_routes_never_reach_fastapi(
        fake_upstream: tuple[FakeUpstream, str], console_dir: Path,
        fastapi_calls: list[str]) -> None:
    with serve_console(console_dir, fake_upstream[1]) as url:
        decided = ask(url, "enforcer", "q", content="x", logprob=-0.1)
        tenant = {"authorization": f"Bearer {TENANT_KEYS['enforcer']}"}
        assert httpx.post(f"{url}/v1/feedback", headers=tenant,
                          json={"id": decided.id, "correct": True}).status_code == 200
        for path in ("/v1/models", "/metrics", "/healthz", "/v1/embeddings-nope"):
            httpx.get(f"{url}{path}", headers=tenant)
        assert fastapi_calls == []
        assert httpx.get(f"{url}/admin/api/whoami", headers=ADMIN).status_code == 200
        redirect = httpx.get(f"{url}/admin", follow_redirects=False)
        assert redirect.status_code == 303 and redirect.headers["location"] == "admin/tenants"
        assert fastapi_calls == ["/admin/api/whoami"]
