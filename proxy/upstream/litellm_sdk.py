"""Providers that need request translation (Anthropic, Bedrock, Vertex, ...), through the
litellm SDK, imported only when such a model is configured."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson

from proxy.errors import (
    GatewayError,
    InvalidRequest,
    UpstreamError,
    UpstreamInvalidResponse,
    UpstreamRejected,
    sanitize,
)
from proxy.upstream.failures import (
    TRANSPORT_ERRORS,
    too_large,
    transport_error,
    upstream_status_error,
)
from proxy.upstream.target import Chunk, UpstreamReply, UpstreamTarget
from proxy.wire.schema import OPENAI_REQUEST_FIELDS, Endpoint

__all__ = ["LiteLLMUpstream"]

logger = logging.getLogger("basguard.upstream")


class LiteLLMUpstream:
    """Providers that need request translation, through the litellm SDK."""

    def __init__(self) -> None:
        import os

        # litellm fetches a model cost map over the network at import unless told not to.
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        # Any: litellm's own annotations are partial, and this class is the one place it is used.
        self._litellm: Any = litellm

    def _arguments(
        self, target: UpstreamTarget, endpoint: Endpoint, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        allowed = OPENAI_REQUEST_FIELDS[endpoint]
        unknown = sorted(name for name in body if name not in allowed)
        if unknown:
            # Never passed on: litellm would read them as its own arguments (see
            # OPENAI_REQUEST_FIELDS), e.g. an api_base that sends the upstream's key elsewhere.
            raise InvalidRequest(
                f"{unknown[0]!r} is not a parameter of OpenAI's /v1/{endpoint}; the model "
                f"{target.public_name!r} is served through litellm, which takes only those",
                param=unknown[0])
        arguments = {**body, "model": target.model, "timeout": target.timeout_seconds}
        if target.api_key:
            arguments["api_key"] = target.api_key
        if target.base_url:
            arguments["api_base"] = target.base_url
        if target.organization:
            arguments["organization"] = target.organization
        if target.project:
            arguments["extra_headers"] = {"OpenAI-Project": target.project}
        return arguments

    def _translate(self, target: UpstreamTarget, exc: BaseException) -> GatewayError:
        """Every litellm exception, by class first (some carry a misleading status), then status.

        litellm's classes mirror the openai SDK's: ``Timeout`` (an ``APIConnectionError``),
        ``APIConnectionError`` (status 500, yet nothing was answered),
        ``APIResponseValidationError``, and ``APIStatusError`` subclasses whose ``status_code``
        is the provider's.
        """
        if isinstance(exc, GatewayError):
            return exc
        errors = self._litellm.exceptions
        if isinstance(exc, errors.APIResponseValidationError):
            logger.warning("upstream for model %r: %s", target.public_name,
                           sanitize(str(exc), target.secrets))
            return UpstreamInvalidResponse(
                f"the upstream for model {target.public_name!r} sent an invalid response")
        # litellm reports a refused connection as an InternalServerError with status 500; the
        # transport failure underneath, if any, says what happened.
        cause = self._transport_cause(exc)
        if cause is not None:
            return transport_error(target, cause)
        status = getattr(exc, "status_code", None)
        if isinstance(status, int) and status >= 400:
            message = getattr(exc, "message", None) or str(exc)
            response = getattr(exc, "response", None)
            headers = getattr(response, "headers", None)
            return upstream_status_error(
                target, status, orjson.dumps({"error": {"message": str(message)}}),
                headers if isinstance(headers, Mapping) else None,
            )
        logger.warning("upstream for model %r: %s: %s", target.public_name,
                       type(exc).__name__, sanitize(str(exc), target.secrets))
        return UpstreamError(f"the request to the upstream for model {target.public_name!r} "
                             "failed")

    def _transport_cause(self, exc: BaseException) -> BaseException | None:
        import httpx  # litellm's own dependency, loaded with it

        errors = self._litellm.exceptions
        link: BaseException | None = exc
        for _ in range(12):  # a chain is a few links; a cycle must not loop forever
            if link is None:
                return None
            if isinstance(link, TimeoutError | errors.Timeout | httpx.TimeoutException):
                return TimeoutError(str(link))
            if isinstance(link, TRANSPORT_ERRORS):
                return link
            if isinstance(link, httpx.ConnectError):
                return aiohttp.ClientConnectionError(str(link))
            if isinstance(link, httpx.TransportError):
                return ConnectionError(str(link))
            link = link.__cause__ or link.__context__
        return None

    def _sized(self, target: UpstreamTarget, document: dict[str, Any]) -> tuple[Any, int]:
        # litellm has read the reply already; the cap still keeps it from going further.
        size = len(orjson.dumps(document))
        if size > target.max_response_bytes:
            raise too_large(target)
        return document, size

    def _call(self, target: UpstreamTarget, endpoint: Endpoint) -> Any:
        if endpoint == "chat/completions":
            return self._litellm.acompletion
        if endpoint == "completions":
            return self._litellm.atext_completion
        call = getattr(self._litellm, "aresponses", None)
        if call is None:  # litellm before its Responses API support
            raise UpstreamRejected(
                f"the model {target.public_name!r} is served through litellm, whose installed "
                "version has no Responses API support (litellm.aresponses); use "
                "/v1/chat/completions for this model", status_code=400)
        return call

    async def complete(
        self, target: UpstreamTarget, endpoint: Endpoint, body: dict[str, Any]
    ) -> UpstreamReply:
        call = self._call(target, endpoint)
        try:
            async with asyncio.timeout(target.timeout_seconds):
                response = await call(**self._arguments(target, endpoint, body))
        except Exception as exc:  # litellm raises many types; all are translated here
            raise self._translate(target, exc) from exc
        return UpstreamReply(*self._sized(target, dict(response.model_dump())))

    @asynccontextmanager
    async def stream(
        self, target: UpstreamTarget, endpoint: Endpoint, body: dict[str, Any]
    ) -> AsyncIterator[AsyncIterator[Chunk]]:
        call = self._call(target, endpoint)
        deadline = asyncio.get_running_loop().time() + target.timeout_seconds
        try:
            async with asyncio.timeout_at(deadline):
                response = await call(**self._arguments(target, endpoint, {**body, "stream": True}))
        except Exception as exc:
            raise self._translate(target, exc) from exc

        async def chunks() -> AsyncIterator[Chunk]:
            budget = target.max_response_bytes
            iterator = aiter(response)
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        chunk = await anext(iterator)
                except StopAsyncIteration:
                    return
                except Exception as exc:
                    raise self._translate(target, exc) from exc
                # warnings=False: litellm's Responses events hold usage of another type than
                # they declare, and pydantic warns about it on every stream.
                document, size = self._sized(target, dict(chunk.model_dump(warnings=False)))
                budget -= size
                if budget < 0:
                    raise too_large(target)
                yield document

        try:
            yield chunks()
        finally:
            # Close the provider's stream (and its connection), as HTTPUpstream does: a
            # stream abandoned at a deadline or by the client must not keep generating.
            close = getattr(response, "aclose", None)
            if close is not None:
                await close()

    async def aclose(self) -> None:
        # litellm caches its provider clients per process; close them with the event loop.
        await self._litellm.close_litellm_async_clients()
