"""The ``logprobs`` signal: features of the answer's own token log-probabilities.

Free (no extra call), but only where the upstream returns logprobs. It asks for them in the main
request, with ``top_logprobs`` alternatives when the calibrator reads the top-k features. The
features are those of :mod:`proxy.signals.features`; uncalibrated, ``token_prob`` (the
geometric-mean token probability) is the confidence.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Self

from policies.confidence import SignalSettings
from proxy.signals.base import (
    Answer,
    ConfidenceSignal,
    Features,
    Json,
    SignalCalls,
    SignalRequest,
    SignalUnavailable,
)
from proxy.signals.features import FEATURE_KINDS, confidence_features
from proxy.wire.formats import WireFormat

__all__ = ["TOPK_FEATURES", "TOP_LOGPROBS_FOR_CALIBRATORS", "LogprobsSignal"]

#: Alternatives per token asked for when a calibrator reads the top-k features.
TOP_LOGPROBS_FOR_CALIBRATORS = 5
#: The features that need ``top_logprobs`` alternatives, not only each token's own logprob.
TOPK_FEATURES = frozenset({"mean_topk_entropy", "mean_topk_margin"})


class LogprobsSignal(ConfidenceSignal):
    """Token-probability features of each choice, from the logprobs the upstream returned."""

    name = "logprobs"
    feature_kinds = FEATURE_KINDS

    def __init__(
        self, *, timeout_seconds: float, top_logprobs: int = TOP_LOGPROBS_FOR_CALIBRATORS
    ) -> None:
        super().__init__(timeout_seconds=timeout_seconds)
        self.top_logprobs = top_logprobs

    @classmethod
    def from_settings(cls, settings: SignalSettings) -> Self:
        return cls(timeout_seconds=settings.timeout_seconds)

    @property
    def uncalibrated_feature(self) -> str:
        return "token_prob"

    def upstream_body(self, body: Json, fmt: type[WireFormat], wanted: frozenset[str]) -> Json:
        _, client_top_k = fmt.requested_logprobs(body)
        top_k = self.top_logprobs if wanted & TOPK_FEATURES else 0
        return fmt.ask_for_logprobs(body, max(client_top_k, top_k))

    immediate = True

    def features_now(self, request: SignalRequest, answers: Sequence[Answer]) -> list[Features]:
        if not any(answer.tokens for answer in answers):
            raise SignalUnavailable("the upstream returned no token logprobs")
        return [confidence_features(a.tokens) if a.tokens else {} for a in answers]

    async def measure(
        self, request: SignalRequest, answers: Awaitable[Sequence[Answer]], calls: SignalCalls
    ) -> list[Features]:
        return self.features_now(request, await answers)
