from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import Field

from policies.loader import (
    PolicyError,
    load_policy_file,
    load_yaml_located,
    load_yaml_model,
    parse_policy_text,
)
from policies.schema import PolicyFile

DIGEST = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

# Line numbers:  1            2           3          4             5                 6
VALID = "version: 1\ntenants:\n  acme:\n    api_keys:\n      - env: ACME_KEY\n    risk:\n      profile: cautious\n"
#                7


def write(tmp_path: Path, text: str, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> PolicyError:
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as caught:
        load_policy_file(path)
    assert caught.value.path == str(path)
    return caught.value


def test_a_valid_file(tmp_path: Path) -> None:
    policy = load_policy_file(write(tmp_path, VALID))
    assert list(policy.tenants) == ["acme"]
    assert policy.tenants["acme"].threshold == pytest.approx(0.78)


@pytest.mark.parametrize(
    ("replace", "by", "line", "message"),
    [
        # unknown keys, with what is allowed instead
        ("    risk:", "    modee: shadow\n    risk:", 6, "tenants.acme.modee: unknown key (check its spelling and indentation); allowed here: api_keys, risk, calibrators, confidence, mode"),
        ("version: 1", "version: 1\ncolour: red", 2, "colour: unknown key (check its spelling and indentation); allowed here: version, tenants"),
        ("profile: cautious", "profile: cautious\n      treshold: 0.5", 8, "tenants.acme.risk.treshold: unknown key"),
        # numbers out of range or of the wrong type
        ("profile: cautious", "threshold: 1.5", 7, "tenants.acme.risk.threshold: Input should be less than 1"),
        ("profile: cautious", "threshold: .nan", 7, "tenants.acme.risk.threshold: Input should be a finite number"),
        ("profile: cautious", "threshold: no", 7, "tenants.acme.risk.threshold: Input should be a valid number"),
        ("profile: cautious", "threshold: '0.5'", 7, "tenants.acme.risk.threshold: Input should be a valid number"),
        ("profile: cautious", "wrong_answer_cost: -2", 7, "tenants.acme.risk.wrong_answer_cost: Input should be greater than or equal to 0"),
        ("profile: cautious", "wrong_answer_cost: 2\n      abstain_cost: -1", 8, "tenants.acme.risk.abstain_cost: Input should be greater than or equal to 0"),
        # the risk forms
        ("profile: cautious", "profile: cautious\n      threshold: 0.5", 6, "tenants.acme.risk: give exactly one of `profile`, `wrong_answer_cost` (with optional `abstain_cost`) or `threshold`; found profile and threshold"),
        ("profile: cautious", "profile: reckless", 6, "tenants.acme.risk: unknown profile 'reckless'; choose one of casual, balanced, cautious, high_stakes, critical"),
        ("profile: cautious", "abstain_cost: 0.5", 6, "tenants.acme.risk: `abstain_cost` needs `wrong_answer_cost` as well"),
        ("    risk:\n      profile: cautious\n", "    risk: cautious\n", 6, "tenants.acme.risk: `risk` is a mapping"),
        # risk limits and the audit sample
        ("profile: cautious", "profile: cautious\n      max_error_rate: 0", 8, "tenants.acme.risk.max_error_rate: Input should be greater than 0"),
        ("profile: cautious", "profile: cautious\n      max_error_rate: 0.05", 6, "tenants.acme.risk: a risk limit needs both `max_error_rate` and `confidence`; `max_error_rate` is given without `confidence`"),
        ("profile: cautious", "profile: cautious\n      confidence: 1", 8, "tenants.acme.risk.confidence: Input should be less than 1"),
        ("profile: cautious", "profile: cautious\n      on_breach: abstain", 6, "tenants.acme.risk: `on_breach` belong to a risk limit: add `max_error_rate` and `confidence`, or remove them"),
        ("profile: cautious", "profile: cautious\n      max_error_rate: 0.05\n      confidence: 0.95\n      on_breach: page", 10, "tenants.acme.risk.on_breach: Input should be 'alert' or 'abstain'"),
        ("profile: cautious", "profile: cautious\n      max_error_rate: 0.05\n      confidence: 0.95\n      certificates: {fallback: x.json}", 10, "tenants.acme.risk.certificates.fallback: unknown key"),
        ("    risk:", "    audit_rate: 1.5\n    risk:", 6, "tenants.acme.audit_rate: Input should be less than or equal to 1"),
        ("    risk:", "    audit_rate: '5%'\n    risk:", 6, "tenants.acme.audit_rate: Input should be a valid number"),
        ("    risk:\n      profile: cautious\n", "    on_missing_confidence: answer\n    risk:\n      profile: cautious\n      max_error_rate: 0.05\n      confidence: 0.95\n", 3, "tenants.acme: `on_missing_confidence: answer` passes answers that no confidence vouches for, which a risk limit cannot cover"),
        # api keys
        ("- env: ACME_KEY", "- key: sk-live-123456", 5, "tenants.acme.api_keys.0: unknown key `key` in an API key reference; a plaintext key is not allowed, reference it as `env: VARIABLE_NAME` or its digest as `sha256: <64 lower-case hex digits>`"),
        ("- env: ACME_KEY", "- sk-live-123456", 5, "tenants.acme.api_keys.0: a plaintext API key is not allowed in a policy file; reference it as `env: VARIABLE_NAME`"),
        ("- env: ACME_KEY", "- sha256: abcd", 5, "tenants.acme.api_keys.0: `sha256` must be the key's SHA-256 digest as 64 hex digits"),
        ("- env: ACME_KEY", f"- sha256: {DIGEST.upper()}", 5, "64 hex digits in lower case"),
        ("- env: ACME_KEY", "- env: acme-key", 5, "tenants.acme.api_keys.0: `env` names an environment variable"),
        ("      - env: ACME_KEY\n", "", 4, "tenants.acme.api_keys: expected a list, got nothing"),
        ("      - env: ACME_KEY\n", "      []\n", 4, "tenants.acme.api_keys: List should have at least 1 item"),
        # modes and other enumerations
        ("    risk:", "    mode: loud\n    risk:", 6, "tenants.acme.mode: Input should be 'enforce', 'annotate' or 'shadow'"),
        ("    risk:", "    on_missing_confidence: guess\n    risk:", 6, "tenants.acme.on_missing_confidence: Input should be 'abstain', 'answer' or 'error'"),
        # structure
        ("version: 1", "version: 2", 1, "version: Input should be 1"),
        ("version: 1\n", "", 1, "required key `version` is missing"),
        ("    risk:\n      profile: cautious\n", "", 3, "tenants.acme: required key `risk` is missing"),
        ("  acme:", "  'bad name':", 3, "tenants.bad name: a tenant name starts with a letter or digit and has only letters, digits, '_', '.' and '-'"),
        ("tenants:\n", "tenants: {}\nx:\n", 2, "tenants: Dictionary should have at least 1 item"),
        # YAML-level problems
        ("profile: cautious", "profile: !custom cautious", 7, "tenants.acme.risk.profile: unsupported YAML tag '!custom'"),
        ("    risk:", "    api_keys:\n      - env: OTHER\n    risk:", 6, "tenants.acme.api_keys: duplicate key 'api_keys'"),
    ],
)
def test_each_problem_is_located(
    tmp_path: Path, replace: str, by: str, line: int, message: str
) -> None:
    assert replace in VALID
    error = load_error(tmp_path, VALID.replace(replace, by, 1))
    assert error.line == line, str(error)
    assert message in error.message, str(error)
    assert str(error).startswith(f"{tmp_path / 'policy.yaml'}:{line}: {error.message}")


def test_a_plaintext_key_is_never_echoed(tmp_path: Path) -> None:
    for entry in ("- sk-live-123456", "- key: sk-live-123456", "- env: sk-live-123456", "- sha256: sk-live-123456"):
        error = load_error(tmp_path, VALID.replace("- env: ACME_KEY", entry))
        assert "sk-live" not in str(error)


def test_every_problem_is_reported_in_line_order(tmp_path: Path) -> None:
    text = (
        "version: 3\n"                      # 1
        "tenants:\n"                        # 2
        "  acme:\n"                         # 3
        "    colour: red\n"                 # 4
        "    api_keys:\n"                   # 5
        "      - key: sk-123\n"             # 6
        "    risk:\n"                       # 7
        "      threshold: 2\n"              # 8
        "    mode: loud\n"                  # 9
        "    mode: shadow\n"                # 10
    )
    error = load_error(tmp_path, text)
    assert [(p.line, p.message.split(":")[0]) for p in error.problems] == [
        (1, "version"),
        (4, "tenants.acme.colour"),
        (6, "tenants.acme.api_keys.0"),
        (8, "tenants.acme.risk.threshold"),
        (9, "tenants.acme.mode"),
        (10, "tenants.acme.mode"),
    ]
    assert "duplicate key 'mode'" in error.problems[-1].message
    assert str(error).splitlines() == [str(problem) for problem in error.problems]
    assert (error.line, error.message) == (1, error.problems[0].message)


def test_a_key_shared_by_two_tenants_is_reported_at_the_second(tmp_path: Path) -> None:
    other = "  other:\n    api_keys:\n      - sha256: {d}\n      - env: ACME_KEY\n    risk:\n      threshold: 0.5\n"
    error = load_error(tmp_path, VALID + other.format(d=DIGEST))
    assert [problem.line for problem in error.problems] == [11]
    assert error.message == (
        "tenants.other.api_keys.1: the key `env: ACME_KEY` also identifies tenant 'acme'; "
        "a key must identify one tenant"
    )
    sha = VALID.replace("- env: ACME_KEY", f"- sha256: {DIGEST}") + other.format(d=DIGEST).replace("ACME_KEY", "OTHER")
    assert load_error(tmp_path, sha).line == 10


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (VALID + "  broken: [unclosed\n", 9, "invalid YAML: expected ',' or ']', but got '<stream end>' (while parsing a flow sequence started on line 8)"),
        (VALID.replace("    risk:", "   risk:"), 6, "invalid YAML: expected <block end>, but found '<block mapping start>' (while parsing a block mapping started on line 3)"),
        (VALID.replace("  acme:", "\tacme:"), 3, "invalid YAML: found character '\\t' that cannot start any token"),
        (VALID.replace("cautious", '"cautious'), 8, "invalid YAML: found unexpected end of stream (while scanning a quoted scalar started on line 7)"),
        (VALID + "---\nversion: 1\n", 8, "invalid YAML: but found another document"),
    ],
)
def test_yaml_syntax_errors_are_located(tmp_path: Path, text: str, line: int, message: str) -> None:
    error = load_error(tmp_path, text)
    assert error.line == line
    assert error.message.startswith(message)
    assert str(error) == f"{tmp_path / 'policy.yaml'}:{line}: {error.message}"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("", None, "the file is empty"),
        ("# only a comment\n", None, "the file is empty"),
        ("- a\n- b\n", 1, "the file must be a mapping"),
        ("\n\njust text\n", 3, "the file must be a mapping"),
    ],
)
def test_empty_or_not_a_mapping(tmp_path: Path, text: str, line: int | None, message: str) -> None:
    error = load_error(tmp_path, text)
    assert (error.line, error.message) == (line, message)
    expected = f"{tmp_path / 'policy.yaml'}:{line}" if line else str(tmp_path / "policy.yaml")
    assert str(error) == f"{expected}: {message}"


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"absent\.yaml: cannot read the file: No such file") as caught:
        load_policy_file(tmp_path / "absent.yaml")
    assert caught.value.line is None
    with pytest.raises(PolicyError, match="cannot read the file: Is a directory"):
        load_policy_file(tmp_path)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"version: 1\n\xff\xfe\n")
    with pytest.raises(PolicyError, match=r"binary\.yaml:2: not UTF-8 text \(byte 0xff\)$"):
        load_policy_file(binary)


def test_parse_policy_text_names_the_source() -> None:
    assert parse_policy_text(VALID).tenants["acme"].mode == "enforce"
    with pytest.raises(PolicyError, match=r"^inline:1: version: Input should be 1$"):
        parse_policy_text(VALID.replace("version: 1", "version: 2"), display_name="inline")


class Extended(PolicyFile):
    models: dict[str, str] = Field(description="Upstream address per public model name.")


def test_load_yaml_model_reads_a_subclass_with_the_same_errors(tmp_path: Path) -> None:
    path = write(tmp_path, VALID + "models:\n  gpt: http://upstream\n", "gateway.yaml")
    config, lines = load_yaml_located(path, Extended)
    assert config.models == {"gpt": "http://upstream"}
    assert lines.line_of(("models", "gpt")) == 9
    assert lines.line_of(("tenants", "acme", "risk", "no-such-key")) == 6
    with pytest.raises(PolicyError) as caught:
        load_yaml_model(write(tmp_path, VALID + "modles: {}\n", "gateway.yaml"), Extended)
    assert [str(problem) for problem in caught.value.problems] == [
        f"{tmp_path / 'gateway.yaml'}:1: required key `models` is missing",
        f"{tmp_path / 'gateway.yaml'}:8: modles: unknown key (check its spelling and indentation); "
        "allowed here: version, tenants, models",
    ]
    with pytest.raises(PolicyError, match=r"gateway\.yaml:1: required key `models` is missing"):
        load_yaml_model(write(tmp_path, VALID, "gateway.yaml"), Extended)
