"""The ``basguard`` command line.

Every subcommand's handler returns an exit status. Bad input — data, artifacts, policy files,
options — ends in one line on stderr naming the file (and line, where there is one) and status 2,
with nothing written.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from calibrators.artifact import load_artifact
from calibrators.cli import add_calibrate_commands, add_report_command
from calibrators.errors import CalibrationError
from calibrators.report import format_markdown_table
from policies.check import check_policy_file, format_policy_summary
from policies.loader import PolicyError

from .demo import default_data_dir, run_demo, serve_demo

__all__ = ["main"]

USAGE_ERROR = 2


def _run_demo_command(args: argparse.Namespace) -> int:
    if args.calibration_report:
        data_dir: Path = args.data_dir
        if not data_dir.is_dir():
            raise CalibrationError(f"{data_dir}: the shipped data directory is missing")
        print(f"basguard: calibrating real LLM outputs from {data_dir}", flush=True)
        reports = run_demo(data_dir, args.out)
        print()
        print(format_markdown_table(reports), end="")
        print(f"\nreport and figures: {args.out / 'report.md'}")
        return 0
    serve_demo(args.host, args.port)
    return 0


def _run_policy_check(args: argparse.Namespace) -> int:
    check = check_policy_file(args.file)
    # Existence is checked by the policy package; whether each artifact is a valid calibrator
    # needs the calibrators package, which only this layer may combine with policies.
    for tenant in check.tenants:
        for path in tenant.calibrators.values():
            load_artifact(path)
    print(format_policy_summary(check.tenants))
    for warning in check.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{args.file}: OK ({len(check.tenants)} tenants)")
    return 0


def _run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .app import create_app
    from .config import ServerSettings

    given = (("config", args.config), ("host", args.host), ("port", args.port))
    overrides: dict[str, object] = {k: v for k, v in given if v is not None}
    if "config" not in overrides and not os.environ.get("BASGUARD_CONFIG"):
        raise ValueError("give the gateway config with --config FILE or BASGUARD_CONFIG")
    try:
        settings = ServerSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ValueError(
            f"invalid setting {'.'.join(map(str, first['loc']))}: {first['msg']}"
        ) from None
    app = create_app(settings)  # a bad config raises PolicyError here: exit 2, nothing served
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info",
                loop="auto", http="auto", ws="none")
    return 0


def _run_collect(args: argparse.Namespace) -> int:
    from .collect import run_collect

    written, skipped = run_collect(args.config, args.questions, args.out, args.model)
    print(f"wrote {written} records to {args.out}"
          + (f" ({skipped} answers without logprobs skipped)" if skipped else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="basguard",
        description="A calibrated abstention guardrail for LLM applications.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    add_calibrate_commands(commands)
    add_report_command(commands)
    serve = commands.add_parser("serve", help="run the OpenAI-compatible gateway")
    serve.add_argument("--config", type=Path, help="gateway config file (or BASGUARD_CONFIG)")
    serve.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8000)")
    serve.set_defaults(handler=_run_serve)
    collect = commands.add_parser(
        "collect", help="send labelled questions through basguard and write calibration records"
    )
    collect.add_argument("--config", type=Path, required=True, help="gateway config file")
    collect.add_argument("--questions", type=Path, required=True,
                         help='JSON Lines of {"id", "question", "answers": [...]}')
    collect.add_argument("--out", type=Path, required=True, help="records file to write")
    collect.add_argument("--model", help="public model name (default: the config's first)")
    collect.set_defaults(handler=_run_collect)
    policy = commands.add_parser("policy", help="tenant policy files")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True)
    check = policy_commands.add_parser(
        "check", help="validate a policy file and print each tenant's effective threshold"
    )
    check.add_argument("file", type=Path)
    check.set_defaults(handler=_run_policy_check)
    demo = commands.add_parser(
        "demo", help="serve basguard with two demo tenants in front of a real local model"
    )
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument(
        "--calibration-report", action="store_true",
        help="instead, fit and evaluate calibrators on the shipped real LLM outputs",
    )
    demo.add_argument("--data-dir", type=Path, default=default_data_dir(), help=argparse.SUPPRESS)
    demo.add_argument("--out", type=Path, default=Path("basguard-report"),
                      help="where --calibration-report writes its report")
    demo.set_defaults(handler=_run_demo_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.handler(args)
    except PolicyError as exc:
        for problem in exc.problems:
            print(f"basguard: error: {problem}", file=sys.stderr)
        return USAGE_ERROR
    except (CalibrationError, ValueError) as exc:
        print(f"basguard: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    return status


if __name__ == "__main__":
    sys.exit(main())
