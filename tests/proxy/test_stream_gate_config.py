"""A stream gate is validated when the config loads: every mistake is a located PolicyError."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from calibrators.artifact import FittedCalibrator, save_artifact
from calibrators.methods import IdentityCalibrator
from calibrators.signals import ScoreKind, ScoreSpec
from policies.loader import PolicyError, parse_policy_text
from proxy.runtime.state import build_runtime
from tests.support.gateway import gateway_config


def artifact(path: Path, *features: str) -> str:
    specs = tuple(ScoreSpec(f, ScoreKind.PROBABILITY) for f in features)
    save_artifact(FittedCalibrator(IdentityCalibrator(), specs), path)
    return path.name


def load(tmp_path: Path, tenant: dict[str, Any]) -> str:
    """The PolicyError's text for a config whose tenant ``enforcer`` gets ``tenant``'s keys."""
    config = gateway_config("http://127.0.0.1:9")
    config["tenants"]["enforcer"].update(tenant)
    path = tmp_path / "basguard.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.raises(PolicyError) as raised:
        build_runtime(path, {"FAKE_UPSTREAM_KEY": "sk-0123456789abcdef"})
    return str(raised.value)


def located(text: str) -> bool:
    return re.search(r"basguard\.yaml:\d+: ", text) is not None


def test_a_gate_loads_with_a_prefix_calibrator_for_its_k(tmp_path: Path) -> None:
    config = gateway_config("http://127.0.0.1:9")
    name = artifact(tmp_path / "prefix.json", "min_token_prob@8")
    config["tenants"]["enforcer"]["stream_gate"] = {"decide_after_tokens": 8, "calibrator": name}
    path = tmp_path / "basguard.yaml"
    path.write_text(yaml.safe_dump(config))
    state = build_runtime(path, {"FAKE_UPSTREAM_KEY": "sk-0123456789abcdef"})
    gate = state.tenants["enforcer"].stream_gate
    assert gate is not None and gate.decide_after_tokens == 8
    assert gate.calibrator.feature_names == ("min_token_prob@8",)
    assert tmp_path / name in state.watched_files  # a refitted prefix calibrator is reloaded
    assert state.tenants["annotator"].stream_gate is None


def test_a_gate_without_a_prefix_calibrator_is_refused(tmp_path: Path) -> None:
    text = load(tmp_path, {"stream_gate": {"decide_after_tokens": 16}})
    assert located(text)
    assert "needs a prefix calibrator" in text and "calibrate fit --prefix 16" in text


@pytest.mark.parametrize("signals", [["logprobs", "consistency"], ["verbalized"], ["judge"]])
def test_a_gate_with_a_signal_that_needs_the_whole_answer_is_refused(
    tmp_path: Path, signals: list[str]
) -> None:
    name = artifact(tmp_path / "prefix.json", "token_prob@4")
    text = load(tmp_path, {"stream_gate": {"decide_after_tokens": 4, "calibrator": name},
                           "confidence": {"signals": signals}})
    assert located(text)
    whole = [s for s in signals if s != "logprobs"]
    assert f"enables {', '.join(whole)}, which needs the whole answer" in text


def test_a_model_override_with_a_whole_answer_signal_is_refused(tmp_path: Path) -> None:
    name = artifact(tmp_path / "prefix.json", "token_prob@4")
    text = load(tmp_path, {"stream_gate": {"decide_after_tokens": 4, "calibrator": name},
                           "confidence": {"models": {"fake": {"signals": ["judge"]}}}})
    assert located(text) and "for model 'fake' enables judge" in text


@pytest.mark.parametrize(("features", "reason"), [
    (("token_prob",), "token_prob"),  # a full-answer calibrator
    (("token_prob@8",), "token_prob@8"),  # fitted for another K
    (("agreement@4",), "agreement@4"),  # not a logprob feature
])
def test_a_calibrator_that_does_not_read_this_prefix_is_refused(
    tmp_path: Path, features: tuple[str, ...], reason: str
) -> None:
    name = artifact(tmp_path / "wrong.json", *features)
    text = load(tmp_path, {"stream_gate": {"decide_after_tokens": 4, "calibrator": name}})
    assert located(text)
    assert f"the prefix calibrator reads {reason}" in text
    assert "basguard collect --prefix-tokens 4" in text


def test_a_missing_prefix_calibrator_file_is_located(tmp_path: Path) -> None:
    text = load(tmp_path, {"stream_gate": {"decide_after_tokens": 4, "calibrator": "gone.json"}})
    assert located(text) and "gone.json" in text


@pytest.mark.parametrize("mode", ["annotate", "shadow"])
def test_a_gate_outside_enforce_mode_is_refused(tmp_path: Path, mode: str) -> None:
    name = artifact(tmp_path / "prefix.json", "token_prob@4")
    text = load(tmp_path, {"mode": mode,
                           "stream_gate": {"decide_after_tokens": 4, "calibrator": name}})
    assert located(text) and "applies in enforce mode only" in text


@pytest.mark.parametrize("k", [0, -1, 4097, "16", 2.5])
def test_k_must_be_a_whole_number_of_tokens(tmp_path: Path, k: Any) -> None:
    text = load(tmp_path, {"stream_gate": {"decide_after_tokens": k, "calibrator": "p.json"}})
    assert located(text) and "decide_after_tokens" in text


def test_a_policy_file_refuses_a_gate_without_a_calibrator_at_its_line() -> None:
    text = """version: 1
tenants:
  acme:
    api_keys: [{env: ACME_API_KEY}]
    risk: {profile: balanced}
    stream_gate:
      decide_after_tokens: 8
"""
    with pytest.raises(PolicyError) as raised:
        parse_policy_text(text, display_name="policy.yaml")
    assert re.search(r"policy\.yaml:[36]: .*needs a prefix calibrator", str(raised.value))
