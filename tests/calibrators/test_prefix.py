"""Prefix feature names: ``FEATURE@K`` round trips, and nothing else parses as one."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from calibrators.prefix import prefix_feature, split_prefix_feature

names = st.text(st.characters(blacklist_characters="@"), min_size=1, max_size=30)


@given(names, st.integers(min_value=1, max_value=100_000))
def test_a_prefix_feature_splits_back_into_its_name_and_k(name: str, k: int) -> None:
    assert split_prefix_feature(prefix_feature(name, k)) == (name, k)


@given(names)
def test_a_name_without_a_suffix_has_no_k(name: str) -> None:
    assert split_prefix_feature(name) == (name, None)


@pytest.mark.parametrize("name", ["@16", "token_prob@", "token_prob@0", "token_prob@x",
                                  "token_prob@-1", "token_prob@١٦", "token_prob@1.5"])
def test_malformed_suffixes_are_not_prefix_features(name: str) -> None:
    assert split_prefix_feature(name) == (name, None)


def test_prefix_feature_refuses_no_tokens_and_a_prefix_of_a_prefix() -> None:
    assert prefix_feature("token_prob", 16) == "token_prob@16"
    with pytest.raises(ValueError, match="at least 1 token"):
        prefix_feature("token_prob", 0)
    with pytest.raises(ValueError, match="already names a prefix feature"):
        prefix_feature("token_prob@4", 16)
