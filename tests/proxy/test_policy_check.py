"""``basguard policy check`` on gateway configs and policy files: whatever serve accepts, it does."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.cli.main import main
from tests.support.shipped_data import REPOSITORY

DEMO_CONFIG = REPOSITORY / "proxy" / "tools" / "demo_files" / "demo-config.yaml"
EXAMPLES = sorted((REPOSITORY / "policies" / "examples").glob("*.yaml"))

# A gateway config as in docs/serving.md: a hosted model and a local one, keys from the environment.
GATEWAY = """\
version: 1
models:
  gpt-4o-mini:
    base_url: https://api.openai.com/v1
    api_key_env: OPENAI_API_KEY
  local:
    base_url: http://127.0.0.1:8080/v1
tenants:
  support-bot:
    api_keys:
      - env: SUPPORT_BOT_API_KEY
    risk:
      profile: cautious
    calibrators:
      models:
        local: calibrator.json
"""


def check(capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, str, str]:
    status = main(["policy", "check", str(path)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture
def gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("OPENAI_API_KEY", "SUPPORT_BOT_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    shutil.copy(REPOSITORY / "proxy" / "tools" / "demo_files" / "smollm2-calibrator.json",
                tmp_path / "calibrator.json")
    path = tmp_path / "basguard.yaml"
    path.write_text(GATEWAY)
    return path


def test_a_gateway_config_is_checked_as_serve_loads_it(
    gateway: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = check(capsys, gateway)
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["model", "provider", "upstream", "model", "base", "url", "timeout"]
    assert lines[1].split() == ["gpt-4o-mini", "openai", "gpt-4o-mini",
                                "https://api.openai.com/v1", "60", "s"]
    tenant = next(line for line in lines if line.startswith("support-bot"))
    assert "cautious" in tenant and "0.7800" in tenant
    # The signals: the default is uncalibrated, the local model's calibrator reads its features.
    assert "gpt-4o-mini: logprobs: token_prob (+0 calls/request); " \
        "local: logprobs: token_prob, min_token_prob" in tenant
    assert out.endswith(f"{gateway}: OK (2 models, 1 tenant)\n")
    # Unset variables are warnings with their lines: the check may run where secrets are not.
    assert err.splitlines() == [
        f"warning: {gateway}:11: tenant 'support-bot': environment variable SUPPORT_BOT_API_KEY "
        "is not set here; the gateway will refuse to start without it",
        f"warning: {gateway}:5: model 'gpt-4o-mini': environment variable OPENAI_API_KEY is "
        "not set here; the gateway will refuse to start without it",
    ]


@pytest.mark.parametrize(
    ("change", "line", "message"),
    [
        ({"models": {"local": {"base_url": None}}}, 6, "an openai-compatible upstream needs `base_url`"),
        ({"tenants": {"support-bot": {"calibrators": {"models": {"nope": "calibrator.json"}}}}}, None,
         "calibrators for unknown models ['nope']"),
        ({"tenants": {"support-bot": {"calibrators": {"default": "broken.json"}}}}, 15, "broken.json"),
    ],
)
def test_what_serve_refuses_the_check_refuses_at_its_line(
    gateway: Path, capsys: pytest.CaptureFixture[str], change: dict[str, object], line: int | None,
    message: str,
) -> None:
    (gateway.parent / "broken.json").write_text('{"format": "basguard.calibrator"')
    config = yaml.safe_load(GATEWAY)
    for section, entries in change.items():
        for name, fields in entries.items():  # type: ignore[attr-defined]
            config[section][name] = {**config[section][name], **fields}
    gateway.write_text(yaml.safe_dump(config, sort_keys=False))
    status, out, err = check(capsys, gateway)
    assert status == 2 and out == ""
    assert message in err
    if line is not None:
        assert err.startswith(f"basguard: error: {gateway}:{line}: ")


def test_a_short_key_fails_the_check_as_it_fails_the_start(
    gateway: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUPPORT_BOT_API_KEY", "Zq7#x")
    status, _, err = check(capsys, gateway)
    assert status == 2
    assert err.startswith(f"basguard: error: {gateway}:11: tenants.support-bot.api_keys.0: "
                          "the key in SUPPORT_BOT_API_KEY has 5 characters")
    assert "Zq7#x" not in err  # never echo a key


def test_the_shipped_demo_config_passes(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = check(capsys, DEMO_CONFIG)
    assert status == 0, err
    assert out.endswith(f"{DEMO_CONFIG}: OK (1 model, 2 tenants)\n")
    assert "smollm2  openai" in out
    for tenant in ("explorer", "clinic"):
        row = next(line for line in out.splitlines() if line.startswith(tenant))
        assert "token_prob, min_token_prob" in row
    assert err == ""  # digests only: nothing to warn about


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.name)
def test_the_shipped_policy_examples_pass(example: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = check(capsys, example)
    assert status == 0, err
    tenants = yaml.safe_load(example.read_text())["tenants"]
    count = f"{len(tenants)} tenant" + ("s" if len(tenants) != 1 else "")
    assert out.endswith(f"{example}: OK ({count})\n")
    assert "model " not in out.splitlines()[0]  # a policy file has no models table
    for name in tenants:
        assert name in out


def test_an_artifact_that_fails_to_load_is_located_in_a_policy_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "broken.json").write_text('{"format": "basguard.calibrator"')
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\ntenants:\n  acme:\n    api_keys: [{env: ACME_KEY}]\n"
                      "    risk: {profile: cautious}\n    calibrators:\n      default: broken.json\n")
    status, _, err = check(capsys, policy)
    assert status == 2
    assert err.startswith(f"basguard: error: {policy}:7: {tmp_path / 'broken.json'}: not a valid JSON")


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (GATEWAY + "extra: " + "[" * 3000 + "]" * 3000 + "\n", 17, "nested more than 64 levels deep"),
        (GATEWAY.replace("profile: cautious", "threshold: " + "9" * 5000), 13, "cannot read this value"),
    ],
    ids=["nested", "huge-int"],
)
def test_inputs_that_used_to_crash_the_loader_are_located_errors(
    gateway: Path, capsys: pytest.CaptureFixture[str], text: str, line: int, message: str
) -> None:
    gateway.write_text(text)
    status, _, err = check(capsys, gateway)
    assert status == 2
    assert err.startswith(f"basguard: error: {gateway}:{line}: ")
    assert message in err and "Traceback" not in err and "sys." not in err


ISSUE_EXAMPLE = """\
version: 1
models:
  claude:
    provider: openai
    base_url: http://127.0.0.1:9/v1
    timeout_seconds: 30
  smollm2:
    provider: openai
    base_url: http://127.0.0.1:9/v1
tenants:
  claude-app:
    api_keys: [{env: CLAUDE_APP_KEY}]
    risk: {profile: balanced}
    confidence:
      signals: [consistency]
      consistency: {samples: 5, temperature: 1.0}
  judged:
    api_keys: [{env: JUDGED_KEY}]
    risk: {profile: balanced}
    confidence:
      signals: [verbalized, judge]
      timeout_seconds: 5
"""


def test_policy_check_prints_each_tenants_signals_and_extra_calls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "basguard.yaml"
    path.write_text(ISSUE_EXAMPLE)
    status, out, err = check(capsys, path)
    assert status == 0, err
    claude = next(line for line in out.splitlines() if line.startswith("claude-app"))
    assert "consistency: agreement (+5 calls/request)" in claude
    # Uncalibrated, only the first signal's feature is read: the judge is enabled but idle.
    judged = next(line for line in out.splitlines() if line.startswith("judged"))
    assert "verbalized: verbalized_prob (+1 calls/request) (not run: judge)" in judged


@pytest.mark.parametrize(("edit", "line", "message"), [
    # The judge's default model, smollm2, is not configured.
    (lambda text: text.replace("  smollm2:\n    provider: openai\n"
                               "    base_url: http://127.0.0.1:9/v1\n", ""),
     17, "the judge signal calls the model 'smollm2', which is not configured"),
    (lambda text: text.replace("consistency: {samples: 5, temperature: 1.0}",
                               "consistency: {samples: 5, model: cheap}"),
     16, "the consistency signal calls the model 'cheap', which is not configured"),
    (lambda text: text.replace("timeout_seconds: 5", "timeout_seconds: 45"),
     22, "the verbalized signal's timeout (45 s) must be shorter than the upstream's "
     "timeout_seconds (30 s)"),
    (lambda text: text.replace("      timeout_seconds: 5",
                               "      timeout_seconds: 5\n      models: {gpt: {signals: [judge]}}"),
     23, "`confidence: models:` names 'gpt', which is not configured"),
    # A calibrator reading a feature no enabled signal yields.
    (lambda text: text.replace("    confidence:\n      signals: [verbalized, judge]",
                               "    calibrators: {default: cal.json}\n"
                               "    confidence:\n      signals: [verbalized, judge]"),
     20, "'token_prob', which the logprobs signal yields; enabled signals: verbalized, judge"),
])
def test_signal_config_errors_name_their_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: Any, line: int, message: str,
) -> None:
    shutil.copy(REPOSITORY / "proxy" / "tools" / "demo_files" / "smollm2-calibrator.json",
                tmp_path / "cal.json")
    path = tmp_path / "basguard.yaml"
    path.write_text(edit(ISSUE_EXAMPLE))
    status, _, err = check(capsys, path)
    assert status == 2
    assert f"{path}:{line}: " in err and message in err, err
