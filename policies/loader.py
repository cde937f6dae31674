"""Loading YAML policy (and config) files into validated models, with file and line in errors.

:func:`load_yaml_model` reads any :class:`pydantic.BaseModel` from YAML, so the gateway's config
(a subclass of :class:`~policies.schema.PolicyFile`) is loaded by the same code. Every problem
is collected, not just the first, and each pydantic error is reported at the line of the
closest key on its path: an error at ``tenants.acme.risk.threshold`` at the ``threshold:`` line.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .errors import PolicyError, PolicyProblem
from .located_yaml import KeyLines, compose_located
from .schema import RETIRED_KEYS, PolicyFile

__all__ = [
    "KeyLines",
    "PolicyError",
    "PolicyProblem",
    "load_policy_file",
    "load_yaml_located",
    "load_yaml_model",
    "parse_policy_text",
    "parse_yaml_located",
    "parse_yaml_model",
    "read_yaml_text",
]

Model = TypeVar("Model", bound=BaseModel)

_TYPE_NAMES = {str: "text", int: "a number", float: "a number", bool: "true/false",
               list: "a list", dict: "a mapping", type(None): "nothing"}


def _allowed_keys(model: type[BaseModel], location: Sequence[str | int]) -> list[str]:
    """The field names of the model found by following ``location`` down from ``model``."""
    annotation: Any = model
    for part in location:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(str(part))
            annotation = field.annotation if field is not None else None
        else:
            # dict[K, V] and list[T] are entered by a key or an index: go on with V or T.
            annotation = typing.get_args(annotation)[-1] if typing.get_args(annotation) else None
        while typing.get_origin(annotation) in (typing.Union, types.UnionType):
            annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []


def _describe(item: Any, model: type[BaseModel]) -> tuple[list[str | int], str]:
    """The key path and a message a person can act on, for one pydantic error."""
    # "[key]" marks an error in a mapping's key itself (a tenant name): report it at the key.
    location = [part for part in item["loc"] if isinstance(part, str | int) and part != "[key]"]
    kind, message = item["type"], item["msg"].removeprefix("Value error, ")
    if kind == "extra_forbidden":
        allowed_keys = _allowed_keys(model, location[:-1])
        retired = RETIRED_KEYS.get(str(location[-1])) if location else None
        if retired is not None and "withheld_shape" in allowed_keys:
            return location, retired
        allowed = ", ".join(allowed_keys)
        message = "unknown key (check its spelling and indentation)"
        message += f"; allowed here: {allowed}" if allowed else ""
    elif kind == "missing" and location:
        return location[:-1], f"required key `{location[-1]}` is missing"
    elif kind in ("model_type", "model_attributes_type", "dict_type", "list_type"):
        # Name the type, never the value: it may be a key pasted in the wrong place.
        expected = "a list" if kind == "list_type" else "a mapping of keys"
        message = f"expected {expected}, got {_TYPE_NAMES.get(type(item['input']), 'a value')}"
    return location, message


def _validation_problems(
    error: ValidationError, model: type[BaseModel], lines: KeyLines
) -> Iterator[PolicyProblem]:
    for item in error.errors():
        location, message = _describe(item, model)
        if any(tuple(location[: len(path)]) == path for path in lines.unreadable):
            continue  # already reported as unreadable YAML
        where = ".".join(map(str, location))
        text = f"{where}: {message}" if where else message
        yield PolicyProblem(lines.display_name, lines.line_of(location), text)


def _shared_api_keys(data: dict[str, Any], lines: KeyLines) -> Iterator[PolicyProblem]:
    """Keys used by two tenants, located at the second use (the model's check has no lines)."""
    tenants = data.get("tenants")
    owners: dict[tuple[str, str], str] = {}
    for tenant, policy in (tenants if isinstance(tenants, dict) else {}).items():
        keys = policy.get("api_keys") if isinstance(policy, dict) else None
        for i, key in enumerate(keys if isinstance(keys, list) else []):
            for kind in ("env", "sha256"):
                value = key.get(kind) if isinstance(key, dict) else None
                if not isinstance(value, str):
                    continue
                other = owners.setdefault((kind, value), tenant)
                if other != tenant:
                    yield PolicyProblem(
                        lines.display_name,
                        lines.line_of(("tenants", tenant, "api_keys", i, kind)),
                        f"tenants.{tenant}.api_keys.{i}: the key `{kind}: {value}` also "
                        f"identifies tenant {other!r}; a key must identify one tenant",
                    )


def parse_yaml_located(
    text: str, model: type[Model], *, display_name: str
) -> tuple[Model, KeyLines]:
    """Validate YAML ``text`` as ``model``, also returning the line of every key.

    Parameters
    ----------
    text : str
        The YAML source: one document, a mapping.
    model : type of pydantic.BaseModel
        The model to validate it as, e.g. :class:`~policies.schema.PolicyFile` or a subclass.
    display_name : str
        How problems name the source, usually its path.

    Returns
    -------
    parsed : Model
        The validated model.
    lines : KeyLines
        The line of every key path, for checks made after validation.

    Raises
    ------
    PolicyError
        With every problem found: YAML syntax, duplicate keys, unsupported tags, and each
        validation error, in line order.
    """
    data, lines = compose_located(text, display_name=display_name)
    shared_keys = list(_shared_api_keys(data, lines))
    problems = [*lines.problems, *shared_keys]
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        for problem in _validation_problems(exc, model, lines):
            # Shared keys are already reported above, with the line the model's check lacks.
            if not (shared_keys and "a key must identify one tenant" in problem.message):
                problems.append(problem)
    if problems:
        raise PolicyError(sorted(problems, key=lambda problem: problem.line or 0))
    return parsed, lines


def parse_yaml_model(text: str, model: type[Model], *, display_name: str) -> Model:
    """Validate YAML ``text`` as ``model``; see :func:`parse_yaml_located`.

    Raises
    ------
    PolicyError
        With every problem found, each located by line.
    """
    return parse_yaml_located(text, model, display_name=display_name)[0]


def parse_policy_text(text: str, *, display_name: str = "<policy>") -> PolicyFile:
    """Validate the text of a tenant policy file.

    Parameters
    ----------
    text : str
        The YAML source.
    display_name : str, default="<policy>"
        How problems name the source.

    Returns
    -------
    PolicyFile
        The validated policy. Calibrator paths are not checked; see
        :func:`policies.check.check_policy_file`.

    Raises
    ------
    PolicyError
        With every problem found, each located by line.
    """
    return parse_yaml_model(text, PolicyFile, display_name=display_name)


def load_yaml_located(path: str | Path, model: type[Model]) -> tuple[Model, KeyLines]:
    """Read and validate a YAML file as ``model``, also returning the line of every key.

    Parameters
    ----------
    path : str or Path
        The file; problems name it as given.
    model : type of pydantic.BaseModel
        The model to validate it as.

    Returns
    -------
    parsed : Model
        The validated model.
    lines : KeyLines
        The line of every key path.

    Raises
    ------
    PolicyError
        If the file cannot be read (missing, unreadable, not UTF-8), or for every problem in it.
    """
    return parse_yaml_located(read_yaml_text(path), model, display_name=str(path))


def read_yaml_text(path: str | Path) -> str:
    """The text of a YAML file.

    Raises
    ------
    PolicyError
        If the file cannot be read (missing, a directory, unreadable), or is not UTF-8 (at
        the line of the first bad byte).
    """
    try:
        raw = Path(path).read_bytes()
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PolicyError.at(str(path), None, f"cannot read the file: {reason}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        message = f"not UTF-8 text (byte 0x{raw[exc.start]:02x})"
        raise PolicyError.at(str(path), line, message) from None


def load_yaml_model(path: str | Path, model: type[Model]) -> Model:
    """Read and validate a YAML file as ``model``; see :func:`load_yaml_located`.

    Raises
    ------
    PolicyError
        If the file cannot be read, or for every problem in it, each located by line.
    """
    return load_yaml_located(path, model)[0]


def load_policy_file(path: str | Path) -> PolicyFile:
    """Read and validate a tenant policy file.

    Parameters
    ----------
    path : str or Path
        The YAML policy file.

    Returns
    -------
    PolicyFile
        The validated policy. Calibrator paths are not checked here; see
        :func:`policies.check.check_policy_file`.

    Raises
    ------
    PolicyError
        If the file cannot be read, or for every problem in it, each located by line.
    """
    return load_yaml_model(path, PolicyFile)
