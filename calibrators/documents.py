"""Self-describing JSON documents: their checksum, their atomic writing and their checked reading.

Calibrator artifacts and risk certificates are both one JSON document carrying a SHA-256 checksum
over its canonical form (sorted keys, no whitespace), written so that a reader (or the gateway's
hot reload) sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

__all__ = ["DocumentKind", "document_checksum", "read_document", "write_atomically"]


def document_checksum(body: Mapping[str, Any]) -> str:
    """``sha256:`` digest of the canonical JSON of ``body`` (the document less its checksum)."""
    return "sha256:" + hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def write_atomically(path: str | Path, payload: bytes) -> None:
    """Write ``payload`` next to ``path``, flush it to disk, and rename it over ``path``.

    Raises
    ------
    OSError
        When the directory cannot be created or the file cannot be written; nothing is left
        behind.
    """
    destination = Path(path)
    destination.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its 0600 would hide the file from a gateway running as another user. 0644
    # less the umask, like any file the user writes; O_EXCL keeps it private to this writer
    # until the rename.
    temp_name = str(destination.parent / f".{destination.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, destination)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class DocumentKind:
    """What :func:`read_document` expects, and how its messages name the document."""

    format: str
    """The ``format`` field's value."""
    version: int
    """The ``format_version`` this basguard reads."""
    noun: str
    """``artifact``, ``certificate``."""
    article: str
    """``an``, ``a``."""
    description: str
    """What a file of another ``format`` is not: ``basguard calibrator``."""
    error: Callable[[str | Path, str], Exception]
    """Makes the error every failure raises, from the path and a message."""


def read_document(path: str | Path, kind: DocumentKind) -> dict[str, Any]:
    """The document at ``path`` once it is readable, JSON, of ``kind``'s format and version,
    and its checksum matches; any failure raises ``kind.error``.
    """
    try:
        raw = Path(path).read_bytes()
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise kind.error(path, f"cannot read the {kind.noun}: {reason}") from None
    try:
        loaded = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise kind.error(path, f"not a valid JSON document (truncated?): {exc}") from None
    if not isinstance(loaded, dict) or loaded.get("format") != kind.format:
        raise kind.error(path, f"not a {kind.description} (no \"format\": {kind.format!r})")
    if loaded.get("format_version") != kind.version:
        raise kind.error(
            path, f"unsupported format_version {loaded.get('format_version')!r}; this basguard "
            f"reads version {kind.version}")
    body = {key: value for key, value in loaded.items() if key != "checksum"}
    try:
        expected = document_checksum(body)
    except orjson.JSONEncodeError:
        # The parser takes 1024 levels, the serialiser 254; no real document comes near either.
        raise kind.error(path, f"the document is nested too deeply to be {kind.article} "
                         f"{kind.noun}") from None
    if loaded.get("checksum") != expected:
        raise kind.error(path, f"checksum mismatch: the {kind.noun} was modified or corrupted "
                         "after it was written")
    return loaded
