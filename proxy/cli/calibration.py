"""The subcommands that make calibrators: ``calibrate ...`` (from :mod:`calibrators.cli`, with
``fit --from-store`` and ``certify --from-store``), ``report`` and ``collect``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from proxy.cli.options import non_negative_int, open_store, positive_int, token_counts
from proxy.usage import UsageError

if TYPE_CHECKING:
    from calibrators.artifact import FittedCalibrator
    from calibrators.dataset import CalibrationData
    from proxy.store import DecisionStore

__all__ = ["COLLECT_FAILED", "add_calibration_commands"]

COLLECT_FAILED = 1
"""``collect``'s exit status when every question failed."""


def add_calibration_commands(commands: Any) -> None:
    """``calibrate ...`` (``fit`` also from a decision store), ``report`` and ``collect``."""
    from calibrators.cli import add_calibrate_commands, add_report_command

    fit, certify = add_calibrate_commands(commands)
    _add_certify_from_store(certify)
    fit.add_argument("--from-store", metavar="STORE",
                     help="fit on the labelled decisions in a decision store (a SQLite path, "
                     "sqlite:///PATH or postgresql://...) instead of a file (default score: "
                     "token_prob)")
    fit.add_argument("--tenant", help="with --from-store: whose decisions")
    fit.add_argument("--model", help="with --from-store: on which public model")
    fit.set_defaults(handler=_run_fit)
    add_report_command(commands)
    _add_collect_command(commands)


def _add_certify_from_store(certify: Any) -> None:
    certify.add_argument(
        "--from-store", metavar="STORE",
        help="certify on the labelled decisions of the tenant's audit sample in a decision "
        "store (a SQLite path, sqlite:///PATH or postgresql://...) instead of a file: only "
        "audited decisions (its audit_rate), made after the calibrator was fitted, count; "
        "labels people chose (the withheld answers they reviewed) are not a sample of traffic")
    certify.add_argument("--tenant", help="with --from-store: whose decisions")
    certify.add_argument("--model", help="with --from-store: only those on this public model "
                         "(default: every model)")
    certify.set_defaults(handler=_run_certify)


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
                         help="ask only the first N questions of the file (after --offset)")
    collect.add_argument("--offset", type=non_negative_int, default=0, metavar="N",
                         help="skip the first N questions (records, not lines: a CSV question "
                         "may span lines), to collect a large file in parts (default 0)")
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
        data, query = store_fit_data(store, args.tenant, args.model, scores=args.scores,
                                     prefix=args.prefix)
    finally:
        store.close()
    return fit_and_save(data, args, store=query)


def _run_certify(args: argparse.Namespace) -> int:
    if args.from_store is None:
        if args.tenant or args.model:
            raise UsageError("--tenant and --model go with --from-store")
        from calibrators.cli import run_certify

        return run_certify(args)
    if args.data is not None or args.label is not None or args.group is not None:
        raise UsageError("give either a data file (with --label, --group) or --from-store, "
                         "not both")
    if not args.tenant:
        raise UsageError("--from-store needs --tenant")
    from calibrators.artifact import load_artifact
    from calibrators.cli import certify_and_report

    calibrator = load_artifact(args.calibrator)
    store = open_store(args.from_store)
    try:
        data, notes = _audit_sample(store, args.tenant, args.model, calibrator)
    finally:
        store.close()
    return certify_and_report(calibrator, data, args, source=data.source, label="correct",
                              group="decision", notes=notes)


def _audit_sample(
    store: DecisionStore, tenant: str, model: str | None, calibrator: FittedCalibrator
) -> tuple[CalibrationData, list[str]]:
    """The audit sample's labelled decisions made after ``calibrator`` was fitted, and notes
    on what was left out; refuses (UsageError) when nothing is left."""
    since = calibrator.created_at.timestamp()
    labelled, audited = store.labelled_counts(tenant, model)
    _, audited_after = store.labelled_counts(tenant, model, since=since)
    chosen, before = labelled - audited, audited - audited_after
    which = f"tenant {tenant!r}" + ("" if model is None else f", model {model!r}")
    fitted = calibrator.created_at.isoformat(timespec="seconds")
    left_out = []
    if chosen:
        left_out.append(f"{chosen} labelled decision{'s' * (chosen != 1)} not in the audit "
                        "sample (labels people chose, such as the withheld answers they "
                        "reviewed, are not a sample of traffic and would bias the bound)")
    if before:
        left_out.append(f"{before} audited decision{'s' * (before != 1)} made before the "
                        f"calibrator was fitted ({fitted}; it may have been fitted on them)")
    if not audited_after:
        raise UsageError(
            f"no labelled decision in the audit sample of {which} made after calibrator "
            f"{calibrator.version} was fitted ({fitted}) in {store.location}"
            + (f"; left out: {'; '.join(left_out)}" if left_out else "")
            + ". Certification uses only audited decisions: set the tenant's audit_rate and "
            "label the decisions `basguard review list --audited` lists")
    data = store.labelled_data(tenant, model, calibrator.features, audited_only=True,
                               since=since)
    notes = [f"used {audited_after} labelled audited decision{'s' * (audited_after != 1)} "
             f"of {which}, one per request"]
    notes += [f"left out {item}" for item in left_out]
    return data, notes


def _run_collect(args: argparse.Namespace) -> int:
    from proxy.tools.collect import run_collect

    collected = run_collect(args.config, args.questions, args.out, args.model, limit=args.limit,
                            offset=args.offset, concurrency=args.concurrency, retries=args.retries,
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
