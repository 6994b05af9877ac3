"""Trading on the embedded exchange over real sockets: orders of every type and time in force,
matching against market makers and other accounts, edits and priority, rejections with Deribit's
codes, positions / PnL / account summary arithmetic (inverse perpetual, linear perpetual, option),
private channels delivered to the right account only, cancel on disconnect, HTTP private calls.

The market clock is driven by hand (``autostep=False``, ``sim.step()``), so nothing moves between
two calls of a test and stop triggers fire deterministically.
"""

from __future__ import annotations

import asyncio
import math
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from conftest import RawPeer, connect_peer

from deribit_kit.sim import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, Simulator
from deribit_kit.sim.exchange.market import ASK, BID, SimInstrument, round_to
from deribit_kit.wire.auth import http_signature_header

PERP = "BTC-PERPETUAL"
LINEAR = "BTC_USDC-PERPETUAL"
OTHER_ID, OTHER_SECRET = "other", "other-secret"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    """The embedded exchange with a hand-driven clock (overrides conftest's ticking one)."""
    async with Simulator(seed=11, autostep=False, rate_limits=False, min_heartbeat_interval=1) as s:
        s.accounts.create(OTHER_ID, OTHER_SECRET, name="other")
        yield s


# ---------------------------------------------------------------- helpers


async def login(p: RawPeer, client_id: str = DEMO_CLIENT_ID, secret: str = DEMO_CLIENT_SECRET) -> str:
    res = await p.result("public/auth", {"grant_type": "client_credentials", "client_id": client_id,
                                         "client_secret": secret})
    token: str = res["access_token"]
    return token


async def error(p: RawPeer, method: str, params: dict[str, Any]) -> dict[str, Any]:
    reply = await p.call(method, params)
    assert "error" in reply, reply
    err: dict[str, Any] = reply["error"]
    return err


async def drained(p: RawPeer) -> list[dict[str, Any]]:
    """Every notification sent to ``p`` so far (replies come in order, so a round trip is a barrier)."""
    await p.barrier()
    return p.drain()


def inst(sim: Simulator, name: str) -> SimInstrument:
    i = sim.market.get(name)
    assert i is not None
    return i


def best(sim: Simulator, name: str) -> tuple[float, float]:
    book = inst(sim, name).book
    bid, ask = book.best(BID), book.best(ASK)
    assert bid is not None and ask is not None
    return bid, ask


def inside_spread(sim: Simulator, name: str) -> float:
    """A price strictly between the best bid and ask (one tick above the bid)."""
    i = inst(sim, name)
    bid, ask = best(sim, name)
    price = round_to(bid + i.tick, i.tick)
    assert price < ask, "this seed's book has a one-tick spread"
    return price


def far_below(sim: Simulator, name: str, factor: float = 0.97) -> float:
    i = inst(sim, name)
    return round_to(i.mark_price * factor, i.tick)


def liquid_option(sim: Simulator, skip: str = "") -> SimInstrument:
    for i in sorted(sim.market.instruments.values(), key=lambda x: x.name):
        if (i.kind == "option" and i.coin == "BTC" and i.name != skip and i.book.best(ASK) and i.book.best(BID)
                and 0.01 < i.mark_price < 0.08 and i.expiry_ms - sim.now_ms() > 2 * 86_400_000):
            return i
    raise AssertionError("no liquid BTC option")


async def buy(p: RawPeer, **params: Any) -> dict[str, Any]:
    res: dict[str, Any] = await p.result("private/buy", params)
    return res


async def sell(p: RawPeer, **params: Any) -> dict[str, Any]:
    res: dict[str, Any] = await p.result("private/sell", params)
    return res


def approx(x: float, rel: float = 1e-9, abs_: float = 1e-9) -> Any:
    return pytest.approx(x, rel=rel, abs=abs_)


# ---------------------------------------------------------------- orders and the book


async def test_limit_order_rests_in_the_public_book_then_cancels(sim: Simulator, peer: RawPeer) -> None:
    watcher = await connect_peer(sim.ws_url)  # unauthenticated: sees the public book only
    try:
        await login(peer)
        await watcher.result("public/subscribe", {"channels": [f"book.{PERP}.100ms"]})
        snapshot = await watcher.next_notification(f"book.{PERP}.100ms")
        assert snapshot["data"]["type"] == "snapshot"
        price = far_below(sim, PERP)
        res = await buy(peer, instrument_name=PERP, amount=50, type="limit", price=price, label="rest-1")
        order = res["order"]
        assert res["trades"] == []
        assert order["order_state"] == "open" and order["price"] == price and order["amount"] == 50
        assert order["filled_amount"] == 0 and order["label"] == "rest-1" and order["contracts"] == 5
        assert order["direction"] == "buy" and order["order_type"] == "limit" and order["api"] is True
        for legacy in ("commission", "profit_loss", "max_show"):
            assert legacy in order
        change = (await watcher.next_notification(f"book.{PERP}.100ms"))["data"]
        assert change["prev_change_id"] == snapshot["data"]["change_id"]
        assert ["new", price, 50.0] in change["bids"]
        book = await watcher.result("public/get_order_book", {"instrument_name": PERP})
        assert [price, 50.0] in book["bids"]
        assert book["change_id"] == change["change_id"]

        cancelled = await peer.result("private/cancel", {"order_id": order["order_id"]})
        assert cancelled["order_state"] == "cancelled" and cancelled["cancel_reason"] == "user_request"
        change = (await watcher.next_notification(f"book.{PERP}.100ms"))["data"]
        assert ["delete", price, 0.0] in change["bids"]
        book = await watcher.result("public/get_order_book", {"instrument_name": PERP})
        assert all(level[0] != price for level in book["bids"])
        assert await peer.result("private/get_open_orders_by_instrument", {"instrument_name": PERP}) == []
    finally:
        await watcher.close()


async def test_second_account_trades_against_resting_order(sim: Simulator, peer: RawPeer) -> None:
    other = await connect_peer(sim.ws_url)
    try:
        await login(peer)
        await login(other, OTHER_ID, OTHER_SECRET)
        await other.result("private/subscribe", {"channels": [f"trades.{PERP}.raw"]})
        await peer.result("private/subscribe", {"channels": ["user.trades.any.any.raw"]})
        price = inside_spread(sim, PERP)
        maker = (await sell(peer, instrument_name=PERP, amount=50, type="limit", price=price))["order"]
        book = await other.result("public/get_order_book", {"instrument_name": PERP, "depth": 5})
        assert book["asks"][0] == [price, 50.0]  # the demo account's order is the best ask

        res = await buy(other, instrument_name=PERP, amount=50, type="limit", price=price)
        assert res["order"]["order_state"] == "filled" and res["order"]["average_price"] == price
        [taker_trade] = res["trades"]
        assert taker_trade["liquidity"] == "T" and taker_trade["price"] == price and taker_trade["amount"] == 50

        public = (await other.next_notification(f"trades.{PERP}.raw"))["data"]
        assert public[0]["trade_id"] == taker_trade["trade_id"] and public[0]["direction"] == "buy"
        [made] = (await peer.next_notification("user.trades.any.any.raw"))["data"]  # the maker hears of it
        assert made["trade_id"] == taker_trade["trade_id"] and made["liquidity"] == "M" and made["state"] == "filled"

        state = await peer.result("private/get_order_state", {"order_id": maker["order_id"]})
        assert state["order_state"] == "filled" and state["filled_amount"] == 50
        [maker_trade] = await peer.result("private/get_user_trades_by_order", {"order_id": maker["order_id"]})
        assert maker_trade["liquidity"] == "M" and maker_trade["trade_id"] == taker_trade["trade_id"]
        assert maker_trade["direction"] == "sell"

        mine = await peer.result("private/get_position", {"instrument_name": PERP})
        theirs = await other.result("private/get_position", {"instrument_name": PERP})
        assert mine["size"] == -50 and mine["direction"] == "sell"
        assert theirs["size"] == 50 and theirs["direction"] == "buy"
        assert mine["size"] + theirs["size"] == 0
        assert mine["average_price"] == theirs["average_price"] == price
    finally:
        await other.close()


async def test_market_makers_fill_before_users_at_the_same_price(sim: Simulator, peer: RawPeer) -> None:
    other = await connect_peer(sim.ws_url)
    try:
        await login(peer)
        await login(other, OTHER_ID, OTHER_SECRET)
        i = inst(sim, PERP)
        _, ask = best(sim, PERP)
        mm = i.book.mm[ASK][ask]
        await sell(peer, instrument_name=PERP, amount=20, type="limit", price=ask)
        res = await buy(other, instrument_name=PERP, amount=mm + 10, type="limit", price=ask)
        liquidity = [(t["amount"], t["price"]) for t in res["trades"]]
        assert liquidity == [(mm, ask), (10.0, ask)]  # market maker's quote first, then the user's order
        [made] = (await peer.result("private/get_user_trades_by_instrument", {"instrument_name": PERP}))["trades"]
        assert made["amount"] == 10 and made["liquidity"] == "M"
        assert (await peer.result("private/get_position", {"instrument_name": PERP}))["size"] == -10
    finally:
        await other.close()


async def test_self_trade_is_rejected(sim: Simulator, peer: RawPeer) -> None:
    await login(peer)
    price = inside_spread(sim, PERP)
    await sell(peer, instrument_name=PERP, amount=20, type="limit", price=price)
    err = await error(peer, "private/buy", {"instrument_name": PERP, "amount": 20, "type": "limit", "price": price})
    assert err["code"] == 10003 and err["message"] == "order_overlap"


async def test_market_orders_and_time_in_force(sim: Simulator, peer: RawPeer) -> None:
    await login(peer)
    i = inst(sim, PERP)
    bid, ask = best(sim, PERP)
    top = i.book.levels[ASK][ask]

    res = await buy(peer, instrument_name=PERP, amount=10, type="market")
    assert res["order"]["price"] == "market_price" and res["order"]["order_state"] == "filled"
    assert res["trades"][0]["order_type"] == "market" and res["trades"][0]["price"] == ask

    # immediate_or_cancel: fills what the best level has, cancels the rest
    _, ask = best(sim, PERP)
    top = i.book.levels[ASK][ask]
    res = await buy(peer, instrument_name=PERP, amount=top + 100, type="limit", price=ask,
                    time_in_force="immediate_or_cancel")
    assert res["order"]["order_state"] == "cancelled" and res["order"]["filled_amount"] == top
    assert sum(t["amount"] for t in res["trades"]) == top

    # fill_or_kill that cannot fill completely: nothing happens
    _, ask = best(sim, PERP)
    top = i.book.levels[ASK][ask]
    res = await buy(peer, instrument_name=PERP, amount=top + 100, type="limit", price=ask,
                    time_in_force="fill_or_kill")
    assert res["order"]["order_state"] == "cancelled" and res["order"]["filled_amount"] == 0 and res["trades"] == []
    assert i.book.levels[ASK][ask] == top
    # ... and one that can fills
    res = await buy(peer, instrument_name=PERP, amount=top, type="limit", price=ask, time_in_force="fill_or_kill")
    assert res["order"]["order_state"] == "filled"

    # market_limit: takes the best price, rests the rest there
    bid, _ = best(sim, PERP)
    top = i.book.levels[BID][bid]
    res = await sell(peer, instrument_name=PERP, amount=top + 30, type="market_limit")
    assert res["order"]["order_state"] == "open" and res["order"]["price"] == bid
    assert res["order"]["filled_amount"] == top and res["order"]["original_order_type"] == "market_limit"
    assert i.book.user[ASK][bid] == 30


async def test_partial_fill_then_rest(sim: Simulator, peer: RawPeer) -> None:
    await login(peer)
    i = inst(sim, PERP)
    _, ask = best(sim, PERP)
    top = i.book.levels[ASK][ask]
    res = await buy(peer, instrument_name=PERP, amount=top + 40, type="limit", price=ask)
    order = res["order"]
    assert order["order_state"] == "open" and order["filled_amount"] == top and order["amount"] == top + 40
    assert i.book.user[BID][ask] == 40 and best(sim, PERP)[0] == ask
    [open_order] = await peer.result("private/get_open_orders", {})
    assert open_order["order_id"] == order["order_id"]


async def test_post_only_reprices_or_rejects(sim: Simulator, peer: RawPeer) -> None:
    await login(peer)
    i = inst(sim, PERP)
    bid, ask = best(sim, PERP)
    res = await buy(peer, instrument_name=PERP, amount=10, type="limit", price=ask, post_only=True)
    assert res["trades"] == [] and res["order"]["order_state"] == "open"
    assert res["order"]["price"] == round_to(ask - i.tick, i.tick)
    assert res["order"]["post_only"] is True and res["order"]["reject_post_only"] is False
    err = await error(peer, "private/sell", {"instrument_name": PERP, "amount": 10, "type": "limit", "price": bid,
                                             "post_only": True, "reject_post_only": True})
    assert err["code"] == 11054 and err["message"] == "post_only_reject"


async def test_edit_keeps_priority_only_when_the_amount_shrinks(sim: Simulator, peer: RawPeer) -> None:
    other = await connect_peer(sim.ws_url)
    try:
        await login(peer)
        await login(other, OTHER_ID, OTHER_SECRET)
        price = inside_spread(sim, PERP)
        first = (await buy(peer, instrument_name=PERP, amount=50, type="limit", price=price))["order"]
        second = (await buy(peer, instrument_name=PERP, amount=50, type="limit", price=price))["order"]
        edited = (await peer.result("private/edit", {"order_id": first["order_id"], "amount": 30,
                                                     "price": price}))["order"]
        assert edited["amount"] == 30 and edited["replaced"] is True
        res = await sell(other, instrument_name=PERP, amount=30, type="limit", price=price)
        assert [t["amount"] for t in res["trades"]] == [30]
        state = await peer.result("private/get_order_state", {"order_id": first["order_id"]})
        assert state["order_state"] == "filled"  # kept its place ahead of ``second``

        third = (await buy(peer, instrument_name=PERP, amount=50, type="limit", price=price))["order"]
        await peer.result("private/edit", {"order_id": second["order_id"], "amount": 60, "price": price})
        await sell(other, instrument_name=PERP, amount=50, type="limit", price=price)
        state = await peer.result("private/get_order_state", {"order_id": third["order_id"]})
        assert state["order_state"] == "filled"
        state = await peer.result("private/get_order_state", {"order_id": second["order_id"]})
        assert state["order_state"] == "open" and state["filled_amount"] == 0  # lost its place by growing

        # a new price moves it in the book
        lower = far_below(sim, PERP)
        res = await peer.result("private/edit", {"order_id": second["order_id"], "amount": 60, "price": lower})
        assert res["order"]["price"] == lower and res["trades"] == []
        assert inst(sim, PERP).book.user[BID].get(price) is None
        assert inst(sim, PERP).book.user[BID][lower] == 60
        # edit by label
        await buy(peer, instrument_name=PERP, amount=10, type="limit", price=lower, label="lbl")
        res = await peer.result("private/edit_by_label", {"label": "lbl", "instrument_name": PERP, "amount": 20,
                                                          "price": lower})
        assert res["order"]["amount"] == 20 and res["order"]["label"] == "lbl"
        await buy(peer, instrument_name=PERP, amount=10, type="limit", price=lower, label="lbl")
        err = await error(peer, "private/edit_by_label", {"label": "lbl", "instrument_name": PERP, "amount": 30,
                                                          "price": lower})
        assert err["code"] == 13032
        # an edit that crosses trades at once
        _, ask = best(sim, PERP)
        res = await peer.result("private/edit", {"order_id": second["order_id"], "amount": 10, "price": ask})
        assert res["order"]["order_state"] == "filled" and res["trades"][0]["price"] == ask
        err = await error(peer, "private/edit", {"order_id": second["order_id"], "amount": 20, "price": ask})
        assert err["code"] == 11044
    finally:
        await other.close()


async def test_cancel_variants_and_queries(sim: Simulator, peer: RawPeer) -> None:
    await login(peer)
    p_perp = far_below(sim, PERP)
    eth = inst(sim, "ETH-PERPETUAL")
    p_eth = round_to(eth.mark_price * 0.97, eth.tick)
    opt = liquid_option(sim)
    for _ in range(2):
        await buy(peer, instrument_name=PERP, amount=10, type="limit", price=p_perp, label="a")
    await buy(peer, instrument_name="ETH-PERPETUAL", amount=1, type="limit", price=p_eth, label="a")
    await buy(peer, instrument_name=opt.name, amount=0.1, type="limit", price=0.0001, label="b")
    stop = (await sell(peer, instrument_name=PERP, amount=10, type="stop_market", trigger="last_price",
                       trigger_price=p_perp))["order"]
    assert stop["order_state"] == "untriggered" and stop["price"] == "market_price"

    assert len(await peer.result("private/get_open_orders", {})) == 5
    assert len(await peer.result("private/get_open_orders", {"kind": "option"})) == 1
    assert len(await peer.result("private/get_open_orders", {"type": "trigger_all"})) == 1
    assert len(await peer.result("private/get_open_orders_by_currency", {"currency": "BTC"})) == 4
    assert len(await peer.result("private/get_open_orders_by_currency", {"currency": "BTC", "type": "limit"})) == 3
    assert len(await peer.result("private/get_open_orders_by_label", {"currency": "BTC", "label": "a"})) == 2
    assert len(await peer.result("private/get_order_state_by_label", {"currency": "ETH", "label": "a"})) == 1

    assert await peer.result("private/cancel_all_by_instrument", {"instrument_name": PERP, "type": "stop"}) == 1
    assert await peer.result("private/cancel_by_label", {"label": "a", "currency": "ETH"}) == 1
    assert await peer.result("private/cancel_all_by_kind_or_type", {"currency": ["BTC"], "kind": "option"}) == 1
    assert await peer.result("private/cancel_all_by_currency", {"currency": "BTC", "kind": "future"}) == 2
    assert await peer.result("private/get_open_orders", {}) == []
    await buy(peer, instrument_name=PERP, amount=10, type="limit", price=p_perp)
    detailed = await peer.result("private/cancel_all", {"detailed": True})
    assert detailed[0]["order"]["order_state"] == "cancelled"
    assert await peer.result("private/cancel_all", {}) == 0

    history = await peer.result("private/get_order_history_by_instrument", {"instrument_name": PERP})
    assert history == []  # nothing filled
    history = await peer.result("private/get_order_history_by_instrument", {"instrument_name": PERP,
                                                                            "include_unfilled": True})
    assert len(history) == 4 and history[0]["creation_timestamp"] >= history[-1]["creation_timestamp"]
    await buy(peer, instrument_name=PERP, amount=10, type="market")
    history = await peer.result("private/get_order_history_by_currency", {"currency": "BTC"})
    assert [o["order_state"] for o in history] == ["filled"]
    page = await peer.result("private/get_user_trades_by_currency", {"currency": "BTC", "count": 5})
    assert len(page["trades"]) == 1 and page["has_more"] is False


async def test_stop_orders_trigger_on_the_market_step(sim: Simulator, peer: RawPeer) -> None:
    await login(peer)
    i = inst(sim, PERP)
    mark = i.mark_price
    armed = (await buy(peer, instrument_name=PERP, amount=10, type="stop_market", trigger="mark_price",
                       trigger_price=round_to(mark * 0.9, i.tick)))["order"]  # mark is already above it
    far = (await buy(peer, instrument_name=PERP, amount=10, type="stop_market", trigger="mark_price",
                     trigger_price=round_to(mark * 1.5, i.tick)))["order"]
    limit = far_below(sim, PERP)
    stop_limit = (await buy(peer, instrument_name=PERP, amount=20, type="stop_limit", price=limit,
                            trigger="index_price", trigger_price=round_to(mark * 0.9, i.tick)))["order"]
    take = (await sell(peer, instrument_name=PERP, amount=10, type="take_limit", price=round_to(mark * 1.03, i.tick),
                       trigger="mark_price", trigger_price=round_to(mark * 0.9, i.tick)))["order"]
    for o in (armed, far, stop_limit, take):
        assert o["order_state"] == "untriggered" and o["triggered"] is False
    assert (await peer.result("private/get_order_state", {"order_id": armed["order_id"]}))["order_state"] == \
        "untriggered"  # nothing happens between ticks

    sim.step()
    fired = await peer.result("private/get_order_state", {"order_id": armed["order_id"]})
    assert fired["order_state"] == "filled" and fired["triggered"] is True and fired["filled_amount"] == 10
    assert (await peer.result("private/get_order_state", {"order_id": far["order_id"]}))["order_state"] == \
        "untriggered"
    resting = await peer.result("private/get_order_state", {"order_id": stop_limit["order_id"]})
    assert resting["order_state"] == "open" and resting["triggered"] is True and resting["price"] == limit
    assert inst(sim, PERP).book.user[BID][limit] == 20
    taken = await peer.result("private/get_order_state", {"order_id": take["order_id"]})
    assert taken["order_state"] == "open" and taken["triggered"] is True
    assert (await peer.result("private/get_position", {"instrument_name": PERP}))["size"] == 10


async def test_trailing_stop_follows_the_price(sim: Simulator, peer: RawPeer) -> None:
    await login(peer)
    await buy(peer, instrument_name=PERP, amount=10, type="market")
    order = (await sell(peer, instrument_name=PERP, amount=10, type="trailing_stop", trigger="index_price",
                        trigger_offset=1e9, reduce_only=True))["order"]
    assert order["order_type"] == "trailing_stop" and order["trigger_offset"] == 1e9
    for _ in range(20):
        sim.step()
    state = await peer.result("private/get_order_state", {"order_id": order["order_id"]})
    assert state["order_state"] == "untriggered"
    assert state["trigger_reference_price"] >= order["trigger_reference_price"]  # the peak only rises
    assert state["trigger_price"] == approx(state["trigger_reference_price"] - 1e9, abs_=1e-3)


async def test_resting_order_fills_when_the_market_crosses_it(sim: Simulator, peer: RawPeer) -> None:
    await login(peer)
    price = inside_spread(sim, PERP)
    order = (await buy(peer, instrument_name=PERP, amount=10, type="limit", price=price))["order"]
    for _ in range(5000):
        sim.step()
        state = await peer.result("private/get_order_state", {"order_id": order["order_id"]})
        if state["order_state"] == "filled":
            break
    else:
        pytest.fail("the market never crossed the order")
    [trade] = await peer.result("private/get_user_trades_by_order", {"order_id": order["order_id"]})
    assert trade["liquidity"] == "M" and trade["price"] == price  # the maker's price


async def test_good_til_day_expires_at_the_0800_rollover() -> None:
    now = [1_767_258_000.0]  # 2026-01-01 09:00 UTC
    async with Simulator(seed=5, autostep=False, rate_limits=False, clock=lambda: now[0],
                         token_ttl=30 * 86_400) as sim:
        p = await connect_peer(sim.ws_url)
        try:
            await login(p)
            order = (await buy(p, instrument_name=PERP, amount=10, type="limit", price=far_below(sim, PERP),
                               time_in_force="good_til_day"))["order"]
            now[0] += 22 * 3600  # 07:00 next day
            sim.step()
            assert (await p.result("private/get_order_state", {"order_id": order["order_id"]}))["order_state"] == "open"
            now[0] += 2 * 3600  # 09:00
            sim.step()
            state = await p.result("private/get_order_state", {"order_id": order["order_id"]})
            assert state["order_state"] == "cancelled"
        finally:
            await p.close()


async def test_expiry_settles_option_positions() -> None:
    now = [1_767_258_000.0]
    async with Simulator(seed=5, autostep=False, rate_limits=False, clock=lambda: now[0],
                         token_ttl=30 * 86_400) as sim:
        p = await connect_peer(sim.ws_url)
        try:
            await login(p)
            soonest = min(i.expiry_ms for i in sim.market.instruments.values() if i.kind == "option")
            opt = next(i for i in sorted(sim.market.instruments.values(), key=lambda x: x.name)
                       if i.kind == "option" and i.expiry_ms == soonest and i.call and i.book.best(ASK)
                       and i.mark_price > 0.005)
            await buy(p, instrument_name=opt.name, amount=0.1, type="market")
            balance = (await p.result("private/get_account_summary", {"currency": "BTC"}))["balance"]
            now[0] = soonest / 1000 + 1
            sim.step()
            assert opt.delivery_price is not None
            payoff = max(0.0, opt.delivery_price - opt.strike) / opt.delivery_price
            after = await p.result("private/get_account_summary", {"currency": "BTC"})
            assert after["balance"] == approx(balance + 0.1 * payoff)
            assert all(x["instrument_name"] != opt.name for x in await p.result("private/get_positions", {}))
        finally:
            await p.close()


# ---------------------------------------------------------------- positions and PnL


async def test_inverse_perpetual_pnl_arithmetic(sim: Simulator, peer: RawPeer) -> None:
    await login(peer)
    taker = float(inst(sim, PERP).info["taker_commission"])
    res = await buy(peer, instrument_name=PERP, amount=200, type="market")
    fills = [(t["amount"], t["price"]) for t in res["trades"]]
    assert sum(q for q, _ in fills) == 200
    avg = 200 / sum(q / p for q, p in fills)  # USD-weighted harmonic mean
    fees = sum(taker * q / p for q, p in fills)
    assert sum(t["fee"] for t in res["trades"]) == approx(fees)
    assert all(t["fee_currency"] == "BTC" for t in res["trades"])

    for _ in range(10):
        sim.step()
    pos = await peer.result("private/get_position", {"instrument_name": PERP})
    mark = pos["mark_price"]
    assert mark == inst(sim, PERP).mark_price
    assert pos["size"] == 200 and pos["average_price"] == approx(avg, abs_=1e-6)
    assert pos["floating_profit_loss"] == approx(200 * (1 / avg - 1 / mark), abs_=1e-9)
    assert pos["size_currency"] == approx(200 / mark, abs_=1e-9)
    assert pos["delta"] == approx(200 / mark, abs_=1e-8)
    assert pos["initial_margin"] == approx(200 / mark / 50, abs_=1e-9) and pos["leverage"] == 50
    assert pos["maintenance_margin"] == approx(pos["initial_margin"] / 2, abs_=1e-9)
    summary = await peer.result("private/get_account_summary", {"currency": "BTC"})
    assert summary["balance"] == approx(10 - fees)
    assert summary["equity"] == approx(summary["balance"] + pos["floating_profit_loss"])
    assert summary["futures_session_upl"] == approx(pos["floating_profit_loss"])
    assert summary["initial_margin"] == approx(pos["initial_margin"])
    assert summary["available_funds"] == approx(summary["equity"] - summary["initial_margin"])
    assert summary["delta_total"] == approx(pos["delta"], abs_=1e-8)

    res = await sell(peer, instrument_name=PERP, amount=120, type="market")
    sold = [(t["amount"], t["price"]) for t in res["trades"]]
    realized = sum(q * (1 / avg - 1 / p) for q, p in sold)
    fees += sum(taker * q / p for q, p in sold)
    assert sum(t["profit_loss"] for t in res["trades"]) == approx(realized)
    pos = await peer.result("private/get_position", {"instrument_name": PERP})
    assert pos["size"] == 80 and pos["average_price"] == approx(avg, abs_=1e-6)
    assert pos["realized_profit_loss"] == approx(realized)
    assert pos["total_profit_loss"] == approx(realized + pos["floating_profit_loss"])
    summary = await peer.result("private/get_account_summary", {"currency": "BTC"})
    assert summary["balance"] == approx(10 - fees + realized)
    assert summary["session_rpl"] == approx(realized) and summary["futures_session_rpl"] == approx(realized)

    res = await peer.result("private/close_position", {"instrument_name": PERP, "type": "market"})
    assert res["order"]["reduce_only"] is True and res["order"]["direction"] == "sell"
    pos = await peer.result("private/get_position", {"instrument_name": PERP})
    assert pos["size"] == 0 and pos["direction"] == "zero" and pos["floating_profit_loss"] == 0


async def test_linear_perpetual_pnl_arithmetic(sim: Simulator, peer: RawPeer) -> None:
    await login(peer)
    taker = float(inst(sim, LINEAR).info["taker_commission"])
    res = await buy(peer, instrument_name=LINEAR, amount=0.01, type="market")
    fills = [(t["amount"], t["price"]) for t in res["trades"]]
    assert sum(q for q, _ in fills) == approx(0.01)
    avg = sum(q * p for q, p in fills) / 0.01
    fees = sum(taker * q * p for q, p in fills)
    assert all(t["fee_currency"] == "USDC" for t in res["trades"])
    sim.step(5)
    pos = await peer.result("private/get_position", {"instrument_name": LINEAR})
    mark = pos["mark_price"]
    assert pos["size"] == approx(0.01) and pos["average_price"] == approx(avg, abs_=1e-6)
    assert pos["floating_profit_loss"] == approx(0.01 * (mark - avg), abs_=1e-7)
    assert pos["initial_margin"] == approx(0.01 * mark / 25, abs_=1e-7)
    assert pos["delta"] == approx(0.01)

    res = await sell(peer, instrument_name=LINEAR, amount=0.004, type="market")
    sold = [(t["amount"], t["price"]) for t in res["trades"]]
    realized = sum(q * (p - avg) for q, p in sold)
    fees += sum(taker * q * p for q, p in sold)
    summary = await peer.result("private/get_account_summary", {"currency": "USDC"})
    pos = await peer.result("private/get_position", {"instrument_name": LINEAR})
    assert pos["size"] == approx(0.006) and pos["realized_profit_loss"] == approx(realized, abs_=1e-7)
    assert summary["balance"] == approx(1_000_000 - fees + realized, abs_=1e-6)
    assert summary["equity"] == approx(summary["balance"] + pos["floating_profit_loss"], abs_=1e-6)
    # the BTC account is untouched by a USDC-settled instrument
    assert (await peer.result("private/get_account_summary", {"currency": "BTC"}))["balance"] == 10


async def test_option_premium_pnl_greeks_and_short_margin(sim: Simulator, peer: RawPeer) -> None:
    await login(peer)
    opt = liquid_option(sim)
    info = opt.info
    res = await buy(peer, instrument_name=opt.name, amount=0.1, type="market")
    [trade] = res["trades"]
    price = trade["price"]
    fee = min(float(info["taker_commission"]) * 0.1, 0.125 * price * 0.1)
    assert trade["fee"] == approx(fee) and "iv" in trade and "underlying_price" in trade
    ticker = await peer.result("public/ticker", {"instrument_name": opt.name})
    pos = await peer.result("private/get_position", {"instrument_name": opt.name})
    mark = ticker["mark_price"]
    assert pos["size"] == 0.1 and pos["average_price"] == price and pos["kind"] == "option"
    assert pos["floating_profit_loss"] == approx(0.1 * (mark - price))
    assert pos["delta"] == approx(0.1 * ticker["greeks"]["delta"], abs_=1e-8)
    assert pos["gamma"] == approx(0.1 * ticker["greeks"]["gamma"], abs_=1e-9)
    assert pos["vega"] == approx(0.1 * ticker["greeks"]["vega"], abs_=1e-6)
    assert pos["theta"] == approx(0.1 * ticker["greeks"]["theta"], abs_=1e-6)
    assert pos["initial_margin"] == 0  # a long option needs only its premium
    summary = await peer.result("private/get_account_summary", {"currency": "BTC"})
    assert summary["balance"] == approx(10 - 0.1 * price - fee)  # premium paid at the trade
    assert summary["options_value"] == approx(0.1 * mark)
    assert summary["equity"] == approx(summary["balance"] + 0.1 * mark)
    assert summary["options_session_upl"] == approx(pos["floating_profit_loss"])
    assert summary["options_delta"] == approx(pos["delta"], abs_=1e-8)
    assert summary["options_vega_map"] == {"btc_usd": approx(pos["vega"], abs_=1e-6)}

    short = liquid_option(sim, skip=opt.name)
    res = await sell(peer, instrument_name=short.name, amount=0.1, type="market")
    received = res["trades"][0]["price"]
    spos = await peer.result("private/get_position", {"instrument_name": short.name})
    index = sim.market.index["BTC"]
    otm = max(0.0, (short.strike - index) if short.call else (index - short.strike))
    expected_im = 0.1 * (max(0.15 - otm / index, 0.1) + short.mark_price)
    assert spos["size"] == -0.1 and spos["direction"] == "sell"
    assert spos["initial_margin"] == approx(expected_im, abs_=1e-8)
    assert spos["maintenance_margin"] == approx(0.1 * (0.075 + short.mark_price), abs_=1e-8)
    summary2 = await peer.result("private/get_account_summary", {"currency": "BTC"})
    assert summary2["balance"] == approx(summary["balance"] + 0.1 * received - res["trades"][0]["fee"])
    assert summary2["initial_margin"] == approx(expected_im, abs_=1e-8)
    assert summary2["options_value"] == approx(0.1 * opt.mark_price - 0.1 * short.mark_price)


async def test_spot_moves_both_balances(sim: Simulator, peer: RawPeer) -> None:
    await login(peer)
    res = await buy(peer, instrument_name="BTC_USDC", amount=0.01, type="market")
    cost = sum(t["amount"] * t["price"] for t in res["trades"])
    btc = await peer.result("private/get_account_summary", {"currency": "BTC"})
    usdc = await peer.result("private/get_account_summary", {"currency": "USDC"})
    assert btc["balance"] == approx(10.01) and usdc["balance"] == approx(1_000_000 - cost, abs_=1e-6)
    assert await peer.result("private/get_positions", {"kind": "spot"}) == []
    # a resting spot sell reserves the coin
    await sell(peer, instrument_name="BTC_USDC", amount=1, type="limit",
               price=round_to(inst(sim, "BTC_USDC").mark_price * 1.5, 1.0))
    btc = await peer.result("private/get_account_summary", {"currency": "BTC"})
    assert btc["spot_reserve"] == 1 and btc["available_funds"] == approx(9.01)
    err = await error(peer, "private/sell", {"instrument_name": "BTC_USDC", "amount": 9.5, "type": "limit",
                                             "price": round_to(inst(sim, "BTC_USDC").mark_price * 1.5, 1.0)})
    assert err["code"] == 10009


async def test_reduce_only(sim: Simulator, peer: RawPeer) -> None:
    await login(peer)
    err = await error(peer, "private/sell", {"instrument_name": PERP, "amount": 10, "type": "market",
                                             "reduce_only": True})
    assert err["code"] == 11030 and "reduce_only" in err["data"]["reason"]
    await buy(peer, instrument_name=PERP, amount=30, type="market")
    res = await sell(peer, instrument_name=PERP, amount=100, type="limit", price=far_below(sim, PERP, 1.03),
                     reduce_only=True)
    assert res["order"]["amount"] == 30 and res["order"]["reduce_only"] is True  # cut down to the position
    err = await error(peer, "private/sell", {"instrument_name": PERP, "amount": 10, "type": "market",
                                             "reduce_only": True})
    assert err["code"] == 11030  # the open reduce-only order already covers the position


async def test_get_margins_summaries_and_subaccounts(sim: Simulator, peer: RawPeer) -> None:
    await login(peer)
    i = inst(sim, PERP)
    m = await peer.result("private/get_margins", {"instrument_name": PERP, "amount": 1000, "price": i.mark_price})
    assert m["buy"] == approx(1000 / i.mark_price / 50, abs_=1e-9) and m["sell"] == m["buy"]
    assert m["min_price"] < i.mark_price < m["max_price"]
    summaries = await peer.result("private/get_account_summaries", {"extended": True})
    by_ccy = {s["currency"]: s for s in summaries["summaries"]}
    assert by_ccy["BTC"]["balance"] == 10 and by_ccy["ETH"]["balance"] == 100
    assert by_ccy["USDC"]["balance"] == 1_000_000 and by_ccy["SOL"]["balance"] == 100
    assert summaries["type"] == "main" and summaries["username"] == "demo"
    summary = await peer.result("private/get_account_summary", {"currency": "ETH", "extended": True})
    assert summary["limits"]["matching_engine"]["trading"]["total"] == {"rate": 5, "burst": 20}
    assert summary["self_trading_reject_mode"] == "reject_taker"
    [sub] = await peer.result("private/get_subaccounts", {"with_portfolio": True})
    assert sub["portfolio"]["btc"]["balance"] == 10 and sub["type"] == "main"
    sim.fund(DEMO_CLIENT_ID, "ETH", 5)
    assert (await peer.result("private/get_account_summary", {"currency": "ETH"}))["balance"] == 105
    assert await peer.result("sim/fund", {"currency": "SOL", "amount": -40}) == 60


# ---------------------------------------------------------------- rejections


@pytest.mark.parametrize(("params", "code", "reason"), [
    ({"instrument_name": PERP, "amount": 10, "type": "limit", "price": 90_000.3}, -32602, "tick size"),
    ({"instrument_name": PERP, "amount": 5, "type": "market"}, -32602, "min_trade_amount"),
    ({"instrument_name": PERP, "amount": 15, "type": "market"}, -32602, "multiple of contract size"),
    ({"instrument_name": LINEAR, "amount": 0.00015, "type": "market"}, -32602, "multiple of contract size"),
    ({"instrument_name": PERP, "contracts": 2, "amount": 30, "type": "market"}, -32602, "do not match"),
    ({"instrument_name": PERP, "amount": 10, "type": "limit"}, -32602, "required"),
    ({"instrument_name": PERP, "amount": 10, "type": "stop_market", "trigger_price": 1.0}, -32602, "required"),
    ({"instrument_name": PERP, "amount": 10, "type": "limit", "price": 1.0, "label": "x" * 65}, -32602, "64"),
    ({"instrument_name": "BTC-NOPE", "amount": 10, "type": "market"}, 13020, "not found"),
    ({"instrument_name": PERP, "amount": 100_000_000, "type": "limit", "price": 50_000.0}, 10009, "not enough"),
])
async def test_order_rejections(sim: Simulator, peer: RawPeer, params: dict[str, Any], code: int,
                                reason: str) -> None:
    await login(peer)
    err = await error(peer, "private/buy", params)
    assert err["code"] == code, err
    assert reason in str(err.get("data", {}).get("reason", "")), err
    assert await peer.result("private/get_open_orders", {}) == []


async def test_option_tick_size_steps(sim: Simulator, peer: RawPeer) -> None:
    await login(peer)
    opt = liquid_option(sim)
    ok = await buy(peer, instrument_name=opt.name, amount=0.1, type="limit", price=0.0049)  # 0.0001 below 0.005
    assert ok["order"]["price"] == 0.0049
    err = await error(peer, "private/buy", {"instrument_name": opt.name, "amount": 0.1, "type": "limit",
                                            "price": 0.0052})  # 0.0005 above 0.005
    assert err["code"] == -32602 and "0.0005" in err["data"]["reason"]
    err = await error(peer, "private/buy", {"instrument_name": opt.name, "amount": 0.15, "type": "limit",
                                            "price": 0.0049})
    assert err["code"] == -32602


async def test_unknown_order_halted_book_and_unauthorized(sim: Simulator, peer: RawPeer) -> None:
    err = await error(peer, "private/buy", {"instrument_name": PERP, "amount": 10, "type": "market"})
    assert err["code"] == 13009 and err["message"] == "unauthorized"
    await login(peer)
    for method in ("private/cancel", "private/get_order_state", "private/edit"):
        err = await error(peer, method, {"order_id": "123", "amount": 10, "price": 1.0})
        assert err["code"] == 10004 and err["message"] == "order_not_found"
    sim.faults.halt(PERP)
    err = await error(peer, "private/buy", {"instrument_name": PERP, "amount": 10, "type": "market"})
    assert err["code"] == 10012 and err["message"] == "book_closed"


async def test_others_orders_are_not_found(sim: Simulator, peer: RawPeer) -> None:
    other = await connect_peer(sim.ws_url)
    try:
        await login(peer)
        await login(other, OTHER_ID, OTHER_SECRET)
        order = (await buy(peer, instrument_name=PERP, amount=10, type="limit", price=far_below(sim, PERP)))["order"]
        assert (await error(other, "private/cancel", {"order_id": order["order_id"]}))["code"] == 10004
        assert await other.result("private/get_open_orders", {}) == []
    finally:
        await other.close()


async def test_matching_engine_rate_limit_10028() -> None:
    async with Simulator(seed=2, autostep=False, rate_limits=True) as sim:
        p = await connect_peer(sim.ws_url)
        try:
            await login(p)
            for _ in range(19):  # most of the matching-engine burst of 20
                assert (await p.call("private/cancel", {"order_id": "1"}))["error"]["code"] == 10004
            # the non-matching-engine pool is separate
            assert await p.result("private/get_open_orders", {}) == []
            codes = []
            while not codes or codes[-1] != 10028:  # the last credit or two, then 10028
                codes.append((await p.call("private/cancel", {"order_id": "1"}))["error"]["code"])
            assert len(codes) <= 3 and set(codes[:-1]) <= {10004}
            await asyncio.wait_for(p._reader, 5.0)  # and the exchange ends the session
        finally:
            await p.close()


# ---------------------------------------------------------------- private channels


async def test_private_channels_reach_the_owner_only(sim: Simulator, peer: RawPeer) -> None:
    other = await connect_peer(sim.ws_url)
    try:
        await login(peer)
        await login(other, OTHER_ID, OTHER_SECRET)
        channels = ["user.orders.any.any.raw", f"user.orders.{PERP}.100ms", "user.trades.future.BTC.100ms",
                    f"user.changes.{PERP}.raw", "user.orders.option.any.raw"]
        assert await peer.result("private/subscribe", {"channels": channels}) == channels
        assert await other.result("private/subscribe", {"channels": channels}) == channels
        assert sim.subscriber_count("user.orders.any.any.raw") == 2
        await drained(peer)
        await drained(other)

        res = await buy(peer, instrument_name=PERP, amount=10, type="market", label="mine")
        got = await drained(peer)
        by_channel: dict[str, list[Any]] = {}
        for n in got:
            by_channel.setdefault(n["channel"], []).append(n["data"])
        [raw] = by_channel["user.orders.any.any.raw"]
        assert isinstance(raw, dict) and raw["order_id"] == res["order"]["order_id"] and raw["label"] == "mine"
        [batch] = by_channel[f"user.orders.{PERP}.100ms"]
        assert isinstance(batch, list) and batch[0]["order_state"] == "filled"
        [trades] = by_channel["user.trades.future.BTC.100ms"]
        assert [t["trade_id"] for t in trades] == [t["trade_id"] for t in res["trades"]]
        [change] = by_channel[f"user.changes.{PERP}.raw"]
        assert set(change) == {"instrument_name", "orders", "trades", "position"}
        assert change["position"][0]["size"] == 10 and change["orders"][0]["order_id"] == raw["order_id"]
        assert "user.orders.option.any.raw" not in by_channel
        assert await drained(other) == []  # the other account subscribed the same names: nothing

        await sell(other, instrument_name=PERP, amount=10, type="market", label="theirs")
        assert all(n["data"] and "theirs" in str(n["data"]) for n in await drained(other))
        assert await drained(peer) == []

        await peer.result("private/unsubscribe", {"channels": ["user.orders.any.any.raw"]})
        assert sim.subscriber_count("user.orders.any.any.raw") == 1
    finally:
        await other.close()


async def test_portfolio_channel_on_change_and_each_step(sim: Simulator, peer: RawPeer) -> None:
    await login(peer)
    assert await peer.result("private/subscribe", {"channels": ["user.portfolio.btc"]}) == ["user.portfolio.btc"]
    [first] = await drained(peer)  # the current state at once
    assert first["channel"] == "user.portfolio.btc" and first["data"]["balance"] == 10
    sim.step()
    assert await drained(peer) == []  # no position: nothing moves
    await buy(peer, instrument_name=PERP, amount=10, type="market")
    [after_trade] = [n for n in await drained(peer)]
    assert after_trade["data"]["balance"] < 10 and after_trade["data"]["currency"] == "BTC"
    assert "delta_total_map" in after_trade["data"] and "limits" not in after_trade["data"]
    sim.step(3)
    ticks = await drained(peer)
    assert len(ticks) == 3  # once per tick while a position is open
    summary = await peer.result("private/get_account_summary", {"currency": "BTC"})
    assert ticks[-1]["data"]["equity"] == summary["equity"]
    await buy(peer, instrument_name=LINEAR, amount=0.001, type="market")
    assert await drained(peer) == []  # a USDC instrument does not touch user.portfolio.btc


# ---------------------------------------------------------------- cancel on disconnect


async def test_cancel_on_disconnect_cancels_on_close_not_on_logout(sim: Simulator, peer: RawPeer) -> None:
    await login(peer)
    await peer.result("private/subscribe", {"channels": ["user.orders.any.any.raw"]})
    price = far_below(sim, PERP)
    assert (await peer.result("private/get_cancel_on_disconnect", {}))["enabled"] is False

    closed = asyncio.Event()
    sim.session_closed_listeners.append(lambda s: closed.set())

    # 1) enabled, then the connection drops: its orders (only) are cancelled
    a = await connect_peer(sim.ws_url)
    await login(a)
    assert await a.result("private/enable_cancel_on_disconnect", {}) == "ok"
    assert await a.result("private/get_cancel_on_disconnect", {"scope": "connection"}) == \
        {"enabled": True, "scope": "connection"}
    mine = (await buy(a, instrument_name=PERP, amount=10, type="limit", price=price))["order"]
    kept = (await buy(peer, instrument_name=PERP, amount=10, type="limit", price=price))["order"]
    await drained(peer)
    await a.close()
    while True:
        n = await peer.next_notification("user.orders.any.any.raw")
        if n["data"]["order_id"] == mine["order_id"]:
            break
    assert n["data"]["order_state"] == "cancelled" and n["data"]["cancel_reason"] == "cancel_on_disconnect"
    [still] = await peer.result("private/get_open_orders", {})
    assert still["order_id"] == kept["order_id"]

    # 2) enabled, then private/logout: nothing is cancelled
    closed.clear()
    b = await connect_peer(sim.ws_url)
    await login(b)
    await b.result("private/enable_cancel_on_disconnect", {"scope": "connection"})
    survivor = (await buy(b, instrument_name=PERP, amount=10, type="limit", price=price))["order"]
    await b.result("private/logout", {})
    await asyncio.wait_for(closed.wait(), 5)
    await b.close()
    state = await peer.result("private/get_order_state", {"order_id": survivor["order_id"]})
    assert state["order_state"] == "open"

    # 3) without it, a dropped connection leaves its orders alone
    closed.clear()
    c = await connect_peer(sim.ws_url)
    await login(c)
    lasting = (await buy(c, instrument_name=PERP, amount=10, type="limit", price=price))["order"]
    await c.close()
    await asyncio.wait_for(closed.wait(), 5)
    assert (await peer.result("private/get_order_state", {"order_id": lasting["order_id"]}))["order_state"] == "open"

    # account scope
    assert await peer.result("private/enable_cancel_on_disconnect", {"scope": "account"}) == "ok"
    assert await peer.result("private/get_cancel_on_disconnect", {"scope": "account"}) == \
        {"enabled": True, "scope": "account"}
    assert await peer.result("private/disable_cancel_on_disconnect", {"scope": "account"}) == "ok"


# ---------------------------------------------------------------- HTTP


async def test_http_private_calls_with_bearer_and_signature(sim: Simulator, peer: RawPeer) -> None:
    token = await login(peer)
    async with httpx.AsyncClient(base_url=sim.http_url, timeout=5.0) as http:
        r = await http.get("/api/v2/private/buy", params={"instrument_name": PERP, "amount": "10", "type": "market",
                                                          "label": "http"},
                           headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["result"]["order"]["order_state"] == "filled" and body["result"]["order"]["label"] == "http"

        query = urllib.parse.urlencode({"instrument_name": PERP})
        uri = f"/api/v2/private/get_position?{query}"
        header = http_signature_header(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, "GET", uri)
        r = await http.get(uri, headers={"Authorization": header})
        assert r.status_code == 200, r.text
        assert r.json()["result"]["size"] == 10

        payload = {"jsonrpc": "2.0", "id": 7, "method": "private/get_open_orders", "params": {}}
        r = await http.post("/api/v2/private/get_open_orders", json=payload,
                            headers={"Authorization": f"Bearer {token}"})
        assert r.json()["result"] == [] and r.json()["id"] == 7

        r = await http.get("/api/v2/private/get_positions", params={"currency": "BTC"})
        assert r.status_code == 401 and r.json()["error"]["code"] == 13009
        r = await http.get("/api/v2/private/enable_cancel_on_disconnect",
                           headers={"Authorization": f"Bearer {token}"})
        assert r.json()["error"]["code"] == 10030  # connection scope needs a WebSocket
    # the HTTP order shows on the WebSocket side too
    [trade] = (await peer.result("private/get_user_trades_by_instrument", {"instrument_name": PERP}))["trades"]
    assert trade["label"] == "http" and math.isclose(trade["amount"], 10)


async def test_http_signatures_sharing_a_millisecond_pass_exact_replays_do_not(sim: Simulator) -> None:
    """ccxt signs with ts = nonce = the current millisecond: two different calls in one millisecond
    share both, and must pass; sending the very same signed request again is a replay."""
    ts = sim.accounts.clock() * 1000 // 1
    async with httpx.AsyncClient(base_url=sim.http_url, timeout=5.0) as http:
        answers = []
        for currency in ("BTC", "ETH"):
            uri = f"/api/v2/private/get_positions?currency={currency}"
            header = http_signature_header(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, "GET", uri,
                                           timestamp=int(ts), nonce=str(int(ts)))
            answers.append((uri, header, await http.get(uri, headers={"Authorization": header})))
        assert [r.status_code for _, _, r in answers] == [200, 200], [r.text for _, _, r in answers]
        uri, header, _ = answers[0]
        replay = await http.get(uri, headers={"Authorization": header})
        assert replay.status_code == 401
        assert replay.json()["error"]["data"]["reason"] == "signature already used (replay)"
