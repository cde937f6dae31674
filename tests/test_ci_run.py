"""``.ci/run``, the README's test command, on a tiny project: a virtual environment, and no
silent pass when nothing was tested; and the README's set-up commands."""

from __future__ import annotations

import os
import re
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "ci-run-probe"
version = "0"

[project.optional-dependencies]
test = []

[tool.setuptools]
py-modules = []
"""

IN_THE_VENV = """\
import sys
from pathlib import Path


def test_runs_inside_the_projects_virtual_environment():
    assert Path(sys.prefix).resolve() == (Path(__file__).parents[1] / ".venv").resolve()
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project with .ci/run, whose .venv already sees this interpreter's pytest and pip."""
    (tmp_path / ".ci").mkdir()
    shutil.copy2(ROOT / ".ci" / "run", tmp_path / ".ci" / "run")
    (tmp_path / "pyproject.toml").write_text(PROJECT)
    (tmp_path / "tests").mkdir()
    # Made here, so .ci/run reuses it rather than install pytest into a bare one. A .pth file
    # lends it this interpreter's packages (--system-site-packages would lend the base
    # Python's, which lack pytest when this suite itself runs in .ci/run's virtual environment).
    venv = tmp_path / ".venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    (site_packages,) = venv.glob("lib/python3*/site-packages")
    (site_packages / "lent.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return tmp_path


def ci_run(project: Path) -> subprocess.CompletedProcess[str]:
    # What CI gives it: no stdin, CI=true; prometheus is on PATH here, so apt is not called.
    env = {**os.environ, "CI": "true"}
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    return subprocess.run([str(project / ".ci" / "run"), "-p", "no:cacheprovider"],
                          cwd=project, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          env=env, timeout=600)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="would apt-get install prometheus")
def test_tests_run_in_the_virtual_environment(project: Path) -> None:
    (project / "tests" / "test_probe.py").write_text(IN_THE_VENV)
    result = ci_run(project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


@pytest.mark.skipif(shutil.which("promtool") is None, reason="would apt-get install prometheus")
def test_no_tests_collected_fails_the_run(project: Path) -> None:
    result = ci_run(project)
    assert result.returncode == 5, result.stdout + result.stderr
    assert "no tests ran" in result.stdout


def readme_setup_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Set up\n", 1)[1].split("\n## ", 1)[0]
    before_local_model = section.split("**Your own gateway on the local model.**")[0]
    return re.findall(r"```bash\n(.*?)\n```", before_local_model, flags=re.DOTALL)


def test_the_readme_has_two_set_up_commands_each_in_a_virtual_environment() -> None:
    demo, tests = readme_setup_commands()
    assert demo == ("python3 -m venv .venv && . .venv/bin/activate && "
                    "pip install -v -e '.[local-model]' && basguard demo")
    assert tests == ".ci/run"
    script = (ROOT / ".ci" / "run").read_text()
    assert "python3 -m venv .venv" in script and ". .venv/bin/activate" in script
    assert "pip install -v -e '.[test]'" in script
