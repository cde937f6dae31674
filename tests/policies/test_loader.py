from __future__ import annotations

from pathlib import Path

import pytest

from policies.check import check_policy_file, format_policy_summary
from policies.loader import PolicyError, load_policy_file

EXAMPLES = Path(__file__).resolve().parents[2] / "policies" / "examples"
DIGEST = "a" * 64

VALID = """\
version: 1
tenants:
  acme:
    api_keys:
      - env: ACME_KEY
    risk:
      profile: cautious
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def problem_at(tmp_path: Path, text: str) -> PolicyError:
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as caught:
        check_policy_file(path)
    assert caught.value.path == str(path)
    return caught.value


def test_valid_file_and_its_defaults(tmp_path: Path) -> None:
    policy = load_policy_file(write(tmp_path, VALID))
    tenant = policy.tenants["acme"]
    assert tenant.mode == "enforce"
    assert tenant.on_missing_confidence == "abstain"
    assert tenant.abstain_action == "message"
    assert tenant.threshold == pytest.approx(0.78)
    assert tenant.abstention_message


@pytest.mark.parametrize(
    ("risk", "threshold"),
    [
        ("profile: critical", 0.99),
        ("wrong_answer_cost: 4\n      abstain_cost: 0.1", 0.78),
        ("wrong_answer_cost: 1", 0.5),
        ("threshold: 0.7", 0.7),
    ],
)
def test_every_risk_form(tmp_path: Path, risk: str, threshold: float) -> None:
    text = VALID.replace("profile: cautious", risk)
    assert load_policy_file(write(tmp_path, text)).tenants["acme"].threshold == pytest.approx(
        threshold
    )


@pytest.mark.parametrize(
    ("replace", "by", "line", "message"),
    [
        ("profile: cautious", "profile: cautious\n    modee: shadow", 8, "tenants.acme.modee: unknown key"),
        ("profile: cautious", "threshold: 1.5", 7, "tenants.acme.risk.threshold: Input should be less than 1"),
        ("profile: cautious", "wrong_answer_cost: -2", 7, "greater than or equal to 0"),
        ("profile: cautious", "profile: cautious\n      threshold: 0.5", 6, "found profile and threshold"),
        ("profile: cautious", "profile: reckless", 6, "unknown profile 'reckless'"),
        ("profile: cautious", "abstain_cost: 0.5", 6, "needs `wrong_answer_cost`"),
        ("- env: ACME_KEY", "- key: sk-live-123456", 5, "a plaintext API key is not allowed"),
        ("- env: ACME_KEY", "- sk-live-123456", 5, "a plaintext API key is not allowed"),
        ("- env: ACME_KEY", "- sha256: abcd", 5, "should match pattern"),
        ("- env: ACME_KEY", "- env: acme-key", 5, "should match pattern"),
        ("profile: cautious", "profile: cautious\n    mode: loud", 8, "tenants.acme.mode: Input should be"),
        ("version: 1", "version: 2", 1, "version: Input should be 1"),
        ("    risk:\n      profile: cautious\n", "", 3, "tenants.acme.risk: required key is missing"),
    ],
)
def test_each_problem_is_located(
    tmp_path: Path, replace: str, by: str, line: int, message: str
) -> None:
    error = problem_at(tmp_path, VALID.replace(replace, by))
    assert error.line == line, str(error)
    assert message in error.message
    assert str(error).startswith(f"{tmp_path / 'policy.yaml'}:{line}: ")


def test_every_problem_is_reported_not_just_the_first(tmp_path: Path) -> None:
    text = VALID.replace("profile: cautious", "threshold: 2").replace("acme:", "acme:\n    colour: red")
    error = problem_at(tmp_path, text)
    assert [p.line for p in error.problems] == [4, 8]


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    error = problem_at(tmp_path, VALID + "    risk:\n      threshold: 0.2\n")
    assert error.line == 8
    assert "duplicate key 'risk'" in error.message


def test_a_key_shared_by_two_tenants(tmp_path: Path) -> None:
    text = VALID + "  other:\n    api_keys:\n      - env: ACME_KEY\n    risk:\n      threshold: 0.5\n"
    error = problem_at(tmp_path, text)
    assert error.line == 10
    assert "also identifies tenant 'acme'" in error.message


def test_yaml_syntax_error(tmp_path: Path) -> None:
    error = problem_at(tmp_path, VALID + "  broken: [unclosed\n")
    assert error.line is not None and error.line >= 8
    assert "invalid YAML" in error.message


@pytest.mark.parametrize(("text", "message"), [("", "the file is empty"), ("- a\n- b\n", "must be a mapping")])
def test_empty_or_not_a_mapping(tmp_path: Path, text: str, message: str) -> None:
    assert message in problem_at(tmp_path, text).message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read the file"):
        check_policy_file(tmp_path / "absent.yaml")


def test_missing_calibrator_artifact_is_located(tmp_path: Path) -> None:
    text = VALID + "    calibrators:\n      default: cal/default.json\n      models:\n        gpt: cal/gpt.json\n"
    (tmp_path / "cal").mkdir()
    (tmp_path / "cal" / "default.json").write_text("{}")
    error = problem_at(tmp_path, text)
    assert error.line == 11
    assert "cal/gpt.json" in error.message and "does not exist" in error.message


def test_unset_environment_key_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACME_KEY", raising=False)
    check = check_policy_file(write(tmp_path, VALID))
    assert check.warnings == [
        "tenant 'acme': environment variable ACME_KEY is not set here; "
        "the gateway will refuse to start without it"
    ]
    monkeypatch.setenv("ACME_KEY", "secret")
    assert check_policy_file(write(tmp_path, VALID)).warnings == []


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_examples_pass_the_check(example: Path) -> None:
    check = check_policy_file(example)
    table = format_policy_summary(check.tenants)
    for tenant in check.tenants:
        assert tenant.name in table
        assert f"{tenant.threshold:.4f}" in table


def test_sha256_keys_are_accepted(tmp_path: Path) -> None:
    policy = load_policy_file(write(tmp_path, VALID.replace("- env: ACME_KEY", f"- sha256: {DIGEST}")))
    assert policy.tenants["acme"].api_keys[0].sha256 == DIGEST
