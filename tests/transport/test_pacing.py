"""Unit tests of the client's pacing (deribit_kit.transport.pacing): ClientCredits keeps a reserve,
spend waits within the deadline, retry_rate_limited backs off on 10028."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import SimpleNamespace

import pytest

from deribit_kit.errors import ExchangeUnavailableError, RateLimitError, RequestTimeout
from deribit_kit.transport import pacing
from deribit_kit.transport.pacing import ClientCredits, retry_rate_limited, spend
from deribit_kit.wire.credits import DEFAULT_COST, DEFAULT_REFILL, Bucket, CreditPools


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def frozen(credits: CreditPools, clock: Callable[[], float]) -> CreditPools:
    """Put every pool of ``credits`` on ``clock`` (ClientCredits has no clock parameter)."""
    for bucket in (credits.default, credits.matching, *credits.special.values()):
        bucket.clock = clock
        bucket.stamp = clock()
    return credits


def burst(credits: CreditPools, method: str) -> int:
    n = 0
    while n < 10_000 and credits.try_spend(method):
        n += 1
    return n


# ---------------------------------------------------------------- ClientCredits


def test_client_credits_keep_a_reserve() -> None:
    clock = FakeClock()
    plain = frozen(CreditPools(), clock)
    client = frozen(ClientCredits(reserve_s=0.1), clock)
    assert burst(plain, "public/get_time") == 100
    # 0.1 s of refill (1000 credits) stays in hand: spending stops while level < cost + reserve
    assert burst(client, "public/get_time") == 98
    assert client.default.level == pytest.approx(1000.0)
    assert client.wait_time("public/get_time") == pytest.approx(DEFAULT_COST / DEFAULT_REFILL)  # 1000 -> 1500
    clock.t += 0.05 + 1e-9
    assert client.try_spend("public/get_time")


def test_client_credits_reserve_on_the_matching_engine() -> None:
    clock = FakeClock()
    client = frozen(ClientCredits(reserve_s=1.0), clock)
    # tier 4: cap 20, 5/s; each order needs 1 + 5 credits in the pool
    assert burst(client, "private/buy") == 15
    assert client.wait_time("private/buy") == pytest.approx(1 / 5)


def test_client_credits_reserve_never_exceeds_the_cap() -> None:
    client = frozen(ClientCredits(reserve_s=100.0), FakeClock())
    # cost + reserve is far beyond the cap: the full cap is required, so one call passes, then it waits
    assert burst(client, "private/buy") == 1
    assert client.wait_time("private/buy") > 0


def test_client_credits_wait_time_does_not_charge() -> None:
    client = frozen(ClientCredits(reserve_s=0.0), FakeClock())
    level = client.default.level
    for _ in range(5):
        assert client.wait_time("public/get_time") == 0.0
    assert client.default.level == level
    assert client.try_spend("public/get_time")
    assert client.default.level == level - DEFAULT_COST


def test_client_credits_free_methods() -> None:
    client = frozen(ClientCredits(), FakeClock())
    assert burst(client, "public/test") == 10_000
    assert client.wait_time("public/auth") == 0.0


def test_client_credits_tier() -> None:
    client = frozen(ClientCredits(reserve_s=0.0, tier=1), FakeClock())
    assert burst(client, "private/sell") == 100


# ---------------------------------------------------------------- spend


async def test_spend_without_credits_returns() -> None:
    await spend(None, "private/buy", deadline=0.0)  # no pacing: no deadline check either


async def test_spend_charges_at_once_when_credits_are_there() -> None:
    client = ClientCredits(reserve_s=0.0)
    level = client.default.level
    await spend(client, "public/get_time", deadline=time.monotonic() + 5)
    assert client.default.level == pytest.approx(level - DEFAULT_COST, abs=1.0)


async def test_spend_waits_for_refill() -> None:
    client = ClientCredits(reserve_s=0.0)
    client.matching = Bucket(2, 200)  # real clock: one order per 5 ms once the burst is spent
    t0 = time.monotonic()
    for _ in range(6):
        await spend(client, "private/buy", deadline=time.monotonic() + 5)
    elapsed = time.monotonic() - t0
    assert elapsed >= 4 / 200 * 0.9  # four of the six waited for a credit
    assert elapsed < 2.0


async def test_spend_raises_request_timeout_beyond_the_deadline() -> None:
    client = ClientCredits(reserve_s=0.0)
    client.matching = Bucket(1, 1)  # one order a second
    await spend(client, "private/buy", deadline=time.monotonic() + 5)
    t0 = time.monotonic()
    with pytest.raises(RequestTimeout) as info:
        await spend(client, "private/buy", deadline=time.monotonic() + 0.2)
    assert time.monotonic() - t0 < 0.15  # refused up front, not after sleeping
    assert info.value.method == "private/buy"
    assert info.value.retryable


async def test_spend_with_plain_pools() -> None:
    pools = CreditPools()
    pools.special["public/subscribe"] = Bucket(3_000, 300_000)  # 10 ms per subscribe once empty
    for _ in range(3):
        await spend(pools, "public/subscribe", deadline=time.monotonic() + 5)
    assert pools.special["public/subscribe"].level < 3_000


# ---------------------------------------------------------------- retry_rate_limited


class Sender:
    """Fails with ``errors`` in turn, then answers ``result``."""

    def __init__(self, errors: list[Exception], result: str = "ok") -> None:
        self.errors = list(errors)
        self.result = result
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.result


@pytest.fixture
def fake_time(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """pacing's clock and sleep replaced: sleeps are recorded and advance the clock; jitter fixed at 0."""
    state = SimpleNamespace(now=100.0, pauses=[])

    async def sleep(seconds: float) -> None:
        state.pauses.append(seconds)
        state.now += seconds

    monkeypatch.setattr(pacing, "asyncio", SimpleNamespace(sleep=sleep))
    monkeypatch.setattr(pacing, "time", SimpleNamespace(monotonic=lambda: state.now))
    monkeypatch.setattr(pacing, "random", SimpleNamespace(random=lambda: 0.0))
    return state


def rate_limited() -> RateLimitError:
    return RateLimitError(10028)


async def test_retry_returns_at_once_without_errors() -> None:
    stats: dict[str, float] = {}
    send = Sender([])
    assert await retry_rate_limited(send, "m", retries=3, deadline=time.monotonic() + 5, stats=stats) == "ok"
    assert send.calls == 1
    assert stats == {}


async def test_retry_backs_off_exponentially(fake_time: SimpleNamespace) -> None:
    stats: dict[str, float] = {"rate_limited": 2}
    send = Sender([rate_limited(), rate_limited(), rate_limited()])
    assert await retry_rate_limited(send, "m", retries=5, deadline=1e9, stats=stats) == "ok"
    assert send.calls == 4
    assert stats["rate_limited"] == 5  # counted on top of what was there
    assert fake_time.pauses == pytest.approx([0.05, 0.1, 0.2])  # 0.05 * 2**attempt, halved by zero jitter


async def test_retry_pause_is_capped(fake_time: SimpleNamespace) -> None:
    send = Sender([rate_limited()] * 8)
    await retry_rate_limited(send, "m", retries=10, deadline=1e9, stats={})
    assert max(fake_time.pauses) == pytest.approx(1.0)  # min(.., 2.0) * 0.5


async def test_retry_gives_up_after_retries(fake_time: SimpleNamespace) -> None:
    stats: dict[str, float] = {}
    send = Sender([rate_limited()] * 10)
    with pytest.raises(RateLimitError):
        await retry_rate_limited(send, "m", retries=2, deadline=1e9, stats=stats)
    assert send.calls == 3  # the first try and two retries
    assert stats["rate_limited"] == 3
    assert len(fake_time.pauses) == 2


async def test_retry_zero_retries(fake_time: SimpleNamespace) -> None:
    send = Sender([rate_limited()])
    with pytest.raises(RateLimitError):
        await retry_rate_limited(send, "m", retries=0, deadline=1e9, stats={})
    assert send.calls == 1
    assert fake_time.pauses == []


async def test_retry_respects_the_deadline(fake_time: SimpleNamespace) -> None:
    stats: dict[str, float] = {}
    send = Sender([rate_limited()] * 10)
    # pauses 0.05, 0.1, 0.2 fit in 0.4 s; the next (0.4) would end at or past the deadline
    with pytest.raises(RateLimitError):
        await retry_rate_limited(send, "m", retries=10, deadline=fake_time.now + 0.4, stats=stats)
    assert fake_time.pauses == pytest.approx([0.05, 0.1, 0.2])
    assert send.calls == 4
    assert stats["rate_limited"] == 4


async def test_retry_does_not_retry_other_errors(fake_time: SimpleNamespace) -> None:
    stats: dict[str, float] = {}
    send = Sender([ExchangeUnavailableError(10040), rate_limited()])
    with pytest.raises(ExchangeUnavailableError):
        await retry_rate_limited(send, "m", retries=5, deadline=1e9, stats=stats)
    assert send.calls == 1
    assert stats == {}


async def test_retry_real_sleep_is_short_and_jittered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pacing, "random", SimpleNamespace(random=lambda: 0.0))
    send = Sender([RateLimitError(10047)])
    stats: dict[str, float] = {}
    t0 = time.monotonic()
    assert await retry_rate_limited(send, "m", retries=1, deadline=time.monotonic() + 5, stats=stats) == "ok"
    assert 0.04 <= time.monotonic() - t0 < 1.0  # one real pause of 0.05 s
    assert stats["rate_limited"] == 1
