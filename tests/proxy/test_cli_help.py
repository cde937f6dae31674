"""Every argument of the command line says what it is for in ``--help``."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from proxy.cli.main import build_parser


def commands(parser: argparse.ArgumentParser, path: str = "") -> Iterator[
        tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, f"{path} {name}".strip())


# Every command and group the parser has, read from it: a new command is checked as it lands.
COMMANDS = dict(commands(build_parser()))


@pytest.mark.parametrize("command", list(COMMANDS), ids=lambda command: command or "basguard")
def test_every_argument_has_help(command: str) -> None:
    # A group's choice of subcommand is described by its subcommands' own help.
    undocumented = [action.option_strings or action.dest for action in COMMANDS[command]._actions
                    if not isinstance(action, argparse._HelpAction | argparse._SubParsersAction)
                    and not action.help]
    assert undocumented == []


def test_the_policy_tools_are_among_the_commands_checked() -> None:
    assert {"policy check", "policy simulate", "policy card", "parity"} <= set(COMMANDS)
