"""MkDocs hook: the configuration reference, generated from the pydantic models at build time.

``docs/configuration.md`` holds the prose and one marker line; this hook replaces the marker with
a section per model (the gateway config file, every model nested in it, and the process
settings), each a table of its keys with their type, default and the field's own description.
The descriptions live next to the validation code, so the reference cannot drift from what
``basguard serve`` accepts; nothing generated is committed.

``tests/test_docs.py`` builds the site and checks that every field of every model is on the page.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

PAGE = "configuration.md"
MARKER = "<!-- generated: configuration reference -->"

# Where the models live. The restructuring of proxy/ moves modules: update these paths, and
# the docs test fails until they are right.
GATEWAY_CONFIG = "proxy.runtime.config:GatewayConfig"
SERVER_SETTINGS = "proxy.runtime.settings:ServerSettings"
COMMAND_LINE = "proxy.cli.main:build_parser"

#: Bases whose fields get a section of their own instead of being repeated in each subclass.
SEPARATE_BASES = ("DropInPolicy",)

ENV_PREFIX = "BASGUARD_"


def load(dotted: str) -> Any:
    module_name, _, attribute = dotted.partition(":")
    module = __import__(module_name, fromlist=[attribute])
    return getattr(module, attribute)


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    """MkDocs event: fill in the reference on its page, leave every other page alone."""
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        from mkdocs.exceptions import PluginError

        raise PluginError(f"{PAGE} lost its marker line {MARKER!r}")
    return markdown.replace(MARKER, render_reference())


def render_reference() -> str:
    """The whole generated part of the page, as Markdown."""
    config: type[BaseModel] = load(GATEWAY_CONFIG)
    settings: type[BaseModel] = load(SERVER_SETTINGS)
    parts = ["## The config file\n",
             "Each section is one mapping of the YAML file; **required** keys have no default.\n"]
    parts += [render_model(model, where) for model, where in walk(config)]
    parts += ["## Process settings\n", render_settings(settings, serve_options(settings))]
    return "\n".join(parts)


def walk(root: type[BaseModel]) -> Iterator[tuple[type[BaseModel], str]]:
    """Every model reachable from ``root``, once, with the YAML path where it first appears."""
    seen: set[type[BaseModel]] = set()
    pending: list[tuple[type[BaseModel], str]] = [(root, "")]
    while pending:
        model, where = pending.pop(0)
        if model in seen:
            continue
        seen.add(model)
        yield model, where
        for base in separate_bases(model):
            pending.insert(0, (base, where))
        for name, field in model.model_fields.items():
            for nested, suffix in nested_models(field.annotation):
                path = f"{where}.{name}" if where else name
                pending.append((nested, path + suffix))


def separate_bases(model: type[BaseModel]) -> list[type[BaseModel]]:
    return [base for base in model.__mro__[1:]
            if base.__name__ in SEPARATE_BASES and issubclass(base, BaseModel)]


def nested_models(annotation: Any, suffix: str = "") -> Iterator[tuple[type[BaseModel], str]]:
    """The models inside a field's type, each with how the path continues to reach it."""
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        yield annotation, suffix
        return
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        yield from nested_models(args[0], suffix)
    elif origin in (typing.Union, types.UnionType):
        for arg in args:
            yield from nested_models(arg, suffix)
    elif origin is list:
        yield from nested_models(args[0], suffix + "[]")
    elif origin is dict:
        yield from nested_models(args[1], suffix + ".NAME")


def own_fields(model: type[BaseModel]) -> dict[str, FieldInfo]:
    """The model's fields less those documented in a separate base's section."""
    inherited = {name for base in separate_bases(model) for name in base.model_fields}
    return {name: field for name, field in model.model_fields.items() if name not in inherited}


def render_model(model: type[BaseModel], where: str) -> str:
    lines = [f"### {model.__name__}\n", summary(model) + "\n",
             f"Where: {'`' + where + '`' if where else 'the top level of the file'}.\n"]
    for base in separate_bases(model):
        lines.append(f"Its drop-in keys are listed under [{base.__name__}]"
                     f"(#{base.__name__.lower()}).\n")
    lines += ["| key | type | default | description |", "|---|---|---|---|"]
    for name, field in own_fields(model).items():
        lines.append(f"| `{name}` | {field_type(field)} | {default(name, field)} | "
                     f"{text(field.description or '')} |")
    return "\n".join(lines) + "\n"


def render_settings(settings: type[BaseModel], options: dict[str, str]) -> str:
    lines = [summary(settings) + " A `basguard serve` option, where there is one, takes "
             "precedence over the environment.\n",
             "| setting | environment variable | `serve` option | type | default | description |",
             "|---|---|---|---|---|---|"]
    for name, field in settings.model_fields.items():
        option = f"`{options[name]}`" if name in options else "–"
        lines.append(f"| `{name}` | `{ENV_PREFIX}{name.upper()}` | {option} | "
                     f"{field_type(field)} | {default(name, field)} | "
                     f"{text(field.description or '')} |")
    return "\n".join(lines) + "\n"


def serve_options(settings: type[BaseModel]) -> dict[str, str]:
    """Setting name -> the ``basguard serve`` option that sets it."""
    import argparse

    parser = load(COMMAND_LINE)()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and "serve" in action.choices:
            serve = action.choices["serve"]
            return {a.dest: a.option_strings[0] for a in serve._actions
                    if a.option_strings and a.dest in settings.model_fields}
    return {}


def summary(model: type[BaseModel]) -> str:
    doc = (inspect.getdoc(model) or "").replace("``", "`")  # reStructuredText literals
    return text(" ".join(doc.split("\n\n")[0].split()))


def field_type(field: FieldInfo) -> str:
    """The field's type with its bounds: ``string (1 to 200 characters), or null``."""
    annotation, optional = field.annotation, False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        optional = type(None) in args
        kept = [arg for arg in args if arg is not type(None)]
        annotation = kept[0] if len(kept) == 1 else annotation
        optional = optional and len(kept) == 1
    bounds = constraints([*field.metadata, *inner_metadata(annotation)],
                         unit=length_unit(annotation))
    rendered = type_name(annotation) + (f" ({', '.join(bounds)})" if bounds else "")
    return rendered + (", or null" if optional else "")


def inner_metadata(annotation: Any) -> list[Any]:
    """Constraints carried by the type itself (``Annotated[str, Field(max_length=200)]``)."""
    if typing.get_origin(annotation) is not typing.Annotated:
        return []
    found: list[Any] = []
    for item in typing.get_args(annotation)[1:]:
        if isinstance(item, FieldInfo):
            found += item.metadata
        elif isinstance(item, annotated_types.GroupedMetadata):
            found += list(item)
        else:
            found.append(item)
    return found


def length_unit(annotation: Any) -> str:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return "characters" if annotation is str else "entries"


def type_name(annotation: Any) -> str:
    """A reader's name for a type: ``list of string``, not ``list[Annotated[str, ...]]``."""
    if annotation is type(None):
        return "null"
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
    simple = {str: "string", int: "integer", float: "number", bool: "boolean", Path: "path",
              SecretStr: "secret string"}
    if annotation in simple:
        return simple[annotation]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is typing.Literal:
        return one_of([f"`{yaml_value(arg)}`" for arg in args])
    if origin in (typing.Union, types.UnionType):
        named = [type_name(arg) for arg in args if arg is not type(None)]
        union = ", or ".join(named)
        return f"{union}, or null" if type(None) in args else union
    if origin is list:
        return f"list of {type_name(args[0])}"
    if origin is dict:
        key = "name" if typing.get_origin(args[0]) in (None, typing.Annotated) else \
            type_name(args[0])
        return f"mapping of {key} to {type_name(args[1])}"
    return text(getattr(annotation, "__name__", str(annotation)))


def one_of(values: list[str]) -> str:
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " or " + values[-1]


def constraints(metadata: list[Any], *, unit: str) -> list[str]:
    """Bounds a reader needs (``0 < x ≤ 900``), from pydantic's field metadata."""
    found: list[str] = []
    shortest: int | None = None
    longest: int | None = None
    for item in metadata:
        for kind, symbol in ((annotated_types.Gt, ">"), (annotated_types.Ge, "≥"),
                             (annotated_types.Lt, "<"), (annotated_types.Le, "≤")):
            if isinstance(item, kind):
                found.append(f"{symbol} {number(getattr(item, kind.__name__.lower()))}")
        if isinstance(item, annotated_types.MinLen) and item.min_length > 0:
            shortest = item.min_length
        if isinstance(item, annotated_types.MaxLen):
            longest = item.max_length
    if shortest is not None and longest is not None:
        found.append(f"{shortest} to {number(longest)} {unit}")
    elif shortest is not None:
        found.append(f"at least {shortest} {unit if shortest > 1 else unit.rstrip('s')}"
                     .replace("entrie", "entry"))
    elif longest is not None:
        found.append(f"at most {number(longest)} {unit}")
    return found


def default(name: str, field: FieldInfo) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "**required**"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "its own defaults"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{yaml_value(value)}`"
    if isinstance(value, int | float):
        shown = f"`{number(value)}`"
        if name.endswith("_bytes") and isinstance(value, int) and value >= 1024:
            shown += f" ({binary_size(value)})"
        return shown
    return f"`{yaml_value(value)}`"


def yaml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(yaml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {yaml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, int | float):
        return number(value)
    return str(value).replace("|", "\\|")


def number(value: float) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value:,}" if isinstance(value, int) and abs(value) >= 10_000 else str(value)


def binary_size(value: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size and value % size == 0:
            return f"{value // size} {unit}"
    return f"{value / 1024:.1f} KiB"


def text(description: str) -> str:
    """A description as safe table-cell Markdown: pipes escaped, and ``<``, ``*`` and ``_``
    outside code spans shown as written (``<store>`` is a placeholder, not an HTML tag)."""
    pieces = description.replace("|", "\\|").split("`")
    for index in range(0, len(pieces), 2):
        pieces[index] = re.sub(r"([*_<>\[\]])", lambda m: {"<": "&lt;", ">": "&gt;"}.get(
            m.group(1), "\\" + m.group(1)), pieces[index])
    return "`".join(pieces)
