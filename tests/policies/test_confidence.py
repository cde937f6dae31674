"""A tenant's confidence section: the issue's example as written, strictness, clear errors."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from policies.confidence import (
    ConfidenceConfig,
    ConsistencySettings,
    JudgeSettings,
    SignalSettings,
    VerbalizedSettings,
)
from policies.errors import PolicyError
from policies.loader import parse_yaml_model

ISSUE_EXAMPLE = """\
signals: [consistency]
consistency: {samples: 5, temperature: 1.0}
"""


def parse(text: str) -> ConfidenceConfig:
    return parse_yaml_model(text, ConfidenceConfig, display_name="basguard.yaml")


def test_the_issues_example_as_written() -> None:
    config = parse(ISSUE_EXAMPLE)
    assert config.signals == ["consistency"]
    assert config.consistency == ConsistencySettings(samples=5, temperature=1.0, model=None)
    assert config.timeout_seconds == 10.0


def test_defaults_are_todays_behaviour() -> None:
    config = ConfidenceConfig()
    assert config.signals == ["logprobs"] and config.models == {}
    assert config.judge.model == "smollm2" and config.verbalized.top_k is None


def test_every_setting() -> None:
    config = parse("""\
signals: [logprobs, consistency, verbalized, judge]
timeout_seconds: 4.5
consistency: {samples: 8, temperature: 0.7, model: gpt-4o-mini}
verbalized: {top_k: 4, prompt: "Guess {k} answers to {question}", model: gpt-4o-mini,
             max_tokens: null, temperature: null}
judge: {model: smollm2, prompt: "Q: {question} A: {answer}. True or False?", logprobs: false}
""")
    assert config.verbalized.top_k == 4 and config.verbalized.max_tokens is None
    assert config.judge.logprobs is False and config.timeout_seconds == 4.5


def test_a_model_overrides_the_keys_it_gives() -> None:
    config = parse("""\
signals: [consistency]
consistency: {samples: 5}
models:
  gpt-4o:
    signals: [logprobs, consistency]
  o3-mini:
    consistency: {samples: 3, temperature: 1.0}
""")
    gpt = config.for_model("gpt-4o")
    assert gpt.signals == ["logprobs", "consistency"] and gpt.consistency.samples == 5
    o3 = config.for_model("o3-mini")
    assert o3.signals == ["consistency"] and o3.consistency.samples == 3
    other = config.for_model("claude")
    assert isinstance(other, SignalSettings) and other.consistency.samples == 5


def problems(text: str) -> str:
    with pytest.raises(PolicyError) as caught:
        parse(text)
    return str(caught.value)


@pytest.mark.parametrize(("text", "expected"), [
    ("signals: [consistancy]\n", "basguard.yaml:1:"),
    ("signals: [consistancy]\n", "consistency"),
    ("signals: []\n", "basguard.yaml:1:"),
    ("signals: [consistency, consistency]\n", "more than once"),
    ("signals: [consistency]\nconsistency: {samples: 0}\n", "basguard.yaml:2:"),
    ("signals: [consistency]\nconsistency: {samples: '5'}\n", "basguard.yaml:2:"),
    ("signals: [consistency]\nconsistency: {sample: 5}\n", "sample"),
    ("signals: [consistency]\nconsistency: {temperature: .nan}\n", "basguard.yaml:2:"),
    ("signals: [judge]\nconsistency: {samples: 3}\n", "does not enable it"),
    ("signals: [verbalized]\nverbalized: {prompt: 'How sure are you?'}\n",
     "must contain {answer}, {question}"),
    ("signals: [verbalized]\nverbalized: {prompt: '{question} {answer} {confidence}'}\n",
     "uses {confidence}"),
    ("signals: [verbalized]\nverbalized: {top_k: 3, prompt: '{question} {answer}'}\n",
     "must contain {k}"),
    ("signals: [verbalized]\nverbalized: {prompt: 'Q {question} A {answer} as {json}}'}\n",
     "not a valid template"),
    ("signals: [verbalized]\nverbalized: {top_k: 1}\n", "basguard.yaml:2:"),
    ("signals: [judge]\njudge: {prompt: 'Is {answer} right?'}\n", "must contain {question}"),
    ("signals: [judge]\njudge: {logprobs: 'yes'}\n", "basguard.yaml:2:"),
    ("timeout_seconds: 0\n", "basguard.yaml:1:"),
    ("signals: [logprobs]\nmodels:\n  o3: {consistency: {samples: 2}}\n",
     "for model 'o3': settings for consistency"),
    ("signals: [logprobs]\nmodels:\n  o3: {signals: [judge], consistency: {samples: 2}}\n",
     "does not enable it"),
])
def test_errors_name_the_line_and_what_is_allowed(text: str, expected: str) -> None:
    assert expected in problems(text)


def test_a_list_instead_of_a_mapping() -> None:
    with pytest.raises(ValidationError, match="list the signals under it"):
        ConfidenceConfig.model_validate(["consistency"])


def test_the_tenants_sections_may_serve_its_other_models() -> None:
    config = parse("signals: [consistency]\nconsistency: {samples: 4}\n"
                   "models:\n  gpt-4o: {signals: [logprobs]}\n")
    assert config.for_model("gpt-4o").signals == ["logprobs"]
    only_one_model = parse("signals: [logprobs]\nconsistency: {samples: 3}\n"
                           "models:\n  claude: {signals: [consistency]}\n")
    assert only_one_model.for_model("claude").consistency.samples == 3


@pytest.mark.parametrize("model", [ConfidenceConfig, SignalSettings, ConsistencySettings,
                                   VerbalizedSettings, JudgeSettings])
def test_every_field_is_described(model: type[BaseModel]) -> None:
    for name, field in model.model_fields.items():
        assert field.description, f"{model.__name__}.{name} has no description"
