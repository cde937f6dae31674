"""YAML to plain Python data, remembering the line of every key.

PyYAML's node tree keeps the position of every key; :func:`compose_located` builds plain data
from it together with a map from each key path (``("tenants", "acme", "risk")``) to its 1-based
line, so a validation error found later can be reported where the user has to look.

Only the safe subset of YAML is accepted: standard tags, anchors, aliases and ``<<`` merges.
Mapping keys are kept as written (``2024:`` is the name ``"2024"``), because every key in a
policy or config file is a name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from .errors import PolicyError, PolicyProblem

__all__ = ["MAX_DEPTH", "MAX_NODES", "KeyLines", "KeyPath", "compose_located"]

KeyPath = tuple[str | int, ...]

#: Aliases can make a small file expand exponentially ("billion laughs"); no real policy file
#: comes near this many values.
MAX_NODES = 100_000
#: PyYAML composes, and this module builds, recursively: without a bound a deeply nested file
#: would end in a RecursionError instead of a located problem. A policy file is about 5 deep.
MAX_DEPTH = 64

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _TooLarge(Exception):
    pass


class _TooDeep(Exception):
    def __init__(self, line: int) -> None:
        self.line = line


class _DepthLimitedLoader(yaml.SafeLoader):
    """The safe loader, refusing collections nested more than :data:`MAX_DEPTH` deep."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                event = self.peek_event()  # type: ignore[no-untyped-call]
                raise _TooDeep(event.start_mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class KeyLines:
    """The line of every key path of one YAML document, and the problems found building it."""

    def __init__(self, display_name: str) -> None:
        self.display_name = display_name
        self.lines: dict[KeyPath, int] = {}
        self.problems: list[PolicyProblem] = []
        #: Paths whose value could not be read; validation errors below them are noise.
        self.unreadable: set[KeyPath] = set()
        self._scalars = yaml.SafeLoader("")
        self._nodes = 0
        self._open: set[int] = set()

    def line_of(self, path: Sequence[str | int]) -> int | None:
        """The line of ``path``, else of its closest ancestor that has one."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return None

    def build(self, node: yaml.Node, path: KeyPath) -> Any:
        """Plain Python data for ``node``, recording the lines of the keys below ``path``."""
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _TooLarge
        # An alias's node starts at its anchor; a key already recorded is where to point.
        line = self.lines.setdefault(path, node.start_mark.line + 1)
        # Aliases can nest what the composer saw shallow: bound what is built as well.
        if len(path) > MAX_DEPTH:
            raise _TooDeep(line)
        if id(node) in self._open:
            self._problem(line, path, "an alias refers to the collection that contains it")
            self.unreadable.add(path)
            return None
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            expected = _MAP_TAG if isinstance(node, yaml.MappingNode) else _SEQ_TAG
            if node.tag != expected:
                self._problem(line, path, f"unsupported YAML tag {node.tag!r}")
            self._open.add(id(node))
            try:
                if isinstance(node, yaml.MappingNode):
                    return self._mapping(node, path)
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            finally:
                self._open.discard(id(node))
        try:
            return self._scalars.construct_object(node)
        except yaml.constructor.ConstructorError:
            self._problem(line, path, f"unsupported YAML tag {node.tag!r}")
            self.unreadable.add(path)
            return node.value
        except (ValueError, OverflowError) as exc:
            # A standard tag whose value Python cannot hold: an int past the int-string
            # conversion limit, a date like 2024-13-45. The reason never quotes the value.
            # Python's int-limit message ends in advice for programmers ("; use sys...").
            reason = str(exc).split(";")[0]
            self._problem(line, path, f"cannot read this value: {reason}")
            self.unreadable.add(path)
            return node.value

    def _mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[str, Any]:
        mapping: dict[str, Any] = {}
        merges: list[yaml.Node] = []
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == _MERGE_TAG:
                merges.append(value_node)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self._problem(line, path, "a key must be a plain name, not a list or mapping")
                continue
            key = str(key_node.value)
            if key in mapping:
                self._problem(line, (*path, key), f"duplicate key {key!r}")
                continue
            self.lines.setdefault((*path, key), line)
            mapping[key] = self.build(value_node, (*path, key))
        # Keys written in the mapping win over merged ones, and earlier merges over later ones,
        # as in YAML's merge key spec; merged keys keep the lines where they were written.
        for merge in merges:
            sources = merge.value if isinstance(merge, yaml.SequenceNode) else [merge]
            for source in sources:
                if not isinstance(source, yaml.MappingNode):
                    line = source.start_mark.line + 1
                    self._problem(line, path, "`<<` merges a mapping or a list of mappings")
                    continue
                merged = self.build(source, path)
                for key, value in (merged if isinstance(merged, dict) else {}).items():
                    mapping.setdefault(key, value)
        return mapping

    def _problem(self, line: int, path: KeyPath, message: str) -> None:
        where = ".".join(map(str, path))
        text = f"{where}: {message}" if where else message
        self.problems.append(PolicyProblem(self.display_name, line, text))


def compose_located(text: str, *, display_name: str) -> tuple[dict[str, Any], KeyLines]:
    """Parse one YAML document that must be a mapping.

    Parameters
    ----------
    text : str
        The YAML source.
    display_name : str
        How problems name the source, usually its path.

    Returns
    -------
    data : dict
        The document as plain Python data (dicts with ``str`` keys, lists, scalars).
    lines : KeyLines
        The line of every key path, and document problems (duplicate keys, unsupported tags)
        that do not stop the data from being built; the caller reports them with its own.

    Raises
    ------
    PolicyError
        For a syntax error or a character YAML refuses (at its line), an empty document, a
        document that is not a mapping, one that expands to more than :data:`MAX_NODES`
        values, or one nested more than :data:`MAX_DEPTH` levels deep.
    """
    try:
        root = yaml.compose(text, Loader=_DepthLimitedLoader)
    except _TooDeep as exc:
        raise PolicyError.at(display_name, exc.line, _too_deep()) from None
    except yaml.reader.ReaderError as exc:
        # A character YAML does not allow (NUL, most control characters): no mark, a position.
        at = text.count("\n", 0, exc.position) + 1
        character = exc.character if isinstance(exc.character, str) else "\0"
        reason = f"unacceptable character #x{ord(character):04x}: {exc.reason}"
        raise PolicyError.at(display_name, at, f"invalid YAML: {reason}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        reason = exc.problem or "invalid YAML"
        if exc.context and exc.context_mark is not None:
            reason = f"{reason} ({exc.context} started on line {exc.context_mark.line + 1})"
        raise PolicyError.at(display_name, line, f"invalid YAML: {reason}") from None
    except yaml.YAMLError as exc:
        raise PolicyError.at(display_name, None, f"invalid YAML: {exc}") from None
    if root is None:
        raise PolicyError.at(display_name, None, "the file is empty")
    lines = KeyLines(display_name)
    try:
        data = lines.build(root, ())
    except _TooLarge:
        message = f"the file expands to more than {MAX_NODES} values (through YAML aliases?)"
        raise PolicyError.at(display_name, None, message) from None
    except _TooDeep as exc:
        raise PolicyError.at(display_name, exc.line, _too_deep()) from None
    if not isinstance(data, dict):
        raise PolicyError.at(display_name, lines.line_of(()), "the file must be a mapping")
    return data, lines


def _too_deep() -> str:
    return f"nested more than {MAX_DEPTH} levels deep (no policy or config file needs that)"
