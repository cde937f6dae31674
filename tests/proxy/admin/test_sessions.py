"""Session tokens and CSRF tokens: only this server's, unexpired, unaltered tokens verify."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.admin.sessions import SessionSigner
from proxy.runtime.admin_access import AdminPrincipal

PRINCIPAL = AdminPrincipal(name="clinic-review", key_id="0a1b2c3d",
                           tenants=frozenset({"clinic"}), can_promote=False)
SECRET = b"s" * 32


def signer(now: float = 1000.0) -> SessionSigner:
    return SessionSigner(SECRET, clock=lambda: now)


def test_a_session_names_its_key_until_it_expires() -> None:
    token, expires = signer().issue(PRINCIPAL, 1800)
    assert expires == 2800
    claims = signer(2799).verify(token)
    assert claims is not None and (claims.name, claims.key_id) == ("clinic-review", "0a1b2c3d")
    assert signer(2800).verify(token) is None


def test_another_secret_or_an_altered_token_does_not_verify() -> None:
    token, _ = signer().issue(PRINCIPAL, 1800)
    assert SessionSigner(b"t" * 32, clock=lambda: 1000.0).verify(token) is None
    body, mac = token.split(".")
    assert signer().verify(f"{body}x.{mac}") is None
    # The nonce makes the MAC random: its last character is "A" one time in 64.
    altered = "B" if mac.endswith("A") else "A"
    assert signer().verify(f"{body}.{mac[:-1]}{altered}") is None
    assert signer().verify(None) is None and signer().verify("") is None


@given(st.text(max_size=300))
def test_no_made_up_token_verifies(token: str) -> None:
    assert signer().verify(token) is None
    session, _ = signer().issue(PRINCIPAL, 60)
    assert not signer().csrf_valid(session, token)
    assert not signer().login_form_valid("nonce", token)


def test_two_sessions_differ_and_their_csrf_tokens_are_bound_to_them() -> None:
    first, _ = signer().issue(PRINCIPAL, 60)
    second, _ = signer().issue(PRINCIPAL, 60)
    assert first != second
    csrf = signer().csrf_token(first)
    assert signer().csrf_valid(first, csrf)
    assert not signer().csrf_valid(second, csrf)
    assert not signer().csrf_valid(first, None) and not signer().csrf_valid(first, "")


def test_the_login_forms_token_is_bound_to_its_nonce() -> None:
    token = signer().login_form_token("nonce-a")
    assert signer().login_form_valid("nonce-a", token)
    assert not signer().login_form_valid("nonce-b", token)
    assert not signer().login_form_valid(None, token)


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        SessionSigner(b"short")
