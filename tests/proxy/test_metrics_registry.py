"""The metrics on a fresh registry per test: conventions, bounded labels, the store's figures,
and multiprocess mode's rule that instruments never register on the exposition registry."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from proxy.observability.feedback_figures import feedback_figures, segment_outcomes
from proxy.observability.labels import BIN_LABELS, OTHER
from proxy.observability.metrics import GatewayMetrics
from proxy.runtime.reload import ReloadResult
from proxy.runtime.state import RuntimeState, build_runtime
from proxy.store import OUTCOMES, RELIABILITY_BINS, DecisionStore, FeedbackTotal, SegmentTotal
from tests.support.decision_store import record, tenant
from tests.support.gateway import gateway_config

REPOSITORY = Path(__file__).resolve().parents[2]
UNIT_SUFFIXES = ("_total", "_seconds", "_ratio", "_sum", "_count", "_decisions", "_open",
                 "_tokens", "_labels", "_info", "_up", "_breached", "_certified")
"""Units, counted things (decisions, tokens, labels), and 0/1 states named by the state (up,
breached, certified), as Prometheus's own ``up`` is."""


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], RuntimeState]:
    """The config of the loopback tests (tenants enforcer, annotator, ...; model fake)."""
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-x")
    path = tmp_path / "basguard.yaml"
    path.write_text(yaml.safe_dump(gateway_config("http://127.0.0.1:9")))
    runtime = build_runtime(path)
    return lambda: runtime


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def test_each_gateway_counts_on_the_registry_it_is_given(
    state: Callable[[], RuntimeState], registry: CollectorRegistry
) -> None:
    other = CollectorRegistry()
    counted, idle = GatewayMetrics(registry, state), GatewayMetrics(other, state)
    counted.decided(record("d-1", 0.9, owner=tenant("enforcer"), model="fake"))
    labels = {"tenant": "enforcer", "model": "fake", "decision": "answer", "mode": "enforce"}
    assert registry.get_sample_value("basguard_requests_total", labels) == 1
    assert other.get_sample_value("basguard_requests_total", labels) is None
    assert idle.registry is other


def test_decisions_confidence_and_expected_utility(
    state: Callable[[], RuntimeState], registry: CollectorRegistry
) -> None:
    metrics = GatewayMetrics(registry, state)
    owner = tenant("enforcer", wrong_answer_cost=2.0, abstain_cost=0.5)
    metrics.decided(record("d-1", 0.9, 0.2, None, owner=owner, model="fake"))
    pair = {"tenant": "enforcer", "model": "fake"}

    def requests(decision: str) -> float | None:
        return registry.get_sample_value(
            "basguard_requests_total", {**pair, "decision": decision, "mode": "enforce"})

    assert (requests("answer"), requests("abstain"), requests("no_confidence")) == (1, 1, 1)
    assert registry.get_sample_value("basguard_confidence_ratio_count", pair) == 2
    assert registry.get_sample_value("basguard_no_confidence_decisions_total", pair) == 1
    # answer: 0.9 - 0.1 * 2; the two abstentions: -0.5 each.
    assert registry.get_sample_value("basguard_expected_utility_sum", pair) == pytest.approx(
        0.9 - 0.1 * 2.0 - 0.5 - 0.5)
    assert registry.get_sample_value("basguard_segment_decisions_total", {
        "tenant": "enforcer", "segment": OTHER, "decision": "abstain"}) == 1


def test_labels_outside_the_config_and_the_vocabularies_count_as_other(
    state: Callable[[], RuntimeState], registry: CollectorRegistry
) -> None:
    metrics = GatewayMetrics(registry, state)
    metrics.decided(record("d-1", 0.9, owner=tenant("stranger"), model="nope"))
    metrics.upstream_failed("nope", "timeout")
    metrics.first_token("nope", "sideways", 0.1)  # type: ignore[arg-type]
    metrics.stream_cancelled("nope", 7)
    metrics.observe_overhead("nope", 0.0, 0.0)
    metrics.observe_first_byte(None, 0.0)
    metrics.passthrough.forwarded("stranger", "/v9/anything", "7xx")
    metrics.passthrough.websocket_opened("stranger")()
    metrics.server.connection_refused("made_up")
    metrics.internal_error("nowhere")
    bounded = {"tenant", "model", "endpoint", "outcome", "stream_mode", "reason", "where"}
    the_config = {"basguard_threshold_ratio", "basguard_calibrator_info"}  # names every tenant
    seen = {
        (sample.name, key, value)
        for family in registry.collect() if family.name not in the_config
        for sample in family.samples if sample.value and not sample.name.endswith("_created")
        for key, value in sample.labels.items() if key in bounded
    }
    assert seen, "nothing was counted"
    assert {value for _, _, value in seen} == {OTHER}, seen


def test_names_follow_the_conventions(
    state: Callable[[], RuntimeState], registry: CollectorRegistry, tmp_path: Path
) -> None:
    store = DecisionStore(tmp_path / "decisions.sqlite3", retention_seconds=None)
    try:
        GatewayMetrics(registry, state, store)
        families = list(registry.collect())
    finally:
        store.close()
    assert len(families) > 30
    for family in families:
        assert family.name.startswith("basguard_"), family.name
        if family.type == "counter":
            # prometheus-client drops the _total from a counter family's name, not its samples.
            assert {s.name for s in family.samples} <= {f"{family.name}_total",
                                                        f"{family.name}_created"}, family.name
        else:
            assert family.name.endswith(UNIT_SUFFIXES), family.name


def test_the_store_figures_and_its_recovery_are_read_from_the_store(
    state: Callable[[], RuntimeState], registry: CollectorRegistry, tmp_path: Path
) -> None:
    store = DecisionStore(tmp_path / "decisions.sqlite3", retention_seconds=None)
    try:
        metrics = GatewayMetrics(registry, state, store, drift_window=50)
        # Made under the calibrator the config serves: drift compares only those.
        serving = state().tenants["enforcer"].calibrator_for("fake").version
        store.decided(record("d-1", 0.9, 0.3, owner=tenant("enforcer"), model="fake",
                             calibrator_version=serving))
        store.label_now("enforcer", "d-1", 0, True)
        store.label_now("enforcer", "d-1", 1, False)
        pair = {"tenant": "enforcer", "model": "fake"}
        for outcome, expected in (("answered_correct", 1), ("abstained_wrong", 1),
                                  ("answered_wrong", 0), ("abstained_correct", 0)):
            assert registry.get_sample_value(
                "basguard_feedback_decisions", {**pair, "outcome": outcome}) == expected
        assert registry.get_sample_value("basguard_feedback_bas_count", pair) == 2
        assert registry.get_sample_value("basguard_calibration_drift_window_decisions",
                                         pair) == 2
        assert registry.get_sample_value("basguard_store_writer_up", {}) == 1
        assert registry.get_sample_value("basguard_store_recovered_decisions_total", {}) == 0
        metrics.store.decisions_lost("dropped", 3)
        metrics.server.reloaded(ReloadResult(applied=False))
        assert registry.get_sample_value("basguard_store_lost_decisions_total",
                                         {"reason": "dropped"}) == 3
        assert registry.get_sample_value("basguard_config_reloads_total",
                                         {"result": "failure"}) == 1
    finally:
        store.close()


def test_in_multiprocess_mode_each_value_is_shown_once(tmp_path: Path) -> None:
    """Rule 2: the instruments' values reach /metrics through the worker's files only.

    Run in a fresh interpreter: prometheus-client chooses file-backed values at import.
    """
    config = tmp_path / "basguard.yaml"
    config.write_text(yaml.safe_dump(gateway_config("http://127.0.0.1:9")))
    script = textwrap.dedent(f"""
        from pathlib import Path

        from prometheus_client import generate_latest
        from proxy.observability.metrics import GatewayMetrics, gateway_registry
        from proxy.runtime.state import build_runtime
        from tests.support.decision_store import record, tenant

        runtime = build_runtime(Path({str(config)!r}))
        metrics = GatewayMetrics(gateway_registry(), lambda: runtime)
        metrics.decided(record("d-1", 0.9, owner=tenant("enforcer"), model="fake"))
        metrics.server.connection_refused("server_busy")
        print(generate_latest(metrics.registry).decode())
    """)
    files = tmp_path / "metrics"
    files.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(files), "PYTHONPATH": str(REPOSITORY),
           "LITELLM_LOCAL_MODEL_COST_MAP": "True", "FAKE_UPSTREAM_KEY": "sk-x"}
    shown = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                           text=True, timeout=120, check=True).stdout
    assert shown.count("# TYPE basguard_requests_total counter") == 1, shown
    assert ('basguard_requests_total{decision="answer",mode="enforce",model="fake",'
            'tenant="enforcer"} 1.0') in shown
    assert 'basguard_connections_refused_total{reason="server_busy"} 1.0' in shown
    assert shown.count("# TYPE basguard_threshold_ratio gauge") == 1  # a scrape-time collector
    assert list(files.glob("counter_*.db")), "the worker wrote no files"


tenants = st.sampled_from(["enforcer", "annotator", "gone"])
totals = st.builds(
    FeedbackTotal, tenant=tenants, model=st.sampled_from(["fake", "retired"]),
    outcome=st.sampled_from(OUTCOMES), bin=st.integers(-1, RELIABILITY_BINS - 1),
    decisions=st.integers(1, 50), confidence_sum=st.floats(0, 50), utility_sum=st.floats(-50, 50),
    bas_sum=st.floats(-50, 50))


def configured(name: str) -> str:
    return name if name in {"enforcer", "annotator", "fake"} else OTHER


@given(st.lists(totals, max_size=30))
def test_feedback_figures_keep_every_decision_and_fill_every_outcome(
    rows: list[FeedbackTotal],
) -> None:
    figures = feedback_figures(rows, configured, configured)
    assert sum(figures.outcomes.values()) == sum(row.decisions for row in rows)
    assert sum(figures.bas_count.values()) == sum(row.decisions for row in rows if row.bin >= 0)
    assert sum(figures.bins.values()) == sum(figures.bas_count.values())
    for tenant_name, model, *_ in figures.outcomes:
        assert {(tenant_name, model, outcome) for outcome in OUTCOMES} <= figures.outcomes.keys()
    for tenant_name, model, bin_label in figures.bin_confidence:
        assert bin_label in BIN_LABELS
        assert {(tenant_name, model, bin_label, "true"),
                (tenant_name, model, bin_label, "false")} <= figures.bins.keys()


@given(st.lists(st.builds(SegmentTotal, tenant=tenants, segment=st.sampled_from(["free", "x"]),
                          outcome=st.sampled_from(OUTCOMES), decisions=st.integers(1, 50)),
                max_size=30))
def test_segment_outcomes_leave_out_tenants_no_longer_configured(
    rows: list[SegmentTotal],
) -> None:
    counts = segment_outcomes(rows, configured, lambda tenant, segment: segment)
    assert sum(counts.values()) == sum(row.decisions for row in rows if row.tenant != "gone")
    assert all(key[0] != OTHER for key in counts)
    for tenant_name, segment, _ in counts:
        assert {(tenant_name, segment, outcome) for outcome in OUTCOMES} <= counts.keys()
