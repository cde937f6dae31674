"""``basguard policy card``: the demo tenants' cards, and a card with live figures from a store."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from calibrators.artifact import load_artifact
from calibrators.dataset import read_calibration_data
from calibrators.selection import candidates_for, cross_validate
from calibrators.signals import parse_score_spec
from proxy.cli.main import main
from proxy.tools.demo import DEMO_FILES
from tests.support.fake_upstream import FakeUpstream
from tests.support.policy_traffic import ABSTAIN_COST, WRONG_ANSWER_COST, Traffic, labelled_traffic

DEMO_CONFIG = DEMO_FILES / "demo-config.yaml"


def card_of(tenant: str, out: Path, *extra: str, config: Path = DEMO_CONFIG) -> str:
    assert main(["policy", "card", tenant, "--config", str(config), "-o", str(out),
                 *extra]) == 0
    card = out / f"{tenant}-risk-card.md"
    text = card.read_text(encoding="utf-8")
    for figure in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure
    return text


def oof_on_demo_data() -> tuple[np.ndarray, np.ndarray]:  # type: ignore[type-arg]
    """The shipped calibrator's out-of-fold confidences on its own training records."""
    artifact = load_artifact(DEMO_FILES / "smollm2-calibrator.json")
    assert artifact.training is not None and artifact.cross_validation is not None
    data = read_calibration_data(
        DEMO_FILES / "smollm2-records.jsonl",
        scores=[parse_score_spec(s) for s in artifact.training.scores],
        label="correct", group="group")
    (chosen,) = [c for c in candidates_for(data.specs)
                 if c.name == artifact.cross_validation.selected]
    (result,) = cross_validate(data, [chosen], n_folds=artifact.cross_validation.folds)
    assert result.oof is not None
    return result.oof, data.correct


@pytest.mark.parametrize(("tenant", "threshold", "lam", "a"), [
    ("explorer", 0.375, 1.0, 0.25),
    ("clinic", 0.99, 99.0, 0.0),
])
def test_the_demo_tenants_cards(tenant: str, threshold: float, lam: float, a: float,
                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # From elsewhere: the training records are found beside the artifact, not via the cwd.
    monkeypatch.chdir(tmp_path)
    text = card_of(tenant, tmp_path / "cards")
    artifact = json.loads((DEMO_FILES / "smollm2-calibrator.json").read_text())
    assert text.startswith(f"# Risk card: tenant `{tenant}`")
    assert re.search(r"Generated \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00 by `basguard policy "
                     rf"card` from `{re.escape(str(DEMO_CONFIG))}`", text)
    assert f"**Cost of a wrong answer (λ):** {lam:g} correct answers" in text
    assert f"**Cost of withholding an answer (a):** {a:g} correct answers" in text
    assert f"answer iff calibrated P(correct) ≥ **{threshold:.3f}**" in text
    assert f"= ({lam:g} − {a:g}) / (1 + {lam:g}) = {threshold:.3f}." in text
    # Provenance, as the artifact records it.
    training = artifact["training"]
    assert f"**Method:** `{artifact['method']}`" in text
    assert (f"{training['rows']} rows ({training['positives']} correct" in text
            and f"{training['groups']} groups" in text)
    assert f"**Data fingerprint:** `{training['fingerprint']}`" in text
    assert f"selected by out-of-fold BAS: **{artifact['cross_validation']['selected']}**" in text
    # Expected figures at the threshold, recomputed here from out-of-fold confidences.
    p, y = oof_on_demo_data()
    answer = p >= threshold
    coverage = answer.mean()
    utility = np.where(answer, np.where(y, 1.0, -lam), -a).mean()
    over = (~answer & y).mean()
    under = (answer & ~y).mean()
    row = re.search(r"\| ([\d.]+ %) \| ([^|]+) \| ([\d.]+ %) \| ([\d.]+ %) \| (-?[\d.]+) \[",
                    text)
    assert row is not None, text
    assert row.group(1) == f"{100 * coverage:.1f} %"
    assert row.group(3) == f"{100 * over:.1f} %" and row.group(4) == f"{100 * under:.1f} %"
    assert float(row.group(5)) == pytest.approx(utility, abs=5e-4)
    accuracy = (y[answer].mean() if answer.any() else math.nan)
    assert row.group(2).strip() == ("n/a" if math.isnan(accuracy) else f"{100 * accuracy:.1f} %")
    tenant_policy = yaml.safe_load(DEMO_CONFIG.read_text())["tenants"][tenant]
    assert f"**Purpose:** {tenant_policy['description']}" in text
    assert f"**Owner:** {tenant_policy['owner']}" in text
    # Limits a reviewer must see; no store, so live figures say how to get them.
    assert "`on_missing_confidence: abstain` applies: the answer is withheld" in text
    assert "fitted on 210 rows (fewer than 300)" in text
    assert "generate the card with `--store`" in text
    assert "## Sign-off" in text
    if tenant == "clinic":  # the critical preset answers none of the demo questions
        assert coverage == 0.0 and "answers 0.0 % of questions" in text


@pytest.fixture(scope="module")
def traffic(fake_upstream: tuple[FakeUpstream, str],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traffic]:
    with labelled_traffic(tmp_path_factory.mktemp("card"), fake_upstream[1],
                          requests=120, seed=9) as sent:
        yield sent


def test_a_card_with_live_figures_from_the_store(traffic: Traffic, tmp_path: Path) -> None:
    labelled = [s for s in traffic.sent if s.correct is not None]
    per_segment = {seg: sum(s.segment == seg for s in labelled) for seg in ("free", "pro", "other")}
    # A min_labels between the segments' label counts: the smaller ones are called out.
    cutoff = sorted(per_segment.values())[-1]
    config = yaml.safe_load(traffic.config_path.read_text())
    config["tenants"]["ops"]["segments"]["min_labels"] = cutoff
    config_path = tmp_path / "basguard.yaml"
    config_path.write_text(yaml.safe_dump(config))
    text = card_of("ops", tmp_path / "cards", "--store", str(traffic.store_path),
                   config=config_path)
    assert "**Purpose:** Support answers for the ops test tenant." in text
    assert "**Owner:** ops-team@example.com" in text
    assert "it is **not calibrated**" in text and "raw model score" in text
    # Live figures, recomputed here from what was sent and labelled.
    n = len(labelled)
    over = sum(not s.answered and bool(s.correct) for s in labelled)
    under = sum(s.answered and not s.correct for s in labelled)
    bas = np.mean([min(max(s.confidence, 1e-4), 1 - 1e-4)
                   + (0.0 if s.correct else math.log1p(-min(max(s.confidence, 1e-4), 1 - 1e-4)))
                   for s in labelled])
    utility = np.mean([(1.0 if s.correct else -WRONG_ANSWER_COST) if s.answered
                       else -ABSTAIN_COST for s in labelled])
    assert (f"| {n} | {bas:.3f} | {100 * over / n:.1f} % ({over}) | "
            f"{100 * under / n:.1f} % ({under}) | {utility:.3f} |") in text
    assert f"`fake`: over the latest {n} labels" in text
    assert "### Parity across segments" in text and "abstention rate: largest gap" in text
    few = sorted(seg for seg, count in per_segment.items() if count < cutoff)
    assert f"fewer than {cutoff} labelled decisions (no parity verdict on their labelled " \
           f"rates): {', '.join(few)}." in text
    assert f"and the decision store `{traffic.store_path}`" in text


def test_a_card_says_what_a_bare_policy_leaves_unstated(tmp_path: Path) -> None:
    minimal = Path(__file__).resolve().parents[2] / "policies" / "examples" / "minimal.yaml"
    text = card_of("demo-app", tmp_path, config=minimal)
    assert "not stated: add `description:`" in text and "not stated: add `owner:`" in text
    assert "it is **not calibrated**" in text
    assert "Not available: no calibrator" in text
    assert "**Stated as:** the `balanced` preset" in text


def test_a_card_for_an_unknown_tenant_or_store_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["policy", "card", "nobody", "--config", str(DEMO_CONFIG), "-o",
                 str(tmp_path)]) == 2
    assert "no tenant 'nobody'; configured: clinic, explorer" in capsys.readouterr().err
    assert main(["policy", "card", "clinic", "--config", str(DEMO_CONFIG), "-o",
                 str(tmp_path), "--store", str(tmp_path / "missing.sqlite3")]) == 2
    assert "no decision store here" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_a_card_from_a_store_without_the_tenants_decisions_says_so(
    fake_upstream: tuple[FakeUpstream, str], tmp_path: Path
) -> None:
    from proxy.store import DecisionStore
    from tests.support.policy_traffic import ops_config

    store = tmp_path / "empty.sqlite3"
    DecisionStore(store, retention_seconds=None).close()
    config = tmp_path / "basguard.yaml"
    config.write_text(yaml.safe_dump(ops_config(fake_upstream[1])))
    text = card_of("ops", tmp_path / "cards", "--store", str(store), config=config)
    assert "No labelled decisions yet" in text
    assert "no drift check yet" in text
    assert "No decisions of this tenant in the store yet: no parity figures." in text
    assert "No live labels: nothing yet shows how the policy does on real traffic." in text
