"""The ``basguard`` command line.

Every subcommand's handler returns an exit status. Bad input — data, artifacts, policy files,
options — raises one of the project's own errors and ends in one line on stderr naming the file
(and line, where there is one) and status 2, with nothing written. Any other exception is a bug:
it keeps its traceback (status 1).

Handlers import what they need when they run: ``serve`` worker processes re-import this module,
and must not pay for fitting, plotting or the demo.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from calibrators.errors import CalibrationError
from policies.errors import PolicyError
from proxy.errors import GatewayError
from proxy.usage import UsageError

if TYPE_CHECKING:
    from calibrators.signals import ScoreSpec
    from proxy.store import DecisionStore, StoreLocation

__all__ = ["main"]

USAGE_ERROR = 2
DRIFTED = 1
MIN_DRIFT_LABELS = 50
COLLECT_FAILED = 1


DEFAULT_STORE = "basguard-decisions.sqlite3"


def _add_store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store", metavar="STORE",
        help="the decision store: a SQLite path, sqlite:///PATH or postgresql://USER@HOST/DB "
        f"(default: BASGUARD_STORE or {DEFAULT_STORE}; a password only from BASGUARD_STORE or "
        "PGPASSWORD)",
    )


def _store_location(given: str | None) -> StoreLocation:
    """The store named on the command line, else by BASGUARD_STORE, else the default.

    A password on the command line is refused: every user of the machine can read it (ps).
    """
    from proxy.store import StoreError, StoreLocationError, parse_store_location

    try:
        location = parse_store_location(
            given if given is not None else os.environ.get("BASGUARD_STORE", DEFAULT_STORE))
    except StoreLocationError as exc:
        raise StoreError(str(exc)) from None
    if given is not None and location.has_password:
        raise UsageError(f"{location}: no password on the command line (anyone can read it "
                         "with ps); set PGPASSWORD, or the whole URL in BASGUARD_STORE")
    return location


def _run_demo_command(args: argparse.Namespace) -> int:
    from calibrators.report import format_markdown_table
    from proxy.demo import default_data_dir, run_demo, serve_demo

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


def _run_policy_check(args: argparse.Namespace) -> int:
    from policies.check import format_policy_summary
    from proxy.config_check import check_config_file, format_models, plural

    check = check_config_file(args.file)
    if check.is_gateway_config:
        print(format_models(check.models), end="\n\n")
    print(format_policy_summary(check.tenants, check.signals))
    for warning in check.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    counts = [plural(len(check.tenants), "tenant")]
    if check.is_gateway_config:
        counts.insert(0, plural(len(check.models), "model"))
    print(f"{args.file}: OK ({', '.join(counts)})")
    return 0


def _run_serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from proxy.config import ServerSettings
    from proxy.server import serve

    if args.store is not None:
        _store_location(args.store)  # no password on the command line
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


def _open_store(given: str | None) -> DecisionStore:
    from proxy.store import DecisionStore

    location = _store_location(given)
    if location.path is not None and not location.path.is_file():
        raise UsageError(f"{location}: no decision store here (give --store, or "
                         "BASGUARD_STORE)")
    # No retention: the CLI never deletes; the server purges on its own schedule.
    return DecisionStore(location, retention_seconds=None)


def _run_store_migrate(args: argparse.Namespace) -> int:
    from proxy.store import open_backend

    backend = open_backend(_store_location(args.store))
    try:
        applied = backend.migrate()
        info = backend.info()
    finally:
        backend.close()
    if applied:
        print(f"{info.location}: applied migration{'s' * (len(applied) != 1)} "
              f"{', '.join(map(str, applied))}; schema version {info.schema_version}")
    else:
        print(f"{info.location}: schema version {info.schema_version}, up to date")
    return 0


def _run_store_info(args: argparse.Namespace) -> int:
    import dataclasses

    import orjson

    from proxy.store import open_backend

    backend = open_backend(_store_location(args.store))
    try:
        info = backend.info()
    finally:
        backend.close()
    if args.json:
        print(orjson.dumps(dataclasses.asdict(info)).decode())
        return 0
    version = "none (run basguard store migrate)" if info.schema_version is None else (
        f"{info.schema_version}" + ("" if info.schema_version == info.latest_version
                                    else f" (this basguard's: {info.latest_version})"))
    print(f"store:      {info.location} ({info.backend})")
    print(f"schema:     {version}")
    print(f"decisions:  {info.decisions} ({info.labelled} labelled)")
    if info.oldest is not None and info.newest is not None:
        from datetime import UTC, datetime

        def when(t: float) -> str:
            return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")

        print(f"made:       {when(info.oldest)} to {when(info.newest)}")
    return 0


def _run_review_list(args: argparse.Namespace) -> int:
    import orjson

    store = _open_store(args.store)
    try:
        rows = store.abstained(args.tenant, limit=args.limit, unlabelled_only=not args.all)
    finally:
        store.close()
    if args.json:
        for row in rows:
            print(orjson.dumps(row.as_json()).decode())
        return 0
    if not rows:
        print("no abstained answers" + ("" if args.all else " awaiting a label"))
        return 0
    for row in rows:
        label = {None: "unlabelled", True: "correct", False: "wrong"}[row.correct]
        confidence = "none" if row.confidence is None else f"{row.confidence:.3f}"
        print(f"{row.id} choice {row.choice}  {row.tenant}/{row.model}  "
              f"p={confidence} < {row.threshold:.3f}  {label}")
        print(f"  asked:    {_one_line(row.prompt)}")
        print(f"  withheld: {_one_line(row.abstained_answer)}")
    store_option = "" if args.store is None else f" --store {args.store}"
    print(f"\nlabel one with: basguard review label{store_option} ID correct|wrong")
    return 0


def _one_line(text: str | None, width: int = 200) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _run_review_label(args: argparse.Namespace) -> int:
    store = _open_store(args.store)
    try:
        label = store.label_now(args.tenant, args.id, args.choice, args.verdict == "correct")
    finally:
        store.close()
    was = "" if label.previous is None else f" (was {'correct' if label.previous else 'wrong'})"
    print(f"{args.id} choice {args.choice}: {args.verdict}{was}; outcome {label.outcome}")
    return 0


def _run_drift(args: argparse.Namespace) -> int:
    store = _open_store(args.store)
    try:
        windows = store.drift(args.window, tenant=args.tenant, model=args.model)
    finally:
        store.close()
    if not windows:
        print("no labelled decisions with a confidence yet")
        return 0
    print(f"{'tenant':<16} {'model':<20} {'labelled':>8} {'mean p':>7} {'accuracy':>8} "
          f"{'gap':>7}")
    drifted = 0
    for w in windows:
        flag = ""
        if w.decisions < args.min_labels:
            # A handful of labels says little: one wrong answer at p = 0.9 is a gap of 0.9.
            flag = f"  not enough labels (fewer than {args.min_labels}): no verdict"
        elif abs(w.gap) > args.max_gap:
            drifted += 1
            flag = "  DRIFT: " + ("overconfident" if w.gap > 0 else "underconfident")
        print(f"{w.tenant:<16} {w.model:<20} {w.decisions:>8} {w.mean_confidence:>7.3f} "
              f"{w.accuracy:>8.3f} {w.gap:>+7.3f}{flag}")
    if drifted:
        print(f"\n{drifted} calibrator(s) drifted by more than {args.max_gap}: refit with "
              "basguard calibrate fit --from-store")
        return DRIFTED
    return 0


def _gateway_kinds(scores: list[ScoreSpec] | None) -> list[ScoreSpec] | None:
    """``--score`` fields the gateway's signals yield take the kind the registry declares
    (``distinct_answers`` is a count, not a probability), unless another kind was written."""
    from calibrators.signals import ScoreSpec, parse_score_spec
    from proxy.signals.registry import FEATURE_KINDS

    if scores is None:
        return None
    return [
        ScoreSpec(spec.field, FEATURE_KINDS[spec.field])
        if spec.field in FEATURE_KINDS and spec.kind == parse_score_spec(spec.field).kind
        else spec
        for spec in scores
    ]


def _run_fit(args: argparse.Namespace) -> int:
    args.scores = _gateway_kinds(args.scores)
    if args.from_store is None:
        if args.tenant or args.model:
            raise UsageError("--tenant and --model go with --from-store")
        from calibrators.cli import run_fit

        return run_fit(args)
    if args.data is not None or args.label is not None:
        raise UsageError("give either a data file or --from-store, not both")
    if not args.tenant or not args.model:
        raise UsageError("--from-store needs --tenant and --model")
    from calibrators.cli import fit_and_save, prefixed_scores
    from calibrators.signals import ScoreKind, ScoreSpec

    store = _open_store(args.from_store)
    try:
        scores = args.scores or [ScoreSpec("token_prob", ScoreKind.PROBABILITY)]
        # A gated tenant's decisions hold the prefix features (token_prob@K) it decided on.
        scores = prefixed_scores(scores, args.prefix)
        data = store.labelled_data(args.tenant, args.model, scores, prefix=args.prefix)
    finally:
        store.close()
    return fit_and_save(data, args)


def _token_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(sorted({int(part) for part in text.split(",")}))
    except ValueError:
        counts = ()
    if not counts or counts[0] < 1:
        raise argparse.ArgumentTypeError(
            f"expected token counts of at least 1, separated by commas (1,4,8,16): {text!r}")
    return counts


def _run_collect(args: argparse.Namespace) -> int:
    from proxy.collect import run_collect

    collected = run_collect(args.config, args.questions, args.out, args.model, limit=args.limit,
                            concurrency=args.concurrency, retries=args.retries,
                            tenant=args.tenant, prefix_tokens=args.prefix_tokens)
    accuracy = f", {collected.correct / collected.written:.1%} correct" if collected.written else ""
    print(f"wrote {collected.written} records to {args.out}{accuracy}"
          + (f" ({collected.skipped} answer{'s' * (collected.skipped != 1)} without confidence "
             "features skipped)" if collected.skipped else ""))
    if collected.failed:
        print(f"{collected.failed} question{'s' * (collected.failed != 1)} failed (listed in "
              f"{collected.failed_path}; retry them with --questions {collected.failed_path})")
        if not collected.written:
            return COLLECT_FAILED
    return 0


def _run_local_model(args: argparse.Namespace) -> int:
    from proxy.local_model import LocalModelError, serve_local_model

    try:
        return serve_local_model(args.port, host=args.host, threads=args.threads)
    except LocalModelError as exc:
        print(f"basguard: error: {exc}", file=sys.stderr)
        return USAGE_ERROR


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, not {value}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from calibrators.cli import add_calibrate_commands, add_report_command
    from proxy.policy_cli import add_policy_tool_commands

    parser = argparse.ArgumentParser(
        prog="basguard",
        description="A calibrated abstention guardrail for LLM applications.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    fit = add_calibrate_commands(commands)
    fit.add_argument("--from-store", metavar="STORE",
                     help="fit on the labelled decisions in a decision store (a SQLite path, "
                     "sqlite:///PATH or postgresql://...) instead of a file (default score: "
                     "token_prob)")
    fit.add_argument("--tenant", help="with --from-store: whose decisions")
    fit.add_argument("--model", help="with --from-store: on which public model")
    fit.set_defaults(handler=_run_fit)
    add_report_command(commands)
    serve = commands.add_parser("serve", help="run the OpenAI-compatible gateway")
    serve.add_argument("--config", type=Path, help="gateway config file (or BASGUARD_CONFIG)")
    serve.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8000)")
    serve.add_argument("--store", metavar="STORE",
                       help="decision store: a SQLite path, sqlite:///PATH or "
                       f"postgresql://USER@HOST/DB (default {DEFAULT_STORE})")
    serve.add_argument("--workers", type=int, help="worker processes (default 1)")
    serve.set_defaults(handler=_run_serve)
    store = commands.add_parser("store", help="the decision store's schema and contents")
    store_commands = store.add_subparsers(dest="store_command", required=True)
    migrate = store_commands.add_parser(
        "migrate", help="create or upgrade the store's tables (the server also does at start)")
    _add_store_option(migrate)
    migrate.set_defaults(handler=_run_store_migrate)
    info = store_commands.add_parser("info", help="the store's schema version and size")
    _add_store_option(info)
    info.add_argument("--json", action="store_true", help="one JSON object")
    info.set_defaults(handler=_run_store_info)
    review = commands.add_parser("review", help="list and label the answers basguard withheld")
    review_commands = review.add_subparsers(dest="review_command", required=True)
    listing = review_commands.add_parser("list", help="abstained answers awaiting a label")
    _add_store_option(listing)
    listing.add_argument("--tenant", help="only this tenant's")
    listing.add_argument("--limit", type=_positive_int, default=20,
                         help="show at most N answers, newest first (default 20)")
    listing.add_argument("--all", action="store_true", help="include labelled ones")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(handler=_run_review_list)
    label = review_commands.add_parser("label", help="label a decision correct or wrong")
    _add_store_option(label)
    label.add_argument("id", help="the decision id (bg-...)")
    label.add_argument("verdict", choices=["correct", "wrong"],
                       help="whether the (possibly withheld) answer was right")
    label.add_argument("--choice", type=int, default=0,
                       help="which choice of an n > 1 response (default 0)")
    label.add_argument("--tenant", help="refuse unless the decision is this tenant's")
    label.set_defaults(handler=_run_review_label)
    drift = commands.add_parser(
        "drift", help="mean predicted p against observed accuracy over recent labels"
    )
    _add_store_option(drift)
    drift.add_argument("--tenant", help="only this tenant's decisions")
    drift.add_argument("--model", help="only decisions on this public model")
    drift.add_argument("--window", type=_positive_int, default=500,
                       help="latest labelled decisions per tenant and model (default 500)")
    drift.add_argument("--max-gap", type=float, default=0.1,
                       help=f"a larger |mean p - accuracy| is drift: exit status {DRIFTED} "
                       "(default 0.1)")
    drift.add_argument("--min-labels", type=_positive_int, default=MIN_DRIFT_LABELS,
                       help="fewer labels in a tenant and model's window give no verdict: "
                       "'not enough labels', never drift (default %(default)s; the accuracy of "
                       "50 labels is known to about ±0.07, under the default --max-gap)")
    drift.set_defaults(handler=_run_drift)
    collect = commands.add_parser(
        "collect", help="send labelled questions through basguard and write calibration records"
    )
    collect.add_argument("--config", type=Path, required=True, help="gateway config file")
    collect.add_argument("--questions", type=Path, required=True,
                         help='JSON Lines of {"id", "question", "answers": [...]}, or CSV with '
                         "question (or prompt) and answer columns, like data/questions/*.csv")
    collect.add_argument("--out", type=Path, required=True, help="records file to write")
    collect.add_argument("--model", help="public model name (default: the config's first)")
    collect.add_argument("--limit", type=_positive_int,
                         help="ask only the first N questions of the file")
    collect.add_argument("--concurrency", type=_positive_int, default=1,
                         help="questions in flight at once (default 1; a hosted API takes more)")
    collect.add_argument("--retries", type=_non_negative_int, default=0,
                         help="try a question that failed or timed out (the model's "
                         "timeout_seconds) N more times, 1 s, 2 s, 4 s... apart; one still "
                         "failing is listed in OUT.failed.jsonl and the run goes on (default 0). "
                         f"Exit status {COLLECT_FAILED} only when every question failed")
    collect.add_argument("--tenant",
                         help="record every feature of the confidence signals this tenant's "
                         "`confidence:` section enables for the model, extra calls included "
                         "(default: the logprobs features)")
    collect.add_argument("--prefix-tokens", type=_token_counts, default=(), metavar="K,K,...",
                         help="also record the logprobs features of each answer's first K "
                         "tokens, named FEATURE@K (token_prob@16), for each K listed (e.g. "
                         "1,4,8,16,32): the data of `calibrate fit --prefix K`, for a tenant's "
                         "stream_gate")
    collect.set_defaults(handler=_run_collect)
    local_model = commands.add_parser(
        "local-model",
        help="serve the embedded SmolLM2 model (llama.cpp) as a standalone OpenAI-compatible "
        "server, for serve and collect to point at; runs until Ctrl+C or SIGTERM",
    )
    local_model.add_argument("--host", default="127.0.0.1",
                             help="interface to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    local_model.add_argument("--port", type=_positive_int, default=8080,
                             help="port to listen on (default 8080)")
    local_model.add_argument("--threads", type=_positive_int,
                             help="CPU threads for generation (default: every core)")
    local_model.set_defaults(handler=_run_local_model)
    policy = commands.add_parser("policy", help="tenant policy files")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True)
    check = policy_commands.add_parser(
        "check", help="validate a policy file or a gateway config (as serve loads it) and print "
        "its models, and each tenant's threshold and signals"
    )
    check.add_argument("file", type=Path, help="a tenant policy file, or a gateway config")
    check.set_defaults(handler=_run_policy_check)
    add_policy_tool_commands(commands, policy_commands)
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
    return parser


def _project_errors() -> tuple[type[Exception], ...]:
    """The errors the project raises on purpose: bad input, shown as one line (status 2).

    Everything else, a ``ValueError`` from a bug included, propagates with its traceback.
    """
    from proxy.local_model import LocalModelError
    from proxy.store import StoreError

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
