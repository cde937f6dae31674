"""The subcommands that make calibrators: ``calibrate ...`` (from :mod:`calibrators.cli`, with
``fit --from-store``), ``report`` and ``collect``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from proxy.cli.options import non_negative_int, open_store, positive_int, token_counts
from proxy.usage import UsageError

__all__ = ["COLLECT_FAILED", "add_calibration_commands"]

COLLECT_FAILED = 1
"""``collect``'s exit status when every question failed."""


def add_calibration_commands(commands: Any) -> None:
    """``calibrate ...`` (``fit`` also from a decision store), ``report`` and ``collect``."""
    from calibrators.cli import add_calibrate_commands, add_report_command

    fit = add_calibrate_commands(commands)
    fit.add_argument("--from-store", metavar="STORE",
                     help="fit on the labelled decisions in a decision store (a SQLite path, "
                     "sqlite:///PATH or postgresql://...) instead of a file (default score: "
                     "token_prob)")
    fit.add_argument("--tenant", help="with --from-store: whose decisions")
    fit.add_argument("--model", help="with --from-store: on which public model")
    fit.set_defaults(handler=_run_fit)
    add_report_command(commands)
    _add_collect_command(commands)


def _add_collect_command(commands: Any) -> None:
    collect = commands.add_parser(
        "collect", help="send labelled questions through basguard and write calibration records"
    )
    collect.add_argument("--config", type=Path, required=True, help="gateway config file")
    collect.add_argument("--questions", type=Path, required=True,
                         help='JSON Lines of {"id", "question", "answers": [...]}, or CSV with '
                         "question (or prompt) and answer columns, like data/questions/*.csv")
    collect.add_argument("--out", type=Path, required=True, help="records file to write")
    collect.add_argument("--model", help="public model name (default: the config's first)")
    collect.add_argument("--limit", type=positive_int,
                         help="ask only the first N questions of the file")
    collect.add_argument("--concurrency", type=positive_int, default=1,
                         help="questions in flight at once (default 1; a hosted API takes more)")
    collect.add_argument("--retries", type=non_negative_int, default=0,
                         help="try a question that failed or timed out (the model's "
                         "timeout_seconds) N more times, 1 s, 2 s, 4 s... apart; one still "
                         "failing is listed in OUT.failed.jsonl and the run goes on (default 0). "
                         f"Exit status {COLLECT_FAILED} only when every question failed")
    collect.add_argument("--tenant",
                         help="record every feature of the confidence signals this tenant's "
                         "`confidence:` section enables for the model, extra calls included "
                         "(default: the logprobs features)")
    collect.add_argument("--prefix-tokens", type=token_counts, default=(), metavar="K,K,...",
                         help="also record the logprobs features of each answer's first K "
                         "tokens, named FEATURE@K (token_prob@16), for each K listed (e.g. "
                         "1,4,8,16,32): the data of `calibrate fit --prefix K`, for a tenant's "
                         "stream_gate")
    collect.set_defaults(handler=_run_collect)


def _run_fit(args: argparse.Namespace) -> int:
    from proxy.analysis.store_fit import gateway_score_kinds, store_fit_data

    args.scores = gateway_score_kinds(args.scores)
    if args.from_store is None:
        if args.tenant or args.model:
            raise UsageError("--tenant and --model go with --from-store")
        from calibrators.cli import run_fit

        return run_fit(args)
    if args.data is not None or args.label is not None:
        raise UsageError("give either a data file or --from-store, not both")
    if not args.tenant or not args.model:
        raise UsageError("--from-store needs --tenant and --model")
    from calibrators.cli import fit_and_save

    store = open_store(args.from_store)
    try:
        # A gated tenant's decisions hold the prefix features (token_prob@K) it decided on.
        data = store_fit_data(store, args.tenant, args.model, scores=args.scores,
                              prefix=args.prefix)
    finally:
        store.close()
    return fit_and_save(data, args)


def _run_collect(args: argparse.Namespace) -> int:
    from proxy.tools.collect import run_collect

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
