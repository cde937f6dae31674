"""Who may open the ops console: the admin and reviewer keys of a loaded config.

The keys are kept as SHA-256 digests, like the tenants', and compared the same way (against
every digest, in constant time). They are a separate table: a tenant key never matches one.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from policies.schema import MIN_API_KEY_LENGTH

__all__ = ["AdminKeys", "AdminPrincipal", "key_digest"]


def key_digest(key: str) -> bytes:
    """The SHA-256 digest a key is stored and compared as."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


@dataclass(frozen=True)
class AdminPrincipal:
    """One key's holder: an operator (``admin``) or a named reviewer, and what they may do."""

    name: str
    """``admin`` for the operators' keys, else the reviewer's name from the config."""
    key_id: str
    """The first 8 hex digits of the key's digest: which of several keys was used (rotation)."""
    tenants: frozenset[str] | None
    """The tenants this key sees; None: every tenant."""
    can_promote: bool
    """Operators fit and promote calibrators; reviewers label and read."""

    @property
    def who(self) -> str:
        """How logs and the promotion record name this holder."""
        return f"{self.name} (key {self.key_id})"

    def sees(self, tenant: str) -> bool:
        return self.tenants is None or tenant in self.tenants


@dataclass(frozen=True)
class AdminKeys:
    """The console's keys in one config version, and how long a browser session lasts."""

    digests: tuple[tuple[bytes, AdminPrincipal], ...]
    session_seconds: float

    def authenticate(self, key: str | None) -> AdminPrincipal | None:
        """The holder of ``key``, or None. Every digest is compared, in constant time."""
        if key is None or len(key) < MIN_API_KEY_LENGTH:
            return None
        digest = key_digest(key)
        found: AdminPrincipal | None = None
        for stored, principal in self.digests:
            if hmac.compare_digest(stored, digest):
                found = principal
        return found

    def principal(self, name: str, key_id: str) -> AdminPrincipal | None:
        """The holder a session names, if that key is still configured (a removed key's
        sessions end with the reload that removes it)."""
        for _, principal in self.digests:
            if principal.name == name and principal.key_id == key_id:
                return principal
        return None
