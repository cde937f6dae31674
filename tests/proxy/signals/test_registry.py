"""The registry: signals by name, the feature table derived from them, and what to run."""

from __future__ import annotations

import pytest
import yaml

from calibrators.signals import ScoreKind, ScoreSpec
from policies.confidence import SIGNAL_NAMES, ConfidenceConfig, SignalName
from proxy.signals import (
    FEATURE_KINDS,
    FEATURE_SIGNALS,
    SIGNALS,
    SignalConfigError,
    build_signals,
    extra_calls_per_request,
    plan_signals,
    signals_to_run,
    uncalibrated_spec,
    upstream_body,
)
from proxy.signals.consistency import ConsistencySignal
from proxy.signals.features import FEATURE_KINDS as LOGPROB_FEATURES
from proxy.signals.verbalized import VerbalizedSignal
from proxy.wire.chat import ChatFormat

ISSUE_EXAMPLE = """
signals: [consistency]
consistency: {samples: 5, temperature: 1.0}
"""


def every_signal() -> tuple:
    return build_signals(ConfidenceConfig(signals=list[SignalName](SIGNAL_NAMES)))


def test_the_config_names_exactly_the_registered_signals() -> None:
    assert set(SIGNALS) == set(SIGNAL_NAMES)
    assert set(SignalName.__args__) == set(SIGNAL_NAMES)  # type: ignore[attr-defined]


def test_the_feature_table_is_derived_from_the_signals() -> None:
    expected = {f: k for cls in SIGNALS.values() for f, k in cls.feature_kinds.items()}
    assert dict(FEATURE_KINDS) == expected
    assert {f: FEATURE_KINDS[f] for f in LOGPROB_FEATURES} == dict(LOGPROB_FEATURES)
    assert FEATURE_SIGNALS["agreement"] == "consistency"
    assert FEATURE_SIGNALS["verbalized_topk_prob"] == "verbalized"
    assert FEATURE_KINDS["distinct_answers"] is ScoreKind.REAL
    for signal in every_signal():
        assert signal.features <= set(signal.feature_kinds)
        # The uncalibrated confidence must be a probability.
        assert FEATURE_KINDS[signal.uncalibrated_feature] is ScoreKind.PROBABILITY


def test_the_issues_example_builds_k_samples_at_temperature() -> None:
    config = ConfidenceConfig.model_validate(yaml.safe_load(ISSUE_EXAMPLE))
    [signal] = build_signals(config.for_model("claude-sonnet"))
    assert isinstance(signal, ConsistencySignal)
    assert (signal.samples, signal.temperature, signal.model) == (5, 1.0, None)
    assert signal.timeout_seconds == 10.0
    assert extra_calls_per_request([signal]) == 5
    assert uncalibrated_spec([signal]) == ScoreSpec("agreement", ScoreKind.PROBABILITY)


def test_exactly_the_signals_whose_features_the_calibrator_reads_run() -> None:
    enabled = every_signal()
    names = [s.name for s in signals_to_run(["agreement", "judge_prob"], enabled)]
    assert names == ["consistency", "judge"]
    assert [s.name for s in signals_to_run(["token_prob"], enabled)] == ["logprobs"]
    assert signals_to_run([], enabled) == ()


def test_a_feature_no_enabled_signal_yields_is_a_config_error() -> None:
    enabled = build_signals(ConfidenceConfig(signals=["consistency"]))
    with pytest.raises(SignalConfigError, match=r"'token_prob', which the logprobs signal yields; "
                       r"enabled signals: consistency"):
        signals_to_run(["agreement", "token_prob"], enabled)
    with pytest.raises(SignalConfigError, match="'entropy_of_vibes', which no signal yields"):
        signals_to_run(["entropy_of_vibes"], enabled)
    plain = build_signals(ConfidenceConfig(signals=["verbalized"]))
    with pytest.raises(SignalConfigError, match=r"'verbalized_topk_prob', which the verbalized "
                       r"signal yields only with `verbalized: \{top_k: k\}`"):
        signals_to_run(["verbalized_topk_prob"], plain)


def test_the_uncalibrated_confidence_is_the_first_signals() -> None:
    config = ConfidenceConfig(signals=["verbalized", "consistency"], verbalized={"top_k": 3})
    signals = build_signals(config)
    assert isinstance(signals[0], VerbalizedSignal)
    assert uncalibrated_spec(signals).field == "verbalized_topk_prob"
    assert uncalibrated_spec(build_signals(ConfidenceConfig())).field == "token_prob"
    with pytest.raises(SignalConfigError):
        uncalibrated_spec(())


def test_extra_calls_per_request_for_each_signal() -> None:
    config = ConfidenceConfig(signals=list[SignalName](SIGNAL_NAMES),
                              consistency={"samples": 3})
    signals = build_signals(config)
    # logprobs 0, consistency 3, verbalized 1 per choice, judge 1 per choice
    assert extra_calls_per_request(signals) == 5
    assert extra_calls_per_request(signals, choices=2) == 7


def test_the_upstream_body_gathers_every_signals_changes() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "q"}]}
    changed = upstream_body(every_signal(), body, ChatFormat, frozenset({"mean_topk_entropy"}))
    assert changed["logprobs"] is True and changed["top_logprobs"] == 5
    unchanged = upstream_body(build_signals(ConfidenceConfig(signals=["consistency"])), body,
                              ChatFormat, frozenset({"agreement"}))
    assert unchanged == body  # a model without logprobs is never asked for them


def test_a_signal_may_have_its_own_timeout() -> None:
    config = ConfidenceConfig(signals=["consistency", "judge"], timeout_seconds=8,
                              judge={"timeout_seconds": 3})
    consistency, judge = build_signals(config)
    assert (consistency.timeout_seconds, judge.timeout_seconds) == (8, 3)


def test_a_plan_for_a_calibrator_runs_what_it_reads() -> None:
    settings = ConfidenceConfig(signals=["logprobs", "consistency", "verbalized"]).for_model("m")
    plan = plan_signals(settings, ["agreement", "mean_topk_margin"])
    assert [s.name for s in plan.enabled] == ["logprobs", "consistency", "verbalized"]
    assert [s.name for s in plan.to_run] == ["logprobs", "consistency"]
    assert plan.wanted == {"agreement", "mean_topk_margin"}
    assert plan.extra_calls() == 5
    body = plan.upstream_body({"messages": []}, ChatFormat)
    assert body["top_logprobs"] == 5
    with pytest.raises(SignalConfigError, match="judge"):
        plan_signals(settings, ["judge_prob"])


def test_a_plan_for_collecting_runs_every_enabled_signal_for_every_feature() -> None:
    settings = ConfidenceConfig(signals=["consistency", "judge"]).for_model("m")
    plan = plan_signals(settings)
    assert [s.name for s in plan.to_run] == ["consistency", "judge"]
    assert plan.wanted == {"agreement", "distinct_answers", "sample_similarity",
                           "sample_token_prob", "judge_prob"}
    assert plan.extra_calls(choices=2) == 5 + 2


def test_an_uncalibrated_plan_runs_the_first_signal() -> None:
    settings = ConfidenceConfig(signals=["verbalized", "consistency"]).for_model("m")
    spec = uncalibrated_spec(build_signals(settings))
    plan = plan_signals(settings, [spec.field])
    assert [s.name for s in plan.to_run] == ["verbalized"] and plan.extra_calls() == 1
