"""The policy subcommands: ``policy check``, ``policy simulate``, ``policy card`` and ``parity``.

Handlers import what they need when they run, so ``serve`` never loads plotting or fitting for
them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from proxy.cli.options import (
    USAGE_ERROR,
    add_store_option,
    non_negative_int,
    open_store,
    positive_int,
)
from proxy.usage import UsageError

if TYPE_CHECKING:
    from policies.api_keys import KeyMatch
    from policies.schema import PolicyFile, TenantPolicy
    from policies.simulate import Simulation
    from proxy.analysis.policy_simulate import ConfiguredPolicy, Replay
    from proxy.runtime.check import ConfigCheck

__all__ = ["add_policy_commands"]


def _load_policy(path: Path) -> PolicyFile:
    """A tenant policy file or a gateway config (whose tenants are the same models)."""
    from policies.loader import read_yaml_text
    from policies.located_yaml import compose_located
    from proxy.runtime.config import load_gateway_config

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
    from policies.simulate import simulate
    from proxy.analysis.policy_simulate import candidates_for

    if args.records is not None and (args.store is not None or args.since is not None):
        raise UsageError("give either --records FILE or --store (with --since), not both")
    if args.bootstrap < 0:
        raise UsageError("--bootstrap must be at least 0")
    configured, tenant_policy = _configured_policy(args)
    replay = (_replay_records(args, configured, tenant_policy) if args.records is not None
              else _replay_store(args, configured))
    reference, candidates = candidates_for(
        replay.configured, presets=not args.no_presets, thresholds=args.thresholds or [],
        costs=args.costs or [])
    result = simulate(replay.data, candidates, reference=reference,
                      bootstrap=args.bootstrap, seed=args.seed)
    _report_simulation(args, result, replay)
    return 0


def _configured_policy(args: argparse.Namespace
                       ) -> tuple[ConfiguredPolicy | None, TenantPolicy | None]:
    """With ``--config``: ``--tenant``'s policy, as the candidate to compare with."""
    from policies.simulate import Candidate
    from proxy.analysis.policy_simulate import ConfiguredPolicy, under_risk_limit
    from proxy.runtime.check import check_config_file

    if args.config is None:
        return None, None
    if not args.tenant:
        raise UsageError("--config needs --tenant: whose policy is the configured one")
    tenant_policy = _tenant_policy(args.config, args.tenant)
    profile = tenant_policy.profile
    configured = ConfiguredPolicy(
        Candidate("configured", profile.threshold, profile.wrong_answer_cost,
                  profile.abstain_cost, "configured"),
        f"{args.config}, tenant {args.tenant!r} ({tenant_policy.risk.form})")
    if tenant_policy.risk.limited:
        # Served at max(cost, certified): its certificates are loaded and checked as at start.
        limits = check_config_file(args.config).limits.get(args.tenant, {})
        configured = under_risk_limit(configured, limits, args.model)
    return configured, tenant_policy


def _replay_records(args: argparse.Namespace, configured: ConfiguredPolicy | None,
                    tenant_policy: TenantPolicy | None) -> Replay:
    """The decisions of ``--records``, their confidence from ``--calibrator`` or the tenant's."""
    from calibrators.artifact import load_artifact
    from proxy.analysis.policy_simulate import replay_from_records
    from proxy.runtime.state import UNCALIBRATED

    calibrator = None
    if args.calibrator is not None:
        calibrator = load_artifact(args.calibrator)
    elif tenant_policy is not None:
        refs = tenant_policy.calibrators
        artifact = refs.models.get(args.model or "", refs.default)
        calibrator = (load_artifact(args.config.parent / artifact) if artifact
                      else UNCALIBRATED)
    return replay_from_records(
        args.records, calibrator=calibrator, configured=configured,
        missing_answers=(tenant_policy is not None
                         and tenant_policy.on_missing_confidence == "answer"),
        calibrator_first=args.calibrator is not None)


def _replay_store(args: argparse.Namespace, configured: ConfiguredPolicy | None) -> Replay:
    """``--tenant``'s decisions in the store (of ``--model``, within ``--since``)."""
    from proxy.analysis.policy_simulate import parse_since, replay_from_store

    if not args.tenant:
        raise UsageError("give --tenant (whose decisions to replay), or --records FILE")
    store = open_store(args.store)
    try:
        return replay_from_store(
            store, args.tenant, model=args.model,
            since_seconds=None if args.since is None else parse_since(args.since),
            configured=configured)
    finally:
        store.close()


def _report_simulation(args: argparse.Namespace, result: Simulation, replay: Replay) -> None:
    """Print the table (or ``--json``), and write the ``--plot``."""
    from proxy.analysis.policy_simulate import format_simulation, plot_simulation, simulation_json

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


def _run_parity(args: argparse.Namespace) -> int:
    from proxy.analysis.parity import format_parity, parity_from_store, parity_json
    from proxy.analysis.policy_simulate import parse_since

    min_labels = args.min_labels
    if args.config is not None:
        segments = _tenant_policy(args.config, args.tenant).segments
        if min_labels is None and segments is not None:
            min_labels = segments.min_labels
    store = open_store(args.store)
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
    from proxy.analysis.policy_card import CardInputs, write_card
    from proxy.analysis.policy_simulate import parse_since

    inputs = CardInputs(
        args.tenant, args.config, _load_policy(args.config), args.store,
        None if args.since is None else parse_since(args.since))
    card = write_card(inputs, args.out)
    print(f"wrote {card}")
    return 0


def _costs_option(text: str) -> Any:
    from proxy.analysis.policy_simulate import parse_costs

    try:
        return parse_costs(text)
    except UsageError as exc:  # argparse reports its own errors: usage, then status 2
        raise argparse.ArgumentTypeError(str(exc)) from None


def _thresholds_option(text: str) -> list[float]:
    from proxy.analysis.policy_simulate import parse_thresholds

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
    source.add_argument("--store", metavar="STORE", default=None,
                        help="the decision store: a SQLite path, sqlite:///PATH or "
                        "postgresql://USER@HOST/DB (default: BASGUARD_STORE or "
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



def add_policy_commands(commands: Any) -> None:
    """``policy check|simulate|card`` and ``parity`` under ``commands`` (argparse's
    subparsers)."""
    policy = commands.add_parser("policy", help="tenant policy files")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True)
    check = policy_commands.add_parser(
        "check", help="validate a policy file or a gateway config (as serve loads it) and print "
        "its models, and each tenant's threshold and signals"
    )
    check.add_argument("file", type=Path, help="a tenant policy file, or a gateway config")
    check.add_argument("--key", action="append", default=[], metavar="KEY",
                       help="a client's API key to test against the file: which tenant it "
                       "authenticates as, or which sha256 digest was made from it with a "
                       "newline (repeatable; visible to other users in ps: prefer --key-env)")
    check.add_argument("--key-env", action="append", default=[], metavar="VARIABLE",
                       help="the same, for the key in an environment variable (repeatable)")
    check.add_argument("--json", action="store_true",
                       help="print one JSON object (problems included, exit status 2)")
    check.set_defaults(handler=_run_policy_check)
    _add_policy_simulate_command(policy_commands)
    card = policy_commands.add_parser(
        "card", help="write a tenant's risk card (Markdown and PNGs) for sign-off: purpose, "
        "owner, costs and threshold, calibrator provenance, expected and live figures, drift, "
        "parity and known limits")
    card.add_argument("tenant", help="the tenant")
    card.add_argument("--config", type=Path, required=True,
                      help="the policy file or gateway config")
    card.add_argument("--store", metavar="STORE", help="a decision store (a SQLite path, "
                      "sqlite:///PATH or postgresql://USER@HOST/DB): add live figures")
    card.add_argument("--since", help="with --store: only decisions this recent (7d, ...)")
    card.add_argument("-o", "--out", type=Path, required=True, help="directory to write into")
    card.set_defaults(handler=_run_policy_card)
    parity = commands.add_parser(
        "parity", help="per segment: abstention rate, over- and under-abstention with "
        "intervals, the largest gap and whether chance explains it (a permutation test)")
    add_store_option(parity)
    parity.add_argument("--tenant", required=True, help="whose decisions")
    parity.add_argument("--since", help="only decisions this recent: 30m, 12h, 7d, 2w")
    parity.add_argument("--config", type=Path,
                        help="the tenant's policy (for its segments' min_labels)")
    parity.add_argument("--min-labels", type=positive_int,
                        help="fewer (labelled) decisions keep a segment out of a rate's gap "
                        "(default: the tenant's segments.min_labels, else 30)")
    parity.add_argument("--permutations", type=non_negative_int, default=2000,
                        help="shuffles for the p-values (default 2000; 0: no test)")
    parity.add_argument("--seed", type=int, default=0, help="permutation seed (default 0)")
    parity.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parity.set_defaults(handler=_run_parity)


def _keys_at_hand(args: argparse.Namespace) -> dict[str, str]:
    """The keys given on the command line, by where they came from (never shown)."""
    import os

    keys = {("--key" if len(args.key) == 1 else f"--key #{i}"): key
            for i, key in enumerate(args.key, start=1)}
    for name in args.key_env:
        value = os.environ.get(name, "")
        if not value.strip():
            raise UsageError(f"--key-env {name}: the variable is not set")
        keys[f"${name}"] = value
    return keys


def _tenant_env_keys(policy: PolicyFile) -> dict[str, str]:
    """The keys in the environment variables the tenants name, where they are set."""
    import os

    return {f"${key.env}": os.environ[key.env] for tenant in policy.tenants.values()
            for key in tenant.api_keys
            if key.env is not None and os.environ.get(key.env, "").strip()}


def _run_policy_check(args: argparse.Namespace) -> int:
    import os

    from policies.api_keys import digest_mistakes, match_keys
    from policies.check import format_policy_summary
    from policies.errors import PolicyError
    from policies.loader import read_yaml_text
    from policies.located_yaml import compose_located
    from proxy.runtime.check import (
        check_config_file,
        format_models,
        format_risk_limits,
        plural,
    )

    given = _keys_at_hand(args)
    try:
        check = check_config_file(args.file)
    except PolicyError as exc:
        if not args.json:
            raise
        _print_json({"file": str(args.file), "ok": False, "problems": [
            {"file": p.path, "line": p.line, "message": p.message} for p in exc.problems]})
        return USAGE_ERROR
    given_matches = match_keys(check.policy, given, os.environ)
    # A digest made with echo from a key a tenant's own variable holds is caught too.
    env_matches = match_keys(check.policy, _tenant_env_keys(check.policy), os.environ)
    _, lines = compose_located(read_yaml_text(args.file), display_name=str(args.file))
    warnings = [*check.warnings, *digest_mistakes([*env_matches, *given_matches],
                                                  path=str(args.file), lines=lines)]
    warnings += [f"the key in {m.source} authenticates as no tenant of {args.file}"
                 for m in given_matches if not m.tenants and not m.mistaken]
    if args.json:
        _print_json(_check_json(args.file, check, given_matches, warnings))
        return 0
    if check.is_gateway_config:
        print(format_models(check.models), end="\n\n")
    print(format_policy_summary(check.tenants, check.signals))
    if check.limits:
        print("\nrisk limits:\n" + "\n".join(
            f"  {line}" for line in format_risk_limits(check.limits).splitlines()))
    for match in given_matches:
        if match.tenants:
            print(f"the key in {match.source} authenticates as tenant "
                  f"{', '.join(repr(t) for t in match.tenants)}")
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    counts = [plural(len(check.tenants), "tenant")]
    if check.is_gateway_config:
        counts.insert(0, plural(len(check.models), "model"))
    print(f"{args.file}: OK ({', '.join(counts)})")
    return 0


def _print_json(document: object) -> None:
    import orjson

    print(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())


def _check_json(path: Path, check: ConfigCheck, matches: list[KeyMatch],
                warnings: list[str]) -> dict[str, object]:
    return {
        "file": str(path),
        "ok": True,
        "models": {name: {"provider": t.provider, "model": t.model, "base_url": t.base_url,
                          "timeout_seconds": t.timeout_seconds}
                   for name, t in check.models.items()},
        "tenants": [{
            "name": t.name, "profile": t.profile, "wrong_answer_cost": t.wrong_answer_cost,
            "abstain_cost": t.abstain_cost, "threshold": t.threshold, "mode": t.mode,
            "abstain_action": t.abstain_action,
            "on_missing_confidence": t.on_missing_confidence,
            "calibrators": {model or "default": str(file) for model, file in t.calibrators.items()},
            "signals": check.signals.get(t.name, ""),
        } for t in check.tenants],
        "risk_limits": {tenant: {model or "default": {
            "max_error_rate": limit.max_error_rate, "confidence": limit.confidence,
            "on_breach": limit.on_breach, "cost_threshold": limit.cost_threshold,
            "certified_threshold": limit.certified_threshold, "threshold": limit.threshold,
            "labels": None if limit.certificate is None else limit.certificate.labels,
            "answer_rate": None if limit.certificate is None else limit.certificate.answer_rate,
            "certificate": None if limit.certificate_path is None else str(limit.certificate_path),
        } for model, limit in per_model.items()} for tenant, per_model in check.limits.items()},
        "keys": [{"source": m.source, "tenants": list(m.tenants),
                  "mistaken_digests": [w.where for w in m.mistaken]} for m in matches],
        "warnings": warnings,
    }
