"""Deribit's credit model as the client applies it (see :mod:`deribit_kit.wire.credits`).

The exchange charges a request when it arrives, and arrivals bunch up: network and event-loop
jitter deliver requests sent 50 ms apart a few ms apart. A client that spends its model of the
pool to the last credit therefore still meets 10028 now and then. ``ClientCredits`` keeps
``reserve_s`` seconds of refill in hand, so the exchange's pool never runs dry first.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ..errors import RateLimitError, RequestTimeout
from ..wire.credits import CreditPools

T = TypeVar("T")
log = logging.getLogger("deribit_kit.transport")


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


async def spend(credits: CreditPools | None, method: str, deadline: float) -> None:
    """Wait until one call of ``method`` fits the credit model, then charge it.

    Loops because concurrent callers wake together and only some of them find credits.
    """
    if credits is None:
        return
    while not credits.try_spend(method):
        wait = credits.wait_time(method)
        if time.monotonic() + wait >= deadline:
            raise RequestTimeout("rate limit pacing would exceed the timeout", method=method)
        await asyncio.sleep(wait)


async def retry_rate_limited(send: Callable[[], Awaitable[T]], method: str, *, retries: int, deadline: float,
                             stats: dict[str, float]) -> T:
    """Run ``send``; when the exchange answers 10028 (the request was refused, so resending is
    safe) back off exponentially with jitter and retry, within ``retries`` and the deadline."""
    attempt = 0
    while True:
        try:
            return await send()
        except RateLimitError as exc:
            stats["rate_limited"] = stats.get("rate_limited", 0) + 1
            attempt += 1
            pause = min(0.05 * 2**attempt, 2.0) * (0.5 + random.random() / 2)
            if attempt > retries or time.monotonic() + pause >= deadline:
                raise
            log.info("%s rate-limited (%d); retry %d in %.2fs", method, exc.code, attempt, pause)
            await asyncio.sleep(pause)
