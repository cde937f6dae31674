"""basguard itself for the tests: a config with one tenant per behaviour over the fake upstream,
and the gateway served on loopback (:func:`serve_gateway`) or built for a test to adjust first
(:func:`gateway_app`)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import openai
import yaml
from starlette.applications import Starlette

from proxy.http.app import create_app
from proxy.runtime.settings import ServerSettings
from tests.support.loopback import serve_in_thread

__all__ = ["SDK", "TENANT_KEYS", "gateway_app", "gateway_config", "openai_only_config",
           "serve_gateway", "write_config"]

TENANT_KEYS = {
    "enforcer": "key-enforcer-0123456789abcdef",
    "annotator": "key-annotator-0123456789abcdef",
    "shadower": "key-shadower-0123456789abcdef",
    "refuser": "key-refuser-0123456789abcdef",
    "lenient": "key-lenient-0123456789abcdef",
    "strict": "key-strict-0123456789abcdef",
}
"""Each tenant's API key (the config holds their digests)."""

SDK = Callable[[str, str], openai.OpenAI]
"""The ``sdk_client`` fixture: ``sdk_client(base_url, api_key)`` gives an openai SDK client."""


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


def openai_only_config(upstream_url: str) -> dict[str, Any]:
    """The test config without its litellm model, plus a model that waits long for upstream."""
    config = gateway_config(upstream_url)
    del config["models"]["via-litellm"]
    config["models"]["patient"] = {"base_url": f"{upstream_url}/v1", "timeout_seconds": 60}
    return config


def write_config(directory: Path, config: dict[str, Any]) -> Path:
    """``config`` as ``directory/basguard.yaml``; returns its path."""
    path = directory / "basguard.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def gateway_app(directory: Path, config: dict[str, Any], **settings: Any) -> Starlette:
    """basguard's app with ``config`` and its decision store in ``directory``, not yet served.

    ``settings`` override :class:`ServerSettings` (no file polling unless
    ``reload_interval_seconds`` is given).
    """
    return create_app(ServerSettings(
        config=write_config(directory, config), store=directory / "decisions.sqlite3",
        **{"reload_interval_seconds": 0, **settings},
    ))


@contextmanager
def serve_gateway(directory: Path, config: dict[str, Any], **settings: Any) -> Iterator[str]:
    """:func:`gateway_app` on loopback; yields its base URL."""
    with serve_in_thread(gateway_app(directory, config, **settings)) as url:
        yield url
