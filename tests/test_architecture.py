"""The architecture contracts of ``pyproject.toml`` (``[tool.importlinter]``), checked with
import-linter: packages and ``proxy/``'s subpackages in layers, no import cycles, no private
name across modules. The last is a contract of this project's own
(:mod:`tests.support.import_contracts`), so it is shown to catch what it names."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.support.shipped_data import REPOSITORY

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
"""Installed beside the interpreter with the test extra (import-linter)."""


def lint_imports(directory: Path, *, python_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(python_path)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=directory, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def test_the_architecture_contracts_hold() -> None:
    result = lint_imports(REPOSITORY, python_path=REPOSITORY)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_private_name_imported_across_modules_breaks_its_contract(tmp_path: Path) -> None:
    package = tmp_path / "probe"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "helpers.py").write_text("def _hidden() -> None: ...\ndef shown() -> None: ...\n")
    (package / "user.py").write_text("from probe.helpers import (\n    shown,\n    _hidden,\n)\n")
    (tmp_path / "pyproject.toml").write_text(textwrap.dedent("""\
        [tool.importlinter]
        root_packages = ["probe"]
        contract_types = ["no_private_names: tests.support.import_contracts.NoPrivateNamesContract"]

        [[tool.importlinter.contracts]]
        name = "no private names"
        type = "no_private_names"
        packages = ["probe"]
        """))
    result = lint_imports(tmp_path, python_path=REPOSITORY)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "probe.user:1 imports the private name _hidden from probe.helpers" in result.stdout
