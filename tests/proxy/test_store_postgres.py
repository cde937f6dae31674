"""What only a shared PostgreSQL store has: URLs and secrets, migrations under a lock, faults.

The store's behaviour itself (recording, labels, totals, retention, the journal) is the
parametrised suite in ``test_store.py``, which runs on both backends.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml

from proxy.cli.main import main
from proxy.errors import StoreUnavailable
from proxy.http.app import create_app
from proxy.runtime.settings import ServerSettings
from proxy.store import DecisionStore, StoreError, open_backend, parse_store_location
from proxy.store import postgres as postgres_module
from proxy.store import writer as writer_module
from proxy.store.location import StoreLocationError
from proxy.store.schema import MIGRATIONS, SCHEMA_VERSION
from tests.support.decision_store import query, record
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import TENANT_KEYS, gateway_config
from tests.support.loopback import serve_in_thread
from tests.support.postgres_cluster import PostgresCluster
from tests.support.waiting import wait_until


@pytest.fixture
def url(postgres_cluster: PostgresCluster) -> str:
    return postgres_cluster.fresh_schema()


def test_migrations_are_numbered_in_order() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, SCHEMA_VERSION + 1))


def test_store_urls_choose_the_backend_and_never_show_a_password(tmp_path: Path) -> None:
    assert parse_store_location("decisions.sqlite3").path == Path("decisions.sqlite3")
    assert parse_store_location("sqlite:///rel/d.sqlite3").path == Path("rel/d.sqlite3")
    assert parse_store_location("sqlite:////abs/d.sqlite3").path == Path("/abs/d.sqlite3")
    secret = parse_store_location("postgresql://app:s3cr3t@db:5432/basguard?sslmode=require")
    assert secret.backend == "postgresql" and secret.has_password
    assert str(secret) == "postgresql://app:***@db:5432/basguard?sslmode=require"
    assert "s3cr3t" not in repr(secret)
    in_query = parse_store_location("postgres://db/basguard?user=app&password=s3cr3t")
    assert "s3cr3t" not in str(in_query) and in_query.has_password
    assert not parse_store_location("postgresql://app@db/basguard").has_password
    with pytest.raises(StoreLocationError, match="mysql://: not a store"):
        parse_store_location("mysql://root:pw@db/x")
    with pytest.raises(StoreLocationError) as bad_port:
        parse_store_location("postgresql://app:s3cr3t@db:notaport/x")
    assert "s3cr3t" not in str(bad_port.value)


def test_a_password_on_the_command_line_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["store", "info", "--store", "postgresql://app:s3cr3t@127.0.0.1:9/x"])
    err = capsys.readouterr().err
    assert status == 2 and "no password on the command line" in err and "s3cr3t" not in err


def test_an_unreachable_store_is_a_one_line_error_without_the_password(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BASGUARD_STORE",
                       f"postgresql://app:s3cr3t@/x?host={tmp_path}&port=1&connect_timeout=2")
    assert main(["store", "info"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("basguard: error: postgresql://app:***@") and "s3cr3t" not in err


def test_replicas_starting_together_apply_each_migration_once(url: str) -> None:
    applied: list[list[int]] = []
    errors: list[BaseException] = []

    def migrate() -> None:
        backend = open_backend(url)
        try:
            applied.append(backend.migrate())
        except BaseException as exc:
            errors.append(exc)
        finally:
            backend.close()

    threads = [threading.Thread(target=migrate) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(v for versions in applied for v in versions) == list(range(1, SCHEMA_VERSION + 1))
    assert query(url, "SELECT value FROM basguard_meta") == [(str(SCHEMA_VERSION),)]


def test_store_migrate_and_info_on_both_backends(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BASGUARD_STORE", url)
    assert main(["store", "info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["schema_version"] is None
    assert main(["store", "migrate"]) == 0
    every = ", ".join(str(v) for v in range(1, SCHEMA_VERSION + 1))
    assert f"applied migrations {every}; schema version {SCHEMA_VERSION}" in (
        capsys.readouterr().out)
    assert main(["store", "migrate"]) == 0
    assert f"schema version {SCHEMA_VERSION}, up to date" in capsys.readouterr().out
    store = DecisionStore(url, retention_seconds=None)
    store.decided(record("bg-1", 0.9))
    store.label_now("acme", "bg-1", 0, True)
    store.close()
    assert main(["store", "info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["backend"], info["schema_version"], info["decisions"], info["labelled"]) == \
        ("postgresql", SCHEMA_VERSION, 1, 1)
    sqlite = tmp_path / "d.sqlite3"
    assert main(["store", "migrate", "--store", f"sqlite:///{sqlite}"]) == 0
    assert main(["store", "info", "--store", str(sqlite)]) == 0
    assert f"schema:     {SCHEMA_VERSION}" in capsys.readouterr().out


def test_a_database_with_a_decisions_table_of_its_own_is_refused(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("CREATE TABLE decisions (x int)")
    with pytest.raises(StoreError, match="not a basguard decision store"):
        DecisionStore(url, retention_seconds=None)


def test_retention_deletes_in_small_batches_across_turns_of_the_writer(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_module, "PURGE_BATCH", 7)
    monkeypatch.setattr(writer_module, "PURGE_BUDGET_SECONDS", 0.0)  # one batch per turn
    store = DecisionStore(url, retention_seconds=None)
    for i in range(100):
        store.decided(record(f"bg-old-{i}", 0.9, created_at=100.0))
    store.decided(record("bg-new", 0.9, created_at=9_990.0))
    store.close()
    purging = DecisionStore(url, retention_seconds=1000, clock=lambda: 10_000.0)
    try:
        wait_until(lambda: query(url, "SELECT count(*) FROM decisions") == [(1,)],
                   what="every old decision deleted", timeout=90)
    finally:
        purging.close()


def test_unreachable_at_start_serves_queues_and_catches_up(
    postgres_cluster: PostgresCluster, url: str, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(writer_module, "WRITER_RETRY_SECONDS", 0.1)
    postgres_cluster.stop()
    store = DecisionStore(url, retention_seconds=None, require_store=False,
                          journal=tmp_path / "journal")
    try:
        try:
            assert store.writer_alive and not store.connected and not store.ready
            for i in range(50):
                store.decided(record(f"bg-{i}", 0.9))
            with pytest.raises(StoreUnavailable, match="unreachable"):
                store.label_now("acme", "bg-1", 0, True)
        finally:
            postgres_cluster.start()
        wait_until(lambda: store.connected, what="the store to reconnect", timeout=90)
        assert store.label_now("acme", "bg-49", 0, True).outcome == "answered_correct"
    finally:
        store.close()
    assert query(url, "SELECT count(*) FROM decisions") == [(50,)]
    assert store.dropped == 0 and store.write_failures == 0
    assert "unreachable" in caplog.text


def test_a_restart_under_load_loses_no_acknowledged_label_and_counts_lost_decisions(
    postgres_cluster: PostgresCluster, url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(writer_module, "WRITER_RETRY_SECONDS", 0.1)
    lost: list[tuple[str, int]] = []
    store = DecisionStore(url, retention_seconds=None, max_queued=1_000_000,
                          on_lost=lambda reason, count: lost.append((reason, count)))
    made: list[str] = []
    acknowledged: dict[str, bool] = {}
    refused = 0
    stop = threading.Event()

    def decide() -> None:
        i = 0
        while not stop.is_set():
            store.decided(record(f"bg-{i}", 0.8))
            made.append(f"bg-{i}")
            i += 1
            time.sleep(0.0005)

    def labels() -> None:
        nonlocal refused
        i = 0
        while not stop.is_set():
            if i < len(made):
                try:
                    verdict = i % 3 == 0
                    store.label_now("acme", made[i], 0, verdict)
                    acknowledged[made[i]] = verdict
                except StoreUnavailable:
                    refused += 1
                    time.sleep(0.02)
                i += 1
            else:
                time.sleep(0.001)

    workers = [threading.Thread(target=decide), threading.Thread(target=labels)]
    for worker in workers:
        worker.start()
    try:
        wait_until(lambda: len(acknowledged) > 50, what="labels to flow", timeout=90)
        postgres_cluster.pg_ctl("-m", "fast", "restart")
        wait_until(lambda: not store.connected or len(acknowledged) > 400,
                   what="the writer to notice", timeout=90)
        wait_until(lambda: store.connected, what="the writer to reconnect", timeout=90)
        count = len(acknowledged)
        wait_until(lambda: len(acknowledged) > count + 50, what="labels to flow again", timeout=90)
    finally:
        stop.set()
        for worker in workers:
            worker.join()
        store.close()
    stored = dict(query(url, "SELECT id, correct FROM decisions"))
    assert len(stored) + sum(n for _, n in lost) == len(made)  # every loss is counted
    assert lost == []  # the queue held them all through the restart
    assert {i: bool(stored[i]) for i in acknowledged} == acknowledged
    assert refused > 0  # labels during the outage got 503, not a hang


@pytest.fixture
def gateway_on(
    fake_upstream: tuple[FakeUpstream, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """``gateway_on(url)``: a gateway whose decision store is ``url``; yields its base URL."""
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-x")
    config = tmp_path / "basguard.yaml"
    config.write_text(yaml.safe_dump(gateway_config(fake_upstream[1])))

    def start(store_url: str) -> Any:
        app = create_app(ServerSettings(config=config, store=store_url, reload_interval_seconds=0,
                                        store_journal_dir=tmp_path / "journal"))
        return serve_in_thread(app)

    yield start


def ask(base: str) -> str:
    response = httpx.post(
        f"{base}/v1/chat/completions", timeout=30,
        headers={"authorization": f"Bearer {TENANT_KEYS['enforcer']}"},
        json={"model": "fake", "messages": [{"role": "user", "content": "capital of France?"}]})
    response.raise_for_status()
    decision_id: str = response.headers["x-basguard-id"]
    return decision_id


def test_labels_while_the_store_is_down_get_a_503_envelope_and_readyz_fails(
    postgres_cluster: PostgresCluster, url: str, gateway_on: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(writer_module, "WRITER_RETRY_SECONDS", 0.1)
    auth = {"authorization": f"Bearer {TENANT_KEYS['enforcer']}"}
    with gateway_on(url) as base:
        assert httpx.get(f"{base}/readyz").status_code == 200
        first = ask(base)
        postgres_cluster.stop()
        try:
            during = ask(base)  # still served: decisions queue
            wait_until(lambda: httpx.get(f"{base}/readyz").status_code == 503,
                       what="not ready", timeout=90)
            ready = httpx.get(f"{base}/readyz").json()
            assert ready["error"]["code"] == "store_unavailable"
            response = httpx.post(f"{base}/v1/feedback", headers=auth, timeout=30,
                                  json={"id": first, "correct": True})
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "store_unavailable"
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}
            metrics = httpx.get(f"{base}/metrics", timeout=30).text
            assert "basguard_store_writer_up 0.0" in metrics
        finally:
            postgres_cluster.start()
        wait_until(lambda: httpx.get(f"{base}/readyz").status_code == 200,
                   what="ready again", timeout=90)
        for decision_id in (first, during):
            response = httpx.post(f"{base}/v1/feedback", headers=auth, timeout=30,
                                  json={"id": decision_id, "correct": True})
            assert response.status_code == 200, response.text


def test_no_password_reaches_the_log(
    postgres_cluster: PostgresCluster, url: str, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(writer_module, "WRITER_RETRY_SECONDS", 0.1)
    caplog.set_level(logging.DEBUG)
    secret = url.replace("basguard@", "basguard:s3cr3t-pw@")  # trust auth: any password works
    store = DecisionStore(secret, retention_seconds=None, require_store=False)
    try:
        postgres_cluster.stop()
        try:
            store.decided(record("bg-1", 0.9))
            wait_until(lambda: not store.connected, what="the writer to notice", timeout=90)
        finally:
            postgres_cluster.start()
        wait_until(lambda: store.connected, what="the writer to reconnect", timeout=90)
    finally:
        store.close()
    assert "unreachable" in caplog.text and "s3cr3t" not in caplog.text
