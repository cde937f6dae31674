from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.postgres_cluster import ClusterUnavailable, PostgresCluster, running_cluster

# litellm (used by the gateway) reaches for the network at import unless told otherwise.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A temporary PostgreSQL cluster for the whole run (:mod:`tests.support.postgres_cluster`).

    Where it cannot start, the tests that need it fail under CI (``CI=true``: CI installs
    PostgreSQL, so a missing one is a broken run) and are skipped elsewhere.
    """
    try:
        with running_cluster() as cluster:
            yield cluster
    except ClusterUnavailable as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL is needed under CI: {exc}")
        pytest.skip(f"no PostgreSQL here: {exc}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test on the PostgreSQL cluster is ``slow``: the cluster costs seconds to start, and
    ``-m "not slow"`` should not start it. Marked here so a new one cannot be missed."""
    for item in items:
        if "postgres_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
