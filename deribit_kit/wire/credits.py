"""Deribit's credit-based rate limits, without I/O.

Each request costs credits; a pool refills continuously up to a cap; a request that finds too
few credits is refused with 10028 ``too_many_requests``. Matching-engine methods (orders) have a
separate pool, per tier. The embedded exchange enforces these pools; the client uses the same
model to stay under the limit instead of discovering it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

# method -> (cost, pool cap, refill per second), where it differs from the defaults
DEFAULT_COST = 500
DEFAULT_CAP = 50_000
DEFAULT_REFILL = 10_000

SPECIAL_POOLS: dict[str, tuple[int, int, int]] = {
    "public/get_instruments": (10_000, 500_000, 10_000),
    "public/subscribe": (3_000, 30_000, 10_000),
    "private/subscribe": (3_000, 30_000, 10_000),
}

MATCHING_ENGINE_METHODS = frozenset(
    {
        "private/buy",
        "private/sell",
        "private/edit",
        "private/edit_by_label",
        "private/cancel",
        "private/cancel_by_label",
        "private/cancel_all",
        "private/cancel_all_by_instrument",
        "private/cancel_all_by_currency",
        "private/cancel_all_by_kind_or_type",
        "private/close_position",
    }
)

# Matching-engine tiers: (requests per second, burst); tier 4 is Deribit's default.
ME_TIERS: dict[int, tuple[int, int]] = {1: (30, 100), 2: (20, 50), 3: (10, 30), 4: (5, 20)}

# Methods that cost nothing (session plumbing that Deribit does not count against a client).
FREE_METHODS = frozenset({"public/test", "public/hello", "public/auth", "public/set_heartbeat"})


@dataclass(slots=True)
class Bucket:
    """A leaky bucket of credits."""

    cap: float
    refill_per_s: float
    level: float = -1.0
    stamp: float = 0.0
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    def __post_init__(self) -> None:
        if self.level < 0:
            self.level = self.cap
        self.stamp = self.clock()

    def _refill(self) -> None:
        now = self.clock()
        self.level = min(self.cap, self.level + (now - self.stamp) * self.refill_per_s)
        self.stamp = now

    def try_take(self, cost: float) -> bool:
        """Take ``cost`` credits if available; False (nothing taken) otherwise."""
        self._refill()
        if self.level >= cost:
            self.level -= cost
            return True
        return False

    def wait_time(self, cost: float) -> float:
        """Seconds until ``cost`` credits are available (0 if they are now)."""
        self._refill()
        if self.level >= cost:
            return 0.0
        return (cost - self.level) / self.refill_per_s


class CreditPools:
    """All pools of one rate-limited party (a sub-account, or an unauthenticated connection)."""

    def __init__(self, *, tier: int = 4, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.default = Bucket(DEFAULT_CAP, DEFAULT_REFILL, clock=clock)
        self.special = {m: Bucket(cap, refill, clock=clock) for m, (_, cap, refill) in SPECIAL_POOLS.items()}
        rate, burst = ME_TIERS[tier]
        # matching engine: one credit per request, ``burst`` cap, ``rate`` per second
        self.matching = Bucket(burst, rate, clock=clock)

    def _pool(self, method: str) -> tuple[Bucket, float] | None:
        if method in FREE_METHODS or method.startswith("sim/"):
            return None
        if method in MATCHING_ENGINE_METHODS:
            return self.matching, 1
        special = SPECIAL_POOLS.get(method)
        if special is not None:
            return self.special[method], special[0]
        return self.default, DEFAULT_COST

    def charged(self, method: str) -> bool:
        """Whether calls of ``method`` cost credits at all (session plumbing does not)."""
        return self._pool(method) is not None

    def try_spend(self, method: str) -> bool:
        """Charge one call of ``method``; False if the pool is exhausted (answer 10028)."""
        pool = self._pool(method)
        return True if pool is None else pool[0].try_take(pool[1])

    def wait_time(self, method: str) -> float:
        """Seconds until one call of ``method`` would be accepted."""
        pool = self._pool(method)
        return 0.0 if pool is None else pool[0].wait_time(pool[1])

    def exhausted(self, method: str) -> float:
        """The exchange answered 10028 for ``method``: this model was wrong (another connection of
        the key spent credits too). Empty that pool; return the seconds until one call fits again."""
        pool = self._pool(method)
        if pool is None:
            return 0.0
        pool[0].level = min(pool[0].level, 0.0)
        return self.wait_time(method)

    def limits(self) -> dict[str, object]:
        """The ``limits`` object of ``private/get_account_summary`` for these pools."""
        rate, burst = int(self.matching.refill_per_s), int(self.matching.cap)
        return {
            "limits_per_currency": False,
            "non_matching_engine": {"rate": DEFAULT_REFILL // DEFAULT_COST, "burst": DEFAULT_CAP // DEFAULT_COST},
            "matching_engine": {
                "trading": {"total": {"rate": rate, "burst": burst}},
                "spot": {"rate": rate, "burst": burst},
                "cancel_all": {"rate": rate, "burst": burst},
                "maximum_quotes": {"rate": 500, "burst": 500},
                "maximum_mass_quotes": {"rate": 10, "burst": 10},
                "guaranteed_mass_quotes": {"rate": 2, "burst": 2},
            },
        }
