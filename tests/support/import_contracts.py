"""An import-linter contract of this project's own: no private name crosses a module boundary.

``from proxy.x import _helper`` in another module means the helper is part of two modules'
design while only one of them says so; make it public where it lives, or move it to the module
that needs it. Configured in ``pyproject.toml`` (``[tool.importlinter]``), checked by
``tests/test_architecture.py``.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import grimp
from importlinter.application import output
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck

__all__ = ["NoPrivateNamesContract"]

_IMPORTED_NAMES = re.compile(r"^from\s+[\w.]+\s+import\s+\(?(?P<names>[^)#]*)")


@cache
def _source_lines(module: str) -> list[str]:
    path = Path(*module.split("."))
    file = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    return file.read_text(encoding="utf-8").splitlines()


def _statement(module: str, line_number: int) -> str:
    """The whole import statement that starts at ``line_number`` (a parenthesised one spans
    several lines; grimp gives only the first)."""
    lines = _source_lines(module)[line_number - 1:]
    statement = lines[0]
    if "(" in statement:
        for line in lines[1:]:
            if ")" in statement:
                break
            statement += " " + line.strip()
    return statement


def _private_names(line: str) -> list[str]:
    match = _IMPORTED_NAMES.match(line.strip())
    if match is None:
        return []
    names = [name.strip().split(" as ")[0] for name in match["names"].split(",")]
    return [name for name in names if name.startswith("_") and not name.startswith("__")]


class NoPrivateNamesContract(Contract):
    """No module imports a name starting with ``_`` from another module of ``packages``."""

    type_name = "no_private_names"

    packages = fields.SetField(subfield=fields.StringField())

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        roots = tuple(self.packages)  # type: ignore[arg-type]
        found = []
        for importer in sorted(graph.modules):
            if not importer.startswith(roots):
                continue
            for imported in sorted(graph.find_modules_directly_imported_by(importer)):
                if not imported.startswith(roots):
                    continue
                for detail in graph.get_import_details(importer=importer, imported=imported):
                    statement = _statement(importer, detail["line_number"])
                    for name in _private_names(statement):
                        found.append((importer, detail["line_number"], imported, name))
        return ContractCheck(kept=not found, metadata={"found": found})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for importer, line, imported, name in check.metadata["found"]:
            output.print_error(f"{importer}:{line} imports the private name {name} from "
                               f"{imported}")
            output.new_line()
