"""The gateway every client of the matrix talks to: basguard on loopback in front of the
wire-format fake upstream, with one tenant per withheld shape (``matrix.TENANTS``)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from tests.clients.matrix import KEYS, MESSAGE, MODEL, TENANTS

# The fake upstream's fixtures, shared with tests/proxy.
# The proxy suite's fixtures, shared with the client matrix.
from tests.proxy.conftest import fake_upstream, sdk_client, upstream  # noqa: F401
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import gateway_config, serve_gateway


@pytest.fixture(scope="session")
def base_url(
    fake_upstream: tuple[FakeUpstream, str],  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """basguard's /v1 URL."""
    tenants = {name: {"api_keys": [{"sha256": hashlib.sha256(KEYS[name].encode()).hexdigest()}],
                      "risk": {"threshold": 0.5}, "abstention_message": MESSAGE,
                      "default_model": "fake", **policy}
               for name, policy in TENANTS.items()}
    config = gateway_config(fake_upstream[1], tenants=tenants)
    fake = {**config["models"]["fake"], "timeout_seconds": 30}
    config["models"] = {"fake": fake, MODEL: fake}
    # Clients send their schemas, tool lists and prompt templates: bodies of a few kB.
    config["max_body_bytes"] = 1_000_000
    with serve_gateway(tmp_path_factory.mktemp("client-matrix"), config) as url:
        yield f"{url}/v1"
