"""The subscription broker over real sockets against the embedded exchange."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from conftest import reconnecting_client

from deribit_kit import Deribit, Notification
from deribit_kit.broker import Broker, ConsumerClosed, Gap, LiveBook, chunk_channels
from deribit_kit.errors import SubscriptionError
from deribit_kit.sim import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, Simulator

BTC, ETH = "BTC-PERPETUAL", "ETH-PERPETUAL"


@pytest.fixture
async def manual_sim() -> AsyncIterator[Simulator]:
    """An embedded exchange that only moves on ``sim.step()``."""
    async with Simulator(seed=3, autostep=False, rate_limits=False, min_heartbeat_interval=1) as s:
        yield s


@pytest.fixture
async def dk(sim: Simulator) -> AsyncIterator[Deribit]:
    c = await reconnecting_client(sim)
    yield c
    await c.close()


@pytest.fixture
async def mdk(manual_sim: Simulator) -> AsyncIterator[Deribit]:
    c = await reconnecting_client(manual_sim)
    yield c
    await c.close()


async def until(pred: Callable[[], bool], wake: Any = None, timeout: float = 5.0) -> None:
    """Wait (bounded) until ``pred()``; re-check whenever ``wake`` (an Event or LiveBook) fires."""
    async def run() -> None:
        while not pred():
            if isinstance(wake, LiveBook):
                await wake.wait_version(wake.version)
            elif wake is not None:
                await wake.wait()
            else:
                await asyncio.sleep(0.005)  # bounded poll of exchange-side state
    await asyncio.wait_for(run(), timeout)


def count_calls(client: Deribit, method: str) -> list[list[str]]:
    """Wrap the client's transport to record the channel lists of every ``method`` request sent."""
    seen: list[list[str]] = []
    transport = client.transport
    orig = transport.request

    async def request(m: str, params: dict[str, Any] | None = None, **kw: Any) -> Any:
        if m == method:
            seen.append(list((params or {}).get("channels") or []))
        return await orig(m, params, **kw)

    transport.request = request  # type: ignore[method-assign]
    return seen


def assert_equal_to_rest(live: LiveBook, rest: Any) -> None:
    assert live.book.change_id == rest.change_id
    assert [list(x) for x in live.book.bids()] == [list(x) for x in rest.bids]
    assert [list(x) for x in live.book.asks()] == [list(x) for x in rest.asks]


def test_chunk_channels() -> None:
    chans = [f"ticker.BTC-1JAN30-{i}-C.100ms" for i in range(250)]
    chunks = chunk_channels(chans)
    assert [len(c) for c in chunks] == [100, 100, 50]
    assert [c for chunk in chunks for c in chunk] == chans
    long = ["x" * 1000 for _ in range(80)]
    assert all(sum(len(c) + 3 for c in ch) < 32 * 1024 for ch in chunk_channels(long))
    assert len(chunk_channels(long)) == 3


async def test_consumers_share_one_upstream_subscription(sim: Simulator, dk: Deribit) -> None:
    broker = Broker(dk)
    subs = count_calls(dk, "public/subscribe")
    unsubs = count_calls(dk, "public/unsubscribe")
    ch = f"ticker.{BTC}.100ms"
    consumers = [broker.consumer([ch, f"trades.{BTC}.100ms"]) for _ in range(5)]
    await asyncio.gather(*(c.start() for c in consumers))
    assert len(subs) == 1 and sorted(subs[0]) == sorted([ch, f"trades.{BTC}.100ms"])  # batched in one call
    assert sim.subscriber_count(ch) == 1
    for c in consumers:
        n = await c.get(timeout=5)
        assert isinstance(n, Notification)
    for c in consumers[:4]:
        await c.close()
    await broker.settle()
    assert sim.subscriber_count(ch) == 1 and unsubs == []
    await consumers[4].close()
    await broker.settle()
    assert sim.subscriber_count(ch) == 0
    assert len(unsubs) == 1 and broker.channels == []
    await broker.close()


async def test_a_consumer_closed_before_its_start_ran_never_joins(sim: Simulator, dk: Deribit) -> None:
    """The port starts a topic's consumer as a task; a client that subscribes and leaves (or
    unsubscribes) in the same read closes it before that task runs. The late start must not
    attach a closed consumer: its references would hold the channel upstream for ever."""
    broker = Broker(dk)
    ch = f"ticker.{BTC}.100ms"
    consumer = broker.consumer([ch])
    start = asyncio.ensure_future(consumer.start())  # scheduled, not run yet
    consumer.close_nowait()
    with pytest.raises(ConsumerClosed):
        await start
    await broker.settle()
    assert broker.channels == [] and sim.subscriber_count(ch) == 0
    await broker.close()


async def test_refused_channels_are_let_go_and_asked_again_later(sim: Simulator, dk: Deribit) -> None:
    """One consumer asks for a good channel and two the exchange refuses: it gets the good one,
    and the broker keeps nothing of the others (no reference, no book stuck in ``syncing``)."""
    broker = Broker(dk)
    good, nope, nope_book = f"ticker.{BTC}.100ms", "ticker.NOPE-PERPETUAL.100ms", "book.NOPE-PERPETUAL.100ms"
    consumer = await broker.consumer([good, nope, nope_book], "conflate").start()
    assert consumer.accepted == [good] and consumer.refused == [nope, nope_book]
    await broker.settle()
    assert set(broker.metrics()["channels"]) == {good} and broker.books == {}
    assert isinstance(await consumer.get(timeout=5), Notification)
    with pytest.raises(SubscriptionError):  # asked again: refused again, still nothing kept
        await consumer.add_channels([nope])
    assert consumer.refused == [nope, nope_book] and consumer.accepted == [good]
    await broker.settle()
    assert set(broker.metrics()["channels"]) == {good}
    await consumer.close()
    await broker.settle()
    assert broker.metrics()["channels"] == {} and sim.subscriber_count(good) == 0
    await broker.close()


async def test_gap_resyncs_only_that_instrument(sim: Simulator, dk: Deribit) -> None:
    broker = Broker(dk)
    btc, eth = await asyncio.gather(broker.book(BTC), broker.book(ETH))
    assert btc.state == eth.state == "live"
    sim.faults.skip_change_id(BTC)
    await until(lambda: btc.book.resyncs >= 1 and btc.state == "live", btc, timeout=10)
    assert btc.book.gaps >= 1 and broker.book_resyncs >= 1
    v = eth.version
    await until(lambda: eth.version > v + 2, eth)
    assert eth.book.resyncs == 0 and eth.book.gaps == 0 and eth.state == "live"
    m = broker.metrics()["channels"]
    assert m[f"book.{BTC}.100ms"]["gaps"] >= 1 and m[f"book.{ETH}.100ms"]["resyncs"] == 0
    await broker.close()


async def test_malformed_book_change_resyncs_only_that_book(manual_sim: Simulator, mdk: Deribit) -> None:
    """A change that continues the chain but holds a bad entry is applied in part: the book says so
    (malformed, resyncing), the broker resyncs it alone, and it equals the exchange's book again."""
    sim = manual_sim
    broker = Broker(mdk)
    btc, eth = await asyncio.gather(broker.book(BTC), broker.book(ETH))
    cid = btc.book.change_id
    assert cid is not None
    bad = {"jsonrpc": "2.0", "method": "subscription", "params": {"channel": f"book.{BTC}.100ms", "data": {
        "type": "change", "timestamp": sim.market.last_step_ms, "prev_change_id": cid, "change_id": cid + 1,
        "instrument_name": BTC, "bids": [["new", 1.0, 5.0], ["new", "not a price", 1.0]], "asks": []}}}
    sim.faults.inject_frame(orjson.dumps(bad))
    await until(lambda: btc.book.resyncs >= 1 and btc.state == "live", btc, timeout=10)
    assert btc.book.malformed == 1 and broker.book_resyncs >= 1
    assert_equal_to_rest(btc, await mdk.order_book(BTC))  # the half-applied level is gone
    assert eth.book.resyncs == 0 and eth.book.malformed == 0 and eth.state == "live"
    assert broker.metrics()["channels"][f"book.{BTC}.100ms"]["malformed"] == 1
    assert f'deribit_kit_broker_book_malformed_total{{channel="book.{BTC}.100ms"}} 1' in broker.prometheus()
    await broker.close()


async def test_dropped_connection_restores_channels_and_books(manual_sim: Simulator, mdk: Deribit) -> None:
    sim = manual_sim
    broker = Broker(mdk)
    btc, eth = await asyncio.gather(broker.book(BTC), broker.book(ETH))
    tick = broker.consumer([f"ticker.{BTC}.100ms"])
    await tick.start()
    sim.step()
    await tick.get(timeout=5)
    reconnected = asyncio.ensure_future(mdk.reconnected.wait(10))
    assert sim.faults.drop_connections() >= 1
    await reconnected
    assert broker.reconnects == 1 and broker.disconnects == 1
    await until(lambda: btc.state == "live" and eth.state == "live", btc, timeout=10)
    for live, name in ((btc, BTC), (eth, ETH)):
        assert sim.subscriber_count(f"book.{name}.100ms") == 1
        assert_equal_to_rest(live, await mdk.order_book(name))
    assert btc.book.resyncs == 1 and eth.book.resyncs == 1
    tick.drain()
    sim.step()
    n = await tick.get(timeout=5)
    assert isinstance(n, Notification) and n.channel == f"ticker.{BTC}.100ms"
    await broker.close()


async def test_slow_consumer_conflated_fast_gets_everything(manual_sim: Simulator, mdk: Deribit) -> None:
    sim = manual_sim
    broker = Broker(mdk)
    names = [BTC, ETH, "BTC-PERPETUAL"]
    chans = [f"ticker.{n}.100ms" for n in dict.fromkeys(names)] + [f"book.{BTC}.100ms"]
    fast_got: list[Notification | Gap] = []
    fast = broker.consumer(chans, "drop_oldest", maxsize=10_000, callback=fast_got.append, name="fast")
    slow = broker.consumer(chans, "conflate", maxsize=2, name="slow")
    await asyncio.gather(fast.start(), slow.start())
    book_ch = broker._channels[f"book.{BTC}.100ms"]
    await until(lambda: book_ch.live is not None and book_ch.live.state == "live", book_ch.live)
    for _ in range(30):
        sim.step()
        expected = sum(broker._channels[c].messages for c in chans)
        await until(lambda e=expected: len(fast_got) >= e, timeout=5)  # type: ignore[misc]
        await until(lambda: sum(broker._channels[c].messages for c in chans) == len(fast_got), timeout=5)
        assert slow.depth <= 2
    assert len(fast_got) == sum(broker._channels[c].messages for c in chans) and fast.dropped == 0
    assert slow.max_depth <= 2 and slow.dropped > 0
    items = slow.drain()
    assert 0 < len(items) <= 2
    for it in items:
        assert isinstance(it, Notification)
        if it.channel.startswith("book."):
            assert isinstance(it.data, LiveBook) and it.data.state == "live"  # state, never a broken chain
    await broker.close()


async def test_drop_oldest_inserts_gap_marker(manual_sim: Simulator, mdk: Deribit) -> None:
    broker = Broker(mdk)
    ch = f"ticker.{BTC}.100ms"
    c = broker.consumer([ch], "drop_oldest", maxsize=3)
    await c.start()
    for _ in range(8):
        manual_sim.step()
    await until(lambda: broker._channels[ch].messages >= 8, timeout=5)
    items = c.drain()
    assert isinstance(items[0], Gap) and items[0] == Gap(ch, 5)
    assert len(items) == 4 and all(isinstance(i, Notification) for i in items[1:])
    await broker.close()


async def test_stuck_consumer_is_disconnected(sim: Simulator, dk: Deribit) -> None:
    broker = Broker(dk)
    ch = f"ticker.{BTC}.100ms"
    stuck = broker.consumer([ch], "disconnect", maxsize=3, name="stuck")
    ok = broker.consumer([ch], "drop_oldest", maxsize=100)
    await asyncio.gather(stuck.start(), ok.start())
    st = broker._channels[ch]
    await until(lambda: stuck.closed, timeout=5)
    assert stuck.closed_reason is not None and "overflow" in stuck.closed_reason
    with pytest.raises(ConsumerClosed):
        await stuck.get(timeout=1)
    n0 = st.messages
    await ok.get(timeout=5)
    await until(lambda: st.messages > n0 + 1, timeout=5)
    assert not ok.closed and sim.subscriber_count(ch) == 1
    assert broker.metrics()["consumers"]["stuck"]["closed_reason"] == stuck.closed_reason
    await broker.close()


async def test_option_chain_subscribed_in_chunks(sim: Simulator, dk: Deribit) -> None:
    broker = Broker(dk)
    subs = count_calls(dk, "public/subscribe")
    chain = await broker.subscribe_chain("BTC", refresh_interval=0)
    n = len(chain.channels)
    assert n > 100 and n == len(await dk.instruments("BTC", "option"))
    assert len(subs) == -(-n // 100) and all(len(c) <= 100 for c in subs)
    assert all(sim.subscriber_count(c) == 1 for c in chain.channels)
    item = await chain.consumer.get(timeout=5)
    assert isinstance(item, Notification) and item.channel.startswith("ticker.BTC-")
    # a channel the chain lacks (as a newly listed expiry would be) joins at the next refresh
    missing = chain.channels[0]
    await chain.consumer.remove_channels([missing])
    await broker.settle()
    assert sim.subscriber_count(missing) == 0
    await broker.refresh_chain()
    assert missing in chain.channels and sim.subscriber_count(missing) == 1
    # filters: one expiry, strikes around the index
    expiry = chain.instruments[0].split("-")[1]
    near = await broker.subscribe_chain("BTC", expiry, strikes_around=3, refresh_interval=0)
    assert 0 < len(near.channels) <= 6 and all(f"-{expiry}-" in c for c in near.channels)
    await broker.close()


async def test_live_book_equals_rest_book_at_every_check(manual_sim: Simulator, mdk: Deribit) -> None:
    live = await mdk.order_book(BTC, live=True)
    assert isinstance(live, LiveBook) and live.state == "live"
    assert mdk.order_book is not None and mdk.broker.books[BTC] is live
    assert_equal_to_rest(live, await mdk.order_book(BTC))
    for _ in range(25):
        manual_sim.step()
        rest = await mdk.order_book(BTC)
        await until(lambda r=rest: live.book.change_id == r.change_id, live)  # type: ignore[misc]
        assert_equal_to_rest(live, rest)
        assert live.state == "live" and not live.book.is_crossed
    assert live.book.gaps == 0 and live.book.changes > 0


async def test_live_book_iteration_skips_to_newest(manual_sim: Simulator, mdk: Deribit) -> None:
    broker = Broker(mdk)
    live = await broker.book(BTC)
    it = live.__aiter__()
    first = await asyncio.wait_for(it.__anext__(), 5)
    v0 = first.version
    for _ in range(5):
        manual_sim.step()
    rest = await mdk.order_book(BTC)
    await until(lambda: live.book.change_id == rest.change_id, live)
    nxt = await asyncio.wait_for(it.__anext__(), 5)
    assert nxt.version >= v0 + 2  # intermediate states were skipped, the newest one is yielded
    await live.close()
    await broker.settle()
    assert manual_sim.subscriber_count(f"book.{BTC}.100ms") == 0
    await broker.close()


async def test_metrics_and_prometheus(sim: Simulator, dk: Deribit) -> None:
    broker = Broker(dk)
    c = broker.consumer([f"ticker.{BTC}.100ms"], name="m")
    await c.start()
    await c.get(timeout=5)
    m = broker.metrics()
    assert m["upstream"]["state"] == "open" and m["upstream"]["rtt_ms"] is not None
    ch = m["channels"][f"ticker.{BTC}.100ms"]
    assert ch["messages"] >= 1 and ch["latency_ms"] is not None and ch["consumers"] == 1
    assert m["consumers"]["m"]["consumed"] == 1 and m["consumers"]["m"]["latency_ms"] is not None
    text = broker.prometheus()
    assert "# TYPE deribit_kit_broker_channel_messages_total counter" in text
    assert f'deribit_kit_broker_channel_messages_total{{channel="ticker.{BTC}.100ms"}}' in text
    assert 'deribit_kit_broker_consumer_queue_depth{consumer="m"}' in text
    await broker.close()


async def test_a_book_without_updates_turns_stale_then_live_again() -> None:
    async with Simulator(seed=5, autostep=False, rate_limits=False) as sim:
        dk = await Deribit.connect(sim.ws_url, client_id=DEMO_CLIENT_ID, client_secret=DEMO_CLIENT_SECRET)
        try:
            broker = Broker(dk, stale_after=0.2)
            live = await broker.book("BTC-PERPETUAL")
            assert live.state == "live"
            # the exchange's clock is stopped: nothing arrives, so the watchdog marks the book stale
            stale = await asyncio.wait_for(_until(live, "stale"), 5)
            assert stale == "stale"
            assert broker.metrics()["channels"]["book.BTC-PERPETUAL.100ms"]["book_state"] == "stale"
            sim.step()  # the next change brings it back
            assert await asyncio.wait_for(_until(live, "live"), 5) == "live"
            await broker.close()
        finally:
            await dk.close()


async def _until(live: LiveBook, state: str) -> str:
    while live.state != state:
        await live.updated.wait()
    return live.state


async def test_option_chain_follows_the_exchange_calendar() -> None:
    """When the exchange's clock passes an expiry, that expiry leaves the chain and the newly listed
    one joins at the next refresh (driven here by hand instead of the periodic timer)."""
    from datetime import UTC, datetime

    now = [datetime(2026, 1, 5, 7, 59, 0, tzinfo=UTC).timestamp()]  # a Monday, a minute before 08:00 UTC
    async with Simulator(seed=6, autostep=False, rate_limits=False, clock=lambda: now[0]) as sim:
        dk = await Deribit.connect(sim.ws_url)  # public channels only: no key needed
        try:
            broker = Broker(dk)
            chain = await broker.subscribe_chain("BTC", refresh_interval=0)
            expiring = [c for c in chain.channels if "-5JAN26-" in c]
            assert expiring and not any("-8JAN26-" in c for c in chain.channels)
            now[0] += 120  # 08:01 UTC: the 5JAN26 dailies expire, the 8JAN26 dailies are listed
            sim.step()
            added, removed = await chain.refresh()
            assert set(expiring) <= set(removed)
            assert any("-8JAN26-" in n for n in added)
            await broker.settle()
            assert not any("-5JAN26-" in c for c in chain.channels)
            joined = [c for c in chain.channels if "-8JAN26-" in c]
            assert joined and all(sim.subscriber_count(c) == 1 for c in joined)
            await broker.close()
        finally:
            await dk.close()
