"""Deribit's credit model as the client applies it (see :mod:`deribit_kit.wire.credits`).

The exchange charges a request when it arrives, and arrivals bunch up: network and event-loop
jitter deliver requests sent 50 ms apart a few ms apart. A client that spends its model of the
pool to the last credit therefore still meets 10028 now and then. ``ClientCredits`` keeps
``reserve_s`` seconds of refill in hand, so the exchange's pool never runs dry first.
"""

from __future__ import annotations

from ..wire.credits import CreditPools


class ClientCredits(CreditPools):
    """Credit pools that keep a reserve of ``reserve_s`` seconds of refill per pool."""

    def __init__(self, *, reserve_s: float = 0.1, tier: int = 4) -> None:
        super().__init__(tier=tier)
        self.reserve_s = reserve_s

    def _take(self, method: str, take: bool) -> float:
        """Seconds until the pool of ``method`` holds its cost plus the reserve; when it does now
        and ``take`` is set, the cost is charged."""
        pool = self._pool(method)
        if pool is None:
            return 0.0
        bucket, cost = pool
        wait = bucket.wait_time(min(bucket.cap, cost + bucket.refill_per_s * self.reserve_s))
        if wait == 0.0 and take:
            bucket.try_take(cost)
        return wait

    def try_spend(self, method: str) -> bool:
        """Charge one call of ``method`` if its pool holds the cost plus the reserve."""
        return self._take(method, True) == 0.0

    def wait_time(self, method: str) -> float:
        """Seconds until the pool of ``method`` holds one call's cost plus the reserve."""
        return self._take(method, False)
