"""The upstream providers, by the name a model's ``provider`` setting gives.

A provider is one module (:mod:`proxy.upstream.openai_compatible`,
:mod:`proxy.upstream.litellm_sdk`) and one line here: its name, what it is for, whether it
needs a ``base_url``, and how to make its client. :class:`UpstreamPool` makes the clients of
the providers a config names when it is loaded (:meth:`UpstreamPool.prepare`), so a provider
that no model names costs nothing (litellm's import is seconds), and that import never stalls
a request; a provider first named by a reload is made then.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from proxy.upstream.target import Upstream

__all__ = ["PROVIDERS", "Provider", "UpstreamPool"]


def _openai_compatible() -> Upstream:
    from proxy.upstream.openai_compatible import HTTPUpstream

    return HTTPUpstream()


def _litellm() -> Upstream:
    from proxy.upstream.litellm_sdk import LiteLLMUpstream

    return LiteLLMUpstream()


@dataclass(frozen=True)
class Provider:
    """One way to reach upstream models."""

    description: str
    needs_base_url: bool
    create: Callable[[], Upstream]


PROVIDERS: Mapping[str, Provider] = {
    "openai": Provider(
        "any OpenAI-compatible server (OpenAI, vLLM, llama.cpp, Ollama, TGI, ...), called "
        "directly", needs_base_url=True, create=_openai_compatible),
    "litellm": Provider(
        "a provider that needs translation (Anthropic, Bedrock, Vertex, ...), called through "
        "litellm", needs_base_url=False, create=_litellm),
}


class UpstreamPool(Mapping[str, Upstream]):
    """Each provider's client, made on first use and closed together."""

    def __init__(self, providers: Mapping[str, Provider] = PROVIDERS) -> None:
        self._providers = providers
        self._made: dict[str, Upstream] = {}

    def prepare(self, providers: Iterable[str]) -> None:
        """Make the clients of ``providers`` now (at start, or when a reload names a new one),
        not on a request's path."""
        for provider in providers:
            self[provider]

    def __getitem__(self, provider: str) -> Upstream:
        made = self._made.get(provider)
        if made is None:
            made = self._made[provider] = self._providers[provider].create()
        return made

    def __iter__(self) -> Iterator[str]:
        return iter(self._providers)

    def __len__(self) -> int:
        return len(self._providers)

    async def aclose(self) -> None:
        for upstream in self._made.values():
            await upstream.aclose()
        self._made.clear()
