"""The subcommands that run servers: ``serve``, ``local-model`` and ``demo``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from calibrators.errors import CalibrationError
from proxy.cli.options import DEFAULT_STORE, USAGE_ERROR, positive_int, store_location
from proxy.usage import UsageError

__all__ = ["add_serving_commands"]


def add_serving_commands(commands: Any) -> None:
    """``serve``, ``local-model`` and ``demo`` under ``commands`` (argparse's subparsers)."""
    serve = commands.add_parser("serve", help="run the OpenAI-compatible gateway")
    serve.add_argument("--config", type=Path, help="gateway config file (or BASGUARD_CONFIG)")
    serve.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8000)")
    serve.add_argument("--store", metavar="STORE",
                       help="decision store: a SQLite path, sqlite:///PATH or "
                       f"postgresql://USER@HOST/DB (default {DEFAULT_STORE})")
    serve.add_argument("--workers", type=int, help="worker processes (default 1)")
    serve.set_defaults(handler=_run_serve)
    local_model = commands.add_parser(
        "local-model",
        help="serve the embedded SmolLM2 model (llama.cpp) as a standalone OpenAI-compatible "
        "server, for serve and collect to point at; runs until Ctrl+C or SIGTERM",
    )
    local_model.add_argument("--host", default="127.0.0.1",
                             help="interface to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    local_model.add_argument("--port", type=positive_int, default=8080,
                             help="port to listen on (default 8080)")
    local_model.add_argument("--threads", type=positive_int,
                             help="CPU threads for generation (default: every core)")
    local_model.add_argument("--verbose", action="store_true",
                             help="show llama.cpp's own output: about 2,000 lines while the "
                             "model loads and 7 per request (hidden by default; the last lines "
                             "are shown if it fails to start)")
    local_model.set_defaults(handler=_run_local_model)
    demo = commands.add_parser(
        "demo", help="serve basguard with two demo tenants in front of a real local model"
    )
    demo.add_argument("--host", default="127.0.0.1",
                      help="interface the demo gateway listens on (default 127.0.0.1)")
    demo.add_argument("--port", type=int, default=8000,
                      help="port the demo gateway listens on (default 8000)")
    demo.add_argument(
        "--calibration-report", action="store_true",
        help="instead, fit and evaluate calibrators on the shipped real LLM outputs",
    )
    demo.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    demo.add_argument("--out", type=Path, default=Path("basguard-report"),
                      help="where --calibration-report writes its report")
    demo.set_defaults(handler=_run_demo_command)


def _run_serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from proxy.http.server import serve
    from proxy.runtime.settings import ServerSettings

    if args.store is not None:
        store_location(args.store)  # no password on the command line
    given = (("config", args.config), ("host", args.host), ("port", args.port),
             ("store", args.store), ("workers", args.workers))
    overrides: dict[str, object] = {k: v for k, v in given if v is not None}
    if "config" not in overrides and not os.environ.get("BASGUARD_CONFIG"):
        raise UsageError("give the gateway config with --config FILE or BASGUARD_CONFIG")
    try:
        settings = ServerSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UsageError(
            f"invalid setting {'.'.join(map(str, first['loc']))}: {first['msg']}"
        ) from None
    serve(settings)  # a bad config raises PolicyError before anything listens: exit 2
    return 0


def _run_local_model(args: argparse.Namespace) -> int:
    from proxy.tools.local_model import LocalModelError, serve_local_model

    try:
        return serve_local_model(args.port, host=args.host, threads=args.threads,
                                 verbose=args.verbose)
    except LocalModelError as exc:
        print(f"basguard: error: {exc}", file=sys.stderr)
        return USAGE_ERROR


def _run_demo_command(args: argparse.Namespace) -> int:
    from calibrators.report import format_markdown_table
    from proxy.tools.demo import default_data_dir, run_demo, serve_demo

    if args.calibration_report:
        data_dir: Path = args.data_dir or default_data_dir()
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
