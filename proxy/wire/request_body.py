"""A request's JSON body, checked: its size, its shape, its depth, then its schema.

One place for what every guarded request goes through, whether it arrived as an HTTP body or as
a WebSocket message (the Responses API's WebSocket mode).
"""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from proxy.errors import InvalidRequest, PayloadTooLarge

__all__ = ["MAX_JSON_DEPTH", "check_size", "json_object", "validated"]

MAX_JSON_DEPTH = 64
"""The deepest nesting a request body may have: far beyond any OpenAI request (JSON schemas of
tools included), and far below what the upstream call can serialise (orjson stops at 255)."""
M = TypeVar("M", bound=BaseModel)


def check_size(size: int, limit: int) -> None:
    if size > limit:
        raise PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")


def _deeper_than(document: Any, limit: int) -> bool:
    stack = [(document, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def json_object(body: bytes | bytearray | str, limit: int) -> dict[str, Any]:
    """``body`` parsed: a JSON object of at most ``limit`` bytes and :data:`MAX_JSON_DEPTH`
    levels, else :class:`InvalidRequest` (or :class:`PayloadTooLarge`)."""
    raw = body.encode() if isinstance(body, str) else body
    check_size(len(raw), limit)
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidRequest("the request body must be a JSON object")
    # Counting brackets is a C loop; only a body with enough of them can be too deep.
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and _deeper_than(
            document, MAX_JSON_DEPTH):
        raise InvalidRequest(f"the request body is nested deeper than {MAX_JSON_DEPTH} levels")
    return document


def validated(model: type[M], document: dict[str, Any]) -> M:
    """``document`` read by ``model``; the first problem is an :class:`InvalidRequest` naming
    the field."""
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        raise InvalidRequest(f"{param}: {first['msg']}" if param else first["msg"],
                             param=param) from None
