from __future__ import annotations

from pathlib import Path

import pytest

from policies.check import check_policy_file, format_policy_summary
from policies.loader import PolicyError
from policies.schema import MIN_API_KEY_LENGTH

EXAMPLES = Path(__file__).resolve().parents[2] / "policies" / "examples"

VALID = "version: 1\ntenants:\n  acme:\n    api_keys:\n      - env: ACME_KEY\n    risk:\n      profile: cautious\n"
CALIBRATED = VALID + (
    "    calibrators:\n"                    # 8
    "      default: cal/default.json\n"     # 9
    "      models:\n"                       # 10
    "        gpt-4o: cal/gpt4o.json\n"      # 11
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_summary_of_each_tenant(tmp_path: Path) -> None:
    (tmp_path / "cal").mkdir()
    for name in ("default.json", "gpt4o.json"):
        (tmp_path / "cal" / name).write_text("{}")
    text = CALIBRATED + (
        "  bot:\n    api_keys: [{sha256: " + "a" * 64 + "}]\n    risk: {threshold: 0.8}\n"
        "    mode: shadow\n    on_missing_confidence: answer\n"
    )
    check = check_policy_file(write(tmp_path, text), environ={"ACME_KEY": "acme-secret-0123456789"})
    acme, bot = check.tenants
    assert (acme.name, acme.profile, acme.mode, acme.abstain_action, acme.on_missing_confidence) == (
        "acme", "cautious", "enforce", "message", "abstain"
    )
    assert (acme.wrong_answer_cost, acme.abstain_cost, acme.threshold) == pytest.approx((4, 0.1, 0.78))
    assert acme.calibrators == {None: tmp_path / "cal/default.json", "gpt-4o": tmp_path / "cal/gpt4o.json"}
    assert (bot.profile, bot.wrong_answer_cost, bot.abstain_cost, bot.threshold) == pytest.approx(
        ("threshold", 4.0, 0.0, 0.8)
    )
    assert (bot.mode, bot.on_missing_confidence, bot.calibrators) == ("shadow", "answer", {})
    assert check.warnings == []
    assert check.policy.tenants["acme"].threshold == acme.threshold


def test_the_table(tmp_path: Path) -> None:
    text = VALID + "  bot:\n    api_keys: [{env: BOT_KEY}]\n    risk: {wrong_answer_cost: 1.5}\n    mode: annotate\n"
    table = format_policy_summary(check_policy_file(write(tmp_path, text), environ={}).tenants)
    assert table.splitlines() == [
        "tenant  profile   λ wrong  a abstain  threshold  mode               no confidence  calibrators",
        "acme    cautious  4        0.1        0.7800     enforce (message)  abstain        none (uncalibrated)",
        "bot     custom    1.5      0          0.6000     annotate           abstain        none (uncalibrated)",
    ]


LIMITED = VALID + (
    "      max_error_rate: 0.02\n"           # 8
    "      confidence: 0.95\n"               # 9
    "      certificates:\n"                  # 10
    "        default: certs/risk.json\n"     # 11
    "    audit_rate: 0.05\n"                 # 12
)


def test_a_risk_limit_and_an_audit_rate_get_columns_of_their_own(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "risk.json").write_text("{}")  # existence only: policies cannot read it
    text = LIMITED + "  bot:\n    api_keys: [{env: BOT_KEY}]\n    risk: {wrong_answer_cost: 1.5}\n"
    check = check_policy_file(write(tmp_path, text), environ={})
    acme, bot = check.tenants
    assert acme.certificates == {None: tmp_path / "certs/risk.json"}
    assert (acme.max_error_rate, acme.confidence, acme.on_breach, acme.audit_rate) == (
        0.02, 0.95, "alert", 0.05)
    assert bot.limit == "none" and bot.certificates == {}
    assert format_policy_summary(check.tenants).splitlines() == [
        "tenant  profile   λ wrong  a abstain  threshold  mode               no confidence  risk limit         audit  calibrators",
        "acme    cautious  4        0.1        0.7800     enforce (message)  abstain        ≤ 2% wrong at 95%  5%     none (uncalibrated)",
        "bot     custom    1.5      0          0.6000     enforce (message)  abstain        none               none   none (uncalibrated)",
    ]


def test_missing_certificates_are_located(tmp_path: Path) -> None:
    path = write(tmp_path, LIMITED)
    with pytest.raises(PolicyError) as caught:
        check_policy_file(path, environ={})
    assert [str(problem) for problem in caught.value.problems] == [
        f"{path}:11: tenants.acme.risk.certificates.default: risk certificate "
        f"'{tmp_path / 'certs/risk.json'}' does not exist (paths are relative to the policy "
        "file's directory; `basguard calibrate certify ... -o FILE` writes one)",
    ]


def test_missing_calibrator_artifacts_are_located(tmp_path: Path) -> None:
    path = write(tmp_path, CALIBRATED)
    (tmp_path / "cal").mkdir()
    (tmp_path / "cal" / "gpt4o.json").mkdir()  # a directory is not an artifact
    with pytest.raises(PolicyError) as caught:
        check_policy_file(path)
    assert [str(problem) for problem in caught.value.problems] == [
        f"{path}:9: tenants.acme.calibrators.default: calibrator artifact "
        f"'{tmp_path / 'cal/default.json'}' does not exist (paths are relative to the policy file's directory)",
        f"{path}:11: tenants.acme.calibrators.models.gpt-4o: calibrator artifact "
        f"'{tmp_path / 'cal/gpt4o.json'}' is not a file (paths are relative to the policy file's directory)",
    ]


def test_invalid_files_fail_the_check_with_their_lines(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"policy\.yaml:7: tenants\.acme\.risk\.threshold: Input should be less than 1"):
        check_policy_file(write(tmp_path, VALID.replace("profile: cautious", "threshold: 1.5")))
    with pytest.raises(PolicyError, match=r"absent\.yaml: cannot read the file"):
        check_policy_file(tmp_path / "absent.yaml")


@pytest.mark.parametrize("value", [None, ""])
def test_an_unset_environment_key_is_a_warning_not_an_error(tmp_path: Path, value: str | None) -> None:
    environ = {} if value is None else {"ACME_KEY": value}
    check = check_policy_file(write(tmp_path, VALID), environ=environ)
    assert check.warnings == [
        "tenant 'acme': environment variable ACME_KEY is not set here; "
        "the gateway will refuse to start without it"
    ]


def test_the_process_environment_is_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACME_KEY", raising=False)
    assert len(check_policy_file(write(tmp_path, VALID)).warnings) == 1
    monkeypatch.setenv("ACME_KEY", "acme-secret-0123456789")
    assert check_policy_file(write(tmp_path, VALID)).warnings == []


EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yaml"))


def test_there_are_examples() -> None:
    assert len(EXAMPLE_FILES) >= 2


@pytest.mark.parametrize("example", EXAMPLE_FILES, ids=lambda path: path.name)
def test_shipped_examples_pass_the_check(example: Path) -> None:
    check = check_policy_file(example, environ={})
    table = format_policy_summary(check.tenants)
    for tenant in check.tenants:
        assert tenant.name in table
        assert f"{tenant.threshold:.4f}" in table
    # Every key in the examples is an env: reference or a digest, reported while unset.
    assert len(check.warnings) == sum(
        key.env is not None for policy in check.policy.tenants.values() for key in policy.api_keys
    )


def test_the_examples_cover_every_risk_form_and_mode() -> None:
    tenants = [tenant for example in EXAMPLE_FILES for tenant in check_policy_file(example, environ={}).tenants]
    forms = {"custom" if t.profile == "custom" else "threshold" if t.profile == "threshold" else "preset" for t in tenants}
    assert forms == {"preset", "custom", "threshold"}
    assert {t.mode for t in tenants} == {"enforce", "annotate", "shadow"}
    assert {t.on_missing_confidence for t in tenants} == {"abstain", "answer", "error"}


def test_a_key_shorter_than_the_minimum_is_an_error_at_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    with pytest.raises(PolicyError) as caught:
        check_policy_file(path, environ={"ACME_KEY": "x" * (MIN_API_KEY_LENGTH - 1)})
    assert str(caught.value) == (
        f"{path}:5: tenants.acme.api_keys.0: the key in ACME_KEY has {MIN_API_KEY_LENGTH - 1} "
        f"characters; keys need at least {MIN_API_KEY_LENGTH} (e.g. `openssl rand -hex 24`)"
    )
    assert check_policy_file(path, environ={"ACME_KEY": "x" * MIN_API_KEY_LENGTH}).warnings == []
