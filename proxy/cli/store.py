"""The subcommands on the decision store: ``store``, ``review`` and ``drift``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from proxy.cli.options import (
    add_store_option,
    existing_store_location,
    open_store,
    positive_int,
    store_location,
)

if TYPE_CHECKING:
    from proxy.store import DriftWindow

__all__ = ["DRIFTED", "MIN_DRIFT_LABELS", "add_store_commands"]

DRIFTED = 1
"""``drift``'s exit status when a calibrator drifted."""
MIN_DRIFT_LABELS = 50


def add_store_commands(commands: Any) -> None:
    """``store migrate|info``, ``review list|label`` and ``drift`` under ``commands``."""
    store = commands.add_parser("store", help="the decision store's schema and contents")
    store_commands = store.add_subparsers(dest="store_command", required=True)
    migrate = store_commands.add_parser(
        "migrate", help="create or upgrade the store's tables (the server also does at start)")
    add_store_option(migrate)
    migrate.set_defaults(handler=_run_store_migrate)
    info = store_commands.add_parser("info", help="the store's schema version and size")
    add_store_option(info)
    info.add_argument("--json", action="store_true", help="one JSON object")
    info.set_defaults(handler=_run_store_info)
    _add_review_commands(commands)
    _add_drift_command(commands)


def _add_review_commands(commands: Any) -> None:
    review = commands.add_parser(
        "review", help="list and label the answers basguard withheld, and the audit sample")
    review_commands = review.add_subparsers(dest="review_command", required=True)
    listing = review_commands.add_parser(
        "list", help="abstained answers awaiting a label (audited ones marked), or with "
        "--audited the audit sample")
    add_store_option(listing)
    listing.add_argument("--tenant", help="only this tenant's")
    listing.add_argument("--limit", type=positive_int, default=20,
                         help="show at most N answers, newest first (default 20)")
    listing.add_argument("--all", action="store_true", help="include labelled ones")
    listing.add_argument("--audited", action="store_true",
                         help="the audit sample instead: decisions drawn at random (the "
                         "tenant's audit_rate), answered and withheld alike; only their labels "
                         "certify and watch a risk limit")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(handler=_run_review_list)
    label = review_commands.add_parser("label", help="label a decision correct or wrong")
    add_store_option(label)
    label.add_argument("id", help="the decision id (bg-...)")
    label.add_argument("verdict", choices=["correct", "wrong"],
                       help="whether the (possibly withheld) answer was right")
    label.add_argument("--choice", type=int, default=0,
                       help="which choice of an n > 1 response (default 0)")
    label.add_argument("--tenant", help="refuse unless the decision is this tenant's")
    label.set_defaults(handler=_run_review_label)


def _add_drift_command(commands: Any) -> None:
    drift = commands.add_parser(
        "drift", help="mean predicted p against observed accuracy over recent labels"
    )
    add_store_option(drift)
    drift.add_argument("--tenant", help="only this tenant's decisions")
    drift.add_argument("--model", help="only decisions on this public model")
    drift.add_argument("--window", type=positive_int, default=500,
                       help="latest labelled decisions per tenant and model (default 500)")
    drift.add_argument("--max-gap", type=float, default=0.1,
                       help=f"a larger |mean p - accuracy| is drift: exit status {DRIFTED} "
                       "(default 0.1)")
    drift.add_argument("--min-labels", type=positive_int, default=MIN_DRIFT_LABELS,
                       help="fewer labels in a tenant and model's window give no verdict: "
                       "'not enough labels', never drift (default %(default)s; the accuracy of "
                       "50 labels is known to about ±0.07, under the default --max-gap)")
    drift.add_argument("--all-calibrators", action="store_true",
                       help="count decisions made under every calibrator version (by default "
                       "only those of the calibrator serving, by the newest decision: a refit "
                       "starts a new window)")
    drift.add_argument("--json", action="store_true", help="print one JSON object")
    drift.set_defaults(handler=_run_drift)


def _run_store_migrate(args: argparse.Namespace) -> int:
    from proxy.store import open_backend

    backend = open_backend(store_location(args.store))
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

    backend = open_backend(existing_store_location(args.store))
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

    store = open_store(args.store)
    try:
        if args.audited:
            rows = store.audited(args.tenant, limit=args.limit, unlabelled_only=not args.all)
        else:
            rows = store.abstained(args.tenant, limit=args.limit, unlabelled_only=not args.all)
    finally:
        store.close()
    if args.json:
        for row in rows:
            print(orjson.dumps(row.as_json()).decode())
        return 0
    if not rows:
        what = "no audited decisions" if args.audited else "no abstained answers"
        print(what + ("" if args.all else " awaiting a label"))
        return 0
    for row in rows:
        label = {None: "unlabelled", True: "correct", False: "wrong"}[row.correct]
        confidence = "none" if row.confidence is None else f"{row.confidence:.3f}"
        compared = ">=" if row.answered else "<"
        audit = "  audited" if row.audited else ""
        print(f"{row.id} choice {row.choice}  {row.tenant}/{row.model}  "
              f"p={confidence} {compared} {row.threshold:.3f}  {label}{audit}")
        print(f"  asked:    {_one_line(row.prompt)}")
        print(f"  {'answered' if row.answered else 'withheld'}: "
              f"{_one_line(row.abstained_answer)}")
    store_option = "" if args.store is None else f" --store {args.store}"
    print(f"\nlabel one with: basguard review label{store_option} ID correct|wrong")
    return 0


def _one_line(text: str | None, width: int = 200) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _run_review_label(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    try:
        label = store.label_now(args.tenant, args.id, args.choice, args.verdict == "correct")
    finally:
        store.close()
    was = "" if label.previous is None else f" (was {'correct' if label.previous else 'wrong'})"
    print(f"{args.id} choice {args.choice}: {args.verdict}{was}; outcome {label.outcome}")
    return 0


def _window_verdict(window: DriftWindow, args: argparse.Namespace) -> str:
    """``drift``, ``no_drift`` or ``not_enough_labels``, for one window."""
    if window.decisions < args.min_labels:
        # A handful of labels says little: one wrong answer at p = 0.9 is a gap of 0.9.
        return "not_enough_labels"
    return "drift" if abs(window.gap) > args.max_gap else "no_drift"


def _overall_verdict(verdicts: list[str]) -> str:
    """``drift`` if any window drifted, ``no_drift`` if some window could be judged and none
    drifted, ``no_verdict`` if none had enough labels, ``no_labels`` with no window at all."""
    if "drift" in verdicts:
        return "drift"
    if "no_drift" in verdicts:
        return "no_drift"
    return "no_verdict" if verdicts else "no_labels"


def _run_drift(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    try:
        windows = store.drift(args.window, tenant=args.tenant, model=args.model,
                              all_versions=args.all_calibrators, count_earlier=True)
        location = str(store.location)
    finally:
        store.close()
    verdicts = [_window_verdict(w, args) for w in windows]
    overall = _overall_verdict(verdicts)
    status = DRIFTED if overall == "drift" else 0
    if args.json:
        import orjson

        print(orjson.dumps({
            "store": location, "verdict": overall, "window": args.window,
            "max_gap": args.max_gap, "min_labels": args.min_labels,
            "windows": [_window_json(w, v) for w, v in zip(windows, verdicts, strict=True)],
        }, option=orjson.OPT_INDENT_2).decode())
        return status
    if not windows:
        print("no labelled decisions with a confidence yet: no verdict")
        return 0
    print(f"{'tenant':<16} {'model':<20} {'calibrator':<12} {'labelled':>8} {'mean p':>7} "
          f"{'accuracy':>8} {'gap':>7}  verdict")
    for w, verdict in zip(windows, verdicts, strict=True):
        flag = {
            "not_enough_labels": f"not enough labels (fewer than {args.min_labels}): no verdict",
            "no_drift": f"no drift (within ±{args.max_gap:g})",
            "drift": "DRIFT: " + ("overconfident" if w.gap > 0 else "underconfident"),
        }[verdict]
        figures = (f"{w.mean_confidence:>7.3f} {w.accuracy:>8.3f} {w.gap:>+7.3f}" if w.decisions
                   else f"{'–':>7} {'–':>8} {'–':>7}")
        print(f"{w.tenant:<16} {w.model:<20} {w.calibrator_version or 'any':<12} "
              f"{w.decisions:>8} {figures}  {flag}")
        if w.earlier_labels:
            print(f"  ({w.earlier_labels} labelled decisions made under earlier calibrators are "
                  "not compared; --all-calibrators counts them)")
    print()
    if overall == "drift":
        drifted = verdicts.count("drift")
        print(f"verdict: drift: {drifted} calibrator(s) drifted by more than {args.max_gap:g}: "
              "refit with basguard calibrate fit --from-store")
    elif overall == "no_drift":
        judged = verdicts.count("no_drift")
        print(f"verdict: no drift: {judged} calibrator(s) within ±{args.max_gap:g} of their "
              "observed accuracy" + (f"; {verdicts.count('not_enough_labels')} without enough "
                                     "labels for a verdict" if "not_enough_labels" in verdicts
                                     else ""))
    else:
        print(f"verdict: none yet: no calibrator has {args.min_labels} labels to judge by")
    return status


def _window_json(window: DriftWindow, verdict: str) -> dict[str, object]:
    import math

    def number(value: float) -> float | None:
        return value if math.isfinite(value) else None

    return {
        "tenant": window.tenant, "model": window.model,
        "calibrator_version": window.calibrator_version, "labelled": window.decisions,
        "mean_confidence": number(window.mean_confidence), "accuracy": number(window.accuracy),
        "gap": number(window.gap), "verdict": verdict,
        "direction": (None if verdict != "drift"
                      else "overconfident" if window.gap > 0 else "underconfident"),
        "earlier_labels": window.earlier_labels,
    }
