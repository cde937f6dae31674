from __future__ import annotations

import pytest

from proxy.grading import is_correct, normalize_answer


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
