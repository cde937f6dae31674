"""A taken port is one line naming the option that moves the server, not uvicorn's
``[Errno 98]``; and ``basguard --version``. Through the real ``basguard`` command."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import openai_only_config, write_config


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield int(taken.getsockname()[1])


def basguard(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy.cli", *argv], capture_output=True,
                          text=True, timeout=120, check=False, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("how", ["--port", "BASGUARD_PORT", "--workers 2"])
def test_serve_on_a_taken_port_says_which_option_moves_it(
    how: str, taken_port: int, fake_upstream: tuple[FakeUpstream, str], tmp_path: Path
) -> None:
    config = write_config(tmp_path, openai_only_config(fake_upstream[1]))
    argv = ["serve", "--config", str(config), "--store", str(tmp_path / "d.sqlite3")]
    env = {"FAKE_UPSTREAM_KEY": "sk-x"}
    if how == "BASGUARD_PORT":
        env["BASGUARD_PORT"] = str(taken_port)
    else:
        argv += ["--port", str(taken_port)]
    if how == "--workers 2":
        argv += ["--workers", "2"]
    done = basguard(*argv, env=env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"basguard: error: port {taken_port} is already in use on 127.0.0.1 (another basguard, "
        f"or another server: `ss -ltnp 'sport = :{taken_port}'` names it); choose another port "
        "with --port N or BASGUARD_PORT")
    assert "Errno" not in done.stderr and "Traceback" not in done.stderr


def test_version() -> None:
    from importlib.metadata import version

    done = basguard("--version")
    assert done.returncode == 0 and done.stdout == f"basguard {version('basguard')}\n"
