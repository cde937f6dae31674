"""Helpers shared by the fuzz tests that corrupt one node of a valid document."""

from __future__ import annotations

from typing import Any


def replace_at(document: Any, path: list[int], value: Any) -> Any:
    """``document`` with the node reached by following ``path`` (indices mod size) replaced."""
    if not path or not isinstance(document, dict | list) or not document:
        return value
    keys = list(document) if isinstance(document, dict) else list(range(len(document)))
    key = keys[path[0] % len(keys)]
    copy = dict(document) if isinstance(document, dict) else list(document)
    copy[key] = replace_at(document[key], path[1:], value)  # type: ignore[index]
    return copy
