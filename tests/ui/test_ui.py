"""Dashboard components without a browser: the pure renderers, the shared hub and its feeds against
the embedded exchange, and the dashboards' refresh logic (what a session would show)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

pytest.importorskip("panel", reason="needs the dashboards extra (pip install -e '.[dashboards]')")

from deribit_kit.errors import InvalidParamsError, OrderRejectedError, RequestTimeout, ValidationError
from deribit_kit.models import Candle, Order, Position, PublicTrade
from deribit_kit.sim import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, Simulator
from deribit_kit.ui import (
    CandleFeed,
    Hub,
    InstrumentPicker,
    MarketDashboard,
    OptionsDashboard,
    TradingDashboard,
    describe_error,
    render,
)

BTC = "BTC-PERPETUAL"


async def until(pred: Callable[[], Any], timeout: float = 10.0) -> None:
    """Wait (bounded) until ``pred()`` holds; the state comes from another task on this loop."""
    async def run() -> None:
        while not pred():
            await asyncio.sleep(0.01)
    await asyncio.wait_for(run(), timeout)


@pytest.fixture
async def hub(sim: Simulator) -> AsyncIterator[Hub]:
    h = Hub(sim.ws_url, client_id=DEMO_CLIENT_ID, client_secret=DEMO_CLIENT_SECRET, linger=0.05)
    await asyncio.wait_for(h.start(), 20)
    yield h
    await h.close()


# ---------------------------------------------------------------- pure renderers
def test_decimals_and_formats() -> None:
    assert render.decimals_for(0.5) == 1
    assert render.decimals_for(0.0005) == 4
    assert render.decimals_for(10) == 0
    assert render.decimals_for(2.5e-05) == 6
    assert render.fmt(95123.5, 1) == "95,123.5"
    assert render.fmt(None) == render.DASH
    assert render.fmt(float("nan")) == render.DASH
    assert render.fmt(0.0259, 2, sign=True, pct=True) == "+0.03%"
    assert render.fmt_compact(1_234_567) == "1.23M"


def test_ladder_orders_levels_and_cumulates() -> None:
    bids = [(100.0, 1.0), (99.5, 2.0)]
    asks = [(100.5, 3.0), (101.0, 4.0)]
    html = render.ladder_html(bids, asks, price_dp=1, amount_dp=1, unit="USD")
    # asks are printed top-down from the worst, then the spread, then bids from the best
    order = [html.index(p) for p in (">101.0<", ">100.5<", "spread", ">100.0<", ">99.5<")]
    assert order == sorted(order)
    assert ">7.0<" in html and ">3.0<" in html  # cumulative sizes
    assert "size (USD)" in html
    b, a = render.depth_data(bids, asks)
    # bids: 3.0 sold down to 99.5, 1.0 at 100.0; asks: 3.0 bought at 100.5, 7.0 up to 101.0
    assert b == {"price": [99.5, 99.5, 100.0], "cum": [3.0, 1.0, 1.0]}
    assert a == {"price": [100.5, 101.0, 101.0], "cum": [3.0, 3.0, 7.0]}
    assert render.depth_data([], []) == ({"price": [], "cum": []}, {"price": [], "cum": []})


def test_ladder_escapes_and_handles_an_empty_side() -> None:
    html = render.ladder_html([(1.0, 1.0)], [], unit="<b>")
    assert "one side empty" in html and "<b>)" not in html


def test_chain_rows_smile_and_term_structure() -> None:
    from deribit_kit.models import BookSummary, Greeks, Ticker

    def tick(iv: float, delta: float) -> Ticker:
        return Ticker(instrument_name="x", timestamp=1, best_bid_price=0.01, best_ask_price=0.02, mark_price=0.015,
                      mark_iv=iv, bid_iv=iv - 1, ask_iv=iv + 1, greeks=Greeks(delta=delta), open_interest=3.0,
                      underlying_price=100_500.0)

    tickers = {"BTC-27MAR26-100000-C": tick(50, 0.5), "BTC-27MAR26-100000-P": tick(50, -0.5),
               "BTC-27MAR26-110000-C": tick(55, 0.2)}
    rows = render.chain_rows(tickers)
    assert [r["strike"] for r in rows] == [100_000.0, 110_000.0]
    assert rows[0]["call_delta"] == 0.5 and rows[0]["put_delta"] == -0.5 and "put_iv" not in rows[1]
    html = render.chain_html(rows, price_dp=4, atm=100_400.0)
    assert 'class="atm"' in html and "100,000" in html
    smile = render.smile_data(rows)
    assert smile["call"] == {"strike": [100_000.0, 110_000.0], "iv": [50, 55]}
    assert render.atm_iv([(100.0, 50.0), (110.0, 60.0)], 105.0) == pytest.approx(55.0)
    summaries = [BookSummary(instrument_name=f"BTC-{code}-{k}-{cp}", mark_iv=iv, underlying_price=105.0)
                 for code, base in (("1JAN30", 40.0), ("1FEB30", 50.0))
                 for k, cp, iv in ((100, "P", base), (110, "C", base + 10))]
    ts = render.term_structure(summaries, {"1JAN30": 2_000_000_000_000, "1FEB30": 2_100_000_000_000},
                               now_ms=1_900_000_000_000)
    assert ts["expiry"] == ["1JAN30", "1FEB30"]
    assert ts["iv"] == [pytest.approx(45.0), pytest.approx(55.0)]


def test_trading_tables_and_errors() -> None:
    o = Order(order_id="1", instrument_name=BTC, direction="buy", order_type="limit", order_state="open",
              creation_timestamp=1, last_update_timestamp=1, price=90_000.0, amount=10.0, post_only=True,
              time_in_force="good_til_cancelled", label="dk-ui-x")
    cols = render.orders_table([o])
    assert cols["order_id"] == ["1"] and cols["flags"] == ["post-only"] and cols["tif"] == ["GTC"]
    p = Position(instrument_name=BTC, kind="future", direction="buy", size=10.0, floating_profit_loss=0.001)
    flat = Position(instrument_name="ETH-PERPETUAL", kind="future", direction="zero", size=0.0)
    assert render.positions_table([p, flat])["instrument"] == [BTC]
    assert describe_error(ValidationError("amount 15 is not a multiple")).startswith("Not sent: ")
    rejected = OrderRejectedError(11030, "other_reject", {"reason": "reduce_only"}, method="private/sell")
    assert describe_error(rejected) == "Rejected by the exchange: private/sell: other_reject (11030): reduce_only"
    assert describe_error(InvalidParamsError(-32602, None, {"param": "price", "reason": "bad"})).startswith("Rejected")
    assert "unknown" in describe_error(RequestTimeout("no answer"))


def test_trades_html_newest_first() -> None:
    trades = [PublicTrade(trade_id=str(i), instrument_name=BTC, timestamp=1_700_000_000_000 + i, price=100.0 + i,
                          amount=10.0, direction="buy" if i % 2 else "sell") for i in (3, 2, 1)]
    html = render.trades_html(trades, None, n=2)
    assert html.index("103") < html.index("102") and "101.00" not in html


def test_candle_columns_and_status_line() -> None:
    up = Candle(tick=1_700_000_040_000, open=100.0, high=105.0, low=99.0, close=104.0, volume=2.5, cost=255.0)
    down = Candle(tick=1_700_000_100_000, open=104.0, high=104.0, low=98.0, close=98.5, volume=0.0, cost=0.0)
    data = render.candle_data([up, down], 60_000)
    assert data["x"] == [up.tick + 30_000, down.tick + 30_000] and data["w"] == [42_000.0, 42_000.0]
    assert data["top"] == [104.0, 104.0] and data["bottom"] == [100.0, 98.5]
    assert data["high"] == [105.0, 104.0] and data["low"] == [99.0, 98.0] and data["volume"] == [2.5, 0.0]
    assert data["color"] == [render.UP_COLOR, render.DOWN_COLOR]
    assert render.candle_data([], 60_000) == {k: [] for k in data}
    line = render.candle_status_html([up, down], "60", None)
    assert "<b>1h</b>" in line and "2 candles" in line and "2023-11-14 22:15 UTC" in line
    assert "C <b>98.50</b>" in line and 'data-resolution="60"' in line
    assert "waiting for candles" in render.candle_status_html([], "1D", None)
    assert "1 candle</span>" in render.candle_status_html([up], "1", None)
    assert render.candle_window([], 60_000) is None
    assert render.candle_window([up, down], 60_000) == (down.tick + 60_000 - 30 * 60_000, down.tick + 90_000)


# ---------------------------------------------------------------- the hub and its feeds
async def test_market_dashboard_candles_follow_the_feed_and_the_resolution(hub: Hub) -> None:
    d = MarketDashboard(hub=hub, autostart=False)
    d.refresh()
    feed = hub.feeds[("candles", BTC, "1")]
    assert isinstance(feed, CandleFeed) and feed.refs == 1 and feed._task is not None
    await asyncio.wait_for(asyncio.shield(feed._task), 20)  # started: the history is in
    assert feed.live is not None and feed.status == "live"
    if not feed.live.candles:  # a young exchange may not have traded yet
        await feed.live.updated.wait(10)
    d.refresh()
    assert d.candles.source.data["close"] == [c.close for c in feed.candles]
    assert "<b>1m</b>" in d.candles.status.object
    version = feed.live.version
    await feed.live.updated.wait(10)  # the open candle moves with the next trade
    assert feed.live.version > version
    assert d.refresh() and d.candles.source.data["volume"][-1] == feed.candles[-1].volume
    assert feed.view()[1] is feed.view()[1]  # rendered once for every session
    # the resolution picker: the 5-minute feed replaces the 1-minute one
    d.candles.resolution = "5"
    assert d.resolution == "5" and feed.refs == 0
    five = hub.feeds[("candles", BTC, "5")]
    assert isinstance(five, CandleFeed) and five.refs == 1 and five._task is not None
    await asyncio.wait_for(asyncio.shield(five._task), 20)
    d.refresh()
    assert "<b>5m</b>" in d.candles.status.object
    assert d.candles.source.data["w"][:1] in ([], [0.7 * 300_000])
    d.close()


async def test_hub_lists_every_kind(hub: Hub) -> None:
    insts = hub.instruments.values()
    assert {i.kind for i in insts} >= {"future", "option", "spot"}
    assert any(i.is_perpetual for i in insts)
    assert hub.can_trade and hub.upstream_state == "open"
    exp = hub.expiries("BTC")
    assert exp and exp == sorted(exp, key=lambda c: min(i.expiration_timestamp for i in insts
                                                        if c in i.instrument_name))


async def test_market_feed_is_shared_rendered_once_and_released(hub: Hub) -> None:
    a = hub.market(BTC)
    b = hub.market(BTC)
    assert a is b and a.refs == 2
    await until(lambda: a.live is not None and a.ticker is not None)
    key1, html1 = a.ladder(10)
    key2, html2 = b.ladder(10)
    assert key1 == key2 and html1 is html2  # rendered once for every session
    assert html1.count('class="bid-row"') == 10 and html1.count('class="ask-row"') == 10
    assert 'data-state="live"' in a.state_view()[1]
    assert "mark" in a.ticker_view()[1].lower() and "funding" in a.ticker_view()[1]
    await until(lambda: a.book_version > key1[0])
    assert a.ladder(10)[0] != key1
    a.release()
    b.release()
    channel = f"book.{BTC}.100ms"
    await until(lambda: channel not in hub.broker.channels and ("market", BTC) not in hub.feeds)


async def test_unknown_instrument_shows_an_error(hub: Hub) -> None:
    feed = hub.market("NOPE-PERPETUAL")
    await until(lambda: feed.status == "error")
    assert feed.error
    assert "err" in feed.ladder()[1] and "error" in feed.state_view()[1]
    feed.release()


async def test_option_chain_and_term_structure_feeds(hub: Hub) -> None:
    expiry = hub.expiries("BTC")[-1]
    chain = hub.chain("BTC", expiry)
    term = hub.term("BTC")
    await until(lambda: len(chain.view()[1]["rows"]) > 3 and term.data["iv"], timeout=15)
    view = chain.view()[1]
    row = view["rows"][len(view["rows"]) // 2]
    assert {"call_bid", "call_iv", "call_delta", "put_ask", "put_oi"} <= set(row)
    assert view["underlying"] and 'class="atm"' in view["html"]
    assert view["smile"]["call"]["iv"] and view["smile"]["put"]["iv"]
    assert expiry in term.data["expiry"] and all(v > 0 for v in term.data["iv"])
    chain.release()
    term.release()


async def test_account_feed_follows_orders(hub: Hub, sim: Simulator) -> None:
    feed = hub.account()
    await until(lambda: feed.status == "live")
    client = hub.client_or_raise
    res = await client.buy(BTC, 10, 50_000.0, label="dk-ui-test")
    await until(lambda: res.order.order_id in feed.view()[1]["orders"]["order_id"])
    assert "BTC" in feed.view()[1]["account"]
    await client.cancel_all()
    await until(lambda: not feed.view()[1]["orders"]["order_id"])
    feed.release()


# ---------------------------------------------------------------- dashboards (what a session shows)
async def test_picker_filters_by_kind_currency_and_search(hub: Hub) -> None:
    picker = InstrumentPicker(instrument=BTC)
    picker.set_instruments(hub.instruments.values(), 1)
    assert picker.currency == "BTC" and picker.kind == "perpetual"
    assert set(picker._select.options) == {"BTC-PERPETUAL", "BTC_USDC-PERPETUAL"}
    picker.kind = "option"
    assert all(n.startswith("BTC-") and n[-2:] in ("-C", "-P") for n in picker._select.options)
    assert picker.instrument in picker._select.options  # the first option got picked
    picker.search = "eth perp"
    assert set(picker._select.options) == {"ETH-PERPETUAL", "ETH_USDC-PERPETUAL"}
    picker.search = "sol_usdc"
    assert "SOL_USDC" in picker._select.options  # spot, found across kinds
    picker._select.value = "SOL_USDC"
    assert picker.instrument == "SOL_USDC"


async def test_ten_market_sessions_share_one_feed(hub: Hub) -> None:
    sessions = [MarketDashboard(hub=hub, autostart=False) for _ in range(10)]
    for s in sessions:
        s.refresh()
    feed = hub.feeds[("market", BTC)]
    assert feed.refs == 10
    await until(lambda: all(s.refresh() is not None and "bid-row" in s.ladder.pane.object for s in sessions))
    assert len({id(s.ladder.pane.object) for s in sessions}) == 1  # the same string for everyone
    assert all(s.depth.bids.data["price"] for s in sessions)
    assert all("data-state" in s.book_status.pane.object for s in sessions)
    sessions[0].instrument = "ETH-PERPETUAL"
    assert feed.refs == 9 and hub.feeds[("market", "ETH-PERPETUAL")].refs == 1
    assert "ETH-PERPETUAL" in sessions[0].title.object
    for s in sessions:
        s.close()
    await until(lambda: not hub.feeds)


async def test_option_instrument_shows_iv_and_greeks(hub: Hub) -> None:
    name = next(n for n in hub.instruments if n.startswith("BTC-") and n.endswith("-C"))
    d = MarketDashboard(hub=hub, instrument=name, autostart=False)
    await until(lambda: d.refresh() is not None and "mark IV" in d.stats.pane.object)
    assert "delta" in d.stats.pane.object and "amounts in BTC" in d.title.object
    d.close()


async def test_options_dashboard_picks_an_expiry_and_renders(hub: Hub) -> None:
    d = OptionsDashboard(hub=hub, autostart=False)
    d.refresh()
    assert d.expiry in hub.expiries("BTC")
    await until(lambda: d.refresh() is not None and 'class="atm"' in d.chain.pane.object, timeout=15)
    assert d.smile.sources["call"].data["iv"]
    await until(lambda: d.refresh() is not None and d.term.source.data["iv"], timeout=15)
    d.currency = "ETH"
    d.refresh()
    assert d.expiry in hub.expiries("ETH")
    d.close()


async def test_trading_dashboard_ticket_orders_and_kill_switch(hub: Hub) -> None:
    d = TradingDashboard(hub=hub, autostart=False)
    await until(lambda: d.refresh() is not None and d.ticket.price is not None)  # joins the bid
    t = d.ticket
    assert t._amount.label == "Amount (USD)" and t.amount == 10
    t.amount = 15
    assert not t.check()
    assert "Not sent" in t.status.pane.object and "multiple of contract_size 10" in t.status.pane.object
    t.amount = 20
    t.price = round(t.price * 0.95)
    assert t.check() and t.confirmation.visible and "BUY" in t._summary.object
    await t.send()
    assert "Placed" in t.status.pane.object, t.status.pane.object
    await until(lambda: d.refresh() is not None and len(d.orders.table.value) == 1)
    order_id = d.orders.table.value["order_id"].iloc[0]
    d.orders._on_click(type("E", (), {"row": 0, "column": "modify"})())
    assert d.orders.editor.visible and d.orders.editing == order_id
    d.orders._edit_price.value = float(d.orders.table.value["price"].iloc[0]) - 10
    await d.orders.apply_edit()
    assert "Modified" in d.orders.status.pane.object, d.orders.status.pane.object
    await d.orders.cancel(order_id)
    assert "Cancelled" in d.orders.status.pane.object
    # a bad order the exchange refuses: reduce-only with nothing to reduce
    t.side, t.reduce_only = "sell", True
    t.price = round(t.price * 1.2)
    assert t.check()
    await t.send()
    assert "Rejected by the exchange" in t.status.pane.object, t.status.pane.object
    t.reduce_only = False
    for _ in range(2):
        assert t.check()
        await t.send()
    await until(lambda: d.refresh() is not None and len(d.orders.table.value) == 2)
    await d.kill.fire()
    assert "2 orders cancelled" in d.kill.status.pane.object
    await until(lambda: d.refresh() is not None and len(d.orders.table.value) == 0)
    # a market buy makes a position, shown with its PnL
    t.side, t.order_type = "buy", "market"
    assert t.check()
    await t.send()
    await until(lambda: d.refresh() is not None and BTC in list(d.positions.table.value["instrument"]))
    d.close()


async def test_trading_without_keys_says_so(sim: Simulator) -> None:
    h = Hub(sim.ws_url, linger=0.05)  # no API key
    try:
        await asyncio.wait_for(h.start(), 20)
        d = TradingDashboard(hub=h, autostart=False)
        feed = h.account()
        await until(lambda: feed.status == "no-keys")
        d.refresh()
        assert "no API key" in d.account.pane.object
        assert not d.ticket.check() and "Trading is off" in d.ticket.status.pane.object
        feed.release()
        d.close()
    finally:
        await h.close()


async def test_dashboard_refreshes_itself_outside_a_server(sim: Simulator) -> None:
    """As in a notebook cell: the dashboard's periodic refresh runs on the caller's event loop."""
    from deribit_kit import Deribit

    dk = await Deribit.connect(sim.ws_url, client_id=DEMO_CLIENT_ID, client_secret=DEMO_CLIENT_SECRET)
    hub = Hub.for_client(dk)
    try:
        d = MarketDashboard(hub=hub, refresh_ms=50)
        assert d.__panel__() is not None
        await until(lambda: d.updates >= 3 and "bid-row" in d.ladder.pane.object)
        assert hub.stats["refreshes"] >= 3 and len(hub.sessions) == 1
        d.close()
        assert not hub.sessions
    finally:
        await hub.close()
        assert dk.is_authenticated  # the hub of a caller's client leaves the client open
        await dk.close()
