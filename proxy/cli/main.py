"""The ``basguard`` command line.

Every subcommand's handler returns an exit status. Bad input — data, artifacts, policy files,
options — raises one of the project's own errors and ends in one line on stderr naming the file
(and line, where there is one) and status 2, with nothing written. Any other exception is a bug:
it keeps its traceback (status 1).

Each group of subcommands lives in a module of its own (:mod:`proxy.cli.serving`,
:mod:`proxy.cli.store`, :mod:`proxy.cli.calibration`, :mod:`proxy.cli.policy`). Handlers import
what they need when they run: ``serve`` worker processes re-import this module, and must not pay
for fitting, plotting or the demo.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from calibrators.errors import CalibrationError
from policies.errors import PolicyError
from proxy.cli.calibration import add_calibration_commands
from proxy.cli.keys import add_key_commands
from proxy.cli.options import USAGE_ERROR
from proxy.cli.policy import add_policy_commands
from proxy.cli.serving import add_serving_commands
from proxy.cli.store import add_store_commands
from proxy.errors import GatewayError
from proxy.usage import UsageError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="basguard",
        description="A calibrated abstention guardrail for LLM applications.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}",
                        help="print basguard's version and exit")
    commands = parser.add_subparsers(dest="command", required=True)
    add_calibration_commands(commands)
    add_serving_commands(commands)
    add_store_commands(commands)
    add_policy_commands(commands)
    add_key_commands(commands)
    return parser


def _version() -> str:
    """The installed distribution's version (pyproject.toml's, via the package metadata)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("basguard")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _project_errors() -> tuple[type[Exception], ...]:
    """The errors the project raises on purpose: bad input, shown as one line (status 2).

    Everything else, a ``ValueError`` from a bug included, propagates with its traceback.
    """
    from proxy.store import StoreError
    from proxy.tools.local_model import LocalModelError

    return (UsageError, CalibrationError, GatewayError, StoreError, LocalModelError)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.handler(args)
    except PolicyError as exc:
        for problem in exc.problems:
            print(f"basguard: error: {problem}", file=sys.stderr)
        return USAGE_ERROR
    except _project_errors() as exc:
        print(f"basguard: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    return status


if __name__ == "__main__":
    sys.exit(main())
