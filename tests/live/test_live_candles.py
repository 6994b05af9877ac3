"""Candles through the client: ``dk.candles`` parses ``public/get_tradingview_chart_data`` into
typed :class:`Candle` s, and ``dk.candles(..., live=True)`` (:class:`LiveCandles`) keeps the history
plus the open candle from ``chart.trades`` live, through the broker, against the embedded
exchange on a real socket (its clock driven by the test); the folding rules on their own last."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import DEMO_KEY, ManualClock, connect_peer, expect

from deribit_kit import Deribit, Gap, Notification, ValidationError
from deribit_kit.broker.port import BrokerServer
from deribit_kit.events import Event
from deribit_kit.live.candles import LiveCandles
from deribit_kit.models import Candle, ChartData, FrameList, convert
from deribit_kit.sim import Simulator

PERP = "BTC-PERPETUAL"
MIN = 60_000
T0 = int(datetime(2025, 1, 6, 12, 0, tzinfo=UTC).timestamp() * 1000)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0 + 1_000)


@pytest.fixture
async def csim(clock: ManualClock) -> AsyncIterator[Simulator]:
    """An exchange whose clock only moves when the test says so; ten minutes of trading done."""
    async with Simulator(seed=2, clock=clock, autostep=False, rate_limits=False, trade_rate=4.0) as s:
        for _ in range(20):
            clock.advance(30.0)
            s.step()
        yield s


@pytest.fixture
async def cdk(csim: Simulator, no_env_credentials: None) -> AsyncIterator[Deribit]:
    client = await Deribit.connect(csim.ws_url, request_timeout=5.0, **DEMO_KEY)
    yield client
    await client.close()


def exchange_candles(sim: Simulator, resolution: str, start: int = 0) -> list[Candle]:
    data = sim.market.candles.chart_data(PERP, resolution, start, sim.now_ms(), sim.now_ms())
    return convert(data, ChartData).candles()


async def test_candles_are_typed_and_framed(csim: Simulator, cdk: Deribit) -> None:
    candles = await cdk.candles(PERP, "1", T0, csim.now_ms())
    assert isinstance(candles, FrameList) and all(isinstance(c, Candle) for c in candles)
    assert candles == exchange_candles(csim, "1", T0)
    assert len(candles) == 11 and candles[0].tick == T0 and candles[-1].tick == T0 + 10 * MIN
    assert candles[0].time == datetime(2025, 1, 6, 12, 0, tzinfo=UTC)
    frame = candles.to_frame()
    assert list(frame.columns) == ["tick", "open", "high", "low", "close", "volume", "cost", "time"]
    assert frame["volume"].sum() > 0
    # defaults: end is the exchange's time, start 200 periods before; datetimes (naive = UTC) work
    assert await cdk.candles(PERP, 5) == exchange_candles(csim, "5")
    naive = await cdk.candles(PERP, "60", datetime(2025, 1, 6, 12, 0), datetime(2025, 1, 6, 13, 0))
    assert [c.tick for c in naive] == [T0]
    assert await cdk.candles(PERP, "1D") == exchange_candles(csim, "1D")
    assert await cdk.candles(PERP, "1", T0 - 10 * MIN, T0 - MIN) == []  # no_data
    with pytest.raises(ValidationError, match="unknown candle resolution"):
        await cdk.candles(PERP, "2")


async def test_live_candles_follow_the_channel(csim: Simulator, cdk: Deribit, clock: ManualClock) -> None:
    live = await cdk.candles(PERP, "1", live=True)
    try:
        assert isinstance(live, LiveCandles) and live.channel == f"chart.trades.{PERP}.1"
        assert live.candles == exchange_candles(csim, "1", T0 - 200 * MIN)  # the history, open candle last
        assert live.last is not None and live.last.tick == T0 + 10 * MIN
        # trades in the open period: the open candle is updated in place
        volume = live.last.volume
        for _ in range(20):
            clock.advance(1.0)
            csim.step()
            await cdk.get_time()  # a round trip: what the exchange sent before its answer has arrived
            if live.last.volume != volume:
                break
        assert live.last.tick == T0 + 10 * MIN and live.last.volume > volume
        assert live.messages >= 1
        assert live.last == convert(csim.market.candles.current(PERP, "1", csim.now_ms()), Candle)
        assert len(live) == 11
        # a new period without trades: a filler candle is appended
        csim.market.trade_rate = 0.0
        close = live.last.close
        clock.advance(60.0)
        v = live.version
        csim.step()
        await live.wait_version(v, timeout=5)
        assert live.last == Candle(tick=T0 + 11 * MIN, open=close, high=close, low=close, close=close,
                                   volume=0.0, cost=0.0)
        assert len(live) == 12
        frame = live.to_frame()
        assert frame["tick"].is_monotonic_increasing and frame["tick"].iloc[-1] == T0 + 11 * MIN
        assert "LiveCandles BTC-PERPETUAL 1: 12 candle(s)" in repr(live)
        # ``async for`` yields the candles now, then after the next change
        it = aiter(live)
        assert await asyncio.wait_for(anext(it), 5) is live
        csim.market.trade_rate = 4.0
        clock.advance(60.0)
        csim.step()
        assert await asyncio.wait_for(anext(it), 5) is live and live.last.tick == T0 + 12 * MIN
        # another resolution over the same exchange at once
        five = await cdk.candles(PERP, "5", live=True)
        try:
            assert five.candles == exchange_candles(csim, "5", T0 - 200 * 5 * MIN)
        finally:
            await five.close()
    finally:
        await live.close()


async def test_live_candles_are_bounded(csim: Simulator, cdk: Deribit) -> None:
    live = await LiveCandles(cdk, PERP, "1", start=T0, max_candles=4).start()
    try:
        assert [c.tick for c in live.candles] == [T0 + i * MIN for i in range(7, 11)]  # the newest four
    finally:
        await live.close()


async def test_live_candles_resync_refetches_since_the_last_candle(csim: Simulator, cdk: Deribit,
                                                                   clock: ManualClock) -> None:
    live = await cdk.candles(PERP, "1", live=True)
    try:
        await live.close()  # off the channel: what happens next is missed
        for _ in range(4):
            clock.advance(30.0)
            csim.step()
        await live.resync()
        assert live.candles[-3:] == exchange_candles(csim, "1")[-3:]
        assert live.resyncs == 1 and live.last is not None and live.last.tick == T0 + 12 * MIN
    finally:
        await live.close()


async def test_live_candles_resync_after_a_reconnect(csim: Simulator, cdk: Deribit, clock: ManualClock) -> None:
    live = await cdk.candles(PERP, "1", live=True)
    try:
        reconnected = expect(cdk.reconnected)
        assert csim.faults.drop_connections() >= 1
        for _ in range(2):  # missed while the link is down
            clock.advance(30.0)
            csim.step()
        await asyncio.wait_for(reconnected, 15)

        async def resynced() -> None:
            while live.resyncs == 0:
                await live.updated.wait()

        await asyncio.wait_for(resynced(), 10)
        assert live.candles == exchange_candles(csim, "1", T0 - 200 * MIN)
        assert live.last is not None and live.last.tick == T0 + 11 * MIN
    finally:
        await live.close()


async def test_the_broker_port_shares_the_candle_channel(csim: Simulator, cdk: Deribit, clock: ManualClock) -> None:
    """Another program reads chart.trades through the broker's Deribit-compatible port, on the same
    upstream subscription as the live candles in this process."""
    channel = f"chart.trades.{PERP}.1"
    live = await cdk.candles(PERP, "1", live=True)
    async with BrokerServer(cdk.broker) as srv:
        peer = await connect_peer(srv.ws_url)
        try:
            assert await peer.result("public/subscribe", {"channels": [channel]}) == [channel]
            got: dict[str, Any] | None = None
            for _ in range(20):
                clock.advance(1.0)
                csim.step()
                await cdk.get_time()  # what the exchange sent before this answer has reached the broker
                await peer.barrier()  # and what the port sent before its answer has reached the peer
                seen = [n["data"] for n in peer.drain() if n["channel"] == channel]
                if seen:
                    got = seen[-1]
                    break
            assert got is not None, "no candle through the port"
            assert convert(got, Candle) == live.last
            assert csim.subscriber_count(channel) == 1  # one upstream subscription for both readers
        finally:
            await peer.close()
            await live.close()


# ---------------------------------------------------------------- folding rules (a fake owner, no I/O)


class FakeSource:
    """Just enough of an owner to build a LiveCandles without starting it; ``history`` is what
    its candle requests answer."""

    reconnected = Event("reconnected")

    def __init__(self, history: list[Candle] | None = None) -> None:
        self.history = history or []
        self.asked: list[Any] = []

    async def get_time(self) -> int:
        return T0

    async def candles(self, instrument: str, resolution: str | int = "1", start: Any = None,
                      end: Any = None) -> FrameList[Candle]:
        self.asked.append(start)
        return FrameList(self.history, item_type=Candle)

    def subscribe(self, *channels: str, callback: Any = None, maxsize: int = 10_000) -> Any:
        raise AssertionError("not used")


def candle(tick: int, close: float, volume: float = 1.0) -> Candle:
    return Candle(tick=tick, open=close, high=close, low=close, close=close, volume=volume, cost=volume * close)


def test_folding_replaces_appends_corrects_and_bounds() -> None:
    live = LiveCandles(FakeSource(), PERP, 1, max_candles=3)
    assert live.resolution == "1" and live.period_ms == MIN
    seen: list[int] = []
    live.updated += lambda lc: seen.append(lc.version)
    live.apply(candle(T0, 100.0))
    live.apply(candle(T0, 101.0, 2.0))  # the open candle again
    live.apply(candle(T0, 101.0, 2.0))  # the same: no change, no event
    assert [c.close for c in live.candles] == [101.0] and seen == [1, 2]
    live.apply(candle(T0 + 2 * MIN, 105.0))  # the next period
    live.apply(candle(T0 + MIN, 103.0))  # a late one fits between
    assert [c.tick for c in live.candles] == [T0, T0 + MIN, T0 + 2 * MIN]
    live.apply(candle(T0 + 3 * MIN, 106.0))  # full: the oldest goes
    assert [c.tick for c in live.candles] == [T0 + MIN, T0 + 2 * MIN, T0 + 3 * MIN]
    live.apply(candle(T0 - MIN, 1.0))  # older than all kept and no room: ignored
    assert live.candles[0].tick == T0 + MIN and live.last == candle(T0 + 3 * MIN, 106.0)
    assert live.to_frame()["close"].tolist() == [103.0, 105.0, 106.0]


async def test_a_gap_in_the_stream_fetches_since_the_last_candle() -> None:
    source = FakeSource([candle(T0 + MIN, 102.0, 3.0), candle(T0 + 2 * MIN, 104.0)])
    live = LiveCandles(source, PERP, "1")
    live.apply(candle(T0, 100.0))
    live.apply(candle(T0 + MIN, 101.0))
    channel = f"chart.trades.{PERP}.1"
    live._on_message(Notification("ticker.BTC-PERPETUAL.100ms", {"tick": 0}))  # not its channel: ignored
    before = live.version
    live._on_message(Gap(channel, 3))
    live._on_message(Gap(channel, 1))  # joins the resync in flight
    await live.wait_version(before, timeout=5)
    assert live.resyncs == 1 and source.asked == [T0 + MIN]
    assert [c.close for c in live.candles] == [100.0, 102.0, 104.0]
    live._on_message(Notification(channel, {"tick": T0 + 2 * MIN, "open": 104.0, "high": 106.0, "low": 104.0,
                                            "close": 105.0, "volume": 2.0, "cost": 209.0}))
    assert live.messages == 1 and live.last is not None and live.last.high == 106.0
    live._on_message(Notification(channel, {"tick": "not a time"}))  # unreadable: logged, skipped
    assert live.messages == 1
