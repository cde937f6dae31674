"""Self-describing JSON documents: their checksum and their atomic writing.

Calibrator artifacts and risk certificates are both one JSON document carrying a SHA-256 checksum
over its canonical form (sorted keys, no whitespace), written so that a reader (or the gateway's
hot reload) sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

__all__ = ["document_checksum", "write_atomically"]


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
