"""Trading through the client against the embedded exchange over real sockets: unit checks before
sending, typed results over WebSocket and HTTP, rejections as the right exception classes,
idempotent placement across a dropped connection, and the live Portfolio."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import DEMO_KEY

from deribit_kit import (
    ConnectionClosed,
    Deribit,
    InsufficientFundsError,
    OrderNotFoundError,
    OrderRejectedError,
    ValidationError,
)
from deribit_kit.client.placement import PlacedOrder
from deribit_kit.client.rules import check_amount, check_price, round_price
from deribit_kit.live.portfolio import Portfolio
from deribit_kit.models import AccountSummary, Instrument, Order, OrderResult, Position, TickSizeStep, UserTrade
from deribit_kit.sim import Simulator

PERP = "BTC-PERPETUAL"
KEY = DEMO_KEY
WAIT = 5.0


pytestmark = pytest.mark.usefixtures("no_env_credentials")


@pytest.fixture
async def dk_http(sim: Simulator) -> AsyncIterator[Deribit]:
    client = await Deribit.connect(sim.ws_url, transport="http", **KEY)
    yield client
    await client.close()


async def far_bid(dk: Deribit, inst: str = PERP) -> float:
    """A buy price well below the market, on the tick grid (rests, never fills)."""
    t = await dk.ticker(inst)
    assert t.best_bid_price
    return await round_to_tick(dk, inst, t.best_bid_price * 0.8)


async def round_to_tick(dk: Deribit, inst: str, price: float) -> float:
    return round_price(await dk.instrument(inst), price, "down")


def sim_orders(sim: Simulator, label: str) -> list[Any]:
    """The exchange's own record of the demo account's orders with ``label``."""
    st = sim.exchange.state(sim.demo_account)
    return [o for o in st.orders.values() if o.label == label]


def count_calls(monkeypatch: pytest.MonkeyPatch, dk: Deribit) -> list[str]:
    """Record every method the client sends from now on."""
    sent: list[str] = []
    real = dk.call

    async def call(method: str, params: dict[str, Any] | None = None, **kw: Any) -> Any:
        sent.append(method)
        return await real(method, params, **kw)

    monkeypatch.setattr(dk, "call", call)
    return sent


# ---------------------------------------------------------------- pure rules (no exchange)

OPTION = Instrument(instrument_name="BTC-27DEC30-100000-C", kind="option", base_currency="BTC", quote_currency="BTC",
                    settlement_currency="BTC", tick_size=0.0001, min_trade_amount=0.1, contract_size=1.0,
                    creation_timestamp=0, expiration_timestamp=0,
                    tick_size_steps=[TickSizeStep(above_price=0.005, tick_size=0.0005)])
INVERSE = Instrument(instrument_name=PERP, kind="future", base_currency="BTC", quote_currency="USD",
                     settlement_currency="BTC", tick_size=0.5, min_trade_amount=10, contract_size=10,
                     creation_timestamp=0, expiration_timestamp=0, instrument_type="reversed",
                     settlement_period="perpetual")


def test_round_price_honours_tick_size_steps() -> None:
    assert round_price(OPTION, 0.00123) == pytest.approx(0.0012)
    assert round_price(OPTION, 0.00127, "down") == pytest.approx(0.0012)
    assert round_price(OPTION, 0.00121, "up") == pytest.approx(0.0013)
    assert round_price(OPTION, 0.0062) == pytest.approx(0.006)  # the 0.0005 band
    assert round_price(OPTION, 0.0062, "up") == pytest.approx(0.0065)
    assert round_price(OPTION, 0.00499, "up") == pytest.approx(0.005)
    assert round_price(INVERSE, 100000.3) == 100000.5
    assert round_price(INVERSE, 100000.3, "down") == 100000.0
    with pytest.raises(ValidationError, match=r"tick 0.0005 .*tick_size_steps"):
        check_price(OPTION, 0.0062)
    assert check_price(OPTION, 0.0062, strict=False) == pytest.approx(0.006)
    assert check_price(OPTION, 0.0065) == pytest.approx(0.0065)


def test_amount_rules_name_the_unit() -> None:
    assert check_amount(INVERSE, 30) == 30
    assert check_amount(INVERSE, contracts=3) == 30
    with pytest.raises(ValidationError, match=r"below min_trade_amount 10 USD"):
        check_amount(INVERSE, 5)
    with pytest.raises(ValidationError, match=r"multiple of contract_size 10 USD.*inverse perpetual"):
        check_amount(INVERSE, 15)
    with pytest.raises(ValidationError, match=r"disagree"):
        check_amount(INVERSE, 20, contracts=3)
    assert check_amount(OPTION, 0.3) == pytest.approx(0.3)
    with pytest.raises(ValidationError, match=r"below min_trade_amount 0.1 BTC"):
        check_amount(OPTION, 0.05)
    with pytest.raises(ValidationError, match=r"multiple of 0.1 BTC"):
        check_amount(OPTION, 0.15)


# ---------------------------------------------------------------- place / edit / cancel / fill


async def test_place_edit_cancel(dk: Deribit) -> None:
    price = await far_bid(dk)
    res = await dk.buy(PERP, 100, price)
    assert isinstance(res, OrderResult) and isinstance(res.order, Order)
    o = res.order
    assert o.order_state == "open" and o.amount == 100 and o.price == price and o.direction == "buy"
    assert o.label.startswith("dk-") and len(o.label) <= 64 and res.trades == [] and res.reconciled is None
    assert [x.order_id for x in await dk.open_orders(PERP)] == [o.order_id]
    assert o.order_id in {x.order_id for x in await dk.open_orders(currency="BTC", kind="future")}
    assert o.order_id in {x.order_id for x in await dk.open_orders()}

    edited = await dk.edit(o.order_id, 200, price - 10)
    assert edited.order.order_id == o.order_id
    assert edited.order.amount == 200 and edited.order.price == price - 10
    state = await dk.order_state(o.order_id)
    assert state.amount == 200 and state.is_open
    with pytest.raises(ValidationError, match="tick"):
        await dk.edit(o.order_id, 200, price - 10.3)

    cancelled = await dk.cancel(o.order_id)
    assert isinstance(cancelled, Order) and cancelled.order_state == "cancelled"
    assert await dk.open_orders(PERP) == []


async def test_cancel_all_variants(dk: Deribit) -> None:
    price = await far_bid(dk)
    await dk.buy(PERP, 10, price, label="grp")
    await dk.buy(PERP, 10, price, label="grp")
    await dk.buy(PERP, 10, price)
    assert await dk.cancel_all(label="grp") == 2
    await dk.buy(PERP, 10, price)
    assert await dk.cancel_all(instrument=PERP) == 2
    await dk.buy(PERP, 10, price)
    assert await dk.cancel_all(currency="BTC", kind="future") == 1
    await dk.buy(PERP, 10, price)
    assert await dk.cancel_all() == 1
    assert await dk.open_orders() == []


async def test_marketable_limit_fills_and_makes_a_position(dk: Deribit) -> None:
    t = await dk.ticker(PERP)
    assert t.best_ask_price
    price = await round_to_tick(dk, PERP, t.best_ask_price * 1.002)
    res = await dk.buy(PERP, 100, price, label="take-1")
    assert res.order.order_state == "filled" and res.filled_amount == 100
    assert all(isinstance(tr, UserTrade) and tr.label == "take-1" for tr in res.trades)
    trades = await dk.user_trades(PERP)
    assert {tr.trade_id for tr in res.trades} <= {tr.trade_id for tr in trades}
    positions = await dk.positions("BTC", "future")
    pos = next(p for p in positions if p.instrument_name == PERP)
    assert isinstance(pos, Position) and pos.size == 100 and pos.direction == "buy"
    summary = await dk.account_summary("BTC")
    assert isinstance(summary, AccountSummary) and summary.initial_margin > 0

    closed = await dk.close_position(PERP)
    assert closed.order.reduce_only and closed.order.direction == "sell" and closed.filled_amount == 100
    assert all(p.is_flat for p in await dk.positions("BTC") if p.instrument_name == PERP)


async def test_contracts_and_strict_false_rounding(dk: Deribit) -> None:
    price = await far_bid(dk)
    res = await dk.sell(PERP, contracts=3, price=price * 1.5 + 0.3, strict=False)
    assert res.order.amount == 30 and res.order.contracts == 3
    p = res.order.limit_price
    assert p is not None and p % 0.5 == 0 and abs(p - (price * 1.5 + 0.3)) <= 0.25


# ---------------------------------------------------------------- rejections


async def test_unit_errors_are_refused_before_sending(dk: Deribit, monkeypatch: pytest.MonkeyPatch) -> None:
    price = await far_bid(dk)
    await dk.instrument(PERP)  # cached: nothing else needs sending
    sent = count_calls(monkeypatch, dk)
    with pytest.raises(ValidationError, match=r"BTC-PERPETUAL: price .* not a multiple of the tick 0.5"):
        await dk.buy(PERP, 100, price + 0.2)
    with pytest.raises(ValidationError, match="below min_trade_amount 10 USD"):
        await dk.buy(PERP, 5, price)
    with pytest.raises(ValidationError, match="not a multiple of contract_size 10 USD"):
        await dk.buy(PERP, 25, price)
    with pytest.raises(ValidationError, match="at most 64"):
        await dk.buy(PERP, 10, price, label="x" * 65)
    with pytest.raises(ValidationError, match="needs a price"):
        await dk.buy(PERP, 10)
    assert sent == []
    res = await dk.buy(PERP, 100, price + 0.2, strict=False)
    assert res.order.price == price  # nearest tick
    assert sent == ["private/buy"]


async def test_linear_and_option_amounts(dk: Deribit) -> None:
    opts = await dk.instruments("BTC", "option")
    opt = opts[0]
    with pytest.raises(ValidationError, match=r"below min_trade_amount .* BTC \(option"):
        await dk.buy(opt.instrument_name, opt.min_trade_amount / 2, opt.tick_size)
    lin = await dk.instrument("BTC_USDC-PERPETUAL")
    assert lin.is_linear
    with pytest.raises(ValidationError, match=r"multiple of .* BTC"):
        await dk.buy(lin.instrument_name, lin.min_trade_amount * 1.5, 1000.0)


async def test_not_enough_funds(dk: Deribit, sim: Simulator) -> None:
    sim.fund(sim.demo_account, "BTC", -sim.exchange.state(sim.demo_account).balances["BTC"])
    with pytest.raises(InsufficientFundsError) as info:
        await dk.buy(PERP, 100_000, await far_bid(dk))
    assert info.value.code == 10009


async def test_reduce_only_that_would_increase_is_rejected(dk: Deribit) -> None:
    price = await far_bid(dk)
    with pytest.raises(OrderRejectedError) as info:
        await dk.buy(PERP, 10, price, reduce_only=True)
    assert not isinstance(info.value, InsufficientFundsError)
    assert await dk.open_orders(PERP) == []


async def test_post_only_crossing_rejected(dk: Deribit) -> None:
    t = await dk.ticker(PERP)
    assert t.best_ask_price
    price = await round_to_tick(dk, PERP, t.best_ask_price * 1.002)
    with pytest.raises(OrderRejectedError) as info:
        await dk.buy(PERP, 10, price, post_only=True, reject_post_only=True)
    assert info.value.code == 11054
    res = await dk.buy(PERP, 10, price, post_only=True)  # repriced to rest instead
    assert res.order.order_state == "open" and res.trades == []


async def test_unknown_order(dk: Deribit) -> None:
    with pytest.raises(OrderNotFoundError):
        await dk.cancel("123456789")
    with pytest.raises(OrderNotFoundError):
        await dk.order_state("123456789")
    with pytest.raises(OrderNotFoundError):
        await dk.edit("123456789", 10, 100.0, instrument=PERP)


# ---------------------------------------------------------------- WS and HTTP agree


async def test_ws_and_http_give_equal_typed_results(dk: Deribit, dk_http: Deribit) -> None:
    price = await far_bid(dk)
    a = await dk.buy(PERP, 50, price, label="ws-1")
    b = await dk_http.buy(PERP, 50, price, label="http-1")
    assert type(a) is type(b) is PlacedOrder
    volatile = {"order_id", "label", "creation_timestamp", "last_update_timestamp"}
    da = {k: v for k, v in a.order.to_dict().items() if k not in volatile}
    db = {k: v for k, v in b.order.to_dict().items() if k not in volatile}
    assert da == db
    ws_open = await dk.open_orders(PERP)
    http_open = await dk_http.open_orders(PERP)
    assert ws_open == http_open and {o.label for o in ws_open} == {"ws-1", "http-1"}
    assert await dk.order_state(b.order.order_id) == await dk_http.order_state(b.order.order_id)
    assert type(await dk_http.positions()) is type(await dk.positions())
    sa, sb = await dk.account_summary("BTC"), await dk_http.account_summary("BTC")
    assert type(sa) is type(sb) is AccountSummary and sa.balance == sb.balance
    assert await dk_http.cancel_all(label="ws-1") == 1
    assert (await dk.cancel(b.order.order_id)).order_state == "cancelled"


# ---------------------------------------------------------------- idempotent placement


async def test_disconnect_during_buy_returns_the_placed_order(dk: Deribit, sim: Simulator,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    price = await far_bid(dk)
    label = "dk-drop-test"
    accepted: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_order(channel: str, data: Any) -> None:
        if channel == "user.orders.any.any.raw" and data.get("label") == label and not accepted.done():
            accepted.set_result(None)

    sub = dk.subscribe("user.orders.any.any.raw")
    await sub.start()
    dk.notification += on_order
    sim.faults.set_latency(0.3)  # the exchange takes the order at once but answers 0.3 s later
    task = asyncio.create_task(dk.buy(PERP, 100, price, label=label))
    with caplog.at_level(logging.WARNING, logger="deribit_kit.orders"):
        await asyncio.wait_for(accepted, WAIT)  # the order exists; its answer is still on the way
        assert not task.done()
        assert sim.faults.drop_connections() >= 1
        sim.faults.set_latency(0.0)
        res = await asyncio.wait_for(task, WAIT)
    assert res.reconciled == "found"
    assert res.order.label == label and res.order.order_state == "open" and res.order.amount == 100
    assert [o.order_id for o in sim_orders(sim, label)] == [res.order.order_id]
    assert [o.order_id for o in await dk.open_orders(PERP)] == [res.order.order_id]
    assert "reconciled" in caplog.text and res.order.order_id in caplog.text


async def test_orders_in_flight_when_a_10028_ends_the_session(no_env_credentials: None) -> None:
    """Another connection of the key has spent the exchange's matching-engine credits, so the
    client's model is wrong: of five orders sent together, two are placed, the third meets 10028
    and the exchange ends the session, the last two are never answered. Every order ends up placed
    exactly once: the refused one is sent again after the restore, the unanswered ones are
    reconciled by label."""
    async with Simulator(seed=1, tick_interval=0.05) as sim:
        dk = await Deribit.connect(sim.ws_url, **KEY, backoff_initial=0.02, backoff_max=0.2)
        try:
            price = await far_bid(dk)
            await dk.instrument(PERP)  # cached: the orders go out back to back
            sim.demo_account.pools.matching.level = 2.0
            reconnected = asyncio.ensure_future(dk.reconnected.wait(WAIT))
            labels = [f"dk-10028-{i}" for i in range(5)]
            results = await asyncio.wait_for(
                asyncio.gather(*(dk.buy(PERP, 10, price, label=lb) for lb in labels)), 3 * WAIT)
            await reconnected
            assert sim.stats["rate_limit_session_ends"] == 1
            for label, res in zip(labels, results, strict=True):
                assert [o.order_id for o in sim_orders(sim, label)] == [res.order.order_id], label
            assert [r.reconciled for r in results].count("resent") == 2  # the two never answered
        finally:
            await dk.close()


async def test_lost_request_is_sent_again_once(dk: Deribit, sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    price = await far_bid(dk)
    real = dk.call
    sent: list[str] = []

    async def lossy(method: str, params: dict[str, Any] | None = None, **kw: Any) -> Any:
        sent.append(method)
        if method == "private/buy" and sent.count(method) == 1:
            raise ConnectionClosed("dropped before the exchange saw it", method=method)
        return await real(method, params, **kw)

    monkeypatch.setattr(dk, "call", lossy)
    res = await dk.buy(PERP, 10, price, label="dk-lost")
    assert res.reconciled == "resent" and res.order.order_state == "open"
    assert sent.count("private/buy") == 2
    assert [o.order_id for o in sim_orders(sim, "dk-lost")] == [res.order.order_id]


async def test_filled_order_found_after_drop_carries_its_trades(dk: Deribit, sim: Simulator,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    t = await dk.ticker(PERP)
    assert t.best_ask_price
    price = await round_to_tick(dk, PERP, t.best_ask_price * 1.002)
    real = dk.call

    async def answer_lost(method: str, params: dict[str, Any] | None = None, **kw: Any) -> Any:
        result = await real(method, params, **kw)
        if method == "private/buy":
            raise ConnectionClosed("dropped before the answer", method=method)
        return result

    monkeypatch.setattr(dk, "call", answer_lost)
    res = await dk.buy(PERP, 20, price, label="dk-filled")
    assert res.reconciled == "found" and res.order.order_state == "filled" and res.filled_amount == 20
    assert len(sim_orders(sim, "dk-filled")) == 1


# ---------------------------------------------------------------- Portfolio


async def test_portfolio_updates_on_fill_and_resyncs(dk: Deribit, sim: Simulator) -> None:
    pf = await dk.portfolio()
    assert isinstance(pf, Portfolio) and await dk.portfolio() is pf
    assert {"BTC", "ETH", "USDC"} <= set(pf.balances)
    assert {"user.orders.any.any.raw", "user.trades.any.any.raw", "user.portfolio.btc"} <= set(dk.channels)

    rest_price = await far_bid(dk)
    resting = await dk.buy(PERP, 10, rest_price)
    await pf.wait_for(lambda p: resting.order.order_id in p.orders, WAIT)
    assert pf.orders_frame()["order_id"].tolist() == [resting.order.order_id]

    balance = asyncio.ensure_future(pf.balance_updated.wait(WAIT))
    t = await dk.ticker(PERP)
    assert t.best_ask_price
    await dk.buy(PERP, 100, await round_to_tick(dk, PERP, t.best_ask_price * 1.002))
    await pf.wait_for(lambda p: PERP in p.positions and p.positions[PERP].size == 100, WAIT)
    assert isinstance(await balance, AccountSummary)
    assert pf.positions_frame().set_index("instrument_name").loc[PERP, "size"] == 100
    assert "BTC" in pf.balances_frame()["currency"].tolist()
    html = pf._repr_html_()
    assert PERP in html and "Balances" in html

    await dk.cancel(resting.order.order_id)
    await pf.wait_for(lambda p: not p.orders, WAIT)

    # a reconnect reloads orders, positions and balances from REST
    resynced = asyncio.ensure_future(pf.resynced.wait(WAIT))
    sim.faults.drop_connections()
    await asyncio.wait_for(resynced, WAIT)
    assert PERP in pf.positions and pf.resyncs >= 2
    await pf.close()
