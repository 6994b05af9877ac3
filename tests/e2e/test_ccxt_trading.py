"""ccxt 4.5.90's ``async_support.deribit``, unmodified and with the exchange's demo key, trading on the
embedded exchange over REST: it signs every private call with ``deri-hmac-sha256`` and creates,
edits, cancels and fetches orders, trades, positions and balances. What ccxt reports is checked
against the exchange's own answers to a raw, authenticated WebSocket JSON-RPC peer.

The exchange runs with ``autostep=False``: the market only moves on ``sim.step()``, so the book,
the mark price and therefore the account's equity and margins stay put between ccxt's call and the
reference call.

ccxt signs with ``nonce = ts = the current millisecond``; over loopback two signed requests often
land in the same millisecond. They sign different text, so the exchange takes both and refuses only
an exact replay (the same timestamp, nonce and signature).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import ccxt.async_support as ccxt_async
import pytest
from conftest import RawPeer, authenticate, connect_peer
from test_ccxt_sim import point_at

from deribit_kit.sim import Simulator

PERP_SYMBOL = "BTC/USD:BTC"
PERP = "BTC-PERPETUAL"


@pytest.fixture
async def quiet_sim() -> AsyncIterator[Simulator]:
    """An exchange whose market moves only on ``sim.step()``, with a book already built."""
    async with Simulator(seed=11, autostep=False, rate_limits=False) as s:
        s.step(20)
        yield s


@pytest.fixture
async def raw(quiet_sim: Simulator) -> AsyncIterator[RawPeer]:
    """A raw WebSocket peer logged in with the same (demo) key ccxt uses."""
    p = await connect_peer(quiet_sim.ws_url)
    await authenticate(p, quiet_sim)
    yield p
    await p.close()


@pytest.fixture
async def ccxt_ex(quiet_sim: Simulator) -> AsyncIterator[tuple[Any, list[str]]]:
    """ccxt's async Deribit with the demo key, pointed at the exchange; every URL it used is checked
    to be the exchange's after the test."""
    acct = quiet_sim.demo_account
    ex = ccxt_async.deribit({"apiKey": acct.client_id, "secret": acct.client_secret, "enableRateLimit": False})
    urls = point_at(ex, quiet_sim)
    try:
        yield ex, urls
    finally:
        await ex.close()
    assert urls and all(u.startswith(quiet_sim.http_url + "/api/v2/") for u in urls)


async def test_orders_edit_cancel(quiet_sim: Simulator, raw: RawPeer, ccxt_ex: tuple[Any, list[str]]) -> None:
    ex, urls = ccxt_ex
    await ex.load_markets()
    book = await raw.result("public/get_order_book", {"instrument_name": PERP, "depth": 5})
    best_bid = book["best_bid_price"]
    far = round(best_bid * 0.8 / 0.5) * 0.5  # far below the market: rests, never fills

    order = await ex.create_order(PERP_SYMBOL, "limit", "buy", 20, far)
    oid = order["id"]
    assert order["status"] == "open" and order["symbol"] == PERP_SYMBOL
    assert (order["side"], order["type"], order["price"], order["amount"], order["filled"]) == (
        "buy", "limit", far, 20, 0)

    ref = await raw.result("private/get_order_state", {"order_id": oid})
    assert (ref["order_state"], ref["price"], ref["amount"], ref["direction"]) == ("open", far, 20, "buy")

    open_orders = await ex.fetch_open_orders(PERP_SYMBOL)
    assert [o["id"] for o in open_orders] == [oid]
    assert (await ex.fetch_open_orders())[0]["id"] == oid  # by currency (ccxt's default: BTC)
    fetched = await ex.fetch_order(oid)
    assert (fetched["id"], fetched["status"], fetched["price"], fetched["amount"], fetched["symbol"]) == (
        oid, "open", far, 20, PERP_SYMBOL)

    new_price = far - 100
    edited = await ex.edit_order(oid, PERP_SYMBOL, "limit", "buy", 30, new_price)
    assert (edited["id"], edited["status"], edited["price"], edited["amount"]) == (oid, "open", new_price, 30)
    ref = await raw.result("private/get_order_state", {"order_id": oid})
    assert (ref["order_state"], ref["price"], ref["amount"]) == ("open", new_price, 30)
    ref_book = await raw.result("public/get_order_book", {"instrument_name": PERP, "depth": 10000})
    assert any(p == new_price and a >= 30 for p, a in ref_book["bids"])

    cancelled = await ex.cancel_order(oid, PERP_SYMBOL)
    assert (cancelled["id"], cancelled["status"]) == (oid, "canceled")
    assert (await ex.fetch_order(oid))["status"] == "canceled"
    assert await ex.fetch_open_orders(PERP_SYMBOL) == []
    assert (await raw.result("private/get_order_state", {"order_id": oid}))["order_state"] == "cancelled"

    # cancel_all_orders: by instrument and everything
    a = await ex.create_order(PERP_SYMBOL, "limit", "buy", 10, far)
    b = await ex.create_order(PERP_SYMBOL, "limit", "buy", 10, far - 50)
    c = await ex.create_order("ETH/USD:ETH", "limit", "buy", 1,
                              round((await ex.fetch_ticker("ETH/USD:ETH"))["bid"] * 0.8 / 0.05) * 0.05)
    res = await ex.cancel_all_orders(PERP_SYMBOL)
    assert len(res) == 1 and str(res[0]["info"]["result"]) == "2"
    assert await ex.fetch_open_orders(PERP_SYMBOL) == []
    assert [o["id"] for o in await ex.fetch_open_orders("ETH/USD:ETH")] == [c["id"]]
    res = await ex.cancel_all_orders()
    assert str(res[0]["info"]["result"]) == "1"
    assert await raw.result("private/get_open_orders", {}) == []
    for o in (a, b, c):
        assert (await raw.result("private/get_order_state", {"order_id": o["id"]}))["order_state"] == "cancelled"
    assert {u.split("?")[0].rsplit("/", 1)[-1] for u in urls} >= {
        "buy", "edit", "cancel", "cancel_all", "cancel_all_by_instrument", "get_order_state",
        "get_open_orders_by_instrument", "get_open_orders_by_currency"}


async def test_fill_trades_positions_balance(quiet_sim: Simulator, raw: RawPeer,
                                             ccxt_ex: tuple[Any, list[str]]) -> None:
    ex, urls = ccxt_ex
    await ex.load_markets()
    ticker = await raw.result("public/ticker", {"instrument_name": PERP})
    above = round(ticker["best_ask_price"] * 1.01 / 0.5) * 0.5  # marketable: crosses the ask

    order = await ex.create_order(PERP_SYMBOL, "limit", "buy", 50, above)
    oid = order["id"]
    assert order["status"] == "closed" and order["filled"] == 50 and order["remaining"] == 0
    assert order["trades"], "ccxt saw no fills in the buy response"
    market = await ex.create_order(PERP_SYMBOL, "market", "sell", 20)
    assert market["status"] == "closed" and market["filled"] == 20 and market["side"] == "sell"

    trades = await ex.fetch_my_trades(PERP_SYMBOL)
    ref = await raw.result("private/get_user_trades_by_instrument", {"instrument_name": PERP, "count": 100})
    assert sorted(t["id"] for t in trades) == sorted(t["trade_id"] for t in ref["trades"])
    by_order: dict[str, float] = {}
    for t in trades:
        assert t["symbol"] == PERP_SYMBOL
        by_order[t["order"]] = by_order.get(t["order"], 0) + t["amount"]
    assert by_order == {oid: 50, market["id"]: 20}
    assert all(t["side"] == "buy" for t in trades if t["order"] == oid)
    assert {t["id"] for t in await ex.fetch_my_trades()} == {t["id"] for t in trades}  # by currency

    positions = await ex.fetch_positions([PERP_SYMBOL])
    assert len(positions) == 1
    pos = positions[0]
    ref_pos = await raw.result("private/get_position", {"instrument_name": PERP})
    assert ref_pos["size"] == 30 and ref_pos["direction"] == "buy"
    assert pos["symbol"] == PERP_SYMBOL and pos["side"] == "long"
    assert pos["contracts"] == ref_pos["size"]  # ccxt reports Deribit's ``size`` (USD) as contracts
    assert pos["notional"] == ref_pos["size_currency"] and pos["unrealizedPnl"] == ref_pos["floating_profit_loss"]
    assert pos["initialMargin"] == ref_pos["initial_margin"]
    assert pos["maintenanceMargin"] == ref_pos["maintenance_margin"]
    assert pos["entryPrice"] == ref_pos["average_price"] and pos["markPrice"] == ref_pos["mark_price"]

    balance = await ex.fetch_balance()
    summary = await raw.result("private/get_account_summary", {"currency": "BTC"})
    btc = balance["BTC"]
    assert (btc["free"], btc["used"], btc["total"]) == (
        summary["available_funds"], summary["maintenance_margin"], summary["equity"])
    assert btc["used"] > 0 and btc["free"] < btc["total"]
    assert balance["free"]["BTC"] == btc["free"] and balance["total"]["BTC"] == btc["total"]
    one = await ex.fetch_balance({"code": "BTC"})  # get_account_summary
    assert (one["BTC"]["free"], one["BTC"]["used"], one["BTC"]["total"]) == (btc["free"], btc["used"], btc["total"])

    assert (await ex.cancel_all_orders())[0]["info"]["result"] in (0, "0")  # nothing left open
    assert await raw.result("private/get_open_orders", {}) == []
    assert {u.split("?")[0].rsplit("/", 1)[-1] for u in urls} >= {
        "buy", "sell", "get_user_trades_by_instrument", "get_user_trades_by_currency", "get_positions",
        "get_account_summaries", "get_account_summary", "cancel_all"}
