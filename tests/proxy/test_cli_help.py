"""Every argument of the command line says what it is for in ``--help``."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from proxy.cli.main import build_parser

# Commands whose arguments are all documented; the rest are listed in the lead's notes.
DOCUMENTED = ["calibrate fit", "calibrate eval", "report", "collect", "drift", "local-model",
              "review list", "review label", "policy check", "demo", "serve", "store migrate",
              "store info", "key new"]


def commands(parser: argparse.ArgumentParser, path: str = "") -> Iterator[
        tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, f"{path} {name}".strip())


@pytest.mark.parametrize("command", DOCUMENTED)
def test_every_argument_has_help(command: str) -> None:
    parsers = dict(commands(build_parser()))
    undocumented = [action.option_strings or action.dest for action in parsers[command]._actions
                    if not isinstance(action, argparse._HelpAction) and not action.help]
    assert undocumented == []
