"""``basguard key new``: a strong tenant API key and the config lines that reference it."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_key_commands"]


def add_key_commands(commands: Any) -> None:
    """``key new`` under ``commands`` (argparse's subparsers)."""
    key = commands.add_parser("key", help="make tenant API keys")
    key_commands = key.add_subparsers(dest="key_command", required=True)
    new = key_commands.add_parser(
        "new", help="a new random API key and its sha256 digest, with the config lines to paste",
        description="Print a new random API key (256 random bits) and its SHA-256 digest as a "
        "gateway config's `api_keys:` entry holds it. Give the key to the tenant's client; put "
        "only the digest in the config: a running gateway reloads it, and never needs to see "
        "the key in its environment. basguard keeps no copy of the key.")
    new.add_argument("--tenant", default="TENANT", type=_tenant_name,
                     help="the tenant the lines are for (default: a placeholder)")
    new.add_argument("--json", action="store_true",
                     help='print {"tenant", "key", "sha256"} instead')
    new.set_defaults(handler=_run_key_new)


def _tenant_name(text: str) -> str:
    from pydantic import TypeAdapter, ValidationError

    from policies.schema import TenantName

    try:
        return TypeAdapter(TenantName).validate_python(text)
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(
            exc.errors()[0]["msg"].removeprefix("Value error, ")) from None


def _run_key_new(args: argparse.Namespace) -> int:
    from policies.api_keys import key_digest, new_api_key

    key = new_api_key()
    digest = key_digest(key)
    if args.json:
        import orjson

        print(orjson.dumps({"tenant": args.tenant, "key": key, "sha256": digest}).decode())
        return 0
    print(f"key:    {key}")
    print(f"sha256: {digest}")
    print()
    print("Give the key to the tenant's client (shown once: basguard keeps no copy).")
    print("Under the tenant in the gateway config, add its digest:")
    print()
    print("tenants:")
    print(f"  {args.tenant}:")
    print("    api_keys:")
    print(f'      - sha256: "{digest}"')
    print()
    print("A running gateway picks the change up at its next reload (within a second, or on")
    print("SIGHUP). Check the file first: basguard policy check FILE --key-env VARIABLE")
    return 0
