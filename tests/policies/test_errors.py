from __future__ import annotations

import pytest

from policies.errors import PolicyError, PolicyProblem


def test_each_problem_reads_file_line_message() -> None:
    assert str(PolicyProblem("p.yaml", 3, "bad")) == "p.yaml:3: bad"
    assert str(PolicyProblem("p.yaml", None, "bad")) == "p.yaml: bad"


def test_the_error_carries_every_problem_and_the_first_one_s_fields() -> None:
    first, second = PolicyProblem("p.yaml", 2, "one"), PolicyProblem("p.yaml", 9, "two")
    error = PolicyError([first, second, first])
    assert isinstance(error, ValueError)
    assert error.problems == [first, second]  # duplicates dropped, order kept
    assert (error.path, error.line, error.message) == ("p.yaml", 2, "one")
    assert str(error) == "p.yaml:2: one\np.yaml:9: two"
    assert str(PolicyError.at("p.yaml", 4, "x")) == "p.yaml:4: x"


def test_an_error_needs_a_problem() -> None:
    with pytest.raises(ValueError, match="at least one problem"):
        PolicyError([])
