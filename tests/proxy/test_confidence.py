from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.signals.features import FEATURE_KINDS, confidence_features
from proxy.wire.completions import CompletionFormat
from proxy.wire.logprobs import (
    TokenLogprob,
    tokens_from_chat_logprobs,
    tokens_from_completion_logprobs,
)

logprobs = st.lists(st.floats(min_value=-30.0, max_value=0.0), min_size=1, max_size=60)


def test_features_of_a_known_answer() -> None:
    tokens = [TokenLogprob(-0.1, (-0.1, -2.5)), TokenLogprob(-1.0, (-1.0, -1.2, -3.0))]
    features = confidence_features(tokens)
    assert features["mean_logprob"] == pytest.approx(-0.55)
    assert features["token_prob"] == pytest.approx(math.exp(-0.55))
    assert features["sum_logprob"] == pytest.approx(-1.1)
    assert features["min_token_prob"] == pytest.approx(math.exp(-1.0))
    assert features["first_token_prob"] == pytest.approx(math.exp(-0.1))
    assert features["token_count"] == 2
    p = [math.exp(-0.1), math.exp(-2.5)]
    q = [math.exp(-1.0), math.exp(-1.2), math.exp(-3.0)]
    margin = ((p[0] - p[1]) + (q[0] - q[1])) / 2
    assert features["mean_topk_margin"] == pytest.approx(margin)

    def entropy(values: list[float]) -> float:
        total = sum(values)
        return -sum(v / total * math.log(v / total) for v in values)

    assert features["mean_topk_entropy"] == pytest.approx((entropy(p) + entropy(q)) / 2)
    assert set(features) == set(FEATURE_KINDS)


@given(values=logprobs)
def test_feature_invariants(values: list[float]) -> None:
    features = confidence_features([TokenLogprob(v) for v in values])
    assert 0.0 <= features["min_token_prob"] <= features["token_prob"] <= 1.0
    assert features["sum_logprob"] == pytest.approx(features["mean_logprob"] * len(values))
    assert "mean_topk_entropy" not in features  # no alternatives were given


def test_no_tokens_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one token"):
        confidence_features([])


def test_chat_logprobs_wire_format() -> None:
    tokens = tokens_from_chat_logprobs({"content": [
        {"token": "Pa", "logprob": -0.2, "bytes": None,
         "top_logprobs": [{"token": "Pa", "logprob": -0.2}, {"token": "Lo", "logprob": -2.0}]},
        {"token": "ris", "logprob": float("-inf"), "top_logprobs": []},
    ]})
    assert tokens == [TokenLogprob(-0.2, (-0.2, -2.0)), TokenLogprob(-100.0, ())]


@pytest.mark.parametrize(
    "logprobs",
    [None, {}, {"content": None}, {"content": []}, {"content": [{"token": "a"}]},
     {"content": [{"token": "a", "logprob": 0.5}]}, {"content": ["a"]}],
)
def test_unusable_chat_logprobs_give_none(logprobs: object) -> None:
    assert tokens_from_chat_logprobs(logprobs) is None  # type: ignore[arg-type]


def test_completion_logprobs_wire_format() -> None:
    tokens = tokens_from_completion_logprobs({
        "tokens": ["Pa", "ris"], "token_logprobs": [-0.2, -0.3],
        "top_logprobs": [{"Pa": -0.2, "Lo": -2.0}, None], "text_offset": [0, 2],
    })
    assert tokens == [TokenLogprob(-0.2, (-0.2, -2.0)), TokenLogprob(-0.3, ())]
    assert tokens_from_completion_logprobs({"token_logprobs": [None]}) is None


@pytest.mark.parametrize("logprobs", [
    {"content": [{"logprob": -0.1, "top_logprobs": 5}]},
    {"content": [{"logprob": -0.1, "top_logprobs": "many"}]},
    {"content": [{"logprob": -0.1, "top_logprobs": None}]},
])
def test_alternatives_of_a_shape_no_server_sends_are_none(logprobs: dict[str, Any]) -> None:
    assert tokens_from_chat_logprobs(logprobs) == [TokenLogprob(-0.1, ())]


@pytest.mark.parametrize("logprobs", [
    {"tokens": 5, "token_logprobs": [-0.1], "top_logprobs": [{"a": -0.1}]},
    {"tokens": ["a"], "token_logprobs": 5},
    {"tokens": ["a"], "token_logprobs": [-0.1], "top_logprobs": 5},
])
def test_malformed_streamed_completion_logprobs_carry_nothing_or_no_alternatives(
    logprobs: dict[str, Any]
) -> None:
    entries = CompletionFormat.delta_logprob_entries({"logprobs": logprobs})
    assert all(entry["top"] is None for entry in entries)
    assert len(entries) <= 1
