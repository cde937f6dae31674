"""The gateway's :class:`~proxy.signals.base.ModelCaller`: signals' calls over its upstreams."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from proxy.errors import ModelNotFound, UpstreamInvalidResponse
from proxy.upstream.target import Upstream, UpstreamTarget
from proxy.wire.schema import Endpoint

__all__ = ["UpstreamModelCaller"]


class UpstreamModelCaller:
    """Calls configured models by public name through the same upstream clients as requests.

    Errors are the upstreams' own (already translated and sanitised); the signal's timeout,
    shorter than the upstream's, is applied by :class:`~proxy.signals.base.SignalCalls`.
    """

    def __init__(
        self, upstreams: Mapping[str, Upstream], targets: Mapping[str, UpstreamTarget]
    ) -> None:
        self._upstreams = upstreams
        self._targets = targets

    async def complete(
        self, model: str, endpoint: Endpoint, body: dict[str, Any]
    ) -> dict[str, Any]:
        target = self._targets.get(model)
        if target is None:
            raise ModelNotFound(f"a confidence signal calls the model {model!r}, which is not "
                                "configured")
        reply = await self._upstreams[target.provider].complete(target, endpoint, body)
        # The signals read choices themselves and treat a malformed one as garbage; only a
        # reply that is not an object at all is refused here.
        if not isinstance(reply.document, dict):
            raise UpstreamInvalidResponse(
                f"the upstream for model {model!r} sent a reply that is not a JSON object")
        return reply.document
