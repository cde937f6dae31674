"""The metrics key: what an operator (a Prometheus scraper) presents to read the gateway's state.

``/metrics`` and the detail of ``/readyz`` show tenant names, models, calibrator versions and
traffic, which no tenant should see of another. A tenant's API key is therefore not enough: the
operator's key is a separate setting (``BASGUARD_METRICS_KEY``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging

from pydantic import SecretStr

from proxy.errors import AuthenticationFailed
from proxy.runtime.bearer import bearer_key

__all__ = ["MetricsKey"]

logger = logging.getLogger("basguard.metrics")


class MetricsKey:
    """Checks ``Authorization: Bearer KEY`` against the configured metrics key, if any."""

    def __init__(self, key: SecretStr | None) -> None:
        # Digests of equal length, compared in constant time: timing reveals nothing of the key.
        self._digest = None if key is None else _digest(key.get_secret_value().strip())

    @property
    def configured(self) -> bool:
        return self._digest is not None

    def presented(self, authorization: str | None) -> bool:
        """Whether ``authorization`` carries the metrics key (never, when none is set)."""
        if self._digest is None:
            return False
        presented = _digest(bearer_key(authorization) or "")
        return hmac.compare_digest(presented, self._digest)

    def require(self, authorization: str | None) -> None:
        """Raise :class:`AuthenticationFailed` unless the key is presented or none is set."""
        if self._digest is not None and not self.presented(authorization):
            raise AuthenticationFailed(
                "this endpoint needs the metrics key: send it as 'Authorization: Bearer KEY'"
            )

    def warn_if_open(self) -> None:
        """Log once, at start, that /metrics answers anyone who can reach the port."""
        if self._digest is None:
            logger.warning(
                "BASGUARD_METRICS_KEY is not set: /metrics is open to anyone who can reach this "
                "port and shows tenant names and traffic; set it, or keep the port private"
            )


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
