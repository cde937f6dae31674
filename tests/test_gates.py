"""The project's quality gates run with the tests: ruff and mypy (the architecture contracts:
tests/test_architecture.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.shipped_data import REPOSITORY


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, check=False)


def test_ruff() -> None:
    result = run(sys.executable, "-m", "ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_mypy_on_the_packages() -> None:
    result = run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout + result.stderr
