from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field, ValidationError

from policies.profiles import PRESETS
from policies.schema import (
    DEFAULT_ABSTENTION_MESSAGE,
    ApiKeyRef,
    CertificateRefs,
    PolicyFile,
    RiskPolicy,
    StrictModel,
    TenantPolicy,
)

DIGEST = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def tenant(**overrides: Any) -> dict[str, Any]:
    return {"api_keys": [{"env": "ACME_KEY"}], "risk": {"profile": "cautious"}, **overrides}


def errors(model: type[BaseModel], data: Any) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    return [error["msg"] for error in caught.value.errors()]


@pytest.mark.parametrize(
    ("risk", "form", "wrong", "abstain", "threshold"),
    [
        ({"profile": "critical"}, "critical", 99.0, 0.0, 0.99),
        ({"wrong_answer_cost": 4, "abstain_cost": 0.1}, "custom", 4.0, 0.1, 0.78),
        ({"wrong_answer_cost": 1}, "custom", 1.0, 0.0, 0.5),
        ({"threshold": 0.8}, "threshold", 4.0, 0.0, 0.8),
        ({"threshold": 0}, "threshold", 0.0, 0.0, 0.0),
    ],
)
def test_each_risk_form_resolves_to_a_profile(
    risk: dict[str, Any], form: str, wrong: float, abstain: float, threshold: float
) -> None:
    policy = TenantPolicy.model_validate(tenant(risk=risk))
    assert policy.risk.form == form
    assert policy.profile.wrong_answer_cost == pytest.approx(wrong)
    assert policy.profile.abstain_cost == pytest.approx(abstain)
    assert policy.threshold == pytest.approx(threshold)


def test_every_preset_can_be_named() -> None:
    for name, profile in PRESETS.items():
        assert RiskPolicy(profile=name).resolve() is profile


@pytest.mark.parametrize(
    ("risk", "message"),
    [
        ({}, "found none"),
        ({"profile": "cautious", "threshold": 0.5}, "found profile and threshold"),
        ({"wrong_answer_cost": 2, "threshold": 0.5}, "found wrong_answer_cost/abstain_cost and threshold"),
        ({"abstain_cost": 0.5}, "`abstain_cost` needs `wrong_answer_cost`"),
        ({"profile": "reckless"}, "unknown profile 'reckless'; choose one of casual, balanced"),
        ("cautious", "`risk` is a mapping: `profile: <name>`"),
        ({"threshold": 1}, "less than 1"),
        ({"threshold": -0.1}, "greater than or equal to 0"),
        ({"threshold": float("nan")}, "finite number"),
        ({"threshold": False}, "valid number"),  # YAML's `no`
        ({"threshold": "0.5"}, "valid number"),
        ({"wrong_answer_cost": -1}, "greater than or equal to 0"),
        ({"wrong_answer_cost": 1e7}, "less than or equal to 1000000"),
        ({"wrong_answer_cost": float("inf")}, "finite number"),
        ({"wrong_answer_cost": 1, "abstain_cost": -0.1}, "greater than or equal to 0"),
        ({"threshold": 0.5, "colour": "red"}, "Extra inputs are not permitted"),
    ],
)
def test_bad_risk(risk: Any, message: str) -> None:
    assert any(message in text for text in errors(RiskPolicy, risk))


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("sk-live-abcdef", "a plaintext API key is not allowed"),
        ({"key": "sk-live-abcdef"}, "unknown key `key` in an API key reference; a plaintext key is not allowed"),
        ({"env": "ACME_KEY", "value": "sk"}, "unknown key `value`"),
        ({"env": "sk-live-abcdef"}, "`env` names an environment variable"),
        ({"env": "1ACME"}, "`env` names an environment variable"),
        ({"sha256": "abcd"}, "64 hex digits (printf %s"),
        ({"sha256": DIGEST.upper()}, "64 hex digits in lower case"),
        ({"sha256": 12345}, "quote the sha256 digest"),
        # The digest of "": with it, an empty `Authorization: Bearer ` would authenticate.
        ({"sha256": hashlib.sha256(b"").hexdigest()}, "the digest of the empty key"),
        ({"env": "A", "sha256": DIGEST}, "exactly one of `env:` or `sha256:`"),
        ({}, "exactly one of `env:` or `sha256:`"),
    ],
)
def test_bad_api_key_reference(key: Any, message: str) -> None:
    messages = errors(ApiKeyRef, key)
    assert any(message in text for text in messages), messages
    assert not any("sk-live-abcdef" in text for text in messages)  # never echo a secret


def test_good_api_key_references() -> None:
    assert ApiKeyRef.model_validate({"env": "SUPPORT_BOT_API_KEY"}).env == "SUPPORT_BOT_API_KEY"
    assert ApiKeyRef.model_validate({"sha256": DIGEST}).sha256 == DIGEST


def test_tenant_defaults() -> None:
    policy = TenantPolicy.model_validate(tenant())
    assert policy.mode == "enforce"
    assert policy.on_missing_confidence == "abstain"
    assert policy.abstain_action == "message"
    assert policy.abstention_message == DEFAULT_ABSTENTION_MESSAGE
    assert policy.calibrators.paths() == {}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"api_keys": []}, "at least 1 item"),
        ({"mode": "loud"}, "'enforce', 'annotate' or 'shadow'"),
        ({"on_missing_confidence": "guess"}, "'abstain', 'answer' or 'error'"),
        ({"abstention_message": ""}, "at least 1 character"),
        ({"calibrators": {"default": ""}}, "at least 1 character"),
        ({"calibrators": {"fallback": "a.json"}}, "Extra inputs are not permitted"),
    ],
)
def test_bad_tenant(overrides: dict[str, Any], message: str) -> None:
    assert any(message in text for text in errors(TenantPolicy, tenant(**overrides)))


@pytest.mark.parametrize("name", ["a", "support-bot", "team_1.prod", "2024", "A" * 64])
def test_good_tenant_names(name: str) -> None:
    assert list(PolicyFile.model_validate({"version": 1, "tenants": {name: tenant()}}).tenants) == [name]


@pytest.mark.parametrize("name", ["", "-leading-dash", ".hidden", "has space", "ünïcode", "A" * 65])
def test_bad_tenant_names(name: str) -> None:
    messages = errors(PolicyFile, {"version": 1, "tenants": {name: tenant()}})
    assert any("a tenant name starts with a letter or digit" in text for text in messages)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"version": 2, "tenants": {"a": tenant()}}, "Input should be 1"),
        ({"version": 1, "tenants": {}}, "at least 1 item"),
        ({"version": 1}, "Field required"),
        ({"version": 1, "tenants": {"a": tenant(), "b": tenant()}}, "`env: ACME_KEY` is used by tenants 'a' and 'b'"),
        (
            {"version": 1, "tenants": {"a": tenant(api_keys=[{"sha256": DIGEST}]), "b": tenant(api_keys=[{"sha256": DIGEST}])}},
            "a key must identify one tenant",
        ),
    ],
)
def test_bad_policy_file(data: dict[str, Any], message: str) -> None:
    assert any(message in text for text in errors(PolicyFile, data))


def test_the_same_key_twice_in_one_tenant_is_harmless() -> None:
    keys = [{"env": "ACME_KEY"}, {"env": "ACME_KEY"}]
    assert PolicyFile.model_validate({"version": 1, "tenants": {"a": tenant(api_keys=keys)}})


def test_calibrator_paths_resolve_against_the_policy_directory(tmp_path: Path) -> None:
    calibrators = {"default": "cal/default.json", "models": {"gpt-4o": "cal/gpt4o.json"}}
    policy = PolicyFile.model_validate(
        {"version": 1, "tenants": {"a": tenant(calibrators=calibrators), "b": tenant(api_keys=[{"env": "B"}])}}
    )
    assert policy.calibrator_paths(tmp_path) == {
        "a": {None: tmp_path / "cal/default.json", "gpt-4o": tmp_path / "cal/gpt4o.json"},
        "b": {},
    }


def test_a_gateway_config_can_extend_the_policy_file() -> None:
    class Upstream(StrictModel):
        base_url: str = Field(description="Where the model is served.")

    class Config(PolicyFile):
        models: dict[str, Upstream] = Field(description="Upstream models by public name.")

    config = Config.model_validate(
        {"version": 1, "tenants": {"a": tenant()}, "models": {"m": {"base_url": "http://x"}}}
    )
    assert config.tenants["a"].threshold == pytest.approx(0.78)
    assert any("Field required" in text for text in errors(Config, {"version": 1, "tenants": {"a": tenant()}}))


def test_a_risk_limit_with_its_certificates() -> None:
    policy = TenantPolicy.model_validate(tenant(risk={
        "profile": "balanced", "max_error_rate": 0.02, "confidence": 0.95,
        "certificates": {"default": "risk.json", "models": {"gpt-4o": "gpt4o.json"}},
        "on_breach": "abstain"}, audit_rate=0.05))
    risk = policy.risk
    assert risk.limited and (risk.max_error_rate, risk.confidence) == (0.02, 0.95)
    assert risk.on_breach == "abstain" and policy.audit_rate == 0.05
    assert risk.certificate_paths() == {None: "risk.json", "gpt-4o": "gpt4o.json"}
    # The costs still give the cost threshold the limit may raise.
    assert policy.threshold == pytest.approx(PRESETS["balanced"].threshold)
    plain = TenantPolicy.model_validate(tenant())
    assert not plain.risk.limited and plain.risk.certificate_paths() == {}
    assert plain.risk.on_breach == "alert" and plain.audit_rate == 0.0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"risk": {"profile": "cautious", "confidence": 0.9}},
         "`confidence` is given without `max_error_rate`"),
        ({"risk": {"profile": "cautious", "certificates": {"default": "r.json"}}},
         "`certificates` belong to a risk limit"),
        ({"risk": {"profile": "cautious", "max_error_rate": 0.1, "confidence": 0.9},
          "stream_gate": {"decide_after_tokens": 8, "calibrator": "gate.json"}},
         "a risk limit certifies a threshold on the whole-answer calibrator's probability"),
        ({"audit_rate": -0.1}, "greater than or equal to 0"),
    ],
)
def test_a_risk_limit_refuses_what_it_cannot_keep(overrides: dict[str, Any], message: str) -> None:
    messages = errors(TenantPolicy, tenant(**overrides))
    assert any(message in text for text in messages), messages


def test_certificate_paths_resolve_against_the_policy_directory(tmp_path: Path) -> None:
    limited = {"profile": "cautious", "max_error_rate": 0.1, "confidence": 0.9,
               "certificates": {"default": "certs/risk.json"}}
    policy = PolicyFile.model_validate(
        {"version": 1, "tenants": {"a": tenant(risk=limited), "b": tenant(api_keys=[{"env": "B"}])}}
    )
    assert policy.certificate_paths(tmp_path) == {"a": {None: tmp_path / "certs/risk.json"},
                                                  "b": {}}


def test_every_field_is_described() -> None:
    from policies import schema

    for model in (schema.ApiKeyRef, schema.RiskPolicy, schema.CalibratorRefs, CertificateRefs,
                  TenantPolicy, PolicyFile):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
        assert model.model_config.get("extra") == "forbid"
