"""Unit tests of Deribit's credit model (deribit_kit.wire.credits) with an injected clock."""

from __future__ import annotations

import pytest

from deribit_kit.wire.credits import (
    DEFAULT_CAP,
    DEFAULT_COST,
    DEFAULT_REFILL,
    FREE_METHODS,
    MATCHING_ENGINE_METHODS,
    ME_TIERS,
    SPECIAL_POOLS,
    Bucket,
    CreditPools,
)


class FakeClock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def burst(pools: CreditPools, method: str, limit: int = 10_000) -> int:
    """How many calls of ``method`` pass at once (the clock does not move)."""
    n = 0
    while n < limit and pools.try_spend(method):
        n += 1
    return n


# ---------------------------------------------------------------- Bucket


def test_bucket_starts_full_and_takes() -> None:
    clock = FakeClock()
    b = Bucket(10, 2, clock=clock)
    assert b.level == 10
    assert b.try_take(4)
    assert b.try_take(6)
    assert b.level == 0
    assert not b.try_take(0.5)
    assert b.level == 0  # a refused take takes nothing


def test_bucket_explicit_level() -> None:
    b = Bucket(10, 2, level=3, clock=FakeClock())
    assert b.level == 3
    assert not b.try_take(4)
    assert b.try_take(3)


def test_bucket_refills_continuously_up_to_cap() -> None:
    clock = FakeClock()
    b = Bucket(10, 2, clock=clock)
    assert b.try_take(10)
    clock.t += 1.5
    assert not b.try_take(3.5)
    assert b.try_take(3)  # 1.5 s * 2/s
    clock.t += 1000
    assert b.wait_time(10) == 0.0
    assert b.level == 10  # capped, not 2000
    assert not b.try_take(10.5)


def test_bucket_wait_time() -> None:
    clock = FakeClock()
    b = Bucket(10, 4, clock=clock)
    assert b.wait_time(10) == 0.0
    assert b.try_take(10)
    assert b.wait_time(2) == pytest.approx(0.5)
    clock.t += 0.25
    assert b.wait_time(2) == pytest.approx(0.25)
    clock.t += 0.25
    assert b.wait_time(2) == 0.0
    assert b.try_take(2)


# ---------------------------------------------------------------- CreditPools


def test_default_pool_burst_and_refill() -> None:
    clock = FakeClock()
    pools = CreditPools(clock=clock)
    assert DEFAULT_CAP // DEFAULT_COST == 100
    assert burst(pools, "public/get_order_book") == 100
    assert not pools.try_spend("private/get_positions")  # the default pool is shared by methods
    assert pools.wait_time("public/ticker") == pytest.approx(DEFAULT_COST / DEFAULT_REFILL)
    clock.t += DEFAULT_COST / DEFAULT_REFILL + 1e-9  # float slack
    assert pools.try_spend("public/ticker")
    assert not pools.try_spend("public/ticker")
    clock.t += 1.0
    assert burst(pools, "public/ticker") == DEFAULT_REFILL // DEFAULT_COST  # 20 per second


@pytest.mark.parametrize(("method", "expected_burst"), [
    ("public/get_instruments", 50),
    ("public/subscribe", 10),
    ("private/subscribe", 10),
])
def test_special_pools(method: str, expected_burst: int) -> None:
    clock = FakeClock()
    pools = CreditPools(clock=clock)
    cost, cap, refill = SPECIAL_POOLS[method]
    assert cap // cost == expected_burst
    assert burst(pools, method) == expected_burst
    assert pools.wait_time(method) == pytest.approx(cost / refill)
    assert pools.try_spend("public/get_time")  # the default pool is untouched
    assert burst(pools, "public/get_time") == 99


def test_special_pools_are_separate() -> None:
    pools = CreditPools(clock=FakeClock())
    assert burst(pools, "public/subscribe") == 10
    assert burst(pools, "private/subscribe") == 10
    assert burst(pools, "public/get_instruments") == 50


@pytest.mark.parametrize("tier", sorted(ME_TIERS))
def test_matching_engine_tier(tier: int) -> None:
    clock = FakeClock()
    pools = CreditPools(tier=tier, clock=clock)
    rate, cap = ME_TIERS[tier]
    assert burst(pools, "private/buy") == cap
    for method in MATCHING_ENGINE_METHODS:
        assert not pools.try_spend(method)  # one pool for all of them
    assert pools.wait_time("private/sell") == pytest.approx(1 / rate)
    clock.t += 1.0
    assert burst(pools, "private/cancel") == rate
    assert burst(pools, "public/get_time") == 100  # the default pool is not the matching engine's


def test_default_tier_is_4() -> None:
    pools = CreditPools(clock=FakeClock())
    assert burst(pools, "private/edit") == ME_TIERS[4][1] == 20


def test_unknown_tier() -> None:
    with pytest.raises(KeyError):
        CreditPools(tier=9)


@pytest.mark.parametrize("method", [*sorted(FREE_METHODS), "sim/set_price", "sim/anything"])
def test_free_methods(method: str) -> None:
    pools = CreditPools(clock=FakeClock())
    assert not pools.charged(method)
    assert burst(pools, method, limit=500) == 500
    assert pools.wait_time(method) == 0.0
    assert pools.exhausted(method) == 0.0


@pytest.mark.parametrize("method", ["public/get_time", "public/subscribe", "private/buy", "public/get_instruments"])
def test_charged(method: str) -> None:
    assert CreditPools(clock=FakeClock()).charged(method)


def test_exhausted_empties_the_pool() -> None:
    clock = FakeClock()
    pools = CreditPools(clock=clock)
    assert pools.try_spend("public/get_time")
    assert pools.exhausted("public/get_time") == pytest.approx(DEFAULT_COST / DEFAULT_REFILL)
    assert not pools.try_spend("public/get_time")
    assert pools.try_spend("private/buy")  # other pools keep their credits
    clock.t += DEFAULT_COST / DEFAULT_REFILL + 1e-9  # float slack
    assert pools.try_spend("public/get_time")


def test_exhausted_matching_and_special() -> None:
    pools = CreditPools(clock=FakeClock())
    assert pools.exhausted("private/buy") == pytest.approx(1 / ME_TIERS[4][0])
    assert pools.exhausted("public/subscribe") == pytest.approx(3_000 / 10_000)
    assert not pools.try_spend("private/cancel")
    assert pools.try_spend("private/subscribe")  # private/subscribe has its own pool


def test_exhausted_does_not_raise_a_negative_level() -> None:
    clock = FakeClock()
    pools = CreditPools(clock=clock)
    pools.default.level = -250.0  # already in debt (set from outside): exhausted keeps the debt
    assert pools.exhausted("public/get_time") == pytest.approx(750 / DEFAULT_REFILL)


def test_limits() -> None:
    limits = CreditPools(tier=1, clock=FakeClock()).limits()
    assert limits["limits_per_currency"] is False
    assert limits["non_matching_engine"] == {"rate": 20, "burst": 100}
    me = limits["matching_engine"]
    assert isinstance(me, dict)
    assert me["trading"] == {"total": {"rate": 30, "burst": 100}}
    assert me["spot"] == me["cancel_all"] == {"rate": 30, "burst": 100}
    assert set(me) == {"trading", "spot", "cancel_all", "maximum_quotes", "maximum_mass_quotes",
                       "guaranteed_mass_quotes"}
    tier4 = CreditPools(clock=FakeClock()).limits()["matching_engine"]
    assert isinstance(tier4, dict)
    assert tier4["trading"] == {"total": {"rate": 5, "burst": 20}}
