"""The config's ``admin:`` section: the same key rules as tenants', and keys of its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from policies.loader import PolicyError
from proxy.runtime.state import build_runtime, check_runtime
from tests.support.admin_console import ADMIN_KEY, REVIEWER_KEY, digest
from tests.support.gateway import TENANT_KEYS


def config(admin: dict[str, Any]) -> dict[str, Any]:
    return {"version": 1, "models": {"m": {"base_url": "http://127.0.0.1:9/v1"}},
            "tenants": {
                "shop": {"api_keys": [{"env": "SHOP_KEY"}], "risk": {"threshold": 0.5}},
                "clinic": {"api_keys": [{"sha256": digest(TENANT_KEYS["enforcer"])}],
                           "risk": {"threshold": 0.8}}},
            "admin": admin}


def load(tmp_path: Path, admin: dict[str, Any], **env: str) -> Any:
    path = tmp_path / "basguard.yaml"
    path.write_text(yaml.safe_dump(config(admin)))
    return build_runtime(path, {"SHOP_KEY": "shop-key-0123456789abcdef", **env})


def test_operators_and_reviewers_are_told_apart_by_their_keys(tmp_path: Path) -> None:
    state = load(tmp_path, {"api_keys": [{"env": "ADMIN_KEY"}], "session_minutes": 5,
                            "reviewers": {"clinic-review": {
                                "api_keys": [{"sha256": digest(REVIEWER_KEY)}],
                                "tenants": ["clinic"]}}}, ADMIN_KEY=ADMIN_KEY)
    keys = state.admin
    assert keys is not None and keys.session_seconds == 300
    operator = keys.authenticate(ADMIN_KEY)
    assert operator is not None and operator.name == "admin" and operator.can_promote
    assert operator.tenants is None and operator.sees("shop")
    reviewer = keys.authenticate(REVIEWER_KEY)
    assert reviewer is not None and reviewer.who == f"clinic-review (key {digest(REVIEWER_KEY)[:8]})"
    assert not reviewer.can_promote and reviewer.sees("clinic") and not reviewer.sees("shop")
    assert keys.principal("clinic-review", reviewer.key_id) == reviewer
    # Tenant keys are not console keys, and console keys are not tenant keys.
    assert keys.authenticate("shop-key-0123456789abcdef") is None
    assert keys.authenticate(TENANT_KEYS["enforcer"]) is None
    assert keys.authenticate(None) is None and keys.authenticate("short") is None
    with pytest.raises(Exception, match="invalid API key"):
        state.authenticate(f"Bearer {ADMIN_KEY}")


def test_without_an_admin_section_there_are_no_console_keys(tmp_path: Path) -> None:
    path = tmp_path / "basguard.yaml"
    plain = config({})
    del plain["admin"]
    path.write_text(yaml.safe_dump(plain))
    assert build_runtime(path, {"SHOP_KEY": "shop-key-0123456789abcdef"}).admin is None


@pytest.mark.parametrize(("admin", "env", "message"), [
    ({"api_keys": [{"env": "ADMIN_KEY"}]}, {}, "ADMIN_KEY is not set"),
    ({"api_keys": [{"env": "ADMIN_KEY"}]}, {"ADMIN_KEY": "short"}, "has 5 characters"),
    ({"api_keys": [{"env": "ADMIN_KEY"}]}, {"ADMIN_KEY": "shop-key-0123456789abcdef"},
     "also a tenant's key"),
    ({"api_keys": [{"sha256": digest(TENANT_KEYS["enforcer"])}]}, {}, "is also tenant 'clinic'"),
    ({"api_keys": [{"env": "SHOP_KEY"}]}, {}, "is also tenant 'shop'"),
    ({"api_keys": [{"env": "ADMIN_KEY"}], "tenants": ["nobody"]}, {"ADMIN_KEY": ADMIN_KEY},
     "unknown tenants"),
    ({"api_keys": [{"env": "ADMIN_KEY"}], "reviewers": {"admin": {"api_keys": [
        {"env": "OTHER"}]}}}, {"ADMIN_KEY": ADMIN_KEY}, "may not be named 'admin'"),
    ({"api_keys": [{"env": "ADMIN_KEY"}], "reviewers": {"r": {"api_keys": [
        {"env": "ADMIN_KEY"}]}}}, {"ADMIN_KEY": ADMIN_KEY}, "is also admin's"),
    ({"api_keys": ["plaintext-admin-key-0123456789"]}, {}, "plaintext API key is not allowed"),
    ({"api_keys": [{"env": "ADMIN_KEY"}], "session_minutes": 0}, {"ADMIN_KEY": ADMIN_KEY},
     "greater than or equal to 1"),
], ids=["unset", "short", "a tenant's value", "a tenant's digest", "a tenant's variable",
        "unknown tenant", "reviewer named admin", "shared with a reviewer", "plaintext",
        "no session"])
def test_a_bad_admin_section_fails_the_load_at_its_line(
        tmp_path: Path, admin: dict[str, Any], env: dict[str, str], message: str) -> None:
    with pytest.raises(PolicyError, match=message) as error:
        load(tmp_path, admin, **env)
    assert "plaintext-admin-key" not in str(error.value)
    assert "shop-key-0123456789abcdef" not in str(error.value)


def test_policy_check_warns_of_an_unset_admin_key(tmp_path: Path) -> None:
    path = tmp_path / "basguard.yaml"
    path.write_text(yaml.safe_dump(config({"api_keys": [{"env": "ADMIN_KEY"}]})))
    state, warnings = check_runtime(path, {"SHOP_KEY": "shop-key-0123456789abcdef"})
    assert state.admin is not None and state.admin.digests == ()
    assert any("ADMIN_KEY is not set" in warning for warning in warnings)
