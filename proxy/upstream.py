"""Talking to upstream model providers, and translating their failures in one place.

OpenAI-compatible servers (OpenAI, vLLM, llama.cpp, Ollama, TGI, ...) are called directly over one
pooled aiohttp session with orjson: on this path every microsecond is overhead the
application pays per request, and LiteLLM's translation layer costs milliseconds we don't need
for a server that already speaks the wire format. Providers that need translation (Anthropic,
Bedrock, Vertex, ...) go through ``litellm``, imported only when such a model is configured.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import aiohttp
import orjson

from .errors import (
    GatewayError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    sanitize,
)

__all__ = ["Endpoint", "HTTPUpstream", "LiteLLMUpstream", "Upstream", "UpstreamTarget"]

Endpoint = Literal["chat/completions", "completions"]
Chunk = dict[str, Any]


@dataclass(frozen=True)
class UpstreamTarget:
    """Where one public model name is served."""

    public_name: str
    provider: Literal["openai", "litellm"]
    model: str
    base_url: str | None
    api_key: str | None
    timeout_seconds: float
    top_logprobs: int

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self.api_key,) if self.api_key else ()


class Upstream(Protocol):
    """A way to reach upstream models."""

    async def complete(
        self, target: UpstreamTarget, endpoint: Endpoint, body: dict[str, Any]
    ) -> dict[str, Any]: ...

    def stream(
        self, target: UpstreamTarget, endpoint: Endpoint, body: dict[str, Any]
    ) -> Any: ...  # an async context manager yielding an async iterator of chunks

    async def aclose(self) -> None: ...


def _error_message(raw: bytes, status: int) -> str:
    try:
        document = orjson.loads(raw)
        message = document["error"]["message"]
        if isinstance(message, str) and message:
            return message
    except (orjson.JSONDecodeError, KeyError, TypeError):
        pass
    return f"HTTP {status}"


def upstream_status_error(target: UpstreamTarget, status: int, raw: bytes) -> GatewayError:
    """The gateway error for an upstream's error status (the one translation of statuses)."""
    detail = sanitize(_error_message(raw, status), target.secrets)
    name = target.public_name
    if status == 429:
        return UpstreamRateLimited(f"upstream for model {name!r} is rate limited: {detail}")
    if status in (401, 403):
        return UpstreamError(f"upstream for model {name!r} rejected basguard's credentials")
    if status in (408, 504):
        return UpstreamTimeout(f"upstream for model {name!r} timed out: {detail}")
    if 400 <= status < 500:
        return UpstreamRejected(
            f"upstream for model {name!r} rejected the request: {detail}", status_code=status
        )
    return UpstreamError(f"upstream for model {name!r} failed with HTTP {status}: {detail}")


def transport_error(target: UpstreamTarget, exc: Exception) -> GatewayError:
    """The gateway error for a failure to talk to the upstream at all."""
    name = target.public_name
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return UpstreamTimeout(f"upstream for model {name!r} did not answer in time")
    reason = sanitize(str(exc) or type(exc).__name__, target.secrets)
    return UpstreamError(f"could not reach the upstream for model {name!r}: {reason}")


class HTTPUpstream:
    """OpenAI-compatible upstreams over one pooled aiohttp session.

    aiohttp rather than httpx on this path: measured here, an httpx.AsyncClient request costs
    about 0.5 ms of CPU and caps a one-worker proxy near 550 requests/s, several times what
    aiohttp's client costs for the same request.
    """

    def __init__(self, session: aiohttp.ClientSession | None = None) -> None:
        self._session = session

    def _client(self) -> aiohttp.ClientSession:
        # Created on first use, inside the server's event loop, which aiohttp requires.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=512, keepalive_timeout=30),
                skip_auto_headers=("User-Agent",),
                raise_for_status=False,
            )
        return self._session

    @staticmethod
    def _headers(target: UpstreamTarget) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if target.api_key:
            headers["authorization"] = f"Bearer {target.api_key}"
        return headers

    async def complete(
        self, target: UpstreamTarget, endpoint: Endpoint, body: dict[str, Any]
    ) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(
            total=target.timeout_seconds, connect=min(5.0, target.timeout_seconds)
        )
        try:
            async with self._client().post(
                f"{target.base_url}/{endpoint}",
                data=orjson.dumps({**body, "model": target.model}),
                headers=self._headers(target),
                timeout=timeout,
            ) as response:
                raw = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise transport_error(target, exc) from exc
        if status >= 400:
            raise upstream_status_error(target, status, raw)
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(
                f"upstream for model {target.public_name!r} sent invalid JSON"
            ) from exc
        if not isinstance(document, dict):
            raise UpstreamError(f"upstream for model {target.public_name!r} sent a non-object")
        return document

    @asynccontextmanager
    async def stream(
        self, target: UpstreamTarget, endpoint: Endpoint, body: dict[str, Any]
    ) -> AsyncIterator[AsyncIterator[Chunk]]:
        """Open a streamed completion; the status is checked before the first chunk is read."""
        # No total limit on a stream, but each read must arrive within the timeout.
        timeout = aiohttp.ClientTimeout(
            total=None, sock_read=target.timeout_seconds,
            connect=min(5.0, target.timeout_seconds),
        )
        try:
            response = await self._client().post(
                f"{target.base_url}/{endpoint}",
                data=orjson.dumps({**body, "model": target.model, "stream": True}),
                headers=self._headers(target),
                timeout=timeout,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise transport_error(target, exc) from exc
        try:
            if response.status >= 400:
                try:
                    raw = await response.read()
                except (aiohttp.ClientError, TimeoutError):
                    raw = b""
                raise upstream_status_error(target, response.status, raw)
            yield self._chunks(target, response)
        finally:
            # Closing (not releasing) drops the connection mid-stream, which cancels the
            # upstream generation when the client has gone away.
            response.close()

    async def _chunks(
        self, target: UpstreamTarget, response: aiohttp.ClientResponse
    ) -> AsyncIterator[Chunk]:
        try:
            async for raw_line in response.content:
                if not raw_line.startswith(b"data:"):
                    continue
                data = raw_line[5:].strip()
                if data == b"[DONE]":
                    return
                chunk = orjson.loads(data)
                if isinstance(chunk, dict) and "error" in chunk:
                    message = _error_message(data, 502)
                    raise UpstreamError(
                        f"upstream for model {target.public_name!r} failed mid-stream: "
                        f"{sanitize(message, target.secrets)}"
                    )
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise transport_error(target, exc) from exc
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(
                f"upstream for model {target.public_name!r} sent an invalid stream chunk"
            ) from exc
        # The stream closed without [DONE]: the upstream died mid-answer.
        raise UpstreamError(f"upstream for model {target.public_name!r} ended the stream early")

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class LiteLLMUpstream:
    """Providers that need request translation, through the litellm SDK."""

    def __init__(self) -> None:
        import os

        # litellm fetches a model cost map over the network at import unless told not to.
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        # Any: litellm's own annotations are partial, and this class is the one place it is used.
        self._litellm: Any = litellm

    def _arguments(self, target: UpstreamTarget, body: Mapping[str, Any]) -> dict[str, Any]:
        arguments = {**body, "model": target.model, "timeout": target.timeout_seconds}
        if target.api_key:
            arguments["api_key"] = target.api_key
        if target.base_url:
            arguments["api_base"] = target.base_url
        return arguments

    def _translate(self, target: UpstreamTarget, exc: Exception) -> GatewayError:
        status = getattr(exc, "status_code", None)
        message = getattr(exc, "message", None) or str(exc)
        if isinstance(status, int) and status >= 400:
            payload = orjson.dumps({"error": {"message": str(message)}})
            return upstream_status_error(target, status, payload)
        return transport_error(target, exc)

    async def complete(
        self, target: UpstreamTarget, endpoint: Endpoint, body: dict[str, Any]
    ) -> dict[str, Any]:
        call = (
            self._litellm.acompletion if endpoint == "chat/completions"
            else self._litellm.atext_completion
        )
        try:
            response = await call(**self._arguments(target, body))
        except Exception as exc:  # litellm raises many types; all are translated here
            raise self._translate(target, exc) from exc
        return dict(response.model_dump())

    @asynccontextmanager
    async def stream(
        self, target: UpstreamTarget, endpoint: Endpoint, body: dict[str, Any]
    ) -> AsyncIterator[AsyncIterator[Chunk]]:
        call = (
            self._litellm.acompletion if endpoint == "chat/completions"
            else self._litellm.atext_completion
        )
        try:
            response = await call(**self._arguments(target, {**body, "stream": True}))
        except Exception as exc:
            raise self._translate(target, exc) from exc

        async def chunks() -> AsyncIterator[Chunk]:
            try:
                async for chunk in response:
                    yield dict(chunk.model_dump())
            except Exception as exc:
                raise self._translate(target, exc) from exc

        yield chunks()

    async def aclose(self) -> None:
        # litellm caches its provider clients per process; close them with the event loop.
        await self._litellm.close_litellm_async_clients()
