"""``.ci/run``, the README's test command, on a tiny project: a virtual environment, and no
silent pass when nothing was tested; and the README's set-up commands."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.readme import readme_setup_commands

ROOT = Path(__file__).resolve().parents[1]

PROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "ci-run-probe"
version = "0"

[project.optional-dependencies]
test = []

[tool.setuptools]
py-modules = []
"""

IN_THE_VENV = """\
import sys
from pathlib import Path


def test_runs_inside_the_projects_virtual_environment():
    assert Path(sys.prefix).resolve() == (Path(__file__).parents[1] / ".venv").resolve()
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project with .ci/run, whose .venv already sees this interpreter's pytest and pip."""
    (tmp_path / ".ci").mkdir()
    for script in ("run", "system-packages", "client-environments"):
        shutil.copy2(ROOT / ".ci" / script, tmp_path / ".ci" / script)
    (tmp_path / "pyproject.toml").write_text(PROJECT)
    (tmp_path / "tests").mkdir()
    # Made here, so .ci/run reuses it rather than install pytest into a bare one. A .pth file
    # lends it this interpreter's packages (--system-site-packages would lend the base
    # Python's, which lack pytest when this suite itself runs in .ci/run's virtual environment).
    venv = tmp_path / ".venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    (site_packages,) = venv.glob("lib/python3*/site-packages")
    (site_packages / "lent.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return tmp_path


def ci_run(project: Path) -> subprocess.CompletedProcess[str]:
    # What CI gives it: no stdin, CI=true; prometheus is on PATH here, so apt is not called.
    env = {**os.environ, "CI": "true"}
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    return subprocess.run([str(project / ".ci" / "run"), "-p", "no:cacheprovider"],
                          cwd=project, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          env=env, timeout=600)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("promtool") is None, reason="would apt-get install prometheus")
def test_tests_run_in_the_virtual_environment(project: Path) -> None:
    (project / "tests" / "test_probe.py").write_text(IN_THE_VENV)
    result = ci_run(project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("promtool") is None, reason="would apt-get install prometheus")
def test_no_tests_collected_fails_the_run(project: Path) -> None:
    result = ci_run(project)
    assert result.returncode == 5, result.stdout + result.stderr
    assert "no tests ran" in result.stdout


def test_the_readme_has_two_set_up_commands_each_in_a_virtual_environment() -> None:
    demo, tests = readme_setup_commands()
    assert demo == ("python3 -m venv .venv && . .venv/bin/activate && "
                    "pip install -v -e '.[local-model]' && basguard demo")
    assert tests == ".ci/run"
    script = (ROOT / ".ci" / "run").read_text()
    assert "python3 -m venv .venv" in script and ". .venv/bin/activate" in script
    assert "pip install -v -e '.[test]'" in script


STAND_IN = """\
#!/bin/sh
# Records its call; apt-get also records what the install ran under.
echo "$(basename "$0") $*" >> "$CALLS"
if [ "$(basename "$0")" = apt-get ] && [ "$1" = install ]; then
    [ -x "$BASGUARD_POLICY_RC_D" ] && echo "policy: $("$BASGUARD_POLICY_RC_D"; echo $?)" >> "$CALLS"
    cat "$BASGUARD_CREATECLUSTER_CONF" >> "$CALLS"
fi
"""


@pytest.mark.parametrize("present", [(), ("prometheus", "promtool"), ("initdb",)])
def test_system_packages_leave_no_daemon_enabled(tmp_path: Path, present: tuple[str, ...]) -> None:
    # Stand-ins for apt-get and systemctl (the real ones would change this machine): the
    # install runs with service starts refused and no default cluster, only the units of what
    # it installed are disabled, and the files it used are gone afterwards.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("apt-get", "systemctl", *present):
        (bin_dir / tool).write_text(STAND_IN)
        (bin_dir / tool).chmod(0o755)
    for tool in ("bash", "sh", "dirname", "basename", "id", "mkdir", "tee", "chmod", "rm", "cat"):
        (bin_dir / tool).symlink_to(shutil.which(tool) or f"/bin/{tool}")
    calls = tmp_path / "calls"
    policy = tmp_path / "policy-rc.d"
    conf = tmp_path / "createcluster.d" / "basguard-ci.conf"
    env = {"PATH": str(bin_dir), "CALLS": str(calls), "BASGUARD_POLICY_RC_D": str(policy),
           "BASGUARD_CREATECLUSTER_CONF": str(conf)}
    if os.geteuid() != 0:
        pytest.skip("the script calls sudo when not root")
    result = subprocess.run([str(ROOT / ".ci" / "system-packages")], env=env,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    # The script also finds Debian's initdb off PATH, where this machine may have it.
    debian_initdb = any(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    services = [name for name, given in (("prometheus", "promtool"), ("postgresql", "initdb"))
                if given not in present and not (name == "postgresql" and debian_initdb)]
    # The browser is looked for where Debian installs it, whatever PATH holds.
    browser = [] if all(Path(binary).is_file() for binary in
                        ("/usr/bin/chromium", "/usr/bin/chromedriver")) else [
        "chromium", "chromium-driver"]
    wanted = services + browser
    if not wanted:
        assert not calls.exists()  # nothing missing: nothing installed, nothing touched
        return
    recorded = calls.read_text().splitlines()
    install = f"apt-get install -y -q --no-install-recommends {' '.join(wanted)}"
    assert install in recorded
    assert "policy: 101" in recorded and "create_main_cluster = false" in recorded
    disabled = [line.split()[-1] for line in recorded if line.startswith("systemctl disable")]
    assert disabled == [f"{name}.service" for name in services]  # chromium has none
    assert not policy.exists() and not conf.exists()
