"""SIGKILL a real ``basguard serve``: no acknowledged decision or label is lost, and it is said."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import TENANT_KEYS, gateway_config
from tests.support.loopback import kill_process_group, serve_process_group
from tests.support.metrics import scrape
from tests.support.waiting import wait_until

# Real `basguard serve` processes, killed and started again: seconds each.
pytestmark = pytest.mark.slow

KEY = {"authorization": f"Bearer {TENANT_KEYS['enforcer']}"}


def decide(url: str, content: str = "Paris", logprob: float = -0.01) -> str:
    """One decision on a new connection (so every worker gets some); returns its id."""
    message = json.dumps({"fake": {"content": content, "logprobs": [logprob]}})
    response = httpx.post(f"{url}/v1/chat/completions", headers=KEY, timeout=30, json={
        "model": "fake", "messages": [{"role": "user", "content": message}]})
    assert response.status_code == 200, response.text
    return str(response.json()["basguard"]["id"])


def stored(path: Path) -> dict[str, int | None]:
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT id, correct FROM decisions"))  # type: ignore[arg-type]


@pytest.mark.parametrize("workers", [1, 2])
def test_sigkill_loses_no_acknowledged_decision_and_no_label(
    fake_upstream: tuple[FakeUpstream, str], tmp_path: Path, workers: int
) -> None:
    config = tmp_path / "basguard.yaml"
    config.write_text(yaml.safe_dump(gateway_config(fake_upstream[1])))
    store = tmp_path / "decisions.sqlite3"
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        with serve_process_group(config, store, log, workers) as (url, process):
            committed = [decide(url) for _ in range(40)]
            for decision_id in committed[:10]:
                labelled = httpx.post(f"{url}/v1/feedback", headers=KEY, timeout=30,
                                      json={"id": decision_id, "correct": False})
                assert labelled.status_code == 200  # acknowledged: committed
            # Hold the database's write lock, so the writers cannot commit what comes next:
            # those decisions are acknowledged to the client but only in the crash journals.
            with sqlite3.connect(store, isolation_level=None) as blocker:
                blocker.execute("BEGIN IMMEDIATE")
                journal_only = [decide(url, "Lyon", -3.0) for _ in range(60)]
                kill_process_group(process)
                blocker.execute("ROLLBACK")
        before = stored(store)
        missing = [i for i in committed + journal_only if i not in before]
        assert len(missing) == len(journal_only)  # the kill took everything the lock held back
        assert all(before[i] == 0 for i in committed[:10])  # labels survived SIGKILL

        with serve_process_group(config, store, log, workers) as (url, _):
            # Each worker replays the journals it finds at its start, and /readyz answers as
            # soon as one of them is ready: with two, wait for the other's replay too (a
            # decision really lost never arrives, and fails the wait with what is missing).
            wanted = committed + journal_only

            def replayed() -> bool:
                counted = scrape(url).get(("basguard_store_recovered_decisions_total", ()))
                return counted == len(missing) and all(i in stored(store) for i in wanted)

            wait_until(replayed, timeout=60, ignoring=(KeyError,),
                       what="every worker's start-up replay of the crash journals")
            after = stored(store)
            samples = scrape(url)
            recovered = samples[("basguard_store_recovered_decisions_total", ())]
            crashed = samples[("basguard_store_lost_decisions_total", (("reason", "crashed"),))]
    lost = [i for i in committed + journal_only if i not in after]
    assert lost == []
    assert all(after[i] == 0 for i in committed[:10])
    output = log_path.read_text()
    reported = sum(int(line.split("recovered ")[1].split()[0]) for line in output.splitlines()
                   if "from a crashed process's journal" in line)
    assert reported == len(missing), output
    # In multiprocess mode every worker's counters are summed, whichever worker answers.
    assert (recovered, crashed) == (len(missing), 0)
