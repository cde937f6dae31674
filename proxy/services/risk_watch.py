"""The live watch over tenants' risk limits: which limits the audit sample proves broken.

Every ``interval`` seconds it reads the store's audit totals (a few rows) and computes each
certified limit's anytime-valid bound (:func:`proxy.runtime.risk_limits.live_limits`). A breach
is logged once, when it is first seen; a tenant with ``on_breach: abstain`` then withholds every
answer on that model. A breach belongs to the certificate it was proven under: a reload with a
new certificate ends it at once, and the new certificate's count starts from zero.

Every worker (and replica) runs its own watch over the shared store, so all of them come to the
same verdict within an interval; the metrics compute the same bounds at scrape time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from proxy.errors import StoreUnavailable
from proxy.runtime.risk_limits import live_limits
from proxy.runtime.state import RuntimeState
from proxy.store import DecisionStore, StoreError

__all__ = ["RiskWatch"]

logger = logging.getLogger("basguard.risk")

Breach = tuple[str, str, str]
"""(tenant, model, certificate version)."""


class RiskWatch:
    """Which (tenant, model, certificate) limits the audit sample's labels prove breached."""

    def __init__(self, store: DecisionStore, state: Callable[[], RuntimeState]) -> None:
        self._store = store
        self._state = state
        self._breached: frozenset[Breach] = frozenset()

    def breached(self, tenant: str, model: str, certificate: str | None) -> bool:
        """Whether the limit under ``certificate`` is proven breached (as of the last look)."""
        return certificate is not None and (tenant, model, certificate) in self._breached

    def refresh(self) -> None:
        """Look at the store's audit totals again (in a thread: the read blocks)."""
        state = self._state()
        limits = {name: tenant.risk_limits for name, tenant in state.tenants.items()
                  if tenant.risk_limits}
        if not limits:
            self._breached = frozenset()
            return
        breached: set[Breach] = set()
        for live in live_limits(limits, self._store.audit_totals()):
            version = live.limit.certificate_version
            if not live.bound.breached or version is None:
                continue
            key = (live.tenant, live.model, version)
            breached.add(key)
            if key not in self._breached:
                bound = live.bound
                action = ("withholding every answer until a new certificate is loaded"
                          if live.limit.on_breach == "abstain" else "alerting (on_breach: alert)")
                logger.warning(
                    "risk limit breached: tenant %r, model %r: %d of %d audited answers wrong; "
                    "the error rate among answers is at least %.4f with %g%% confidence, above "
                    "the limit %g; %s", live.tenant, live.model, bound.errors, bound.labels,
                    bound.lower, 100 * live.limit.confidence, live.limit.max_error_rate, action)
        self._breached = frozenset(breached)

    async def watch(self, interval_seconds: float) -> None:
        """Refresh every ``interval_seconds`` until cancelled; never raises anything else (a
        store that is down keeps the last verdict, and is tried again next time)."""
        while True:
            try:
                await asyncio.to_thread(self.refresh)
            except (StoreUnavailable, StoreError) as exc:
                logger.warning("risk limits: cannot read the audit totals (%s); the last "
                               "verdict stands", exc)
            except Exception:
                logger.exception("risk limits: the live watch failed; retrying")
            await asyncio.sleep(interval_seconds)
