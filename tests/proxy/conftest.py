"""Fixtures: a fake upstream and basguard itself, both served by uvicorn on loopback."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from proxy.http.app import create_app
from proxy.runtime.settings import ServerSettings
from tests.proxy.fake_upstream import FakeUpstream
from tests.proxy.loopback import serve_in_thread

TENANT_KEYS = {
    "enforcer": "key-enforcer-0123456789abcdef",
    "annotator": "key-annotator-0123456789abcdef",
    "shadower": "key-shadower-0123456789abcdef",
    "refuser": "key-refuser-0123456789abcdef",
    "lenient": "key-lenient-0123456789abcdef",
    "strict": "key-strict-0123456789abcdef",
}


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def gateway_config(upstream_url: str, **overrides: Any) -> dict[str, Any]:
    """A config with one tenant per behaviour, all at threshold 0.5 over the fake upstream."""

    def tenant(name: str, **policy: Any) -> dict[str, Any]:
        return {"api_keys": [{"sha256": _digest(TENANT_KEYS[name])}],
                "risk": {"threshold": 0.5}, **policy}

    config: dict[str, Any] = {
        "version": 1,
        "models": {
            "fake": {"base_url": f"{upstream_url}/v1", "model": "fake-model",
                     "timeout_seconds": 2},
            "keyed": {"base_url": f"{upstream_url}/v1", "api_key_env": "FAKE_UPSTREAM_KEY"},
            "unreachable": {"base_url": "http://127.0.0.1:9/v1", "timeout_seconds": 2},
            # The translation path: litellm's OpenAI provider, pointed at the same fake.
            "via-litellm": {"provider": "litellm", "model": "openai/fake-model",
                            "base_url": f"{upstream_url}/v1", "api_key_env": "FAKE_UPSTREAM_KEY"},
        },
        "max_body_bytes": 4096,
        "tenants": {
            "enforcer": tenant("enforcer", abstention_message="I won't guess."),
            "annotator": tenant("annotator", mode="annotate"),
            "shadower": tenant("shadower", mode="shadow"),
            "refuser": tenant("refuser", abstain_action="error"),
            "lenient": tenant("lenient", on_missing_confidence="answer"),
            "strict": tenant("strict", on_missing_confidence="error"),
        },
    }
    config.update(overrides)
    return config


@contextmanager
def serve_gateway(directory: Path, config: dict[str, Any], **settings: Any) -> Iterator[str]:
    """basguard on loopback with ``config`` and its decision store in ``directory``.

    Yields its base URL; ``settings`` override :class:`ServerSettings` (no file polling unless
    ``reload_interval_seconds`` is given).
    """
    path = directory / "basguard.yaml"
    path.write_text(yaml.safe_dump(config))
    app = create_app(ServerSettings(
        config=path, store=directory / "decisions.sqlite3",
        **{"reload_interval_seconds": 0, **settings},
    ))
    with serve_in_thread(app) as url:
        yield url


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
def gateway(
    fake_upstream: tuple[FakeUpstream, str], gateway_dir: Path
) -> Iterator[str]:
    """basguard on loopback in front of the fake upstream; yields its /v1 URL."""
    mp = pytest.MonkeyPatch()
    mp.setenv("FAKE_UPSTREAM_KEY", "sk-upstream-secret-0123456789")
    try:
        with serve_gateway(gateway_dir, gateway_config(fake_upstream[1])) as url:
            yield f"{url}/v1"
    finally:
        mp.undo()


SDK = Callable[[str, str], openai.OpenAI]


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
