"""Candles of the embedded exchange: the pure store (:mod:`deribit_kit.sim.exchange.candles`) against hand-made
trades, then the exchange over a real WebSocket: ``public/get_tradingview_chart_data`` against the
exchange's own trades (open, high, low, close, volume, cost per period, every resolution; filler
candles in periods without trades) and ``chart.trades.{instrument}.{resolution}`` (the open candle
re-sent as trades arrive, a filler when a period begins without trades)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import ManualClock, RawPeer, authenticate, connect_peer

from deribit_kit.sim import Simulator
from deribit_kit.sim.exchange.candles import (
    MAX_RESULT,
    RESOLUTIONS,
    CandleSeries,
    CandleStore,
    period_start,
    resolution_ms,
)

PERP = "BTC-PERPETUAL"
MIN = 60_000
T0 = int(datetime(2025, 1, 6, 12, 0, tzinfo=UTC).timestamp() * 1000)  # a multiple of every resolution


# ---------------------------------------------------------------- the pure store


def test_periods_start_at_multiples_of_the_resolution() -> None:
    assert [resolution_ms(r) for r in RESOLUTIONS] == [
        m * MIN for m in (1, 3, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440)]
    assert period_start(T0 + 59_999, "1") == T0
    assert period_start(T0 + MIN, "1") == T0 + MIN
    assert period_start(T0 + 4 * MIN, "3") == T0 + 3 * MIN
    day = T0 - 12 * 60 * MIN  # UTC midnight
    assert period_start(T0 + 5 * MIN, "1D") == day
    with pytest.raises(ValueError, match="unknown resolution"):
        resolution_ms("2")


def test_trades_fold_into_ohlcv_per_period() -> None:
    store = CandleStore()
    for ts, px, vol in ((T0 + 1_000, 100.0, 1.0), (T0 + 2_000, 103.0, 2.0), (T0 + 3_000, 99.0, 0.5),
                        (T0 + 59_000, 101.0, 1.5), (T0 + MIN + 10, 102.0, 1.0)):
        store.on_trade(PERP, ts, px, vol, vol * px)
    data = store.chart_data(PERP, "1", T0, T0 + 2 * MIN, now=T0 + 2 * MIN)
    assert data["status"] == "ok"
    assert data["ticks"] == [T0, T0 + MIN, T0 + 2 * MIN]
    assert data["open"] == [100.0, 102.0, 102.0]
    assert data["high"] == [103.0, 102.0, 102.0]
    assert data["low"] == [99.0, 102.0, 102.0]
    assert data["close"] == [101.0, 102.0, 102.0]
    assert data["volume"] == [5.0, 1.0, 0.0]  # the last period had no trade: a filler
    assert data["cost"] == pytest.approx([100 + 206 + 49.5 + 151.5, 102.0, 0.0])
    five = store.chart_data(PERP, "5", T0, T0 + 2 * MIN, now=T0 + 2 * MIN)
    assert five["ticks"] == [T0] and five["open"] == [100.0] and five["close"] == [102.0]
    assert five["high"] == [103.0] and five["low"] == [99.0] and five["volume"] == [6.0]


def test_filler_candles_repeat_the_previous_close() -> None:
    store = CandleStore()
    store.on_trade(PERP, T0 + 5, 100.0, 1.0, 100.0)
    store.on_trade(PERP, T0 + 10, 104.0, 1.0, 104.0)
    store.on_trade(PERP, T0 + 3 * MIN + 1, 90.0, 2.0, 180.0)
    data = store.chart_data(PERP, "1", T0 - 10 * MIN, T0 + 10 * MIN, now=T0 + 4 * MIN + 5)
    # nothing before the first trade; fillers between trades and up to now, never past it
    assert data["ticks"] == [T0 + i * MIN for i in range(5)]
    assert data["open"] == [100.0, 104.0, 104.0, 90.0, 90.0]
    assert data["high"] == [104.0, 104.0, 104.0, 90.0, 90.0]
    assert data["low"] == [100.0, 104.0, 104.0, 90.0, 90.0]
    assert data["close"] == [104.0, 104.0, 104.0, 90.0, 90.0]
    assert data["volume"] == [2.0, 0.0, 0.0, 2.0, 0.0]
    assert data["cost"] == [204.0, 0.0, 0.0, 180.0, 0.0]


def test_no_data_before_any_trade_or_outside_the_range() -> None:
    store = CandleStore()
    empty = store.chart_data(PERP, "1", T0, T0 + MIN, now=T0 + MIN)
    assert empty == {"ticks": [], "open": [], "high": [], "low": [], "close": [], "volume": [], "cost": [],
                     "status": "no_data"}
    store.on_trade(PERP, T0 + 5 * MIN, 100.0, 1.0, 100.0)
    assert store.chart_data(PERP, "1", T0, T0 + 4 * MIN, now=T0 + 6 * MIN)["status"] == "no_data"
    assert store.chart_data(PERP, "1", T0 + 9 * MIN, T0 + 4 * MIN, now=T0 + 9 * MIN)["status"] == "no_data"
    assert store.current(PERP, "1", T0) is None  # before the first trade: no candle yet


def test_history_is_bounded_oldest_dropped() -> None:
    store = CandleStore(max_candles=10)
    for i in range(25):
        store.on_trade(PERP, T0 + i * MIN + 1, 100.0 + i, 1.0, 100.0 + i)
    s = store.get(PERP, "1")
    assert s is not None and len(s) == 10
    data = store.chart_data(PERP, "1", 0, T0 + 100 * MIN, now=T0 + 24 * MIN)
    assert data["ticks"] == [T0 + i * MIN for i in range(15, 25)]  # the newest ten
    assert data["open"][0] == 115.0
    five = store.get(PERP, "5")
    assert five is not None and len(five) == 5  # 25 minutes are five 5-minute candles


def test_one_answer_holds_at_most_max_result_candles_the_newest() -> None:
    s = CandleSeries(step=MIN, max_candles=10)
    s.add(T0, 1.0, 1.0, 1.0)
    out = s.range(T0, T0 + (MAX_RESULT + 100) * MIN)
    assert len(out) == MAX_RESULT
    assert out[-1]["tick"] == T0 + (MAX_RESULT + 100) * MIN and out[0]["volume"] == 0.0


def test_due_sends_the_open_candle_on_trades_and_a_filler_per_new_period() -> None:
    store = CandleStore()
    assert store.due(PERP, "1", T0, traded=False) is None  # no trade yet: nothing to send
    store.on_trade(PERP, T0 + 100, 100.0, 1.0, 100.0)
    first = store.due(PERP, "1", T0 + 100, traded=True)
    assert first == {"tick": T0, "open": 100.0, "high": 100.0, "low": 100.0, "close": 100.0,
                     "volume": 1.0, "cost": 100.0}
    assert store.due(PERP, "1", T0 + 200, traded=False) is None  # nothing new in this period
    store.on_trade(PERP, T0 + 300, 101.0, 1.0, 101.0)
    again = store.due(PERP, "1", T0 + 300, traded=True)
    assert again is not None and again["tick"] == T0 and again["close"] == 101.0 and again["volume"] == 2.0
    fill = store.due(PERP, "1", T0 + MIN + 5, traded=False)
    assert fill == {"tick": T0 + MIN, "open": 101.0, "high": 101.0, "low": 101.0, "close": 101.0,
                    "volume": 0.0, "cost": 0.0}
    assert store.due(PERP, "1", T0 + MIN + 500, traded=False) is None
    # the 5-minute candle is still the one that traded
    five = store.due(PERP, "5", T0 + MIN + 5, traded=False)
    assert five is not None and five["tick"] == T0 and five["volume"] == 2.0
    store.forget(PERP)
    assert store.get(PERP, "1") is None and store.due(PERP, "1", T0 + 2 * MIN, traded=False) is None


# ---------------------------------------------------------------- over the wire


def expected_candles(trades: list[dict[str, Any]], resolution: str, inverse: bool) -> dict[int, dict[str, float]]:
    """Candles computed here from the exchange's public trades (Deribit's units)."""
    step = resolution_ms(resolution)
    out: dict[int, dict[str, float]] = {}
    for t in sorted(trades, key=lambda t: (t["timestamp"], t["trade_seq"])):
        tick = t["timestamp"] - t["timestamp"] % step
        px, amt = t["price"], t["amount"]
        vol, cost = (amt / px, amt) if inverse else (amt, amt * px)
        c = out.get(tick)
        if c is None:
            out[tick] = {"open": px, "high": px, "low": px, "close": px, "volume": vol, "cost": cost}
        else:
            c["high"], c["low"], c["close"] = max(c["high"], px), min(c["low"], px), px
            c["volume"] += vol
            c["cost"] += cost
    return out


async def all_trades(p: RawPeer, instrument: str, start: int, end: int) -> list[dict[str, Any]]:
    page = await p.result("public/get_last_trades_by_instrument_and_time",
                          {"instrument_name": instrument, "start_timestamp": start, "end_timestamp": end,
                           "count": 10_000, "sorting": "asc"})
    assert not page["has_more"]
    trades: list[dict[str, Any]] = page["trades"]
    return trades


def check_against_trades(data: dict[str, Any], trades: list[dict[str, Any]], resolution: str,
                         inverse: bool) -> None:
    want = expected_candles(trades, resolution, inverse)
    assert data["status"] == "ok"
    n = len(data["ticks"])
    assert all(len(data[k]) == n for k in ("open", "high", "low", "close", "volume", "cost"))
    assert data["ticks"] == sorted(data["ticks"])
    step = resolution_ms(resolution)
    assert all(b - a == step for a, b in zip(data["ticks"], data["ticks"][1:], strict=False))
    prev_close: float | None = None
    for i, tick in enumerate(data["ticks"]):
        got = {k: data[k][i] for k in ("open", "high", "low", "close", "volume", "cost")}
        if tick in want:
            w = want[tick]
            assert got["open"] == w["open"] and got["close"] == w["close"], (resolution, tick)
            assert got["high"] == w["high"] and got["low"] == w["low"], (resolution, tick)
            assert got["volume"] == pytest.approx(w["volume"], abs=1e-7), (resolution, tick)
            assert got["cost"] == pytest.approx(w["cost"], rel=1e-9, abs=1e-7), (resolution, tick)
        else:  # a filler: the previous close, no volume
            assert prev_close is not None, "a filler before the first trade"
            assert got == {"open": prev_close, "high": prev_close, "low": prev_close, "close": prev_close,
                           "volume": 0.0, "cost": 0.0}, (resolution, tick)
        prev_close = got["close"]
    assert set(want) <= set(data["ticks"]), "a traded period is missing"


async def test_chart_data_matches_the_exchanges_own_trades() -> None:
    clock = ManualClock(T0 + 30_000)
    async with Simulator(seed=7, clock=clock, autostep=False, rate_limits=False, trade_rate=2.0) as sim:
        p = await connect_peer(sim.ws_url)
        try:
            await authenticate(p, sim)
            start = sim.now_ms()
            for i in range(80):  # 8 simulated minutes at 6 s per tick
                clock.advance(6.0)
                sim.step()
                if i == 20:  # a user's trade counts too
                    await p.result("private/buy", {"instrument_name": PERP, "amount": 50, "type": "market"})
            sim.market.trade_rate = 0.0  # 3 minutes without trades: filler candles
            for _ in range(30):
                clock.advance(6.0)
                sim.step()
            sim.market.trade_rate = 2.0
            for _ in range(10):
                clock.advance(6.0)
                sim.step()
            end = sim.now_ms()
            for name, inverse in ((PERP, True), ("BTC_USDC-PERPETUAL", False), ("ETH_USDC", False)):
                trades = await all_trades(p, name, 0, end)
                assert len(trades) > 5, name
                for res in RESOLUTIONS:
                    data = await p.result("public/get_tradingview_chart_data", {
                        "instrument_name": name, "start_timestamp": start, "end_timestamp": end,
                        "resolution": res})
                    check_against_trades(data, trades, res, inverse)
            one = await p.result("public/get_tradingview_chart_data", {
                "instrument_name": PERP, "start_timestamp": start, "end_timestamp": end, "resolution": "1"})
            fillers = [t for t, v in zip(one["ticks"], one["volume"], strict=True) if v == 0.0]
            assert len(fillers) >= 2  # the quiet minutes
            # the HTTP transport gives the same answer, resolution as a query string
            import httpx
            async with httpx.AsyncClient(base_url=sim.http_url) as http:
                r = await http.get("/api/v2/public/get_tradingview_chart_data", params={
                    "instrument_name": PERP, "start_timestamp": start, "end_timestamp": end, "resolution": 1})
            assert r.json()["result"] == one
        finally:
            await p.close()


async def test_chart_data_params_as_deribit_checks_them(peer: RawPeer) -> None:
    base = {"instrument_name": PERP, "start_timestamp": 0, "end_timestamp": 2**41}
    bad = await peer.call("public/get_tradingview_chart_data", {**base, "resolution": "2"})
    assert bad["error"]["code"] == -32602 and bad["error"]["data"]["param"] == "resolution"
    missing = await peer.call("public/get_tradingview_chart_data", {"instrument_name": PERP, "resolution": "1"})
    assert missing["error"]["code"] == -32602
    unknown = await peer.call("public/get_tradingview_chart_data", {**base, "instrument_name": "BTC-1JAN20",
                                                                    "resolution": "1"})
    assert unknown["error"]["code"] == 13020
    ok = await peer.result("public/get_tradingview_chart_data", {**base, "resolution": 60})  # a number works too
    assert ok["status"] in ("ok", "no_data")


async def test_chart_trades_channel_open_candle_then_fillers() -> None:
    clock = ManualClock(T0 + 1_000)
    async with Simulator(seed=3, clock=clock, autostep=False, rate_limits=False, trade_rate=4.0) as sim:
        p = await connect_peer(sim.ws_url)
        try:
            ch = f"chart.trades.{PERP}.1"
            assert await p.result("public/subscribe", {"channels": [ch, f"chart.trades.{PERP}.1D"]}) == [
                ch, f"chart.trades.{PERP}.1D"]
            got: list[dict[str, Any]] = []
            for _ in range(40):  # 20 s of trading: updates of the same open candle
                clock.advance(0.5)
                sim.step()
                await p.barrier()
                got += [n["data"] for n in p.drain() if n["channel"] == ch]
            assert len(got) >= 5
            assert {c["tick"] for c in got} == {T0}
            assert [c["volume"] for c in got] == sorted(c["volume"] for c in got)  # growing within the period
            open_now = await p.result("public/get_tradingview_chart_data", {
                "instrument_name": PERP, "start_timestamp": T0, "end_timestamp": sim.now_ms(), "resolution": "1"})
            last = got[-1]
            assert [last[k] for k in ("tick", "open", "high", "low", "close", "volume", "cost")] == [
                open_now[k][-1] for k in ("ticks", "open", "high", "low", "close", "volume", "cost")]
            sim.market.trade_rate = 0.0
            quiet: list[dict[str, Any]] = []
            for _ in range(10):  # into the next minute and the one after, without trades
                clock.advance(10.0)
                sim.step()
                await p.barrier()
                quiet += [n["data"] for n in p.drain() if n["channel"] == ch]
            close = last["close"]
            assert [c["tick"] for c in quiet] == [T0 + MIN, T0 + 2 * MIN]  # one filler per new period
            assert all(c == {"tick": c["tick"], "open": close, "high": close, "low": close, "close": close,
                             "volume": 0.0, "cost": 0.0} for c in quiet)
        finally:
            await p.close()
