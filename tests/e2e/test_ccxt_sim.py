"""A Deribit client nobody here wrote, unmodified, against the embedded exchange: ccxt 4.5.90's
``async_support.deribit`` (REST) and ``pro.deribit`` (WebSocket), pointed at the exchange through
``exchange.urls`` only (markets, books, tickers, trades, OHLCV). Every HTTP request ccxt makes is
checked to go to the exchange's loopback address, and its only WebSocket is the exchange's.

The exchange runs with ``autostep=False``: the market moves only when the test calls
``sim.step()``, so REST answers, the ccxt.pro book and ``public/get_order_book`` can be compared
exactly at equal states.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import ccxt.async_support as ccxt_async
import ccxt.pro as ccxt_pro
import pytest
from conftest import RawPeer, connect_peer

from deribit_kit.sim import Simulator

PERP_SYMBOL = "BTC/USD:BTC"
PERP = "BTC-PERPETUAL"


@pytest.fixture
async def quiet_sim() -> AsyncIterator[Simulator]:
    """An exchange whose market moves only on ``sim.step()``."""
    async with Simulator(seed=11, autostep=False, rate_limits=False) as s:
        s.market.trade_rate = 10.0  # enough public trades for fetch_trades after a few steps
        yield s


@pytest.fixture
async def raw(quiet_sim: Simulator) -> AsyncIterator[RawPeer]:
    p = await connect_peer(quiet_sim.ws_url)
    yield p
    await p.close()


def point_at(exchange: Any, sim: Simulator) -> list[str]:
    """Point a ccxt Deribit exchange at ``sim`` and record every HTTP URL it requests (each must be
    the exchange's: ccxt may not reach any other host)."""
    exchange.urls["api"] = {"rest": sim.http_url, "ws": sim.ws_url}
    exchange.urls["test"] = {"rest": sim.http_url, "ws": sim.ws_url}  # in case sandbox mode gets switched on
    seen: list[str] = []
    fetch = exchange.fetch

    async def loopback_only(url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
        seen.append(url)
        assert url.startswith(sim.http_url + "/api/v2/"), f"ccxt tried to reach {url}"
        return await fetch(url, method, headers, body)

    exchange.fetch = loopback_only
    return seen


def levels(side: list[list[Any]]) -> list[tuple[float, float]]:
    return [(float(lv[0]), float(lv[1])) for lv in side]


async def test_rest_market_data(quiet_sim: Simulator, raw: RawPeer) -> None:
    sim = quiet_sim
    sim.step(20)
    ex = ccxt_async.deribit({"enableRateLimit": False})
    urls = point_at(ex, sim)
    try:
        markets = await ex.load_markets()
        instruments = await raw.result("public/get_instruments", {"currency": "any"})
        assert len(markets) == len(instruments) == len(sim.market.instruments)
        assert {m["id"] for m in markets.values()} == {i["instrument_name"] for i in instruments}
        perp = ex.market(PERP_SYMBOL)
        assert perp["id"] == PERP and perp["swap"] and perp["inverse"] and perp["contractSize"] == 10
        assert ex.market("BTC/USDC")["spot"]
        kinds = {m["type"] for m in markets.values()}
        assert kinds == {"swap", "future", "option", "spot"}

        book = await ex.fetch_order_book(PERP_SYMBOL)
        ref = await raw.result("public/get_order_book", {"instrument_name": PERP, "depth": 10000})
        assert book["nonce"] == ref["change_id"]
        assert book["timestamp"] == ref["timestamp"]
        assert levels(book["bids"]) == levels(ref["bids"]) and levels(book["asks"]) == levels(ref["asks"])
        assert len(book["bids"]) > 5 and book["bids"][0][0] < book["asks"][0][0]

        for symbol in (PERP_SYMBOL, "ETH/USD:ETH", "BTC/USDC", "BTC/USDC:USDC"):
            ticker = await ex.fetch_ticker(symbol)
            ref = await raw.result("public/ticker", {"instrument_name": ex.market(symbol)["id"]})
            assert ticker["symbol"] == symbol
            assert ticker["timestamp"] == ref["timestamp"]
            assert ticker["bid"] == ref["best_bid_price"] and ticker["ask"] == ref["best_ask_price"]
            assert ticker["bidVolume"] == ref["best_bid_amount"] and ticker["askVolume"] == ref["best_ask_amount"]
            assert ticker["last"] == ref["last_price"]
            assert ticker["markPrice"] == ref["mark_price"] and ticker["indexPrice"] == ref["index_price"]

        trades = await ex.fetch_trades(PERP_SYMBOL, limit=50)
        ref = await raw.result("public/get_last_trades_by_instrument",
                               {"instrument_name": PERP, "count": 50, "sorting": "desc"})
        assert trades, "no public trades after 20 steps"
        assert sorted(t["id"] for t in trades) == sorted(t["trade_id"] for t in ref["trades"])
        by_id = {t["trade_id"]: t for t in ref["trades"]}
        for t in trades:
            r = by_id[t["id"]]
            assert (t["price"], t["amount"], t["side"], t["timestamp"]) == (
                r["price"], r["amount"], r["direction"], r["timestamp"])
            assert t["symbol"] == PERP_SYMBOL
    finally:
        await ex.close()
    assert urls and all(u.startswith(sim.http_url) for u in urls)


async def test_ohlcv_rest_and_websocket(quiet_sim: Simulator, raw: RawPeer) -> None:
    """ccxt's fetch_ohlcv reads public/get_tradingview_chart_data and watch_ohlcv chart.trades.*: the
    same candles as the exchange's own answer."""
    sim = quiet_sim
    sim.step(30)
    ex = ccxt_async.deribit({"enableRateLimit": False})
    urls = point_at(ex, sim)
    try:
        await ex.load_markets()
        for timeframe, resolution in (("1m", "1"), ("1h", "60"), ("1d", "1D")):
            ohlcv = await ex.fetch_ohlcv(PERP_SYMBOL, timeframe)
            ref = await raw.result("public/get_tradingview_chart_data", {
                "instrument_name": PERP, "start_timestamp": 0, "end_timestamp": sim.now_ms(), "resolution": resolution})
            assert ref["status"] == "ok" and ohlcv, timeframe
            assert ohlcv == [[t, o, h, lo, c, v] for t, o, h, lo, c, v in zip(
                ref["ticks"], ref["open"], ref["high"], ref["low"], ref["close"], ref["volume"], strict=True)]
    finally:
        await ex.close()
    assert urls and all(u.startswith(sim.http_url) for u in urls)

    pro = ccxt_pro.deribit({"enableRateLimit": False})
    point_at(pro, sim)
    try:
        await pro.load_markets()
        clock = asyncio.ensure_future(market_clock(sim))  # the market moves on its own while ccxt watches
        try:
            candles = await asyncio.wait_for(pro.watch_ohlcv(PERP_SYMBOL, "1m"), 10)
        finally:
            clock.cancel()
        now = await raw.result("public/get_tradingview_chart_data", {
            "instrument_name": PERP, "start_timestamp": 0, "end_timestamp": sim.now_ms(), "resolution": "1"})
        tick, open_, high, low, _close, volume = candles[-1]
        i = now["ticks"].index(tick)  # a period the exchange has, at a state it went through
        assert open_ == now["open"][i] and high <= now["high"][i] and low >= now["low"][i]
        assert 0 <= volume <= now["volume"][i]
        assert sim.subscriber_count(f"chart.trades.{PERP}.1") == 1
    finally:
        await pro.close()


async def market_clock(sim: Simulator, interval: float = 0.05) -> None:
    """Step the market every ``interval`` s (what ``autostep`` does), until cancelled."""
    while True:
        sim.step()
        await asyncio.sleep(interval)


async def test_watch_order_book_tracks_the_exchange(quiet_sim: Simulator, raw: RawPeer) -> None:
    sim = quiet_sim
    ex = ccxt_pro.deribit({"enableRateLimit": False})
    urls = point_at(ex, sim)

    async def same_as_exchange(book: Any) -> None:
        ref = await raw.result("public/get_order_book", {"instrument_name": PERP, "depth": 10000})
        assert book["timestamp"] == ref["timestamp"]
        assert levels(book["bids"]) == levels(ref["bids"])
        assert levels(book["asks"]) == levels(ref["asks"])

    try:
        book = await asyncio.wait_for(ex.watch_order_book(PERP_SYMBOL), 10)  # the snapshot
        assert book["symbol"] == PERP_SYMBOL
        await same_as_exchange(book)
        assert sim.subscriber_count("book.BTC-PERPETUAL.100ms") == 1
        changes = 0
        for _ in range(40):
            result = sim.step()
            if not any(inst.name == PERP for inst, _ in result.book_changes):
                continue
            changes += 1
            # ccxt.pro's book nonce is the message timestamp; wait for this tick's change (the
            # watch call registers its future before it yields, so no message can slip by)
            while book["timestamp"] != result.timestamp:
                book = await asyncio.wait_for(ex.watch_order_book(PERP_SYMBOL), 5)
            await same_as_exchange(book)
        assert changes >= 20, f"only {changes} book changes in 40 ticks"
        assert len(book["bids"]) > 5 and book["bids"][0][0] < book["asks"][0][0]
        assert set(ex.clients) == {sim.ws_url}  # its only WebSocket
    finally:
        await ex.close()
    assert all(u.startswith(sim.http_url) for u in urls)


async def test_websocket_upgrade_on_a_kept_alive_http_connection(quiet_sim: Simulator) -> None:
    """aiohttp (under ccxt.pro) opens its WebSocket on the pooled connection its REST calls used."""
    sim = quiet_sim
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{sim.http_url}/api/v2/public/get_time") as resp:
            assert resp.status == 200 and isinstance((await resp.json())["result"], int)
        assert sim.server is not None and sim.server.connections == 1
        async with session.ws_connect(sim.ws_url) as ws:
            assert sim.server.connections == 1  # the same TCP connection, upgraded
            await ws.send_str('{"jsonrpc":"2.0","id":1,"method":"public/test"}')
            reply = await asyncio.wait_for(ws.receive_json(), 5)
            assert reply["id"] == 1 and "version" in reply["result"]
