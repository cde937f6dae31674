"""The audit sample over real sockets: ``audit_rate`` marks a uniform random sample of decisions,
answered and withheld alike, in the decision object, a header, the store (with the prompt and
answer, for labelling) and the review listings."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.cli.main import main
from proxy.store import DecisionStore
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import SDK, TENANT_KEYS, gateway_config, serve_gateway
from tests.support.risk import ask


@pytest.fixture(autouse=True)
def upstream_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-upstream-secret-0123456789")


def audited_config(upstream_url: str, **rates: float) -> dict[str, Any]:
    config = gateway_config(upstream_url)
    for tenant, rate in rates.items():
        config["tenants"][tenant]["audit_rate"] = rate
    return config


def test_a_uniform_sample_of_answered_and_withheld_decisions_is_marked_and_kept(
    fake_upstream: tuple[FakeUpstream, str], tmp_path: Path, sdk_client: SDK,
) -> None:
    config = audited_config(fake_upstream[1], enforcer=0.5)
    with serve_gateway(tmp_path, config) as url:
        client = sdk_client(f"{url}/v1", TENANT_KEYS["enforcer"])
        marked: dict[str, list[bool]] = {"answer": [], "abstain": []}
        ids: dict[bool, list[str]] = {True: [], False: []}
        for i in range(200):
            p = 0.9 if i % 2 else 0.2  # threshold 0.5: every other one answered
            body, headers = ask(client, p, content=f"answer{i}")
            report = body.model_extra["basguard"]
            audited = report["audited"]
            # The header and the decision object agree, and the header is there only then.
            assert headers.get("x-basguard-audit") == ("true" if audited else None)
            marked[report["decision"]].append(audited)
            ids[audited].append(report["id"])
        # Unaudited tenants are never marked.
        other = sdk_client(f"{url}/v1", TENANT_KEYS["annotator"])
        body, headers = ask(other, 0.9)
        assert body.model_extra["basguard"]["audited"] is False
        assert "x-basguard-audit" not in headers
    # Half of each kind, up to chance: 100 draws at 0.5 stay within 0.3-0.7 but for 1 in 10^4.
    for decision, flags in marked.items():
        assert 0.3 < sum(flags) / len(flags) < 0.7, decision
    store = DecisionStore(tmp_path / "decisions.sqlite3", retention_seconds=None)
    try:
        sample = store.audited("enforcer", limit=500)
        assert {d.id for d in sample} == set(ids[True])
        assert all(d.audited for d in sample)
        # An audited answer keeps its prompt and text, so a reviewer can label it; an
        # answer outside the sample keeps neither (only withheld ones are kept for review).
        answered = [d for d in sample if d.answered]
        assert answered and all(d.prompt and d.abstained_answer and
                                d.abstained_answer.startswith("answer") for d in answered)
        unaudited = [d for d in store.tenant_decisions("enforcer") if not d.audited]
        assert {d.id for d in unaudited} == set(ids[False])
        assert all(d.abstained_answer is None for d in unaudited if d.answered)
        # The review queue puts the sample first.
        queue = store.review_queue("enforcer", limit=500)
        first = queue[:len(sample)]
        assert all(d.audited for d in first) and not any(d.audited for d in queue[len(sample):])
        assert {d.id for d in queue[len(sample):]} == {
            d.id for d in unaudited if not d.answered}
    finally:
        store.close()


def test_every_guarded_path_marks_its_audited_decisions(
    fake_upstream: tuple[FakeUpstream, str], tmp_path: Path, sdk_client: SDK,
) -> None:
    config = audited_config(fake_upstream[1], enforcer=1.0, annotator=1.0)
    directive = json.dumps({"fake": {"content": "Paris", "logprobs": [math.log(0.9)]}})
    messages = [{"role": "user", "content": directive}]
    with serve_gateway(tmp_path, config) as url:
        for tenant in ("enforcer", "annotator"):
            client = sdk_client(f"{url}/v1", TENANT_KEYS[tenant])
            raw = client.chat.completions.with_raw_response.create(model="fake",
                                                                   messages=messages)
            assert raw.headers["x-basguard-audit"] == "true"
            assert raw.parse().model_extra["basguard"]["audited"] is True
            # A stream: annotate mode sends its headers before the decision, and still knows.
            with client.chat.completions.with_streaming_response.create(
                    model="fake", messages=messages, stream=True) as streamed:
                assert streamed.headers["x-basguard-audit"] == "true"
                events = [json.loads(line[6:]) for line in streamed.iter_lines()
                          if line.startswith("data: {")]
                assert [e["basguard"]["audited"] for e in events if "basguard" in e] == [True]
            raw_completion = client.completions.with_raw_response.create(
                model="fake", prompt=directive)
            assert raw_completion.headers["x-basguard-audit"] == "true"
            raw_response = client.responses.with_raw_response.create(model="fake",
                                                                      input=directive)
            assert raw_response.headers["x-basguard-audit"] == "true"
            assert raw_response.parse().model_extra["basguard"]["audited"] is True
            with client.responses.with_streaming_response.create(
                    model="fake", input=directive, stream=True) as streamed:
                assert streamed.headers["x-basguard-audit"] == "true"
                assert '"audited":true' in streamed.read().decode().replace(" ", "")
    store = DecisionStore(tmp_path / "decisions.sqlite3", retention_seconds=None)
    try:
        decisions = store.tenant_decisions("enforcer") + store.tenant_decisions("annotator")
        assert len(decisions) == 10 and all(d.audited for d in decisions)
    finally:
        store.close()


def test_the_review_listings_show_the_sample(
    fake_upstream: tuple[FakeUpstream, str], tmp_path: Path, sdk_client: SDK,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = audited_config(fake_upstream[1], enforcer=1.0)
    with serve_gateway(tmp_path, config) as url:
        client = sdk_client(f"{url}/v1", TENANT_KEYS["enforcer"])
        answered = ask(client, 0.9, content="Paris")[0].model_extra["basguard"]["id"]
        withheld = ask(client, 0.2, content="Lyon")[0].model_extra["basguard"]["id"]
        listing = httpx.get(f"{url}/v1/feedback/withheld",
                            headers={"Authorization": f"Bearer {TENANT_KEYS['enforcer']}"})
        (item,) = listing.json()["data"]
        assert item["id"] == withheld and item["audited"] is True
    store = str(tmp_path / "decisions.sqlite3")
    assert main(["review", "list", "--store", store, "--audited"]) == 0
    out = capsys.readouterr().out
    assert f"{answered} choice 0  enforcer/fake  p=0.900 >= 0.500  unlabelled  audited" in out
    assert "answered: Paris" in out
    assert f"{withheld} choice 0  enforcer/fake  p=0.200 < 0.500  unlabelled  audited" in out
    assert "withheld: Lyon" in out
    assert main(["review", "list", "--store", store, "--audited", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {(r["id"], r["decision"], r["audited"]) for r in rows} == {
        (answered, "answer", True), (withheld, "abstain", True)}
    # The withheld listing marks audited ones; labelled ones leave the --audited listing.
    assert main(["review", "list", "--store", store]) == 0
    assert f"{withheld} choice 0  enforcer/fake  p=0.200 < 0.500  unlabelled  audited" in (
        capsys.readouterr().out)
    assert main(["review", "label", "--store", store, answered, "wrong"]) == 0
    capsys.readouterr()
    assert main(["review", "list", "--store", store, "--audited"]) == 0
    assert answered not in capsys.readouterr().out


def test_labels_of_the_sample_are_counted_apart_and_the_last_label_wins(
    fake_upstream: tuple[FakeUpstream, str], tmp_path: Path, sdk_client: SDK,
) -> None:
    config = audited_config(fake_upstream[1], enforcer=1.0, annotator=0.0)
    with serve_gateway(tmp_path, config) as url:
        audited = sdk_client(f"{url}/v1", TENANT_KEYS["enforcer"])
        plain = sdk_client(f"{url}/v1", TENANT_KEYS["annotator"])
        ids = [ask(audited, 0.9)[0].model_extra["basguard"]["id"] for _ in range(3)]
        other = ask(plain, 0.9)[0].model_extra["basguard"]["id"]
        for decision_id, correct in zip(ids, (True, False, False), strict=True):
            audited.post("/feedback", body={"id": decision_id, "correct": correct},
                         cast_to=object)
        audited.post("/feedback", body={"id": ids[1], "correct": True}, cast_to=object)
        plain.post("/feedback", body={"id": other, "correct": False}, cast_to=object)
    store = DecisionStore(tmp_path / "decisions.sqlite3", retention_seconds=None)
    try:
        asyncio.run(store.settled())
        totals = {(t.tenant, t.outcome): t.decisions for t in store.audit_totals()}
        assert totals == {("enforcer", "answered_correct"): 2,
                          ("enforcer", "answered_wrong"): 1}
        assert {t.certificate for t in store.audit_totals()} == {""}  # no limit: no certificate
    finally:
        store.close()
