"""AnswerMatcher: free-text answers compared by their own words, not the question's."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.signals.answers import AnswerMatcher, rouge_l_f1


@pytest.mark.parametrize(("a", "b", "same"), [
    ("Paris", "paris.", True),
    ("Paris", "It is Paris, France.", True),
    ("The answer is 12", "12", True),
    ("four", "The answer is 4.", True),
    ("The answer is 12", "The answer is 13", False),
    ("Paris", "Lyon", False),
    ("Lyndon B. Johnson", "Lyndon Johnson", True),  # ROUGE-L 0.8
    ("New York", "New Jersey", False),  # ROUGE-L 0.5 is not above 0.5
    ("boxing", "not boxing", True),  # contained; negations are rare in short answers
    ("", "", False),  # empty answers agree on nothing
    ("", "Paris", False),
])
def test_same_answer_without_a_question(a: str, b: str, same: bool) -> None:
    matcher = AnswerMatcher()
    assert matcher.same(a, b) is same
    assert matcher.same(b, a) is same


QUESTION = "Where in England was Dame Judi Dench born?"


@pytest.mark.parametrize(("a", "b", "same"), [
    ("Dame Judi Dench was born in England, specifically in the city of York.", "York", True),
    ("She was born in York.", "In the city of York, England.", True),
    ("Dame Judi Dench was born in York.", "Dame Judi Dench was born in Manchester.", False),
    # Only repeating the question says nothing: not the same as an answer that does.
    ("Dame Judi Dench was born in England.", "Dame Judi Dench was born in York.", False),
    ("Dame Judi Dench was born in England.", "Judi Dench was born in England", True),
])
def test_the_questions_own_words_do_not_make_answers_agree(a: str, b: str, same: bool) -> None:
    matcher = AnswerMatcher(QUESTION)
    assert matcher.same(a, b) is same
    assert matcher.same(b, a) is same


def test_the_core_of_an_answer() -> None:
    matcher = AnswerMatcher(QUESTION)
    assert matcher.core("The answer is: she was born in York, England.") == ("york",)


def test_multiple_choice_answers_compare_by_option() -> None:
    matcher = AnswerMatcher("Capital?\na) Sydney\nb) Canberra\nc) Melbourne")
    assert matcher.same("b", "b) Canberra")
    assert matcher.same("Canberra", "(b)")
    assert not matcher.same("a", "b")
    assert not matcher.same("I don't know", "I don't know")  # neither picks an option


def test_similarity() -> None:
    matcher = AnswerMatcher(QUESTION)
    assert matcher.similarity("", "") == 1.0
    assert matcher.similarity("York", "") == 0.0
    assert matcher.similarity("York", "Dame Judi Dench was born in England.") == 0.0
    assert matcher.similarity("York, North Yorkshire", "born in York") == pytest.approx(1 / 3)
    assert matcher.similarity("Dame Judi Dench was born in England.",
                              "Judi Dench, England") == pytest.approx(3 / 7)  # whole texts


def test_rouge_l() -> None:
    assert rouge_l_f1(["a", "b", "c"], ["a", "c"]) == pytest.approx(2 * 2 / 5)
    assert rouge_l_f1([], ["a"]) == 0.0
    assert rouge_l_f1(["x"] * 3, ["x"] * 3) == 1.0


_words = st.lists(st.sampled_from(["york", "born", "in", "the", "city", "4", "four", "of"]),
                  max_size=12)


@settings(deadline=None)  # timing varies on a loaded machine
@given(_words, _words)
def test_matching_is_symmetric_and_similarity_bounded(a: list[str], b: list[str]) -> None:
    matcher = AnswerMatcher(QUESTION)
    left, right = " ".join(a), " ".join(b)
    assert matcher.same(left, right) == matcher.same(right, left)
    assert 0.0 <= matcher.similarity(left, right) <= 1.0
    assert 0.0 <= rouge_l_f1(a, b) <= 1.0
