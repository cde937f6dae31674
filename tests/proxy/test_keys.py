"""``basguard key new`` and ``policy check --key``, through the real ``basguard`` command, with
the keys tried on a gateway served on loopback."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from proxy.http.app import create_app
from proxy.runtime.settings import ServerSettings
from tests.support.fake_upstream import FakeUpstream
from tests.support.loopback import serve_in_thread


def basguard(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy.cli", *argv], capture_output=True,
                          text=True, timeout=120, check=False, env={**os.environ, **(env or {})})


def config_text(upstream_url: str, tenant_lines: str) -> str:
    """A gateway config whose ``tenants:`` block is pasted as printed, plus a risk line."""
    return (f"version: 1\nmodels:\n  fake:\n    base_url: {upstream_url}/v1\n"
            + tenant_lines.rstrip("\n") + "\n    risk: {threshold: 0.5}\n")


def status_with(url: str, key: str) -> int:
    response = httpx.post(f"{url}/v1/chat/completions", timeout=10,
                          headers={"Authorization": f"Bearer {key}"},
                          json={"model": "fake", "messages": [{"role": "user", "content": "hi"}]})
    return response.status_code


def test_a_new_key_pasted_as_printed_authenticates(
    fake_upstream: tuple[FakeUpstream, str], tmp_path: Path
) -> None:
    made = basguard("key", "new", "--tenant", "support-bot")
    assert made.returncode == 0, made.stderr
    key = re.search(r"^key: +(\S+)$", made.stdout, re.M)
    digest = re.search(r"^sha256: +([0-9a-f]{64})$", made.stdout, re.M)
    assert key and digest
    block = made.stdout[made.stdout.index("tenants:"):].split("\n\n")[0]
    assert block == ('tenants:\n  support-bot:\n    api_keys:\n'
                     f'      - sha256: "{digest[1]}"')
    config = tmp_path / "basguard.yaml"
    config.write_text(config_text(fake_upstream[1], block))
    check = basguard("policy", "check", str(config), "--key-env", "THE_KEY",
                     env={"THE_KEY": key[1]})
    assert check.returncode == 0 and check.stderr == "", check.stderr
    assert "the key in $THE_KEY authenticates as tenant 'support-bot'" in check.stdout
    app = create_app(ServerSettings(config=config, store=tmp_path / "d.sqlite3",
                                    reload_interval_seconds=0))
    with serve_in_thread(app) as url:
        assert status_with(url, key[1]) == 200
        assert status_with(url, key[1] + "x") == 401
    other = json.loads(basguard("key", "new", "--json").stdout)
    assert other["tenant"] == "TENANT" and other["key"] != key[1]
    assert other["sha256"] == __import__("hashlib").sha256(other["key"].encode()).hexdigest()


def test_a_digest_made_with_echo_is_warned_about_and_really_fails(
    fake_upstream: tuple[FakeUpstream, str], tmp_path: Path
) -> None:
    key = "bgk_a-key-the-admin-made-by-hand"
    echoed = subprocess.run(["sh", "-c", 'echo "$K" | sha256sum'], env={"K": key},
                            capture_output=True, text=True, check=True).stdout.split()[0]
    printed = subprocess.run(["sh", "-c", 'printf %s "$K" | sha256sum'], env={"K": key},
                             capture_output=True, text=True, check=True).stdout.split()[0]
    config = tmp_path / "basguard.yaml"
    config.write_text(config_text(
        fake_upstream[1],
        f'tenants:\n  acme:\n    api_keys:\n      - sha256: "{echoed}"'))
    # Without the key at hand the file is valid: nothing can tell.
    plain = basguard("policy", "check", str(config))
    assert plain.returncode == 0 and plain.stderr == ""
    for argv, env, source in ((["--key", key], {}, "--key"),
                              (["--key-env", "K"], {"K": key}, "$K")):
        check = basguard("policy", "check", str(config), *argv, env=env)
        assert check.returncode == 0
        assert check.stderr.startswith(
            f"warning: {config}:8: tenants.acme.api_keys.0: this sha256 digest is of the key in "
            f"{source} followed by a newline (made with `echo`?)"), check.stderr
        assert key not in check.stderr + check.stdout
    report = json.loads(basguard("policy", "check", str(config), "--key-env", "K", "--json",
                                 env={"K": key}).stdout)
    assert report["ok"] is True
    assert report["keys"] == [{"source": "$K", "tenants": [],
                               "mistaken_digests": ["tenants.acme.api_keys.0"]}]
    app = create_app(ServerSettings(config=config, store=tmp_path / "d.sqlite3",
                                    reload_interval_seconds=0))
    with serve_in_thread(app) as url:
        assert status_with(url, key) == 401  # what the warning said would happen
    config.write_text(config.read_text().replace(echoed, printed))
    fixed = basguard("policy", "check", str(config), "--key-env", "K", env={"K": key})
    assert fixed.stderr == "" and "authenticates as tenant 'acme'" in fixed.stdout


@pytest.mark.parametrize(("argv", "message"), [
    (["key", "new", "--tenant", "two words"], "a tenant name starts with a letter or digit"),
    (["policy", "check", "cfg.yaml", "--key-env", "UNSET_VARIABLE_XYZ"],
     "--key-env UNSET_VARIABLE_XYZ: the variable is not set"),
])
def test_bad_key_options_are_one_line_and_exit_2(
    argv: list[str], message: str, tmp_path: Path
) -> None:
    (tmp_path / "cfg.yaml").write_text(
        "version: 1\ntenants:\n  acme:\n    risk: {threshold: 0.5}\n    api_keys:\n"
        "      - env: ACME_KEY\n")
    done = subprocess.run([sys.executable, "-m", "proxy.cli", *argv], capture_output=True,
                          text=True, timeout=120, check=False, cwd=tmp_path)
    assert done.returncode == 2 and message in done.stderr


def test_policy_check_json_reports_problems_with_their_lines(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\ntenants:\n  acme:\n    risk: {threshold: 2}\n"
                   "    api_keys: [{env: ACME_KEY}]\n")
    done = basguard("policy", "check", str(bad), "--json")
    assert done.returncode == 2
    report = json.loads(done.stdout)
    assert report["ok"] is False
    (problem,) = report["problems"]
    assert (problem["file"], problem["line"]) == (str(bad), 4) and "threshold" in problem["message"]
