"""The client environments' gate: under CI a missing or stale environment fails the tests that
need it, elsewhere it skips them, saying what to run; the environments CI made are current."""

from __future__ import annotations

import pytest

from tests.clients.environments import HERE, node, python_of


@pytest.mark.parametrize(("ci", "outcome"), [
    ("true", pytest.fail.Exception), ("", pytest.skip.Exception)])
def test_a_missing_environment_fails_under_ci_and_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch, ci: str, outcome: type[BaseException]
) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match=r"missing: run \.ci/client-environments"):
        python_of("no-such-client")


def test_every_requirements_file_has_its_environment() -> None:
    """What .ci/client-environments made matches tests/clients: a file added without an
    environment would otherwise only show as the skips of its tests."""
    for requirements in sorted(HERE.glob("*.txt")):
        assert python_of(requirements.stem).exists()
    node()
