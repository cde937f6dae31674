"""One canonical spelling of every request path, decided once, before routing.

Routing, the guard and the URL sent upstream must read a path the same way, or a spelling that
one of them reads differently walks around the guard. uvicorn percent-decodes the path before
routing, but an upstream (or aiohttp building its URL) then reads the decoded text again:
``/v1/chat/completions%3F`` routes as the unguarded path ``chat/completions?``, and the
upstream cuts it at the ``?`` into chat; ``/v1/x/%2e%2e/chat/completions`` routes as a
passthrough and is normalised into chat on the way out; ``/v1/%2e%2e/admin`` leaves the
upstream's base path carrying the upstream's key.

So a path is served only if it has exactly one reading (RFC 3986 §6.2.2):

- no empty segment (``//``, a trailing ``/``) and no ``.`` or ``..`` segment, literal or encoded;
- its characters are a segment's own (unreserved, sub-delimiters but ``;``, ``:``, ``@``), so
  nothing a server might treat as structure: no ``\\``, no ``;`` (path parameters in Java
  servers), no space or control character, no non-ASCII byte;
- a percent-escape may stand only for such a character, and never for ``.``: an encoded
  ``/``, ``?``, ``#``, ``%`` (a second decoding), ``\\`` or ``;`` is refused.

Any other path gets 400 ``invalid_path`` before a route sees it. What remains decodes to text
that every later reader (Starlette's router, :func:`proxy.upstream.target.UpstreamTarget.url_for`,
the upstream's own router) reads the same, and re-encodes to itself. Case is left alone here:
upstream IDs are case-sensitive; :mod:`proxy.services.passthrough` compares the guarded endpoints'
names without case.
"""

from __future__ import annotations

import re

from proxy.errors import InvalidPath

__all__ = ["canonical_path"]

_SEGMENT_CHARACTERS = (
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,=:@"
)
_ALLOWED = frozenset(_SEGMENT_CHARACTERS)
# The common case in one match: plain segments, none of them `.` or `..`, no escapes.
_PLAIN = re.compile(rb"(?:/(?!\.\.?(?:/|\Z))[A-Za-z0-9\-._~!$&'()*+,=:@]+)+\Z")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_SHOWN_CHARACTERS = 120


def _refuse(raw: bytes, why: str) -> InvalidPath:
    shown = raw[:_SHOWN_CHARACTERS].decode("ascii", errors="replace")
    more = "..." if len(raw) > _SHOWN_CHARACTERS else ""
    return InvalidPath(f"the request path {shown}{more} is not canonical: {why}")


def canonical_path(raw_path: bytes) -> str:
    """The one path ``raw_path`` (as sent, percent-escapes and all) spells, decoded.

    Raises
    ------
    InvalidPath
        The path has empty or dot segments, characters that are no segment's own, or an escape
        that stands for a separator, a dot or another escape.
    """
    if _PLAIN.match(raw_path) or raw_path == b"/":
        return raw_path.decode("ascii")
    if not raw_path.startswith(b"/"):
        raise _refuse(raw_path, "it does not start with /")
    decoded: list[str] = []
    for segment in raw_path[1:].split(b"/"):
        if not segment:
            raise _refuse(raw_path, "it has an empty segment (// or a trailing /)")
        if segment in (b".", b".."):
            raise _refuse(raw_path, "it has a . or .. segment")
        decoded.append(_decode_segment(raw_path, segment))
    return "/" + "/".join(decoded)


def _decode_segment(raw_path: bytes, segment: bytes) -> str:
    characters = bytearray()
    position = 0
    while position < len(segment):
        byte = segment[position]
        if byte == ord("%"):
            escape = segment[position + 1:position + 3]
            if len(escape) != 2 or not _HEX.issuperset(escape):
                raise _refuse(raw_path, "it has a % that starts no escape")
            byte = int(escape, 16)
            if byte == ord(".") or byte not in _ALLOWED:
                raise _refuse(raw_path, f"%{escape.decode()} encodes {chr(byte)!r}, which would "
                              "change how the path is read")
            position += 3
        elif byte in _ALLOWED:
            position += 1
        else:
            raise _refuse(raw_path, f"it holds {chr(byte)!r}, which no path segment may")
        characters.append(byte)
    return characters.decode("ascii")
