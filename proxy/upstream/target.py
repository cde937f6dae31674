"""An upstream model's address and the protocol every provider implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from yarl import URL

from proxy.errors import InvalidPath
from proxy.wire.paths import canonical_path
from proxy.wire.schema import Endpoint

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "Chunk",
    "Upstream",
    "UpstreamReply",
    "UpstreamTarget",
]

Chunk = Any
"""A parsed stream event: a dict for a well-formed upstream; proxy.wire.formats checks its shape."""

DEFAULT_MAX_RESPONSE_BYTES = 8 * 1_048_576


@dataclass(frozen=True)
class UpstreamTarget:
    """Where one public model name is served."""

    public_name: str
    provider: str
    """A provider of :data:`proxy.upstream.registry.PROVIDERS`."""
    model: str
    base_url: str | None
    api_key: str | None
    timeout_seconds: float
    """The total deadline of one request, streams included (connect, send, every chunk)."""
    top_logprobs: int
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    """The most bytes of one reply (a body, or the sum of a stream's lines)."""
    organization: str | None = None
    """The ``OpenAI-Organization`` the upstream's key acts for (the config's, never a tenant's)."""
    project: str | None = None
    """The ``OpenAI-Project`` the upstream's key acts for (the config's, never a tenant's)."""

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self.api_key,) if self.api_key else ()

    def identity_headers(self) -> dict[str, str]:
        """Who the upstream's request acts as: its key, organization and project, all from
        the config. Every request basguard sends upstream carries these and no tenant's."""
        headers: dict[str, str] = {}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        if self.organization:
            headers["openai-organization"] = self.organization
        if self.project:
            headers["openai-project"] = self.project
        return headers

    def url_for(self, path: str, query: str = "") -> URL:
        """The upstream URL of ``path`` (a canonical path below ``/v1/``, see
        :mod:`proxy.wire.paths`) under this model's ``base_url``, with ``query`` as sent.

        Built as an encoded yarl URL, which aiohttp sends as it is (a text URL would be
        re-quoted and have its dot segments removed): what the upstream reads is what was
        routed. The result is checked to stay below ``base_url``'s path whatever ``path`` is.
        """
        if self.base_url is None:
            raise ValueError(f"model {self.public_name!r} has no base_url")
        try:
            plain = canonical_path(f"/{path}".encode("ascii")) == f"/{path}"
        except (UnicodeEncodeError, InvalidPath):
            plain = False
        if not plain:  # the routes only pass canonical paths; this holds whatever calls it
            raise ValueError(f"the path {path!r} is not a canonical path below a base URL")
        base = URL(self.base_url)
        return URL.build(
            scheme=base.scheme, user=base.raw_user, password=base.raw_password,
            host=base.raw_host or "", port=base.explicit_port,
            path=base.raw_path.rstrip("/") + "/" + path, query_string=query, encoded=True,
        )


@dataclass(frozen=True, slots=True)
class UpstreamReply:
    """A non-streamed reply: the parsed JSON (shape unchecked) and its size on the wire."""

    document: Any
    size: int


class Upstream(Protocol):
    """A way to reach upstream models."""

    async def complete(
        self, target: UpstreamTarget, endpoint: Endpoint, body: dict[str, Any]
    ) -> UpstreamReply: ...

    def stream(
        self, target: UpstreamTarget, endpoint: Endpoint, body: dict[str, Any]
    ) -> Any: ...  # an async context manager yielding an async iterator of chunks

    async def aclose(self) -> None: ...
