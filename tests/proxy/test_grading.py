from __future__ import annotations

import pytest

from proxy.signals.grading import (
    chosen_option,
    is_correct,
    is_correct_choice,
    normalize_answer,
    parse_options,
)


@pytest.mark.parametrize(
    ("response", "answers", "expected"),
    [
        ("The capital of France is Paris.", ["Paris"], True),
        ("paris", ["Paris"], True),
        ("Parisian cafés", ["Paris"], False),
        ("It is the Nile.", ["Nile"], True),
        ("New Delhi", ["Delhi"], True),
        ("6 + 9 = 15.", ["15", "fifteen"], True),
        ("The answer is fifteen", ["15"], True),
        ("8 - 4 = 3", ["4"], False),  # the question's own numbers do not count
        ("1,000 grams", ["1000"], True),
        ("I don't know", ["Paris"], False),
        ("", ["Paris"], False),
    ],
)
def test_is_correct(response: str, answers: list[str], expected: bool) -> None:
    assert is_correct(response, answers) is expected


def test_normalize_answer() -> None:
    assert normalize_answer("  The Eiffel-Tower!  ") == "eiffel-tower"
    assert normalize_answer("An apple, a day.") == "apple day"


GAUGES = "What size of cannula?\na) 18 gauge.\nb) 20 gauge.\nc) 22 gauge.\nd) 24 gauge."


def test_parse_options_reads_lettered_lines() -> None:
    assert parse_options(GAUGES) == {"a": "18 gauge.", "b": "20 gauge.", "c": "22 gauge.",
                                     "d": "24 gauge."}
    assert parse_options("What is 6 + 9?") == {}
    assert parse_options("Consider:\nb) only one stray line\nc) and another") == {}


@pytest.mark.parametrize(
    ("response", "chosen"),
    [
        ("b", "b"), ("B.", "b"), ("(c)", "c"), ("d) 24 gauge", "d"), ("c: 22", "c"),
        ("The answer is d.", "d"), ("Answer: a", "a"),
        ("20 gauge", "b"),  # the text of exactly one option
        ("A 20 gauge cannula", "b"),  # "A" is an article here, not option a
        ("18 gauge or 20 gauge", None),  # two options quoted: no choice
        ("I am not sure", None),
        ("e", None),  # not an option
    ],
)
def test_chosen_option(response: str, chosen: str | None) -> None:
    assert chosen_option(response, parse_options(GAUGES)) == chosen


def test_is_correct_choice() -> None:
    options = parse_options(GAUGES)
    assert is_correct_choice("b) 20 gauge", "b", options)
    assert is_correct_choice("20 gauge", " B ", options)
    assert not is_correct_choice("a", "b", options)
