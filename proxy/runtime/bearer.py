"""The key in an ``Authorization: Bearer KEY`` header: the one reading every key check uses."""

from __future__ import annotations

__all__ = ["bearer_key"]


def bearer_key(authorization: str | None) -> str | None:
    """The key of a ``Bearer`` credential, or None when the header carries none.

    The scheme is matched without regard to case (RFC 9110, section 11.1: ``bearer KEY`` is as
    valid as ``Bearer KEY``); the key is returned as sent, without surrounding spaces.
    """
    scheme, _, key = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return key.strip()
