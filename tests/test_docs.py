"""The documentation: the site builds with ``mkdocs build --strict`` (no broken link or anchor, no
page outside the navigation), the generated configuration reference lists every field of the
config and settings models, the README stays a front page, and no page dates itself by "today".
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from pydantic import BaseModel

from policies.confidence import (
    ConfidenceConfig,
    ConsistencySettings,
    JudgeSettings,
    ModelSignalSettings,
    VerbalizedSettings,
)
from policies.schema import (
    ApiKeyRef,
    CalibratorRefs,
    CertificateRefs,
    DropInPolicy,
    PolicyFile,
    RiskPolicy,
    StreamGatePolicy,
    TenantPolicy,
)
from policies.segments import SegmentPolicy
from proxy.runtime.config import AdminAccess, GatewayConfig, ReviewerAccess, UpstreamModel
from proxy.runtime.settings import ServerSettings
from tests.support.readme import readme_setup_commands
from tests.support.shipped_data import REPOSITORY

DOCS = REPOSITORY / "docs"
README = REPOSITORY / "README.md"

# The models the reference must cover, whatever the hook's walk finds besides.
CONFIG_MODELS: list[type[BaseModel]] = [
    GatewayConfig, PolicyFile, UpstreamModel, TenantPolicy, DropInPolicy, ApiKeyRef, RiskPolicy,
    CalibratorRefs, CertificateRefs, ConfidenceConfig, ModelSignalSettings, ConsistencySettings,
    VerbalizedSettings, JudgeSettings, SegmentPolicy, StreamGatePolicy, AdminAccess,
    ReviewerAccess,
]

RELATIVE_TIME = re.compile(
    r"\b(today|yesterday|tonight|this (round|session)|(previous|last|next) (round|session))\b",
    re.IGNORECASE)


def hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "config_reference", DOCS / "hooks" / "config_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once with --strict into a temporary directory."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
         str(REPOSITORY / "mkdocs.yml"), "--site-dir", str(out)],
        cwd=REPOSITORY, env=env, capture_output=True, text=True, timeout=600, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARNING" not in output, output
    return out


def sections(page: str) -> dict[str, str]:
    """Each heading's id -> the HTML up to the next heading of level 2 or 3."""
    marks = list(re.finditer(r'<h[23] id="([^"]+)"', page))
    ends = [m.start() for m in marks[1:]] + [len(page)]
    return {m.group(1): page[m.start():end] for m, end in zip(marks, ends, strict=True)}


def rows(section: str) -> dict[str, str]:
    """A reference table's rows by the key in their first cell."""
    return {m.group(1): m.group(2) for m in re.finditer(
        r"<tr>\s*<td><code>([a-z0-9_]+)</code></td>(.*?)</tr>", section, flags=re.DOTALL)}


def documented_in(model: type[BaseModel], found: dict[str, str]) -> list[str]:
    """The reference sections that may hold ``model``'s fields: its own, and those of the models
    it extends or that extend it (a policy file's keys are in the gateway config's section)."""
    related = [c for c in CONFIG_MODELS if issubclass(c, model) or issubclass(model, c)]
    return [c.__name__.lower() for c in related if c.__name__.lower() in found]


def test_the_site_builds_strictly(site: Path) -> None:
    for page in ("index.html", "configuration/index.html", "benchmarks/index.html",
                 "clients/index.html", "architecture/index.html"):
        assert (site / page).is_file(), page


def reference(site: Path) -> dict[str, str]:
    return sections((site / "configuration" / "index.html").read_text(encoding="utf-8"))


@pytest.mark.parametrize("model", CONFIG_MODELS, ids=lambda model: model.__name__)
def test_every_config_field_is_in_the_reference(site: Path, model: type[BaseModel]) -> None:
    found = reference(site)
    places = documented_in(model, found)
    assert places, f"no section documents {model.__name__}"
    documented = {name: row for place in places for name, row in rows(found[place]).items()}
    missing = sorted(set(model.model_fields) - set(documented))
    assert missing == [], f"{model.__name__}: {missing} not in the reference"
    for name, field in model.model_fields.items():
        if field.is_required():
            assert "required" in documented[name], f"{model.__name__}.{name} not marked required"


def test_every_model_the_config_nests_has_a_section(site: Path) -> None:
    found = reference(site)
    config_reference = hook()
    for model, _ in config_reference.walk(GatewayConfig):
        section = found.get(model.__name__.lower())
        assert section is not None, model.__name__
        assert set(rows(section)) == set(config_reference.own_fields(model)), model.__name__


def test_every_setting_is_in_the_reference_with_its_variable(site: Path) -> None:
    documented = rows(reference(site)["process-settings"])
    assert set(documented) == set(ServerSettings.model_fields)
    for name in ServerSettings.model_fields:
        assert f"BASGUARD_{name.upper()}" in documented[name], name
    assert "--workers" in documented["workers"]


def markdown_files() -> list[Path]:
    return [README, REPOSITORY / "CHANGELOG.md", *sorted(DOCS.rglob("*.md"))]


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(REPOSITORY)))
def test_no_page_dates_itself_by_relative_words(path: Path) -> None:
    found = [f"{path.name}:{number}: {line.strip()}"
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if RELATIVE_TIME.search(line)]
    assert found == [], "name the date and commit instead:\n" + "\n".join(found)


def test_every_benchmark_names_its_date_and_commit() -> None:
    text = (DOCS / "benchmarks.md").read_text(encoding="utf-8")
    assert "2 cores and 24 GiB" in text
    figures = text.split("\n### ")[1:]
    assert len(figures) >= 10
    for figure in figures:
        title = figure.splitlines()[0]
        assert re.search(r"\b20\d\d-\d\d-\d\d\b", figure), f"{title}: no date"
        assert re.search(r"\bcommits? [0-9a-f]{7}\b|\| [0-9a-f]{7} \|", figure), \
            f"{title}: no commit"


def test_the_readme_is_a_front_page() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    assert "(λ − a) / (1 + λ)" in text and "arXiv 2604.03216" in text
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    relative = [link for link in links if "://" not in link]
    assert relative, "the README links into the docs"
    for link in relative:
        assert (REPOSITORY / link).is_file(), f"README links to a missing {link}"


def test_the_install_page_gives_the_readmes_set_up_commands() -> None:
    install = (DOCS / "install.md").read_text(encoding="utf-8")
    section = install.split("\n## The two set-up commands\n", 1)[1].split("\n## ", 1)[0]
    assert re.findall(r"```bash\n(.*?)\n```", section, flags=re.DOTALL) == readme_setup_commands()


def test_every_alert_and_metric_is_documented() -> None:
    monitoring = (DOCS / "monitoring.md").read_text(encoding="utf-8")
    rules = yaml.safe_load((REPOSITORY / "deploy" / "prometheus" / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert rule["alert"] in monitoring, rule["alert"]
    (metrics,) = REPOSITORY.glob("proxy/**/metrics.py")
    for name in sorted(set(re.findall(r'"(basguard_[a-z_]+)"', metrics.read_text()))):
        assert name in monitoring, f"{name} is not in docs/monitoring.md"


def test_the_reference_escapes_what_markdown_would_eat() -> None:
    text = hook().text
    assert text("a <store> path") == "a &lt;store&gt; path"
    assert text("`<store>` | x_y") == "`<store>` \\| x\\_y"
    assert text("then [DONE].") == "then \\[DONE\\]."
