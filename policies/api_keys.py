"""Tenant API keys: making a strong one, its digest, and catching a digest made wrong.

A tenant's key is referenced in a policy file by an environment variable or by its SHA-256
digest. A digest is made outside basguard, and the usual way to make it, ``echo "$KEY" |
sha256sum``, hashes the key *and* echo's newline: the digest is valid, the file checks, and every
request is then refused (a presented key is stripped, so its digest never has the newline).
:func:`digest_mistakes` finds that case whenever the key itself is at hand.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .located_yaml import KeyLines
from .schema import MIN_API_KEY_LENGTH, PolicyFile

__all__ = [
    "KEY_PREFIX",
    "KeyMatch",
    "MistakenDigest",
    "digest_mistakes",
    "key_digest",
    "match_keys",
    "new_api_key",
]

KEY_PREFIX = "bgk_"
"""Starts every key :func:`new_api_key` makes, so a secret scanner (or a person) can tell a
basguard key in a log or a commit from random text."""

_KEY_BYTES = 32
"""256 random bits: no guessing or precomputing it, whatever the number of tries."""

#: What a shell adds after a key when the digest is made with echo, or from a file written on
#: Windows; each named as the warning shows it.
_TRAILERS = (("\n", "a newline"), ("\r\n", "a CR LF line end"))


def new_api_key() -> str:
    """A new random API key: :data:`KEY_PREFIX` and 32 random bytes, URL-safe base64.

    Returns
    -------
    str
        47 characters, well over :data:`~policies.schema.MIN_API_KEY_LENGTH`, with no
        character a shell, a URL or a YAML file needs quoted.
    """
    key = KEY_PREFIX + secrets.token_urlsafe(_KEY_BYTES)
    assert len(key) >= MIN_API_KEY_LENGTH
    return key


def _raw_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def key_digest(key: str) -> str:
    """The lower-case hex SHA-256 digest of ``key`` as a policy file's ``sha256:`` holds it.

    The key is hashed as the gateway hashes a presented key: UTF-8, surrounding whitespace
    stripped. ``printf %s "$KEY" | sha256sum`` gives the same digest for a key without
    surrounding whitespace; ``echo "$KEY" | sha256sum`` does not (echo adds a newline).
    """
    return _raw_digest(key.strip())


@dataclass(frozen=True)
class MistakenDigest:
    """A ``sha256:`` entry that is a key's digest with a line end appended."""

    tenant: str
    index: int
    """The entry's position in the tenant's ``api_keys``."""
    trailer: str
    """What was appended, in words (``a newline``)."""

    @property
    def where(self) -> str:
        return f"tenants.{self.tenant}.api_keys.{self.index}"


@dataclass(frozen=True)
class KeyMatch:
    """A key at hand compared with the digests of a policy file."""

    source: str
    """Where the key came from, as messages name it (never the key itself)."""
    tenants: tuple[str, ...]
    """The tenants the key authenticates as: a ``sha256:`` digest is its own, or an ``env:``
    key is the key."""
    mistaken: tuple[MistakenDigest, ...]
    """The digests made from the key with a line end appended."""


def match_keys(
    policy: PolicyFile, keys: Mapping[str, str], environ: Mapping[str, str]
) -> list[KeyMatch]:
    """Compare each key at hand with every key of ``policy``: its digests, and its ``env:``
    keys that are set in ``environ``.

    Parameters
    ----------
    policy : PolicyFile
        The validated policy (or a subclass, such as the gateway's config).
    keys : mapping of str to str
        A name for where each key came from (``--key``, ``$SUPPORT_BOT_API_KEY``) to the key.
    environ : mapping of str to str
        Where the policy's ``env:`` keys are read.

    Returns
    -------
    list of KeyMatch
        One per key, in the mapping's order.
    """
    digests = [(name, i, key.sha256) for name, tenant in policy.tenants.items()
               for i, key in enumerate(tenant.api_keys) if key.sha256 is not None]
    env_keys = [(name, environ[key.env]) for name, tenant in policy.tenants.items()
                for key in tenant.api_keys
                if key.env is not None and environ.get(key.env, "").strip()]
    matches = []
    for source, key in keys.items():
        own = key_digest(key)
        trailed = {_raw_digest(key.strip() + end): words for end, words in _TRAILERS}
        tenants = tuple(dict.fromkeys(
            [name for name, _, digest in digests if digest == own]
            + [name for name, value in env_keys if key_digest(value) == own]))
        mistaken = tuple(MistakenDigest(name, i, trailed[digest])
                         for name, i, digest in digests if digest in trailed)
        matches.append(KeyMatch(source, tenants, mistaken))
    return matches


def digest_mistakes(matches: Sequence[KeyMatch], *, path: str, lines: KeyLines) -> list[str]:
    """A warning for each ``sha256:`` digest that is a key at hand's with a line end appended.

    Such a digest is valid, so the file checks, but no request ever matches it: the gateway
    hashes a presented key without one. No warning quotes a key.

    Parameters
    ----------
    matches : sequence of KeyMatch
        From :func:`match_keys`.
    path : str
        The policy file, as warnings name it.
    lines : KeyLines
        The line of every key of the file, to point at the digest.

    Returns
    -------
    list of str
        ``FILE:LINE: ...``, each digest once; empty when no digest is a key's plus a line end.
    """
    warnings: dict[str, None] = {}
    for match in matches:
        for wrong in match.mistaken:
            line = lines.line_of(("tenants", wrong.tenant, "api_keys", wrong.index))
            where = path if line is None else f"{path}:{line}"
            warnings[
                f"{where}: {wrong.where}: this sha256 digest is of the key in {match.source} "
                f"followed by {wrong.trailer} (made with `echo`?); the gateway hashes a key "
                "without it, so that key will get 'invalid API key'. Make the digest with "
                '`printf %s "$KEY" | sha256sum`, or a new key and its digest with '
                "`basguard key new`"] = None
    return list(warnings)
