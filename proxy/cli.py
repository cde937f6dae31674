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
from typing import TYPE_CHECKING, Any

from calibrators.errors import CalibrationError
from policies.errors import PolicyError

from .errors import GatewayError
from .usage import UsageError

if TYPE_CHECKING:
    from calibrators.signals import ScoreSpec
    from policies.schema import PolicyFile, TenantPolicy

    from .store import DecisionStore

__all__ = ["main"]

USAGE_ERROR = 2
DRIFTED = 1
MIN_DRIFT_LABELS = 50
COLLECT_FAILED = 1


def _add_store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store", type=Path,
        default=Path(os.environ.get("BASGUARD_STORE", "basguard-decisions.sqlite3")),
        help="the decision store (default: BASGUARD_STORE or basguard-decisions.sqlite3)",
    )


def _run_demo_command(args: argparse.Namespace) -> int:
    from calibrators.report import format_markdown_table

    from .demo import default_data_dir, run_demo, serve_demo

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

    from .config_check import check_config_file, format_models, plural

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

    from .config import ServerSettings
    from .server import serve

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


def _open_store(path: Path) -> DecisionStore:
    from .store import DecisionStore

    if not path.is_file():
        raise UsageError(f"{path}: no decision store here (give --store, or BASGUARD_STORE)")
    # No retention: the CLI never deletes; the server purges on its own schedule.
    return DecisionStore(path, retention_seconds=None)


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
    print(f"\nlabel one with: basguard review label --store {args.store} ID correct|wrong")
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

    from .signals.registry import FEATURE_KINDS

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
    from calibrators.cli import fit_and_save
    from calibrators.signals import ScoreKind, ScoreSpec

    store = _open_store(args.from_store)
    try:
        scores = args.scores or [ScoreSpec("token_prob", ScoreKind.PROBABILITY)]
        data = store.labelled_data(args.tenant, args.model, scores)
    finally:
        store.close()
    return fit_and_save(data, args)


def _run_collect(args: argparse.Namespace) -> int:
    from .collect import run_collect

    collected = run_collect(args.config, args.questions, args.out, args.model, limit=args.limit,
                            concurrency=args.concurrency, retries=args.retries,
                            tenant=args.tenant)
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
    from .local_model import LocalModelError, serve_local_model

    try:
        return serve_local_model(args.port, host=args.host, threads=args.threads)
    except LocalModelError as exc:
        print(f"basguard: error: {exc}", file=sys.stderr)
        return USAGE_ERROR


def _load_policy(path: Path) -> PolicyFile:
    """A tenant policy file or a gateway config (whose tenants are the same models)."""
    from policies.loader import read_yaml_text
    from policies.located_yaml import compose_located

    from .config import load_gateway_config

    data, _ = compose_located(read_yaml_text(path), display_name=str(path))
    if isinstance(data, dict) and "models" in data:
        return load_gateway_config(path)
    from policies.loader import load_policy_file

    return load_policy_file(path)


def _tenant_policy(path: Path, tenant: str) -> TenantPolicy:
    policy = _load_policy(path)
    if tenant not in policy.tenants:
        raise UsageError(f"{path}: no tenant {tenant!r}; configured: "
                         f"{', '.join(sorted(policy.tenants))}")
    return policy.tenants[tenant]


def _run_policy_simulate(args: argparse.Namespace) -> int:
    from calibrators.artifact import load_artifact
    from policies.simulate import simulate

    from .policy_simulate import (
        ConfiguredPolicy,
        candidates_for,
        format_simulation,
        parse_since,
        plot_simulation,
        replay_from_records,
        replay_from_store,
        simulation_json,
    )
    from .runtime import UNCALIBRATED

    if args.records is not None and (args.store is not None or args.since is not None):
        raise UsageError("give either --records FILE or --store (with --since), not both")
    if args.bootstrap < 0:
        raise UsageError("--bootstrap must be at least 0")
    configured = None
    tenant_policy = None
    if args.config is not None:
        if not args.tenant:
            raise UsageError("--config needs --tenant: whose policy is the configured one")
        tenant_policy = _tenant_policy(args.config, args.tenant)
        profile = tenant_policy.profile
        from policies.simulate import Candidate

        configured = ConfiguredPolicy(
            Candidate("configured", profile.threshold, profile.wrong_answer_cost,
                      profile.abstain_cost, "configured"),
            f"{args.config}, tenant {args.tenant!r} ({tenant_policy.risk.form})")
    if args.records is not None:
        calibrator = None
        if args.calibrator is not None:
            calibrator = load_artifact(args.calibrator)
        elif tenant_policy is not None:
            refs = tenant_policy.calibrators
            artifact = refs.models.get(args.model or "", refs.default)
            calibrator = (load_artifact(args.config.parent / artifact) if artifact
                          else UNCALIBRATED)
        replay = replay_from_records(
            args.records, calibrator=calibrator, configured=configured,
            missing_answers=(tenant_policy is not None
                             and tenant_policy.on_missing_confidence == "answer"),
            calibrator_first=args.calibrator is not None)
    else:
        if not args.tenant:
            raise UsageError("give --tenant (whose decisions to replay), or --records FILE")
        store = _open_store(args.store or _default_store())
        try:
            replay = replay_from_store(
                store, args.tenant, model=args.model,
                since_seconds=None if args.since is None else parse_since(args.since),
                configured=configured)
        finally:
            store.close()
    reference, candidates = candidates_for(
        replay.configured, presets=not args.no_presets, thresholds=args.thresholds or [],
        costs=args.costs or [])
    result = simulate(replay.data, candidates, reference=reference,
                      bootstrap=args.bootstrap, seed=args.seed)
    if args.plot is not None:
        plot_simulation(result, args.plot, title=f"basguard policy simulate: {replay.source}")
    if args.json:
        import orjson

        print(orjson.dumps(simulation_json(result, replay),
                           option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode())
    else:
        print(format_simulation(result, replay), end="")
        if args.plot is not None:
            print(f"figure: {args.plot}")
    return 0


def _run_parity(args: argparse.Namespace) -> int:
    from .parity import format_parity, parity_from_store, parity_json
    from .policy_simulate import parse_since

    min_labels = args.min_labels
    if args.config is not None:
        segments = _tenant_policy(args.config, args.tenant).segments
        if min_labels is None and segments is not None:
            min_labels = segments.min_labels
    store = _open_store(args.store)
    try:
        report = parity_from_store(
            store, args.tenant,
            since_seconds=None if args.since is None else parse_since(args.since),
            min_labels=min_labels or 30, permutations=args.permutations, seed=args.seed)
    finally:
        store.close()
    if args.json:
        import orjson

        print(orjson.dumps(parity_json(report, args.tenant), option=orjson.OPT_INDENT_2).decode())
    else:
        print(format_parity(report, args.tenant), end="")
    return 0


def _run_policy_card(args: argparse.Namespace) -> int:
    from .policy_card import CardInputs, write_card
    from .policy_simulate import parse_since

    if args.store is not None and not args.store.is_file():
        raise UsageError(f"{args.store}: no decision store here")
    inputs = CardInputs(
        args.tenant, args.config, _load_policy(args.config), args.store,
        None if args.since is None else parse_since(args.since))
    card = write_card(inputs, args.out)
    print(f"wrote {card}")
    return 0


def _default_store() -> Path:
    return Path(os.environ.get("BASGUARD_STORE", "basguard-decisions.sqlite3"))


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


def _costs_option(text: str) -> Any:
    from .policy_simulate import parse_costs

    try:
        return parse_costs(text)
    except UsageError as exc:  # argparse reports its own errors: usage, then status 2
        raise argparse.ArgumentTypeError(str(exc)) from None


def _thresholds_option(text: str) -> list[float]:
    from .policy_simulate import parse_thresholds

    try:
        return parse_thresholds(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_policy_simulate_command(policy_commands: Any) -> None:
    simulate = policy_commands.add_parser(
        "simulate", help="replay labelled decisions under candidate policies (presets, "
        "thresholds, costs): coverage, accuracy, over/under-abstention, utility with a "
        "bootstrap interval, BAS, and the utility-optimal threshold")
    source = simulate.add_argument_group("decisions (the store, or a records file)")
    source.add_argument("--store", type=Path, default=None,
                        help="the decision store (default: BASGUARD_STORE or "
                        "basguard-decisions.sqlite3)")
    source.add_argument("--tenant", help="whose decisions (the store), or whose policy "
                        "(with --config)")
    source.add_argument("--model", help="only decisions on this public model; with --records "
                        "and --config, the model whose calibrator applies")
    source.add_argument("--since", help="only decisions this recent: 30m, 12h, 7d, 2w")
    source.add_argument("--records", type=Path,
                        help="JSON Lines records (basguard collect's output): the score "
                        "fields, 'correct' (null: unlabelled), 'group'; or 'confidence'")
    source.add_argument("--calibrator", type=Path,
                        help="with --records: the artifact that turns scores into P(correct)")
    simulate.add_argument("--config", type=Path,
                          help="policy file or gateway config: --tenant's policy is the "
                          "configured one (default with --store: the latest decision's)")
    simulate.add_argument("--thresholds", type=_thresholds_option,
                          help="extra candidates at the configured costs: T1,T2,... or "
                          "START:STOP:STEP")
    simulate.add_argument("--costs", type=_costs_option, action="append",
                          help="an extra candidate priced LAMBDA or LAMBDA/A, at its optimal "
                          "threshold (repeatable)")
    simulate.add_argument("--no-presets", action="store_true",
                          help="leave out the five presets")
    simulate.add_argument("--bootstrap", type=int, default=1000,
                          help="group resamples for the 95%% intervals (default 1000; 0: none)")
    simulate.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    simulate.add_argument("--plot", type=Path,
                          help="write a PNG of utility and abstention against the threshold")
    simulate.add_argument("--json", action="store_true", help="print JSON instead of a table")
    simulate.set_defaults(handler=_run_policy_simulate)


def build_parser() -> argparse.ArgumentParser:
    from calibrators.cli import add_calibrate_commands, add_report_command

    parser = argparse.ArgumentParser(
        prog="basguard",
        description="A calibrated abstention guardrail for LLM applications.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    fit = add_calibrate_commands(commands)
    fit.add_argument("--from-store", type=Path, metavar="DB",
                     help="fit on the labelled decisions in a decision store instead of a file "
                     "(default score: token_prob)")
    fit.add_argument("--tenant", help="with --from-store: whose decisions")
    fit.add_argument("--model", help="with --from-store: on which public model")
    fit.set_defaults(handler=_run_fit)
    add_report_command(commands)
    serve = commands.add_parser("serve", help="run the OpenAI-compatible gateway")
    serve.add_argument("--config", type=Path, help="gateway config file (or BASGUARD_CONFIG)")
    serve.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8000)")
    serve.add_argument("--store", type=Path,
                       help="SQLite decision store (default basguard-decisions.sqlite3)")
    serve.add_argument("--workers", type=int, help="worker processes (default 1)")
    serve.set_defaults(handler=_run_serve)
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
    _add_policy_simulate_command(policy_commands)
    card = policy_commands.add_parser(
        "card", help="write a tenant's risk card (Markdown and PNGs) for sign-off: purpose, "
        "owner, costs and threshold, calibrator provenance, expected and live figures, drift, "
        "parity and known limits")
    card.add_argument("tenant", help="the tenant")
    card.add_argument("--config", type=Path, required=True,
                      help="the policy file or gateway config")
    card.add_argument("--store", type=Path, help="a decision store: add live figures")
    card.add_argument("--since", help="with --store: only decisions this recent (7d, ...)")
    card.add_argument("-o", "--out", type=Path, required=True, help="directory to write into")
    card.set_defaults(handler=_run_policy_card)
    parity = commands.add_parser(
        "parity", help="per segment: abstention rate, over- and under-abstention with "
        "intervals, the largest gap and whether chance explains it (a permutation test)")
    _add_store_option(parity)
    parity.add_argument("--tenant", required=True, help="whose decisions")
    parity.add_argument("--since", help="only decisions this recent: 30m, 12h, 7d, 2w")
    parity.add_argument("--config", type=Path,
                        help="the tenant's policy (for its segments' min_labels)")
    parity.add_argument("--min-labels", type=_positive_int,
                        help="fewer (labelled) decisions keep a segment out of a rate's gap "
                        "(default: the tenant's segments.min_labels, else 30)")
    parity.add_argument("--permutations", type=_non_negative_int, default=2000,
                        help="shuffles for the p-values (default 2000; 0: no test)")
    parity.add_argument("--seed", type=int, default=0, help="permutation seed (default 0)")
    parity.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parity.set_defaults(handler=_run_parity)
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
    from .local_model import LocalModelError
    from .store import StoreError

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
