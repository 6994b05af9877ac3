"""The embedded exchange's subscription channels over a real WebSocket: book snapshots and
chained changes (a local book rebuilt from them equals ``public/get_order_book``), grouped books,
tickers, trades, index, quote and perpetual channels, raw needing auth, unsubscribing."""

from __future__ import annotations

import math
from typing import Any

import pytest
from conftest import RawPeer, authenticate, connect_peer

from deribit_kit.sim import Simulator
from deribit_kit.sim.exchange.instruments import tick_for

PERP = "BTC-PERPETUAL"


class LocalBook:
    """An L2 book built from Deribit ``book`` notifications, checking the change_id chain."""

    def __init__(self) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.change_id: int | None = None

    def apply(self, data: dict[str, Any]) -> None:
        if data["type"] == "snapshot":
            assert "prev_change_id" not in data
            assert all(a == "new" for a, _, _ in data["bids"] + data["asks"])
            self.bids.clear()
            self.asks.clear()
        else:
            assert data["type"] == "change"
            assert data["prev_change_id"] == self.change_id, "change_id chain broken"
        assert self.change_id is None or data["change_id"] > self.change_id
        for side, levels in ((self.bids, data["bids"]), (self.asks, data["asks"])):
            for action, price, amount in levels:
                if action == "new":
                    assert price not in side, ("new on an existing level", price)
                    side[price] = amount
                elif action == "change":
                    assert price in side, ("change of a missing level", price)
                    side[price] = amount
                else:
                    assert action == "delete" and amount == 0
                    assert price in side, ("delete of a missing level", price)
                    del side[price]
        self.change_id = data["change_id"]

    def levels(self) -> tuple[list[list[float]], list[list[float]]]:
        return ([[p, self.bids[p]] for p in sorted(self.bids, reverse=True)],
                [[p, self.asks[p]] for p in sorted(self.asks)])


async def subscribe(p: RawPeer, *channels: str, method: str = "public/subscribe") -> None:
    assert await p.result(method, {"channels": list(channels)}) == list(channels)




# ---------------------------------------------------------------- book


@pytest.mark.parametrize("interval", ["100ms", "agg2"])
async def test_book_snapshot_then_chained_changes(peer: RawPeer, sim: Simulator, interval: str) -> None:
    ch = f"book.{PERP}.{interval}"
    await subscribe(peer, ch)
    first = await peer.next_notification(ch)
    assert first["channel"] == ch
    snap = first["data"]
    assert snap["type"] == "snapshot" and snap["instrument_name"] == PERP
    assert {"timestamp", "change_id", "bids", "asks"} <= set(snap)
    assert len(snap["bids"]) >= 10 and len(snap["asks"]) >= 10
    book = LocalBook()
    book.apply(snap)
    for _ in range(6):
        sim.step()
        data = (await peer.next_notification(ch))["data"]
        assert data["instrument_name"] == PERP
        book.apply(data)  # asserts prev_change_id == the last change_id
    bids, asks = book.levels()
    assert bids[0][0] < asks[0][0]


@pytest.mark.parametrize("name", ["BTC-PERPETUAL", "ETH_USDC-PERPETUAL", "BTC_USDC", "option"])
async def test_local_book_equals_get_order_book(peer: RawPeer, sim: Simulator, name: str) -> None:
    if name == "option":  # options requote on one tick in ten: step more
        name = next(i.name for i in sim.market.instruments.values() if i.kind == "option")
    ch = f"book.{name}.100ms"
    await subscribe(peer, ch)
    book = LocalBook()
    book.apply((await peer.next_notification(ch))["data"])
    start = book.change_id
    for rounds in range(4):
        sim.step(3 if name.endswith("PERPETUAL") or "_" in name else 12)
        rest = await peer.result("public/get_order_book", {"instrument_name": name, "depth": 10000})
        # notifications sent before the reply are queued already; apply until the change_ids meet
        while book.change_id != rest["change_id"]:
            assert book.change_id is not None and book.change_id < rest["change_id"]
            book.apply((await peer.next_notification(ch, timeout=2.0))["data"])
        bids, asks = book.levels()
        assert bids == rest["bids"] and asks == rest["asks"], f"round {rounds}"
        assert rest["best_bid_price"] == bids[0][0] and rest["best_ask_price"] == asks[0][0]
    assert book.change_id != start  # the book did change along the way


async def test_two_subscribers_share_one_stream(peer: RawPeer, peer2: RawPeer, sim: Simulator) -> None:
    ch = f"book.{PERP}.100ms"
    await subscribe(peer, ch)
    await subscribe(peer2, ch)
    assert sim.subscriber_count(ch) == 2
    a, b = LocalBook(), LocalBook()
    a.apply((await peer.next_notification(ch))["data"])
    b.apply((await peer2.next_notification(ch))["data"])
    sim.step(2)
    await peer.barrier()
    await peer2.barrier()
    for p, book in ((peer, a), (peer2, b)):
        for n in p.drain():
            book.apply(n["data"])
    assert a.change_id == b.change_id and a.levels() == b.levels()


async def test_book_raw_needs_auth(peer: RawPeer, peer2: RawPeer, sim: Simulator) -> None:
    raw = f"book.{PERP}.raw"
    reply = await peer.call("public/subscribe", {"channels": [f"ticker.{PERP}.100ms", raw]})
    assert reply["error"] == {"code": 13778, "message": "raw_subscriptions_not_available_for_unauthorized"}
    assert sim.subscriber_count(f"ticker.{PERP}.100ms") == 0  # the whole request failed
    for ch in (f"ticker.{PERP}.raw", f"trades.{PERP}.raw", "trades.future.BTC.raw"):
        assert (await peer.call("public/subscribe", {"channels": [ch]}))["error"]["code"] == 13778
    assert (await peer.result("public/test"))["version"]
    await authenticate(peer, sim)
    await subscribe(peer, raw)
    book = LocalBook()
    book.apply((await peer.next_notification(raw))["data"])
    sim.step()
    book.apply((await peer.next_notification(raw))["data"])
    # authentication is per connection
    assert (await peer2.call("public/subscribe", {"channels": [raw]}))["error"]["code"] == 13778


async def test_grouped_book(peer: RawPeer, sim: Simulator) -> None:
    cases = [(PERP, "none", 10), (PERP, "5", 10), (PERP, "none", 1), ("ETH-PERPETUAL", "25", 20),
             ("BTC_USDC", "10", 20)]
    for name, group, depth in cases:
        await _check_grouped(peer, sim, name, group, depth)
        assert await peer.result("public/unsubscribe_all") == "ok"
        peer.drain()


async def _check_grouped(peer: RawPeer, sim: Simulator, name: str, group: str, depth: int) -> None:
    ch = f"book.{name}.{group}.{depth}.100ms"
    await subscribe(peer, ch)
    sim.step(2)
    data = (await peer.next_notification(ch))["data"]
    assert set(data) == {"timestamp", "instrument_name", "change_id", "bids", "asks"}
    assert data["instrument_name"] == name
    bids, asks = data["bids"], data["asks"]
    assert 0 < len(bids) <= depth and 0 < len(asks) <= depth
    assert all(len(level) == 2 for level in bids + asks)
    assert [p for p, _ in bids] == sorted((p for p, _ in bids), reverse=True)
    assert [p for p, _ in asks] == sorted(p for p, _ in asks)
    assert bids[0][0] < asks[0][0]
    # the message sent for the book's current change_id groups exactly what get_order_book shows
    rest = await peer.result("public/get_order_book", {"instrument_name": name, "depth": 10000})
    msgs = [data] + [n["data"] for n in peer.drain()]
    match = next(m for m in msgs if m["change_id"] == rest["change_id"])
    assert (match["bids"], match["asks"]) == (grouped(rest["bids"], group, depth, name, True),
                                              grouped(rest["asks"], group, depth, name, False))
    if group != "none":
        g = float(group) / (100 if name.startswith("ETH") else 1)
        for p, _ in bids + asks:
            assert math.isclose(p / g, round(p / g), abs_tol=1e-6), (p, g)
    # snapshots, not changes: every message stands alone
    again = (await peer.next_notification(ch))["data"]
    assert "type" not in again and "prev_change_id" not in again and again["change_id"] > data["change_id"]


def grouped(levels: list[list[float]], group: str, depth: int, name: str, bids: bool) -> list[list[float]]:
    """Deribit's price grouping: bids rounded down, asks up, to the group (ETH groups are /100)."""
    if group == "none":
        return levels[:depth]
    g = float(group) / (100 if name.startswith("ETH") else 1)
    merged: dict[float, float] = {}
    for price, amount in levels:
        key = round((math.floor(price / g + 1e-9) if bids else math.ceil(price / g - 1e-9)) * g, 8)
        merged[key] = merged.get(key, 0.0) + amount
    keys = sorted(merged, reverse=bids)[:depth]
    return [[k, pytest.approx(merged[k])] for k in keys]  # type: ignore[list-item]


# ---------------------------------------------------------------- ticker, trades and the rest


async def test_ticker_channel(peer: RawPeer, sim: Simulator) -> None:
    option = next(i.name for i in sim.market.instruments.values() if i.kind == "option")
    for kind, name in (("perpetual", PERP), ("option", option), ("spot", "ETH_USDC")):
        ch = f"ticker.{name}.100ms"
        await subscribe(peer, ch)
        sim.step()
        data = (await peer.next_notification(ch))["data"]
        rest = await peer.result("public/ticker", {"instrument_name": name})
        assert set(data) == set(rest)
        assert data["instrument_name"] == name and data["state"] == "open"
        assert ("current_funding" in data) == (kind == "perpetual")
        assert ("greeks" in data and "mark_iv" in data) == (kind == "option")
        later = (await peer.next_notification(ch))["data"]
        assert later["timestamp"] > data["timestamp"]


async def test_trades_channel_by_instrument(peer: RawPeer, sim: Simulator) -> None:
    ch = f"trades.{PERP}.100ms"
    await subscribe(peer, ch)
    seen: list[dict[str, Any]] = []
    while len(seen) < 3:
        sim.step()
        await peer.barrier()
        for n in peer.drain():
            assert n["channel"] == ch
            assert isinstance(n["data"], list) and n["data"]
            seen.extend(n["data"])
    assert all(t["instrument_name"] == PERP for t in seen)
    seqs = [t["trade_seq"] for t in seen]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # none missed, none repeated
    last = await peer.result("public/get_last_trades_by_instrument", {"instrument_name": PERP, "count": 1})
    assert last["trades"][0]["trade_seq"] >= seqs[-1]


async def test_trades_channel_by_kind(peer: RawPeer, sim: Simulator) -> None:
    cases = [("future", "BTC"), ("option", "ETH"), ("any", "any"), ("spot", "any")]
    await subscribe(peer, *(f"trades.{kind}.{currency}.100ms" for kind, currency in cases))
    for kind, currency in cases:
        ch = f"trades.{kind}.{currency}.100ms"
        batch: list[dict[str, Any]] = []
        for _ in range(200):
            sim.step()
            await peer.barrier()
            batch = [t for n in peer.drain() if n["channel"] == ch for t in n["data"]]
            if batch:
                break
        assert batch, ch
        for t in batch:
            inst = sim.market.get(t["instrument_name"])
            assert inst is not None
            assert kind == "any" or inst.kind == kind
            assert currency == "any" or inst.coin == currency
            assert {"trade_id", "trade_seq", "price", "amount", "direction", "timestamp"} <= set(t)
            if inst.kind == "option":
                assert "iv" in t


async def test_price_index_channel(peer: RawPeer, sim: Simulator) -> None:
    await subscribe(peer, "deribit_price_index.btc_usd", "deribit_price_index.eth_usd")
    sim.step()
    btc = (await peer.next_notification("deribit_price_index.btc_usd"))["data"]
    assert set(btc) == {"index_name", "price", "timestamp"} and btc["index_name"] == "btc_usd"
    eth = (await peer.next_notification("deribit_price_index.eth_usd"))["data"]
    assert btc["price"] > eth["price"] > 0
    rest = await peer.result("public/get_index_price", {"index_name": "btc_usd"})
    assert rest["index_price"] == pytest.approx(btc["price"], rel=0.01)


async def test_quote_channel(peer: RawPeer, sim: Simulator) -> None:
    ch = f"quote.{PERP}"
    await subscribe(peer, ch)
    sim.step()
    data = (await peer.next_notification(ch))["data"]
    assert set(data) == {"timestamp", "instrument_name", "best_bid_price", "best_bid_amount", "best_ask_price",
                         "best_ask_amount"}
    assert data["instrument_name"] == PERP
    assert data["best_bid_price"] < data["best_ask_price"]
    # the quote sent in the tick get_order_book reports shows the same top of book
    for _ in range(50):
        rest = await peer.result("public/get_order_book", {"instrument_name": PERP, "depth": 1})
        msgs = [data] + [n["data"] for n in peer.drain()]
        match = [m for m in msgs if m["timestamp"] == rest["timestamp"]]
        if match:
            break
        sim.step()
    assert (match[-1]["best_bid_price"], match[-1]["best_ask_price"]) == (rest["best_bid_price"],
                                                                          rest["best_ask_price"])
    assert (match[-1]["best_bid_amount"], match[-1]["best_ask_amount"]) == (rest["best_bid_amount"],
                                                                            rest["best_ask_amount"])


async def test_perpetual_channel(peer: RawPeer, sim: Simulator) -> None:
    ch = f"perpetual.{PERP}.100ms"
    await subscribe(peer, ch)
    sim.step()
    data = (await peer.next_notification(ch))["data"]
    assert set(data) == {"index_price", "interest", "timestamp"}
    assert data["index_price"] > 1000 and abs(data["interest"]) < 0.01
    # dated futures have no perpetual channel
    fut = next(i.name for i in sim.market.instruments.values() if i.kind == "future" and not i.perpetual)
    assert await peer.result("public/subscribe", {"channels": [f"perpetual.{fut}.100ms"]}) == []


async def test_unknown_channels_left_out(peer: RawPeer, sim: Simulator) -> None:
    good = [f"ticker.{PERP}.100ms", "deribit_price_index.eth_usd"]
    bad = ["ticker.NOPE-PERPETUAL.100ms", "book.BTC-PERPETUAL.7ms", "foo.bar", "", "deribit_price_index.xyz_usd",
           "book.BTC-PERPETUAL.none.3.100ms", "trades.weird.BTC.100ms", "book.BTC-1JAN20.100ms"]
    result = await peer.result("public/subscribe", {"channels": [bad[0], good[0], *bad[1:], good[1]]})
    assert result == good
    assert all(sim.subscriber_count(c) == 0 for c in bad)
    sim.step()
    await peer.barrier()
    assert {n["channel"] for n in peer.drain()} == set(good)


async def test_channel_echoed_exactly(peer: RawPeer, sim: Simulator) -> None:
    await authenticate(peer, sim)
    ch = "user.portfolio.BTC"  # upper case kept as sent (ccxt matches the literal string)
    assert await peer.result("private/subscribe", {"channels": [ch]}) == [ch]
    assert sim.subscriber_count(ch) == 1


async def test_unsubscribe_stops_the_flow(peer: RawPeer, sim: Simulator) -> None:
    chans = [f"ticker.{PERP}.100ms", f"book.{PERP}.100ms", "deribit_price_index.btc_usd"]
    await subscribe(peer, *chans)
    sim.step()
    for ch in chans:
        await peer.next_notification(ch)
    assert await peer.result("public/unsubscribe", {"channels": chans[:2]}) == chans[:2]
    peer.drain()
    sim.step(3)
    await peer.barrier()
    got = {n["channel"] for n in peer.drain()}
    assert got == {chans[2]}
    assert await peer.result("public/unsubscribe_all") == "ok"
    peer.drain()
    sim.step(3)
    await peer.barrier()
    assert peer.drain() == []
    assert all(sim.subscriber_count(c) == 0 for c in chans)


async def test_resubscribe_gives_a_fresh_snapshot(peer: RawPeer, sim: Simulator) -> None:
    ch = f"book.{PERP}.100ms"
    await subscribe(peer, ch)
    first = (await peer.next_notification(ch))["data"]
    await peer.result("public/unsubscribe", {"channels": [ch]})
    sim.step(3)
    await subscribe(peer, ch)
    await peer.barrier()
    snaps = [n["data"] for n in peer.drain() if n["data"]["type"] == "snapshot"]
    assert snaps and snaps[-1]["change_id"] > first["change_id"]


async def test_closed_connection_releases_channels(sim: Simulator) -> None:
    p = await connect_peer(sim.ws_url)
    ch = f"ticker.{PERP}.100ms"
    await subscribe(p, ch)
    await p.next_notification(ch)
    assert sim.subscriber_count(ch) == 1
    await p.close()
    other = await connect_peer(sim.ws_url)
    try:
        for _ in range(50):  # the server handles the close on its own turn of the loop
            if sim.subscriber_count(ch) == 0:
                break
            await other.barrier()
        assert sim.subscriber_count(ch) == 0
    finally:
        await other.close()


async def test_book_prices_on_tick_grid(peer: RawPeer, sim: Simulator) -> None:
    names = [PERP, "ETH-PERPETUAL", "BTC_USDC", next(i.name for i in sim.market.instruments.values()
                                                       if i.kind == "option" and i.coin == "ETH")]
    await subscribe(peer, *(f"book.{n}.100ms" for n in names))
    for n in names:
        snap = (await peer.next_notification(f"book.{n}.100ms"))["data"]
        info = sim.market.get(n).info  # type: ignore[union-attr]
        for _, price, amount in snap["bids"] + snap["asks"]:
            tick = tick_for(info, price)
            assert math.isclose(price / tick, round(price / tick), abs_tol=1e-6), (n, price, tick)
            units = amount / info["min_trade_amount"]
            assert math.isclose(units, round(units), abs_tol=1e-6), (n, amount)
