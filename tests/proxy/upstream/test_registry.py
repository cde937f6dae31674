"""The provider registry: one line per provider, clients made once, and before any request."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import ValidationError

from proxy.runtime.config import UpstreamModel
from proxy.upstream.registry import PROVIDERS, Provider, UpstreamPool


class CountingUpstream:
    made = 0

    def __init__(self) -> None:
        type(self).made += 1
        self.closed = False

    async def complete(self, *args: Any) -> Any:
        raise NotImplementedError

    def stream(self, *args: Any) -> Any:
        raise NotImplementedError

    async def aclose(self) -> None:
        self.closed = True


def test_a_prepared_provider_is_made_once_and_closed_with_the_pool() -> None:
    CountingUpstream.made = 0
    pool = UpstreamPool({"counting": Provider("a test provider", needs_base_url=False,
                                              create=CountingUpstream),
                         "unused": Provider("never named", needs_base_url=False,
                                            create=CountingUpstream)})
    pool.prepare(["counting", "counting"])
    assert CountingUpstream.made == 1
    client = pool["counting"]
    assert CountingUpstream.made == 1  # a request finds it made: no import on its path
    asyncio.run(pool.aclose())
    assert isinstance(client, CountingUpstream) and client.closed
    assert CountingUpstream.made == 1  # the unused provider was never made


def test_the_provider_setting_names_a_registered_provider() -> None:
    assert set(PROVIDERS) == {"openai", "litellm"}
    assert UpstreamModel(provider="litellm", model="anthropic/claude-x").provider == "litellm"
    with pytest.raises(ValidationError, match="unknown provider 'anthropic'; one of: openai, "
                                              "litellm"):
        UpstreamModel(provider="anthropic", base_url="http://127.0.0.1:1/v1")
    with pytest.raises(ValidationError, match="an openai-compatible upstream needs `base_url`"):
        UpstreamModel(provider="openai")
