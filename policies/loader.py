"""Loading YAML policy files into validated models, with file and line in every error.

PyYAML's node tree keeps the line of every key; the loader builds plain Python data from it
together with a map from each key path to its line, so a pydantic error at
``tenants.acme.risk.threshold`` is reported at the line that holds ``threshold:``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from .schema import PolicyFile

__all__ = [
    "KeyLines",
    "PolicyError",
    "PolicyProblem",
    "load_policy_file",
    "load_yaml_located",
    "load_yaml_model",
    "parse_yaml_located",
    "parse_yaml_model",
]

Model = TypeVar("Model", bound=BaseModel)
KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class PolicyProblem:
    """One problem in a policy or config file."""

    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.message}"


class PolicyError(ValueError):
    """A policy or config file that cannot be used; ``problems`` lists every problem found."""

    def __init__(self, problems: Sequence[PolicyProblem]) -> None:
        if not problems:
            raise ValueError("a PolicyError needs at least one problem")
        self.problems = list(problems)
        first = self.problems[0]
        self.path, self.line, self.message = first.path, first.line, first.message
        super().__init__("\n".join(str(problem) for problem in self.problems))


class KeyLines:
    """The line of every key path of a YAML document (and the plain data built from it)."""

    def __init__(self, display_name: str) -> None:
        self.display_name = display_name
        self.lines: dict[KeyPath, int] = {}
        self.problems: list[PolicyProblem] = []
        self._scalars = yaml.SafeLoader("")

    def build(self, node: yaml.Node, path: KeyPath) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            mapping: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self._scalars.construct_object(key_node)
                line = key_node.start_mark.line + 1
                if not isinstance(key, str | int) or isinstance(key, bool):
                    self.problems.append(
                        PolicyProblem(self.display_name, line, f"unsupported key {key!r}")
                    )
                    continue
                if key in mapping:
                    where = ".".join(map(str, (*path, key)))
                    self.problems.append(
                        PolicyProblem(self.display_name, line, f"{where}: duplicate key {key!r}")
                    )
                    continue
                self.lines[(*path, key)] = line
                mapping[key] = self.build(value_node, (*path, key))
            return mapping
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return self._scalars.construct_object(node)

    def line_of(self, path: Sequence[str | int]) -> int | None:
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return None


def _describe_validation(error: ValidationError, document: KeyLines) -> Iterator[PolicyProblem]:
    for item in error.errors():
        location = [part for part in item["loc"] if isinstance(part, str | int)]
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (check its spelling and indentation)"
        elif item["type"] == "missing":
            message = "required key is missing"
        where = ".".join(map(str, location))
        text = f"{where}: {message}" if where else message
        yield PolicyProblem(document.display_name, document.line_of(location), text)


def _duplicate_tenant_keys(data: Any, document: KeyLines) -> Iterator[PolicyProblem]:
    """Keys shared by two tenants, located at the second use (the model check has no lines)."""
    tenants = data.get("tenants") if isinstance(data, dict) else None
    if not isinstance(tenants, dict):
        return
    owners: dict[tuple[str, str], str] = {}
    for tenant, policy in tenants.items():
        keys = policy.get("api_keys") if isinstance(policy, dict) else None
        for i, key in enumerate(keys if isinstance(keys, list) else []):
            if not isinstance(key, dict):
                continue
            for kind in ("env", "sha256"):
                if isinstance(key.get(kind), str):
                    other = owners.setdefault((kind, key[kind]), tenant)
                    if other != tenant:
                        yield PolicyProblem(
                            document.display_name,
                            document.line_of(("tenants", tenant, "api_keys", i, kind)),
                            f"tenants.{tenant}.api_keys.{i}: the key `{kind}: {key[kind]}` also "
                            f"identifies tenant {other!r}; a key must identify one tenant",
                        )


def parse_yaml_model(text: str, model: type[Model], *, display_name: str) -> Model:
    """Validate YAML ``text`` as ``model``; every problem is reported with its line.

    Raises
    ------
    PolicyError
        For YAML syntax errors, duplicate keys, and every validation error, located by line.
    """
    return parse_yaml_located(text, model, display_name=display_name)[0]


def parse_yaml_located(
    text: str, model: type[Model], *, display_name: str
) -> tuple[Model, KeyLines]:
    """:func:`parse_yaml_model`, also returning the line of every key for later checks.

    Raises
    ------
    PolicyError
        For YAML syntax errors, duplicate keys, and every validation error, located by line.
    """
    document = KeyLines(display_name)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        reason = exc.problem or "invalid YAML"
        if exc.context and exc.context_mark is not None:
            reason = f"{reason} ({exc.context} started on line {exc.context_mark.line + 1})"
        raise PolicyError([PolicyProblem(display_name, line, f"invalid YAML: {reason}")]) from None
    except yaml.YAMLError as exc:
        raise PolicyError([PolicyProblem(display_name, None, f"invalid YAML: {exc}")]) from None
    if root is None:
        raise PolicyError([PolicyProblem(display_name, None, "the file is empty")])
    data = document.build(root, ())
    if not isinstance(data, dict):
        raise PolicyError(
            [PolicyProblem(display_name, document.line_of(()), "the file must be a mapping")]
        )
    shared_keys = list(_duplicate_tenant_keys(data, document))
    problems = [*document.problems, *shared_keys]
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        for problem in _describe_validation(exc, document):
            # Shared keys are already reported above, with the line the model check lacks.
            if not (shared_keys and "a key must identify one tenant" in problem.message):
                problems.append(problem)
    if problems:
        raise PolicyError(sorted(problems, key=lambda p: p.line or 0))
    return parsed, document


def load_yaml_model(path: str | Path, model: type[Model]) -> Model:
    """Read and validate a YAML file as ``model`` (see :func:`parse_yaml_model`)."""
    return load_yaml_located(path, model)[0]


def load_yaml_located(path: str | Path, model: type[Model]) -> tuple[Model, KeyLines]:
    """:func:`load_yaml_model`, also returning the line of every key."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        problem = PolicyProblem(str(path), None, f"cannot read the file: {reason}")
        raise PolicyError([problem]) from None
    return parse_yaml_located(text, model, display_name=str(path))


def load_policy_file(path: str | Path) -> PolicyFile:
    """Read and validate a tenant policy file."""
    return load_yaml_model(path, PolicyFile)
