"""Feedback and review over real sockets: the openai SDK labels decisions; /metrics shows it."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from policies.bas import bas_score_scalar
from proxy.http.app import create_app
from proxy.runtime.settings import ServerSettings
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import SDK, TENANT_KEYS, gateway_config, serve_gateway
from tests.support.loopback import serve_in_thread
from tests.support.metrics import scrape, value
from tests.support.waiting import wait_until


@pytest.fixture
def server(fake_upstream: tuple[FakeUpstream, str], tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-x")
    with serve_gateway(tmp_path, gateway_config(fake_upstream[1]), drift_window=10) as url:
        yield url


Client = Callable[[str, str], openai.OpenAI]


@pytest.fixture
def client(sdk_client: SDK) -> Client:
    """``client(url, tenant)``: an SDK client for a tenant, closed when the test ends."""
    return lambda url, tenant: sdk_client(f"{url}/v1", TENANT_KEYS.get(tenant, tenant))


def ask(sdk: openai.OpenAI, question: str = "capital of France?", n: int = 1,
        **fake: Any) -> dict[str, Any]:
    """Ask through basguard; returns the `basguard` object (its id is what feedback names)."""
    response = sdk.chat.completions.create(
        model="fake", n=n,
        messages=[{"role": "user", "content": json.dumps({"q": question, "fake": fake})}])
    return (response.model_extra or {})["basguard"]


def label(sdk: openai.OpenAI, decision_id: str, correct: Any, **extra: Any) -> Any:
    """How an app sends feedback with the client it already has."""
    return sdk.post("/feedback", body={"id": decision_id, "correct": correct, **extra},
                    cast_to=object)


def withheld(sdk: openai.OpenAI, **query: Any) -> Any:
    return sdk.get("/feedback/withheld", cast_to=object, options={"params": query})


def test_feedback_labels_a_decision_and_the_last_label_counts_once(
    server: str, client: Client
) -> None:
    sdk = client(server, "enforcer")
    decision = ask(sdk, content="Paris", logprobs=[-0.01, -0.01])  # p = 0.990: answered
    first = label(sdk, decision["id"], False)
    assert first == {"object": "basguard.feedback", "id": decision["id"], "choice": 0,
                     "correct": False, "decision": "answer",
                     "confidence": pytest.approx(0.99, abs=1e-3),
                     "outcome": "answered_wrong", "previous": None}
    again = label(sdk, decision["id"], True)
    assert again["outcome"] == "answered_correct" and again["previous"] is False
    samples = scrape(server)
    pair = {"tenant": "enforcer", "model": "fake"}
    assert value(samples, "basguard_feedback_decisions", outcome="answered_correct", **pair) == 1
    assert value(samples, "basguard_feedback_decisions", outcome="answered_wrong", **pair) == 0
    assert value(samples, "basguard_feedback_realized_utility_sum", **pair) == 1.0
    assert value(samples, "basguard_feedback_bas_count", **pair) == 1
    assert value(samples, "basguard_feedback_bas_sum", **pair) == pytest.approx(
        bas_score_scalar(decision["confidence"], True))
    assert value(samples, "basguard_feedback_reliability_decisions", bin="0.9", correct="true",
                 **pair) == 1
    assert value(samples, "basguard_feedback_reliability_confidence_sum", bin="0.9",
                 **pair) == pytest.approx(decision["confidence"])
    assert value(samples, "basguard_calibration_drift_ratio", **pair) == pytest.approx(
        decision["confidence"] - 1.0)
    assert value(samples, "basguard_calibration_drift_window_decisions", **pair) == 1


def test_reviewers_list_withheld_answers_and_labelling_one_measures_over_abstention(
    server: str, client: Client
) -> None:
    sdk = client(server, "enforcer")
    decision = ask(sdk, "the tallest mountain?", content="Everest", logprobs=[-2.0, -2.0])
    assert decision["decision"] == "abstain"
    ask(sdk, content="Paris", logprobs=[-0.01])  # answered: not for review
    listing = withheld(sdk)
    assert listing["object"] == "list" and listing["has_more"] is False
    (item,) = listing["data"]
    assert item["id"] == decision["id"] and item["answer"] == "Everest"
    assert "the tallest mountain?" in item["prompt"] and item["correct"] is None
    assert item["confidence"] == pytest.approx(decision["confidence"])
    assert item["threshold"] == 0.5 and item["mode"] == "enforce"
    # Another tenant's reviewers see none of it.
    assert withheld(client(server, "annotator"))["data"] == []

    assert label(sdk, decision["id"], True)["outcome"] == "abstained_correct"
    assert withheld(sdk)["data"] == []  # labelled: no longer waiting
    (labelled,) = withheld(sdk, include_labelled="true")["data"]
    assert labelled["correct"] is True
    samples = scrape(server)
    over = value(samples, "basguard_feedback_decisions", tenant="enforcer", model="fake",
                 outcome="abstained_correct")
    assert over == 1


def test_the_review_list_pages_newest_first(server: str, client: Client) -> None:
    sdk = client(server, "enforcer")
    ids = [ask(sdk, f"q{i}", content="x", logprobs=[-3.0])["id"] for i in range(5)]
    page = withheld(sdk, limit=3)
    assert [item["id"] for item in page["data"]] == ids[::-1][:3] and page["has_more"]
    rest = withheld(sdk, limit=3, before=page["data"][-1]["created"])
    assert [item["id"] for item in rest["data"]] == ids[::-1][3:] and not rest["has_more"]
    # A page never ends inside a response: its choices share the `created` cursor.
    several = ask(sdk, "q5", n=3, content="x", logprobs=[-3.0])["id"]
    first = withheld(sdk, limit=2)
    assert [(i["id"], i["choice"]) for i in first["data"]] == [(several, c) for c in range(3)]
    after = withheld(sdk, limit=2, before=first["data"][-1]["created"])
    assert [i["id"] for i in after["data"]] == ids[::-1][:2]
    with pytest.raises(openai.BadRequestError, match="limit must be an integer"):
        withheld(sdk, limit=0)
    with pytest.raises(openai.BadRequestError, match="before must be a number"):
        withheld(sdk, before="yesterday")


def test_streamed_decisions_are_stored_too(server: str, client: Client) -> None:
    for tenant in ("enforcer", "annotator"):
        sdk = client(server, tenant)
        stream = sdk.chat.completions.create(
            model="fake", stream=True, messages=[{"role": "user", "content": json.dumps(
                {"fake": {"content": "Lyon", "logprobs": [-2.0, -2.0]}})}])
        reports = [(chunk.model_extra or {}).get("basguard") for chunk in stream]
        (report,) = [r for r in reports if r]
        receipt = label(sdk, report["id"], False)
        assert receipt["decision"] == "abstain" and receipt["outcome"] == "abstained_wrong"
        (item,) = withheld(sdk, include_labelled="true")["data"]
        assert item["answer"] == "Lyon" and item["mode"] == ("enforce" if tenant == "enforcer"
                                                             else "annotate")


def test_a_tenant_can_label_only_its_own_decisions(server: str, client: Client) -> None:
    decision = ask(client(server, "enforcer"), content="Paris", logprobs=[-0.01])
    with pytest.raises(openai.NotFoundError) as raised:
        label(client(server, "annotator"), decision["id"], True)
    assert raised.value.code == "decision_not_found"
    with pytest.raises(openai.NotFoundError):
        label(client(server, "enforcer"), "bg-000000000000000000000000", True)
    with pytest.raises(openai.NotFoundError):
        label(client(server, "enforcer"), decision["id"], True, choice=3)
    with pytest.raises(openai.AuthenticationError):
        label(client(server, "nobody"), decision["id"], True)
    assert value(scrape(server), "basguard_feedback_decisions", tenant="enforcer",
                 model="fake", outcome="answered_correct") == 0


@pytest.mark.parametrize("body", [
    {"id": "bg-1", "correct": "yes"},
    {"id": "bg-1", "correct": 1},
    {"correct": True},
    {"id": "", "correct": True},
    {"id": "bg-1", "correct": True, "choice": -1},
    {"id": "bg-1", "correct": True, "verdict": "typo"},
])
def test_a_malformed_label_is_a_400_in_the_openai_envelope(
    server: str, body: dict[str, Any]
) -> None:
    response = httpx.post(f"{server}/v1/feedback", json=body,
                          headers={"authorization": f"Bearer {TENANT_KEYS['enforcer']}"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]


def test_time_to_first_byte_is_measured_for_plain_and_streamed_responses(
    server: str, client: Client
) -> None:
    sdk = client(server, "annotator")
    ask(sdk, content="Paris", logprobs=[-0.01])
    for _ in sdk.chat.completions.create(
            model="fake", stream=True, messages=[{"role": "user", "content": "hi"}]):
        pass
    count = value(scrape(server), "basguard_time_to_first_byte_seconds_count", model="fake")
    assert count == 2


def test_every_decision_is_in_the_store_after_a_clean_shutdown(
    fake_upstream: tuple[FakeUpstream, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    client: Client,
) -> None:
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-x")
    with serve_gateway(tmp_path, gateway_config(fake_upstream[1])) as url:
        sdk = client(url, "shadower")
        ids = [ask(sdk, n=2, content="x", logprobs=[-0.5])["id"] for _ in range(40)]
    with sqlite3.connect(tmp_path / "decisions.sqlite3") as db:
        rows = db.execute("SELECT id, choice, tenant, mode, features FROM decisions").fetchall()
    assert sorted({row[0] for row in rows}) == sorted(ids)
    assert len(rows) == 80  # both choices of every response
    assert {row[2:4] for row in rows} == {("shadower", "shadow")}
    assert all(json.loads(row[4])["token_prob"] > 0 for row in rows)


def test_an_answer_withheld_as_an_error_can_still_be_labelled(server: str, client: Client) -> None:
    sdk = client(server, "refuser")
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        ask(sdk, content="Lyon", logprobs=[-2.0, -2.0])
    headers = caught.value.response.headers
    assert headers["x-basguard-decision"] == "abstain"
    receipt = label(sdk, headers["x-basguard-id"], True)
    assert receipt["outcome"] == "abstained_correct"  # over-abstention, measured
    (item,) = withheld(sdk, include_labelled="true")["data"]
    assert item["answer"] == "Lyon"


def test_stored_prompts_and_withheld_answers_are_cut_at_the_configured_lengths(
    fake_upstream: tuple[FakeUpstream, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    client: Client,
) -> None:
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-x")
    config = gateway_config(fake_upstream[1], max_body_bytes=4 * 1_048_576)
    with serve_gateway(tmp_path, config, store_max_prompt_chars=1_000,
                       store_max_answer_chars=2_000) as url:
        sdk = client(url, "enforcer")
        directive = json.dumps({"fake": {"content": "A" * 300_000, "logprobs": [-3.0]}})
        prompt = directive + "\n" + "Q" * 300_000
        response = sdk.chat.completions.create(
            model="fake", messages=[{"role": "user", "content": prompt}])
        assert (response.model_extra or {})["basguard"]["decision"] == "abstain"
        (item,) = withheld(sdk)["data"]
    assert item["prompt"] == prompt[:1_000] + \
        f"\n[basguard: truncated {len(prompt) - 1_000} of {len(prompt)} characters]"
    assert item["answer"] == "A" * 2_000 + \
        "\n[basguard: truncated 298000 of 300000 characters]"
    size = (tmp_path / "decisions.sqlite3").stat().st_size
    assert size < 200_000  # not the megabyte the request and its answer took


def test_the_review_list_pages_by_bytes_too_and_never_splits_a_response(
    fake_upstream: tuple[FakeUpstream, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    client: Client,
) -> None:
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-x")
    with serve_gateway(tmp_path, gateway_config(fake_upstream[1], max_body_bytes=1_048_576)) \
            as url:
        sdk = client(url, "enforcer")
        ids = []
        for i in range(40):  # each choice keeps 8 + 16 kB (the default cuts): 52 are > 1 MiB
            decision = ask(sdk, f"q{i}", n=3 if i % 7 == 0 else 1,
                           content=f"{i}:" + "x" * 40_000, logprobs=[-3.0])
            ids.append(decision["id"])
        seen, pages = _every_page(sdk)
    assert len(pages) >= 2 and all(pages)
    expected = [(decision_id, choice) for i, decision_id in reversed(list(enumerate(ids)))
                for choice in range(3 if i % 7 == 0 else 1)]
    assert seen == expected  # every choice once, newest first: no response split or skipped


def _every_page(sdk: openai.OpenAI) -> tuple[list[tuple[str, int]], list[int]]:
    """Walk the review list; each page's body is at most 1 MiB."""
    seen: list[tuple[str, int]] = []
    pages = []
    before: float | None = None
    while True:
        query: dict[str, Any] = {"limit": 500}
        if before is not None:
            query["before"] = before
        response = sdk.get("/feedback/withheld", cast_to=httpx.Response,
                           options={"params": query})
        assert len(response.content) <= 1_048_576
        page = response.json()
        pages.append(len(page["data"]))
        seen += [(item["id"], item["choice"]) for item in page["data"]]
        if not page["has_more"]:
            break
        before = page["data"][-1]["created"]
    return seen, pages


def test_a_stopped_store_writer_fails_readiness_and_labels_with_a_503(
    fake_upstream: tuple[FakeUpstream, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    client: Client,
) -> None:
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-x")
    path = tmp_path / "basguard.yaml"
    path.write_text(yaml.safe_dump(gateway_config(fake_upstream[1])))
    app = create_app(ServerSettings(config=path, store=tmp_path / "decisions.sqlite3",
                                    reload_interval_seconds=0))
    with serve_in_thread(app) as url:
        sdk = client(url, "enforcer")
        decision = ask(sdk, content="Paris", logprobs=[-0.01])
        assert httpx.get(f"{url}/readyz").status_code == 200
        assert value(scrape(url), "basguard_store_writer_up") == 1
        store = app.services.decisions

        def dying() -> list[object]:
            raise SystemExit("what no handler survives")

        monkeypatch.setattr(store, "_drain", dying)
        wait_until(lambda: not store.writer_alive, what="the writer to die")
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 503
        assert ready.json()["error"]["code"] == "store_unavailable"
        assert "decision store" in ready.json()["error"]["message"]
        assert value(scrape(url), "basguard_store_writer_up") == 0
        with pytest.raises(openai.InternalServerError) as refused:
            label(sdk, decision["id"], True)
        assert refused.value.status_code == 503
        assert refused.value.code == "store_unavailable"
