"""What an upstream said was wrong with a request, in words fit to pass on to the client.

An upstream that refuses a request says why (``response_format.type: Input should be 'text' or
'json_object'``), and the app can act on it (ask for ``json_object``, or another model); but
upstream error texts also quote keys, file paths and tracebacks. :func:`rejection_reason` keeps
the reason and drops the rest: the text before any traceback, absolute paths replaced, key-like
strings masked (:func:`proxy.errors.sanitize`), at most :data:`MAX_REASON_CHARS` characters.

Some servers answer a request they refused to validate with HTTP 500: llama-cpp-python's
FastAPI server sends pydantic's validation error, with the ``loc`` of the field, as a 500.
:func:`validation_failure` recognises that text, so the gateway can answer 400 (the request's
fault, which SDKs do not retry) rather than 502.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.errors import sanitize

__all__ = ["MAX_REASON_CHARS", "Rejection", "rejection_reason", "validation_failure"]

MAX_REASON_CHARS = 300

# pydantic's error as Python prints it: {'type': ..., 'loc': ('body', 'a', 'b'), 'msg': "..."}.
_PYDANTIC_ITEM = re.compile(
    r"""'loc':\s*\((?P<loc>[^)]*)\),\s*'msg':\s*(?:"(?P<dq>(?:[^"\\]|\\.)*)"|'(?P<sq>(?:[^'\\]|\\.)*)')""")
_TRACEBACK = re.compile(r"(?:^|\n)\s*(?:File \"|Traceback \(most recent call last\))")
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[/\\][\w.@+-]+){2,}[/\\]?")
_LITELLM_PREFIX = re.compile(r"^litellm\.\w+:\s*(?:\w+Exception\s*-\s*)?")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an upstream refused a request: the reason, and the field it names (if any)."""

    reason: str
    param: str | None = None


def _clean(text: str, secrets: Iterable[str]) -> str:
    text = _TRACEBACK.split(text, 1)[0]
    text = _LITELLM_PREFIX.sub("", text.strip())
    text = _PATH.sub("<path>", sanitize(text, secrets))
    text = _SPACE.sub(" ", text).strip()
    if len(text) > MAX_REASON_CHARS:
        text = text[: MAX_REASON_CHARS - 1].rstrip() + "…"
    return text


def _field(parts: Iterable[Any]) -> str:
    """A validation error's location as a dotted field name, without FastAPI's ``body``."""
    names = [str(part) for part in parts]
    return ".".join(names[1:] if names[:1] == ["body"] else names)


def _pydantic_items(message: str) -> list[tuple[str, str]]:
    items = []
    for match in _PYDANTIC_ITEM.finditer(message):
        loc = [part.strip().strip("'\"") for part in match["loc"].split(",") if part.strip()]
        items.append((_field(loc), match["dq"] if match["dq"] is not None else match["sq"]))
    return items


def _fastapi_items(raw: bytes) -> list[tuple[str, str]]:
    """FastAPI's own 422 body: ``{"detail": [{"loc": [...], "msg": "..."}]}``."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return []
    detail = document.get("detail") if isinstance(document, dict) else None
    return [(_field(item["loc"]), str(item["msg"])) for item in detail or []
            if isinstance(item, dict) and isinstance(item.get("loc"), list)
            and isinstance(item.get("msg"), str)] if isinstance(detail, list) else []


def validation_failure(message: str, raw: bytes, secrets: Iterable[str] = ()
                       ) -> Rejection | None:
    """The request fields an upstream's validation error names (``field: problem``, joined by
    ``; ``), or None when ``message`` (or the body ``raw``) is no validation error."""
    items = _pydantic_items(message) or _fastapi_items(raw)
    if not items:
        return None
    reason = "; ".join(f"{field}: {problem}" if field else problem for field, problem in items)
    return Rejection(_clean(reason, secrets), items[0][0] or None)


def rejection_reason(message: str, raw: bytes, secrets: Iterable[str] = ()) -> Rejection | None:
    """Why an upstream refused a request (a 4xx), fit for the client; None if it said nothing
    readable."""
    found = validation_failure(message, raw, secrets)
    if found is not None:
        return found
    reason = _clean(message, secrets)
    return Rejection(reason) if reason else None
