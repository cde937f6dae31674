"""The project's quality gates run with the tests: ruff, mypy, and the dependency direction."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.shipped import REPOSITORY


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, check=False)


def test_ruff() -> None:
    result = run(sys.executable, "-m", "ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_on_the_packages() -> None:
    result = run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout + result.stderr


FORBIDDEN = {
    "policies": {"proxy", "calibrators", "fastapi", "starlette", "litellm", "prometheus_client"},
    "calibrators": {"proxy", "fastapi", "starlette", "litellm", "prometheus_client"},
}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_dependencies_point_one_way(package: str) -> None:
    """proxy/ uses policies/ and calibrators/, never the reverse; the math is framework-free."""
    for path in (REPOSITORY / package).rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN[package], (
                    f"{Path(path).relative_to(REPOSITORY)} imports {name}"
                )
