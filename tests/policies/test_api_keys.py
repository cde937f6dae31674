"""Tenant API keys: new keys, their digests, and a digest made with echo's newline."""

from __future__ import annotations

import hashlib
import string

from hypothesis import given
from hypothesis import strategies as st

from policies.api_keys import KEY_PREFIX, digest_mistakes, key_digest, match_keys, new_api_key
from policies.located_yaml import compose_located
from policies.schema import MIN_API_KEY_LENGTH, PolicyFile

KEYS = st.text(alphabet=string.ascii_letters + string.digits + "-_.~+/=", min_size=16,
               max_size=80)


def policy(text: str) -> tuple[PolicyFile, object]:
    data, lines = compose_located(text, display_name="p.yaml")
    return PolicyFile.model_validate(data), lines


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_new_keys_are_long_random_and_need_no_quoting() -> None:
    keys = {new_api_key() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert key.startswith(KEY_PREFIX) and len(key) == len(KEY_PREFIX) + 43
        assert len(key) >= MIN_API_KEY_LENGTH
        assert set(key) <= set(string.ascii_letters + string.digits + "-_")
        assert key_digest(key) == sha256(key)  # what `printf %s "$KEY" | sha256sum` prints


@given(KEYS)
def test_a_digest_made_with_echo_is_found_and_printf_s_is_matched(key: str) -> None:
    text = (f"version: 1\ntenants:\n  acme:\n    risk: {{threshold: 0.5}}\n    api_keys:\n"
            f'      - sha256: "{sha256(key + chr(10))}"\n'
            f'  rival:\n    risk: {{threshold: 0.5}}\n    api_keys:\n'
            f'      - sha256: "{sha256(key)}"\n')
    parsed, lines = policy(text)
    (match,) = match_keys(parsed, {"--key": key}, {})
    assert match.tenants == ("rival",)
    assert [(m.tenant, m.index, m.trailer) for m in match.mistaken] == [("acme", 0, "a newline")]
    (warning,) = digest_mistakes([match, match], path="p.yaml", lines=lines)  # once each
    assert warning.startswith("p.yaml:6: tenants.acme.api_keys.0: this sha256 digest is of "
                              "the key in --key followed by a newline")
    assert 'printf %s "$KEY" | sha256sum' in warning and key not in warning


def test_a_crlf_digest_and_an_env_key_are_recognised() -> None:
    key = "bgk_0123456789abcdefghij"
    parsed, lines = policy(
        "version: 1\ntenants:\n  acme:\n    risk: {threshold: 0.5}\n    api_keys:\n"
        "      - env: ACME_KEY\n"
        f'      - sha256: "{sha256(key + chr(13) + chr(10))}"\n')
    (match,) = match_keys(parsed, {"$ACME_KEY": key}, {"ACME_KEY": key + "\n"})
    assert match.tenants == ("acme",)  # the env key, stripped as the gateway strips it
    assert [m.trailer for m in match.mistaken] == ["a CR LF line end"]
    assert digest_mistakes([match], path="p.yaml", lines=lines)[0].startswith("p.yaml:7: ")
    (other,) = match_keys(parsed, {"--key": "bgk_another-key-entirely"}, {})
    assert other.tenants == () and other.mistaken == ()
