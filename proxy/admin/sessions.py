"""Browser sessions of the ops console: signed cookies, CSRF tokens, and the login throttle.

A session is a signed token, not a row anywhere: ``name|key id|expiry|nonce``, with an
HMAC-SHA256 of it under the server's session secret. Every worker process (and every replica
given the same ``BASGUARD_ADMIN_SESSION_SECRET``) verifies it alone, and a session ends at its
expiry, on logout (the cookie is cleared), or when its key leaves the config (each request looks
the key up in the config in force). The CSRF token of a session is an HMAC of the session token,
so a page can only carry it if it was served to that session.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from proxy.runtime.admin_access import AdminPrincipal

__all__ = ["LoginThrottle", "SessionClaims", "SessionSigner"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _same(presented: str, expected: str) -> bool:
    # As bytes: compare_digest refuses str with non-ASCII characters, which anyone can send.
    return hmac.compare_digest(presented.encode("utf-8", "surrogateescape"), expected.encode())


@dataclass(frozen=True)
class SessionClaims:
    """What a valid session token says: whose key opened it, and until when."""

    name: str
    key_id: str
    expires: float


class SessionSigner:
    """Issues and verifies session tokens and the CSRF tokens bound to them."""

    def __init__(self, secret: bytes, *, clock: Callable[[], float] = time.time) -> None:
        if len(secret) < 16:
            raise ValueError("the session secret needs at least 16 bytes")
        self._key = hashlib.sha256(b"basguard admin sessions\0" + secret).digest()
        self._clock = clock

    def _mac(self, purpose: str, data: str) -> str:
        return _b64(hmac.new(self._key, f"{purpose}\0{data}".encode(), hashlib.sha256).digest())

    def issue(self, principal: AdminPrincipal, lifetime_seconds: float) -> tuple[str, float]:
        """A new session token for ``principal``, and when it expires."""
        expires = round(self._clock() + lifetime_seconds)
        body = _b64(orjson.dumps([principal.name, principal.key_id, expires,
                                  secrets.token_hex(8)]))
        return f"{body}.{self._mac('session', body)}", float(expires)

    def verify(self, token: str | None) -> SessionClaims | None:
        """The claims of a token this server signed and that has not expired, else None."""
        if not token or token.count(".") != 1 or len(token) > 512:
            return None
        body, mac = token.split(".")
        if not _same(mac, self._mac("session", body)):
            return None
        try:
            name, key_id, expires, _ = orjson.loads(_unb64(body))
        except (ValueError, TypeError):
            return None
        if not (isinstance(name, str) and isinstance(key_id, str)
                and isinstance(expires, int | float)) or expires <= self._clock():
            return None
        return SessionClaims(name, key_id, float(expires))

    def csrf_token(self, session_token: str) -> str:
        """The token a session's forms and scripts send back with every POST."""
        return self._mac("csrf", session_token)

    def csrf_valid(self, session_token: str, presented: str | None) -> bool:
        return presented is not None and _same(presented, self.csrf_token(session_token))

    def login_form_token(self, nonce: str) -> str:
        """The login form's CSRF token, bound to a nonce in a cookie of its own (there is no
        session yet to bind it to)."""
        return self._mac("login", nonce)

    def login_form_valid(self, nonce: str | None, presented: str | None) -> bool:
        return (nonce is not None and presented is not None
                and _same(presented, self.login_form_token(nonce)))


class LoginThrottle:
    """At most ``attempts`` logins per client address in any ``window_seconds``.

    Kept in memory, per worker process: with N workers a client gets up to N times the
    allowance, which still makes guessing a 16-character key hopeless; the bound is against
    a flood of attempts, not the only defence. The table holds the most recent
    ``max_clients`` addresses.
    """

    def __init__(self, *, attempts: int = 10, window_seconds: float = 60.0,
                 max_clients: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.attempts = attempts
        self.window_seconds = window_seconds
        self._max_clients = max_clients
        self._clock = clock
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, client: str) -> float | None:
        """Count an attempt by ``client``; None if allowed, else the seconds until it is."""
        now = self._clock()
        times = self._seen.pop(client, None) or deque()
        while times and times[0] <= now - self.window_seconds:
            times.popleft()
        self._seen[client] = times
        if len(self._seen) > self._max_clients:
            self._seen.popitem(last=False)
        if len(times) >= self.attempts:
            return times[0] + self.window_seconds - now
        times.append(now)
        return None
