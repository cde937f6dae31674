"""Fixtures: a gateway with the ops console, in front of the session's fake upstream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.admin_console import ADMIN_ENV, ADMIN_KEY, serve_console
from tests.support.fake_upstream import FakeUpstream


@pytest.fixture
def console_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-upstream-secret-0123456789")
    monkeypatch.setenv(ADMIN_ENV, ADMIN_KEY)
    return tmp_path


@pytest.fixture
def console(fake_upstream: tuple[FakeUpstream, str], console_dir: Path) -> Iterator[str]:
    """The gateway's base URL; the console is under /admin."""
    fake_upstream[0].clear()
    with serve_console(console_dir, fake_upstream[1]) as url:
        yield url
