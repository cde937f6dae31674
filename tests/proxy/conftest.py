"""Fixtures: a fake upstream and basguard itself, both served by uvicorn on loopback (their
makings are in :mod:`tests.support`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import openai
import pytest
from starlette.applications import Starlette

from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import SDK, TENANT_KEYS, gateway_app, gateway_config
from tests.support.loopback import serve_in_thread


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[tuple[FakeUpstream, str]]:
    fake = FakeUpstream()
    with serve_in_thread(fake.app()) as url:
        yield fake, url


@pytest.fixture
def upstream(fake_upstream: tuple[FakeUpstream, str]) -> FakeUpstream:
    fake_upstream[0].clear()
    return fake_upstream[0]


@pytest.fixture(scope="session")
def gateway_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gateway")


@pytest.fixture(scope="session")
def gateway_application(
    fake_upstream: tuple[FakeUpstream, str], gateway_dir: Path
) -> Iterator[Starlette]:
    """The app the ``gateway`` fixture serves: a test reaches its parts through ``app.services``."""
    mp = pytest.MonkeyPatch()
    mp.setenv("FAKE_UPSTREAM_KEY", "sk-upstream-secret-0123456789")
    try:
        yield gateway_app(gateway_dir, gateway_config(fake_upstream[1]))
    finally:
        mp.undo()


@pytest.fixture(scope="session")
def gateway(gateway_application: Starlette) -> Iterator[str]:
    """basguard on loopback in front of the fake upstream; yields its /v1 URL."""
    with serve_in_thread(gateway_application) as url:
        yield f"{url}/v1"


@pytest.fixture
def sdk_client() -> Iterator[SDK]:
    """``sdk_client(base_url, api_key)``: an openai SDK client, closed when the test ends.

    No retries (each test sees one attempt). Closing matters: an SDK client sits in a reference
    cycle (its resources point back at it), so only the cyclic garbage collector would free it,
    finalizing the client and its sockets in no set order, and a socket finalized first warns
    "unclosed socket" in whatever test happens to be running.
    """
    with ExitStack() as clients:

        def make(base_url: str, api_key: str) -> openai.OpenAI:
            return clients.enter_context(openai.OpenAI(base_url=base_url, api_key=api_key,
                                                       max_retries=0, timeout=10))

        yield make


@pytest.fixture
def client_for(gateway: str, sdk_client: SDK) -> Callable[[str], openai.OpenAI]:
    """An SDK client for a tenant of the ``gateway`` fixture."""
    return lambda tenant: sdk_client(gateway, TENANT_KEYS.get(tenant, tenant))
