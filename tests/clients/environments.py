"""The client environments that .ci/client-environments makes, and running a client program in
one of them against the gateway.

A client whose pins conflict with the main test environment runs in its own virtual
environment (``.venv-clients-<name>``, from ``tests/clients/<name>.txt``); the node clients
run from ``tests/clients/node/node_modules``. The test hands the program its cases as JSON on
stdin and reads one result per case as JSON on stdout. An environment that is missing, or
older than the file it was made from, is a failure under CI (``CI=true``) and a skip that says
what to run elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.clients.matrix import upstream_calls
from tests.support.fake_upstream import FakeUpstream

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
NODE = HERE / "node"


def _unavailable(why: str) -> None:
    message = f"{why}: run .ci/client-environments"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _made_from(stamp: Path, source: Path) -> bool:
    wanted = hashlib.sha256(source.read_bytes()).hexdigest()
    return stamp.is_file() and stamp.read_text().strip() == wanted


def python_of(name: str) -> Path:
    """The interpreter of the client environment ``name``, made from ``<name>.txt``."""
    venv = ROOT / f".venv-clients-{name}"
    if not (venv / "bin" / "python").exists():
        _unavailable(f"the client environment {venv.name} is missing")
    if not _made_from(venv / "requirements.sha256", HERE / f"{name}.txt"):
        _unavailable(f"the client environment {venv.name} is older than tests/clients/{name}.txt")
    return venv / "bin" / "python"


def node() -> str:
    """``node``, with the packages of ``tests/clients/node`` installed as locked."""
    executable = shutil.which("node")
    if executable is None:
        _unavailable("node is not installed")
    if not _made_from(NODE / "node_modules" / ".lock.sha256", NODE / "package-lock.json"):
        _unavailable("tests/clients/node/node_modules is missing or older than its lock file")
    return str(executable)


def run_client(argv: list[str], base_url: str, cases: list[dict[str, Any]],
               upstream: FakeUpstream | None, *, timeout: float = 300
               ) -> dict[str, dict[str, Any]]:
    """Run a client program on ``cases``; returns its result per case name.

    Each case is ``{"name", "run", "key", "input", ...}``; each result is ``{"value": ...}``
    or ``{"error": {"type", "message", ...}}``, as the program reports it, and, given the fake
    ``upstream``, ``calls``: how many requests the case's question brought to it (retries
    included).
    """
    if upstream is not None:
        upstream.clear()
    done = subprocess.run(
        argv, input=json.dumps({"base_url": base_url, "cases": cases}), capture_output=True,
        text=True, timeout=timeout, check=False, cwd=HERE,
        env={**os.environ, "NO_COLOR": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    assert done.returncode == 0, f"{argv[-1]} exited {done.returncode}:\n{done.stderr}"
    results: dict[str, dict[str, Any]] = json.loads(done.stdout)
    assert set(results) == {case["name"] for case in cases}, done.stderr
    for case in cases if upstream is not None else []:
        results[case["name"]]["calls"] = upstream_calls(upstream, case["input"])
    return results
