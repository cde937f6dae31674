"""Command-line front end of the calibrators: ``calibrate fit|eval|certify`` and ``report``.

Handlers return an exit status; bad input raises :class:`~calibrators.errors.CalibrationError`
(bad options included), which the top-level CLI turns into one line and status 2.
Nothing is written unless the whole command succeeds.
"""

from __future__ import annotations

import argparse
import math
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from .artifact import FittedCalibrator, StoreQuery, load_artifact, save_artifact
from .certificate import RiskCertificate, certificate_for, save_certificate
from .certification import certify_calibrator, check_not_training_data, is_training_data
from .dataset import CalibrationData, read_calibration_data
from .errors import CalibrationError
from .evaluation import evaluate_calibrator
from .methods import METHODS
from .prefix import prefix_feature, split_prefix_feature
from .report import format_markdown_table, report_file, steps_for
from .selection import (
    AUTO,
    DEFAULT_FOLDS,
    MIN_GROUPS_PER_CLASS,
    MIN_ROWS,
    SIMPLICITY_ORDER,
    CandidateResult,
    FitOutcome,
    Selection,
    TooLittleDataError,
    fit_calibrator,
)
from .signals import ScoreSpec, parse_score_spec

if TYPE_CHECKING:
    from tqdm import tqdm

__all__ = [
    "CalibrateParsers",
    "add_calibrate_commands",
    "add_report_command",
    "certify_and_report",
    "explain_selection",
    "fit_and_save",
    "prefixed_scores",
    "run_certify",
]

_METRIC_COLUMNS = ("bas", "ece", "brier", "auroc", "aurc")
USAGE_ERROR = 2
"""Exit status of bad input, as the top-level CLI gives it (``--json`` refusals return it)."""
NOT_CERTIFIED = 1
"""Exit status of ``calibrate certify`` when no threshold could be certified."""


def _score_spec(text: str) -> ScoreSpec:
    try:
        return parse_score_spec(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_tokens(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of tokens, at least 1: {text!r}")
    return value


def prefixed_scores(scores: list[ScoreSpec], prefix: int | None) -> list[ScoreSpec]:
    """``--score`` fields as measured over the first ``prefix`` tokens (``token_prob@16``).

    Unchanged without ``--prefix``; a field that already names a prefix is refused, since
    ``--prefix`` would make it a prefix of a prefix.
    """
    if prefix is None:
        return scores
    named = [str(spec) for spec in scores if split_prefix_feature(spec.field)[1] is not None]
    if named:
        raise CalibrationError(
            f"--prefix {prefix} reads the prefix features itself; give the full-answer names "
            f"(--score token_prob), not {', '.join(named)}")
    return [ScoreSpec(prefix_feature(spec.field, prefix), spec.kind) for spec in scores]


def _open_unit_interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number strictly between 0 and 1: {text!r}")
    return value


def _add_data_options(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument(
        "--score", dest="scores", action="append", type=_score_spec, required=required,
        metavar="FIELD[:KIND]",
        help="score field to calibrate (repeatable); KIND is prob, logprob or real "
        "(default: logprob if the name contains 'logprob', else prob)",
    )
    parser.add_argument("--label", required=required,
                        help="correctness field: 0/1 or true/false")
    parser.add_argument(
        "--group", help="question id field: rows of one group never straddle folds"
    )
    parser.add_argument(
        "--folds", type=int, default=DEFAULT_FOLDS,
        help="grouped cross-validation folds (default %(default)s)"
    )


class CalibrateParsers(NamedTuple):
    """The parsers a front end may add data sources of its own to (the gateway's store)."""

    fit: argparse.ArgumentParser
    certify: argparse.ArgumentParser


def add_calibrate_commands(subparsers: Any) -> CalibrateParsers:
    """Add ``calibrate fit|eval|certify`` to a top-level subparsers object.

    Returns the ``fit`` and ``certify`` parsers, so a front end can add data sources of its own
    (the gateway's decision store) without this package knowing about them.
    """
    calibrate = subparsers.add_parser("calibrate", help="fit and evaluate calibrators")
    commands = calibrate.add_subparsers(dest="calibrate_command", required=True)

    fit: argparse.ArgumentParser = commands.add_parser(
        "fit", help="fit a calibrator on labelled data",
        description="Fit a calibrator on labelled data. Refuses (exit 2, nothing written) "
        f"fewer than {MIN_ROWS} labelled rows, fewer than {MIN_GROUPS_PER_CLASS} groups with a "
        "correct answer or with a wrong one, or data no method could be fitted on.")
    fit.add_argument("data", type=Path, nargs="?", help="JSON Lines file of scores and labels")
    _add_data_options(fit, required=False)
    fit.add_argument(
        "--method", default=AUTO, choices=[AUTO, *METHODS],
        help="calibration method; auto picks the best by out-of-fold BAS",
    )
    fit.add_argument(
        "--prefix", type=_positive_tokens, metavar="K",
        help="fit a prefix calibrator for a stream gate with decide_after_tokens K: each --score "
        "FIELD is read as FIELD@K, the feature over the answer's first K tokens (recorded by "
        "basguard collect --prefix-tokens)",
    )
    fit.add_argument("-o", "--output", type=Path, required=True, help="artifact file to write")
    fit.add_argument("--json", action="store_true",
                     help="print one JSON object: the choice, its rule and figures, every "
                     "candidate; a refusal for too little data too (with what is needed)")
    fit.set_defaults(handler=run_fit)

    evaluate = commands.add_parser("eval", help="raw vs calibrated figures on labelled data")
    evaluate.add_argument("artifact", type=Path, help="calibrator artifact to judge")
    evaluate.add_argument("data", type=Path,
                          help="JSON Lines file with the artifact's score fields and labels, "
                          "ideally not the data it was fitted on")
    evaluate.add_argument("--label", help="correctness field (default: the one fitted on)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.set_defaults(handler=run_eval)
    return CalibrateParsers(fit, _add_certify_command(commands))


def _add_certify_command(commands: Any) -> argparse.ArgumentParser:
    certify = commands.add_parser(
        "certify", help="certify a threshold: at most A wrong among the answers, with confidence C",
        description="The lowest threshold on the calibrated probability whose error rate among "
        "the answers is certified at most --max-error-rate with probability --confidence, by "
        "Learn-then-Test on labelled data the calibrator was not fitted on (its training file "
        "is refused). One row per --group enters the test. Exit status 0 when a threshold is "
        f"certified, {NOT_CERTIFIED} when none can be (the output and the certificate then say "
        "how many labels it would take), 2 on bad input.")
    certify.add_argument("calibrator", type=Path, help="calibrator artifact")
    certify.add_argument("data", type=Path, nargs="?",
                         help="JSON Lines file with the calibrator's score fields and labels")
    certify.add_argument("--label", help="with DATA: the correctness field, 0/1 or true/false")
    certify.add_argument("--group", help="question id field: one row per group is used, since "
                         "answers to one question are not independent")
    certify.add_argument("--max-error-rate", type=_open_unit_interval, required=True,
                         metavar="A", help="most wrong answers per answer, e.g. 0.05")
    certify.add_argument("--confidence", type=_open_unit_interval, required=True, metavar="C",
                         help="probability that the limit holds, e.g. 0.95")
    certify.add_argument("--seed", type=int, default=0,
                         help="seed of the random choices (one row per group; for a "
                         "calibrator without a training curve, the rows that choose where "
                         "testing starts), recorded in the certificate "
                         "(default %(default)s)")
    certify.add_argument("--json", action="store_true", help="print one JSON object")
    certify.add_argument("-o", "--output", type=Path, metavar="CERT",
                         help="write the certificate file a gateway can load")
    certify.set_defaults(handler=run_certify)
    parser: argparse.ArgumentParser = certify
    return parser


def add_report_command(subparsers: Any) -> None:
    """Add ``report`` to a top-level subparsers object."""
    report = subparsers.add_parser(
        "report", help="BAS-paper-style table, reliability diagram and utility curve per file"
    )
    report.add_argument("data", type=Path, nargs="+",
                        help="JSON Lines files of scores and labels; one table row each")
    _add_data_options(report)
    report.add_argument("--out", type=Path, required=True, help="directory for report.md and PNGs")
    report.set_defaults(handler=run_report)


def _progress_bar(total: int, description: str) -> tqdm[Any]:
    from tqdm import tqdm  # only a fit shows progress; every other command skips the import

    # disable=None turns the bar off when stderr is not a terminal (CI logs stay clean).
    return tqdm(total=total, desc=description, unit="fit", leave=False, disable=None)


def run_fit(args: argparse.Namespace) -> int:
    missing = [option for option, value in
               (("a data file", args.data), ("--score", args.scores), ("--label", args.label))
               if value is None]
    if missing:
        raise CalibrationError(f"calibrate fit needs {', '.join(missing)}")
    scores = prefixed_scores(args.scores, args.prefix)
    data = read_calibration_data(args.data, scores=scores, label=args.label, group=args.group)
    return fit_and_save(data, args)


def fit_and_save(
    data: CalibrationData, args: argparse.Namespace, *, store: StoreQuery | None = None
) -> int:
    """Fit on ``data`` with the ``fit`` options in ``args``, write the artifact, report.

    ``store`` is recorded in the artifact when the rows came from a decision store. With
    ``--json`` the report is one JSON object, a refusal for too little data included
    (``"fitted": false``, what is needed, exit status 2).
    """
    as_json = getattr(args, "json", False)
    try:
        with _progress_bar(steps_for(data.specs, args.folds), f"fitting {data.source}") as bar:
            outcome = fit_calibrator(data, method=args.method, n_folds=args.folds,
                                     store=store, progress=bar.update)
    except TooLittleDataError as exc:
        if not as_json:
            raise
        sys.stdout.write(orjson.dumps(_refusal_json(exc)).decode() + "\n")
        return USAGE_ERROR
    version = save_artifact(outcome.calibrator, args.output)
    if as_json:
        sys.stdout.write(orjson.dumps(
            _fit_json(outcome, data, args.output, version),
            option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    print(_candidate_table(outcome.results, outcome.selected))
    for line in explain_selection(outcome.selection, outcome.results):
        print(textwrap.fill(line, width=100, subsequent_indent="  ", break_on_hyphens=False))
    print(
        f"wrote {args.output}: {outcome.selected.candidate.name}, version {version}, "
        f"{data.n_rows} rows in {data.n_groups} groups"
    )
    return 0


def explain_selection(selection: Selection, results: list[CandidateResult]) -> list[str]:
    """Why the selected candidate won, in words with the figures: the rule, the BAS that
    decided it, and, when a candidate with a lower ECE lost, why ECE did not choose."""
    chosen, best = selection.selected, selection.best
    name, bas = chosen.candidate.name, chosen.summary.get("bas", math.nan)
    if selection.rule == "best_bas":
        lines = [f"chosen: {name}, the highest out-of-fold BAS ({bas:.4f}) among the "
                 f"{chosen.candidate.method} candidates"]
    elif chosen is best:
        lines = [f"chosen: {name}, the highest out-of-fold BAS ({bas:.4f}); no simpler "
                 "candidate is within one standard error of it"]
    else:
        lines = [
            f"chosen: {name}, by the one-standard-error rule: {best.candidate.name} has the "
            f"highest out-of-fold BAS ({best.score:.4f}), but {name}'s {bas:.4f} is within one "
            f"standard error ({selection.standard_error:.4f}) of it, and {name} is simpler "
            f"(fewer scores, then {SIMPLICITY_ORDER}): a gain inside the noise does not pay "
            "for the extra parameters"]
    ece = chosen.summary.get("ece", math.nan)
    lower = [r for r in results if r.error is None
             and r.summary.get("ece", math.inf) < ece - 5e-5]
    if lower:
        lowest = min(lower, key=lambda r: r.summary["ece"])
        lines.append(
            f"ECE does not choose: {lowest.candidate.name}'s ECE {lowest.summary['ece']:.4f} "
            f"is lower than {ece:.4f}, but the choice is by out-of-fold BAS, as above (BAS "
            "scores what answering or abstaining on the probability earns: calibration, and "
            "telling right answers from wrong ones)")
    return lines


def _fit_json(outcome: FitOutcome, data: CalibrationData, output: Path,
              version: str) -> dict[str, Any]:
    selection = outcome.selection
    return {
        "fitted": True,
        "output": str(output),
        "version": version,
        "selected": outcome.selected.candidate.name,
        "data": {"source": data.source, "rows": data.n_rows,
                 "positives": int(data.correct.sum()), "groups": data.n_groups},
        "selection": {
            "rule": selection.rule,
            "criterion": "bas",
            "best_by_bas": selection.best.candidate.name,
            "standard_error": selection.standard_error,
            "explanation": explain_selection(selection, outcome.results),
        },
        "candidates": [r.report().model_dump(mode="json") for r in outcome.results],
    }


def _refusal_json(exc: TooLittleDataError) -> dict[str, Any]:
    short = exc.shortfall
    return {
        "fitted": False,
        "error": str(exc),
        "have": {"rows": short.rows, "correct_groups": short.correct_groups,
                 "wrong_groups": short.wrong_groups},
        "minimum": {"rows": short.min_rows, "groups_per_class": short.min_groups_per_class},
        "needed": {"rows": short.rows_needed, "correct_groups": short.correct_groups_needed,
                   "wrong_groups": short.wrong_groups_needed,
                   "labels_at_observed_rates": short.labels_needed},
    }


def _candidate_table(results: list[CandidateResult], selected: CandidateResult) -> str:
    width = max(len(r.candidate.name) for r in results)
    lines = [f"  {'candidate (out-of-fold)':<{width}}  " + "  ".join(
        f"{c:>7}" for c in _METRIC_COLUMNS)]
    for result in sorted(results, key=lambda r: r.score, reverse=True):
        mark = "*" if result is selected else " "
        if result.error is not None:
            lines.append(f"{mark} {result.candidate.name:<{width}}  failed: {result.error}")
            continue
        cells = "  ".join(_number(result.summary.get(c)) for c in _METRIC_COLUMNS)
        lines.append(f"{mark} {result.candidate.name:<{width}}  {cells}")
    lines.append("  (ranked by out-of-fold BAS, higher is better; * chosen)")
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return f"{'–':>7}" if value is None or not math.isfinite(value) else f"{value:7.4f}"


def _jsonable(figures: dict[str, float]) -> dict[str, float | None]:
    return {k: (v if math.isfinite(v) else None) for k, v in figures.items()}


def _fitted_label(calibrator: FittedCalibrator) -> str:
    if calibrator.training is None:
        raise CalibrationError("this calibrator was not fitted on data; give --label")
    return calibrator.training.label


def run_eval(args: argparse.Namespace) -> int:
    calibrator = load_artifact(args.artifact)
    data = read_calibration_data(
        args.data, scores=calibrator.features, label=args.label or _fitted_label(calibrator)
    )
    result = evaluate_calibrator(calibrator, data)
    warnings = []
    if is_training_data(calibrator, args.data):
        # Figures on the rows a calibrator was fitted on flatter it: a flexible method (isotonic,
        # histogram) can look perfectly calibrated there and not elsewhere.
        warnings.append(
            f"{args.data} is the data calibrator {calibrator.version} was fitted on (same "
            "fingerprint): these figures are in-sample and optimistic; evaluate on labelled "
            "data it has not seen (the fit's own out-of-fold figures are in its table)")
    for warning in warnings:
        print(f"basguard: warning: {warning}", file=sys.stderr)
    if args.json:
        document = {
            "n": result.n,
            "accuracy": result.accuracy,
            "raw_score": result.raw_score,
            "raw": _jsonable(result.raw),
            "calibrated": _jsonable(result.calibrated),
            "calibrator": {
                "method": calibrator.method,
                "version": calibrator.version,
                "features": [str(spec) for spec in calibrator.features],
            },
            "training_data": bool(warnings),
            "warnings": warnings,
        }
        sys.stdout.write(orjson.dumps(document).decode() + "\n")
        return 0
    print(
        f"{args.data}: n={result.n}, accuracy={result.accuracy:.4f}; "
        f"{calibrator.method} v{calibrator.version} on {', '.join(calibrator.feature_names)}"
    )
    print(f"  {'':<11}" + "  ".join(f"{c:>7}" for c in _METRIC_COLUMNS))
    for name, figures in (("raw", result.raw), ("calibrated", result.calibrated)):
        print(f"  {name:<11}" + "  ".join(_number(figures.get(c)) for c in _METRIC_COLUMNS))
    return 0


def run_certify(args: argparse.Namespace) -> int:
    missing = [option for option, value in (("a data file", args.data), ("--label", args.label))
               if value is None]
    if missing:
        raise CalibrationError(f"calibrate certify needs {' and '.join(missing)}")
    calibrator = load_artifact(args.calibrator)
    warning = check_not_training_data(calibrator, args.data)
    data = read_calibration_data(
        args.data, scores=calibrator.features, label=args.label, group=args.group
    )
    return certify_and_report(calibrator, data, args, source=str(args.data), label=args.label,
                              group=args.group, warning=warning)


def certify_and_report(
    calibrator: FittedCalibrator, data: CalibrationData, args: argparse.Namespace, *,
    source: str, label: str, group: str | None, warning: str | None = None,
    notes: Sequence[str] = (),
) -> int:
    """Certify ``calibrator`` on ``data`` with the ``certify`` options in ``args``, write the
    certificate (``-o``) and report; ``notes`` are printed with the human-readable report."""
    outcome = certify_calibrator(
        calibrator, data, max_error_rate=args.max_error_rate, confidence=args.confidence,
        group_field=group, seed=args.seed,
    )
    certificate = certificate_for(calibrator, outcome, source=source,
                                  fingerprint=data.fingerprint(), label=label)
    if args.output is not None:
        save_certificate(certificate, args.output)
    if warning is not None:
        print(f"basguard: warning: {warning}", file=sys.stderr)
    if args.json:
        sys.stdout.write(orjson.dumps(certificate.model_dump(mode="json")).decode() + "\n")
    else:
        print(_describe_certificate(certificate, source))
        for note in notes:
            print(f"  {note}")
        if args.output is not None:
            print(f"wrote {args.output}")
    return 0 if certificate.threshold is not None else NOT_CERTIFIED


def _describe_certificate(certificate: RiskCertificate, path: Path | str) -> str:
    limit = (f"errors among answers <= {certificate.max_error_rate:.1%} with "
             f"{certificate.confidence:.0%} confidence")
    groups = (f"one per {certificate.groups.field}" if certificate.groups.field is not None
              else "one per row")
    if certificate.threshold is None:
        lines = [f"not certified: no threshold keeps {limit}, on {certificate.labels} labels "
                 f"({groups})"]
        needed = certificate.labels_needed
        if needed is not None:
            at_rates = (f"; at the observed rates, about {needed.at_observed_rates} labels"
                        if needed.at_observed_rates is not None
                        else "; no threshold shows an error rate below the limit")
            lines.append(f"  needed: at least {needed.min_answered} tested answers at a "
                         f"threshold with none wrong{at_rates}")
        return "\n".join(lines)
    tested = certificate.tested
    bound = certificate.upper_bound if certificate.upper_bound is not None else 1.0
    error_rate = ("–" if certificate.error_rate is None else f"{certificate.error_rate:.1%}")
    procedure = certificate.procedure
    if procedure.start_from == "held_out_labels":
        # An artifact from before fits recorded their training curve.
        groups += f"; {procedure.start_labels} chose where testing starts"
    return "\n".join([
        f"certified: answer iff p >= {certificate.threshold:.4f} keeps {limit}",
        f"  tested on {tested.labels} of {certificate.labels} labels ({groups}): "
        f"{tested.answered} answered, {tested.errors} wrong, upper bound {bound:.1%}",
        f"  on {path} ({certificate.groups.rows} rows): answer rate "
        f"{certificate.answer_rate:.1%}, error rate {error_rate}",
    ])


def run_report(args: argparse.Namespace) -> int:
    reports = []
    total = steps_for(args.scores, args.folds) * len(args.data)
    with _progress_bar(total, "report") as bar:
        for path in args.data:
            bar.set_description(f"report {path.name}")
            reports.append(
                report_file(
                    path, scores=args.scores, label=args.label, group=args.group,
                    out_dir=args.out, n_folds=args.folds, progress=bar.update,
                )
            )
    table = format_markdown_table(reports)
    figures = "\n".join(
        f"### {r.name}\n\n![reliability]({r.reliability_png}) ![utility]({r.utility_png})\n"
        for r in reports
    )
    (args.out / "report.md").write_text(
        "# Calibration report\n\nCalibrated figures are out-of-fold (grouped "
        f"{args.folds}-fold cross-validation).\n\n{table}\n{figures}",
        encoding="utf-8",
    )
    print(table, end="")
    print(f"wrote {args.out / 'report.md'} and {2 * len(reports)} figures")
    return 0
