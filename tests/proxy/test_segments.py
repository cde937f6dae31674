"""Segments over real sockets: requests name them, the store records them, /metrics counts them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from policies.errors import PolicyError
from policies.loader import parse_policy_text
from policies.segments import OTHER_SEGMENT, SegmentPolicy, resolve_segment
from proxy.store import DecisionStore
from tests.support.fake_upstream import FakeUpstream
from tests.support.metrics import scrape
from tests.support.policy_traffic import Traffic, labelled_traffic


@pytest.fixture(scope="module")
def traffic(fake_upstream: tuple[FakeUpstream, str],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traffic]:
    with labelled_traffic(tmp_path_factory.mktemp("segments"), fake_upstream[1],
                          requests=60) as sent:
        yield sent


def test_each_decision_is_stored_with_the_segment_its_request_named(traffic: Traffic) -> None:
    store = DecisionStore(traffic.store_path, retention_seconds=None)
    try:
        stored = {d.id: d for d in store.tenant_decisions("ops")}
        totals = store.segment_totals()
    finally:
        store.close()
    assert {d.id: d.segment for d in stored.values()} == {s.id: s.segment for s in traffic.sent}
    assert {d.segment for d in stored.values()} == {"free", "pro", OTHER_SEGMENT}
    # The labels, by segment and outcome, as the store totals them.
    expected: Counter[tuple[str, str]] = Counter()
    for s in traffic.sent:
        if s.correct is not None:
            outcome = (("answered_" if s.answered else "abstained_")
                       + ("correct" if s.correct else "wrong"))
            expected[(s.segment, outcome)] += 1
    assert {(t.segment, t.outcome): t.decisions for t in totals if t.tenant == "ops"} == expected


def test_metrics_count_decisions_and_labelled_outcomes_by_segment(traffic: Traffic) -> None:
    samples = scrape(traffic.url)
    decisions: Counter[tuple[str, str]] = Counter(
        (s.segment, "answer" if s.answered else "abstain") for s in traffic.sent)
    for segment in ("free", "pro", OTHER_SEGMENT):
        for decision in ("answer", "abstain"):
            key = ("basguard_segment_decisions_total",
                   (("decision", decision), ("segment", segment), ("tenant", "ops")))
            assert samples.get(key, 0.0) == decisions[(segment, decision)]
    outcomes: Counter[tuple[str, str]] = Counter()
    for s in traffic.sent:
        if s.correct is not None:
            outcomes[(s.segment, ("answered_" if s.answered else "abstained_")
                      + ("correct" if s.correct else "wrong"))] += 1
    for segment in ("free", "pro", OTHER_SEGMENT):
        for outcome in ("answered_correct", "answered_wrong", "abstained_correct",
                        "abstained_wrong"):
            key = ("basguard_feedback_segment_decisions",
                   (("outcome", outcome), ("segment", segment), ("tenant", "ops")))
            assert samples[key] == outcomes[(segment, outcome)]
    # Only configured names (and other) ever become label values.
    labels = {dict(labels).get("segment") for (name, labels) in samples
              if name.startswith(("basguard_segment_", "basguard_feedback_segment_"))}
    assert labels == {"free", "pro", OTHER_SEGMENT}


def test_the_first_source_holding_a_string_decides() -> None:
    policy = SegmentPolicy(names=["free", "pro"], aliases={"business": "pro"})
    assert resolve_segment(policy, header="free", metadata={"segment": "pro"}) == "free"
    assert resolve_segment(policy, metadata={"segment": "pro"}, user="free") == "pro"
    assert resolve_segment(policy, metadata={"segment": 7}, user="business") == "pro"
    assert resolve_segment(policy, metadata="not a mapping", user=" free ") == "free"
    assert resolve_segment(policy, header="nobody") == OTHER_SEGMENT
    # A source that names an unknown segment decides: later sources are not consulted.
    assert resolve_segment(policy, header="nobody", user="pro") == OTHER_SEGMENT
    assert resolve_segment(policy, header="x" * 10_000) == OTHER_SEGMENT
    assert resolve_segment(None, header="free") == OTHER_SEGMENT
    only_user = SegmentPolicy(names=["free"], sources=["user"])
    assert resolve_segment(only_user, header="free", user="nope") == OTHER_SEGMENT
    keyed = SegmentPolicy(names=["free"], metadata_key="plan")
    assert resolve_segment(keyed, metadata={"plan": "free", "segment": "x"}) == "free"


def policy_text(segments: object) -> str:
    return yaml.safe_dump({"version": 1, "tenants": {"acme": {
        "api_keys": [{"env": "ACME_KEY"}], "risk": {"profile": "balanced"},
        "segments": segments}}}, sort_keys=False)


@pytest.mark.parametrize(("segments", "message"), [
    ({"names": ["free", "other"]}, "`other` is reserved"),
    ({"names": ["free"], "aliases": {"biz": "pro"}}, "'pro', which is not in `names`"),
    ({"names": [f"s{i}" for i in range(17)]}, "at most 16"),
    ({"names": ["Free"]}, "pattern"),
    ({"names": ["free", "free"]}, "appear once"),
    ({"names": ["free"], "sources": ["cookie"]}, "'header', 'metadata' or 'user'"),
    ({"names": ["free"], "colour": "red"}, "colour"),
    ({"names": []}, "at least 1"),
])
def test_a_bad_segments_section_fails_with_its_file_and_line(segments: object,
                                                             message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy_text(policy_text(segments), display_name="tenants.yaml")
    text = "\n".join(str(problem) for problem in caught.value.problems)
    assert "tenants.yaml:" in text and message in text, text


def test_a_valid_segments_section_loads() -> None:
    policy = parse_policy_text(policy_text(
        {"names": ["free", "pro"], "aliases": {"business": "pro"}, "min_labels": 50}))
    segments = policy.tenants["acme"].segments
    assert segments is not None and segments.names == ["free", "pro"]
    assert segments.sources == ["header", "metadata", "user"]


def test_the_store_reads_a_decision_from_before_segments_as_other(tmp_path: Path) -> None:
    import sqlite3

    from tests.support.decision_store import V1_SCHEMA

    path = tmp_path / "decisions.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(V1_SCHEMA)
        db.execute("UPDATE decisions SET correct = 1, labelled_at = 1001.0")
    store = DecisionStore(path, retention_seconds=None)
    try:
        (old,) = store.tenant_decisions("acme")
        assert old.segment == OTHER_SEGMENT
        # The labels kept from before count under `other`, so the totals stay whole.
        assert [(t.segment, t.outcome, t.decisions) for t in store.segment_totals()] == [
            (OTHER_SEGMENT, "answered_correct", 1)]
    finally:
        store.close()


def test_a_streamed_request_and_a_relabel_keep_the_segment_totals_exact(
    fake_upstream: tuple[FakeUpstream, str], tmp_path: Path
) -> None:
    import json
    import math

    import openai

    from tests.support.policy_traffic import OPS_KEY, wait_until_stored

    with labelled_traffic(tmp_path, fake_upstream[1], requests=0) as traffic, openai.OpenAI(
        base_url=f"{traffic.url}/v1", api_key=OPS_KEY, max_retries=0, timeout=30
    ) as client:
        fake = {"content": "an answer", "logprobs": [math.log(0.9)]}
        stream = client.chat.completions.create(
            model="fake", stream=True, metadata={"segment": "pro"},
            messages=[{"role": "user", "content": json.dumps({"fake": fake})}])
        # The decision rides on the last chunk with choices.
        (record,) = [d for chunk in stream if (d := (chunk.model_extra or {}).get("basguard"))]
        wait_until_stored(traffic.store_path, "ops", 1)
        for correct in (True, False):  # the last label wins, in the segment totals too
            client.post("/feedback", body={"id": record["id"], "correct": correct},
                        cast_to=object)
        store = DecisionStore(traffic.store_path, retention_seconds=None)
        try:
            (stored,) = store.tenant_decisions("ops")
            totals = [(t.segment, t.outcome, t.decisions) for t in store.segment_totals()]
        finally:
            store.close()
    assert stored.segment == "pro" and stored.correct is False
    assert totals == [("pro", "answered_wrong", 1)]


def test_a_journal_line_from_before_segments_is_read_with_no_segment() -> None:
    import json

    from proxy.store.rows import ROW_WIDTH, decode_line

    v2_row = ["bg-1", 0, "acme", "m", "enforce", "answer", 0.9, 0.5, 1.0, 0.0, "identity", "v1",
              None, None, None, None, 1000.0, None]
    (row,) = decode_line(json.dumps([v2_row]).encode())
    assert len(row) == ROW_WIDTH and row[:18] == tuple(v2_row) and row[18] is None


def test_a_responses_request_is_recorded_under_the_segment_it_names(
    fake_upstream: tuple[FakeUpstream, str], tmp_path: Path
) -> None:
    import json
    import math

    import openai

    from tests.support.policy_traffic import OPS_KEY, wait_until_stored

    fake = {"content": "an answer", "logprobs": [math.log(0.9)]}
    with labelled_traffic(tmp_path, fake_upstream[1], requests=0) as traffic, openai.OpenAI(
        base_url=f"{traffic.url}/v1", api_key=OPS_KEY, max_retries=0, timeout=30
    ) as client:
        plain = client.responses.create(model="fake", input=json.dumps({"fake": fake}),
                                        metadata={"segment": "pro"})
        streamed = client.responses.create(
            model="fake", input=json.dumps({"fake": fake}), stream=True,
            extra_headers={"x-basguard-segment": "free"})
        (streamed_record,) = [event.response.model_extra["basguard"] for event in streamed
                              if event.type == "response.completed"]
        wait_until_stored(traffic.store_path, "ops", 2)
        store = DecisionStore(traffic.store_path, retention_seconds=None)
        try:
            stored = {d.id: d.segment for d in store.tenant_decisions("ops")}
        finally:
            store.close()
    assert stored == {(plain.model_extra or {})["basguard"]["id"]: "pro",
                      streamed_record["id"]: "free"}
