"""The Kafka pipeline end to end against a real Kafka-protocol broker (Tansu on loopback): the
embedded exchange -> broker -> KafkaSink -> Kafka -> KafkaSource -> a second broker. Books served
from Kafka equal the exchange's; a late reader bootstraps from the snapshots topic; a skipped
change_id, duplicates, malformed values, a full producer queue and a Kafka restart are all visible
and recovered; the sink follows the exchange's calendar and survives reconnects and 10028 session
ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from kafka_fixtures import kafka, prefix

from deribit_kit import Deribit
from deribit_kit.broker import Broker
from deribit_kit.live.livebook import LiveBook
from deribit_kit.pipeline.murmur2 import partition_for
from deribit_kit.sim import Simulator
from deribit_kit.sinks.kafka import KafkaSink
from deribit_kit.transport.kafka import LocalKafka
from deribit_kit.upstream.kafka import KafkaSource

BTC = "BTC-PERPETUAL"
ETH = "ETH-PERPETUAL"
BOOK = f"book.{BTC}.100ms"

pytestmark = pytest.mark.timeout(60)
__all__ = ["kafka", "prefix"]  # the fixtures


async def until(pred: Callable[[], bool], timeout: float = 15.0) -> None:
    async def run() -> None:
        while not pred():
            await asyncio.sleep(0.01)  # bounded poll of counters fed by other tasks and threads
    await asyncio.wait_for(run(), timeout)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(seed=3, tick_interval=0.05, rate_limits=False) as s:
        yield s


@pytest.fixture
async def dk(sim: Simulator) -> AsyncIterator[Deribit]:
    client = await Deribit.connect(sim.ws_url, backoff_initial=0.01, backoff_max=0.2)
    yield client
    await client.close()


class Remote:
    """A second broker fed only from the topics."""

    def __init__(self, bootstrap: str, prefix: str) -> None:
        self.source = KafkaSource(bootstrap, prefix)
        self.broker = Broker(self.source)

    async def book(self, instrument: str = BTC) -> LiveBook:
        return await self.broker.book(instrument, timeout=20)

    async def close(self) -> None:
        await self.broker.close()
        await self.source.close()


async def exchange_book(dk: Deribit, instrument: str) -> dict[str, Any]:
    return await dk.call("public/get_order_book", {"instrument_name": instrument, "depth": 10_000})


async def assert_equal_after_halt(sim: Simulator, dk: Deribit, remote: LiveBook, instrument: str = BTC) -> None:
    """Halt the instrument, wait until the remote book holds the exchange's last change_id, compare."""
    sim.faults.halt(instrument)
    want = await exchange_book(dk, instrument)
    await until(lambda: remote.book.change_id == want["change_id"] and remote.state == "live")
    assert [list(lv) for lv in remote.book.bids()] == want["bids"]
    assert [list(lv) for lv in remote.book.asks()] == want["asks"]
    sim.faults.halt(instrument, False)


def read_topic(bootstrap: str, topic: str, partitions: int = 4) -> list[tuple[int, int, dict[str, Any] | bytes]]:
    """Every value of ``topic`` from its beginning (a plain consumer; decoded when it is JSON)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "reader", "enable.partition.eof": True,
                  "enable.auto.commit": False, "log_level": 0})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out: list[tuple[int, int, dict[str, Any] | bytes]] = []
    eof: set[int] = set()
    try:
        for _ in range(400):
            if len(eof) == partitions:
                break
            m = c.poll(0.1)
            if m is None:
                continue
            if m.error():
                eof.add(m.partition() or 0)
                continue
            v = m.value() or b""
            try:
                out.append((m.partition() or 0, m.offset() or 0, orjson.loads(v)))
            except orjson.JSONDecodeError:
                out.append((m.partition() or 0, m.offset() or 0, v))
    finally:
        c.close()
    return out


async def test_books_served_from_kafka_equal_the_exchange(kafka: LocalKafka, prefix: str, sim: Simulator,
                                                         dk: Deribit) -> None:
    remote = Remote(kafka.bootstrap, prefix)  # the reader starts first: it creates the topics, the sink follows
    await remote.source.start()
    sink = await KafkaSink(dk.broker, kafka.bootstrap, prefix=prefix, channels=[BOOK, f"book.{ETH}.100ms",
                           f"ticker.{BTC}.100ms"], linger_ms=5).start()
    try:
        btc, eth = await remote.book(BTC), await remote.book(ETH)
        local = dk.broker.books[BTC]
        await until(lambda: btc.book.changes >= 10)
        await assert_equal_after_halt(sim, dk, btc, BTC)
        await assert_equal_after_halt(sim, dk, eth, ETH)
        assert btc.book.gaps == 0 and btc.book.resyncs == 0 and local.book.gaps == 0
        ticker = await remote.source.call("public/ticker", {"instrument_name": BTC})  # a lookup from the topic
        assert ticker["instrument_name"] == BTC
        assert (await remote.source.instrument(BTC)).tick_size == (await dk.instrument(BTC)).tick_size
        stats = dk.broker.metrics()["components"][sink.name]  # the sink on the broker's metrics
        assert stats["state"] == "ok" and stats["produced"] > 0 and stats["errors"] == 0 and stats["lost"] == 0
        assert f'deribit_kit_broker_component_produced{{component="{sink.name}"}}' in dk.broker.prometheus()
        remote.broker.attach("kafka-source", remote.source)
        src = remote.broker.metrics()["components"]["kafka-source"]
        assert src["books_live"] == 2 and src["malformed"] == 0
    finally:
        await remote.close()
        await sink.stop()
    assert sink.name not in dk.broker.metrics()["components"]


async def test_a_refused_channel_is_reported_and_its_book_let_go(kafka: LocalKafka, prefix: str, dk: Deribit) -> None:
    nope = "book.NOPE-PERPETUAL.100ms"
    sink = await KafkaSink(dk.broker, kafka.bootstrap, prefix=prefix, channels=[BOOK, nope], linger_ms=5).start()
    try:
        assert sink.channels == [BOOK]  # the exchange refused the unknown instrument; the rest is published
        await until(lambda: "NOPE-PERPETUAL" not in dk.broker.books)  # let go (the broker forgets it next turn)
        assert BTC in dk.broker.books
        await until(lambda: dk.broker.metrics()["components"][sink.name]["produced"] >= 2)
    finally:
        await sink.stop()
    assert dk.broker.books == {}


async def test_a_late_reader_bootstraps_from_the_snapshots_topic(kafka: LocalKafka, prefix: str, sim: Simulator,
                                                                dk: Deribit) -> None:
    futures = [i.instrument_name for i in await dk.instruments("BTC", "future")]
    sink = await KafkaSink(dk.broker, kafka.bootstrap, prefix=prefix, channels=[f"book.{n}.100ms" for n in futures],
                           linger_ms=5, snapshot_every=25).start()
    try:
        local = await dk.broker.book(BTC)
        await until(lambda: local.book.changes >= 60 and sink.snapshots >= 2 * len(futures))
        remote = Remote(kafka.bootstrap, prefix)  # joins long after the start, from the end of the book topic
        try:
            books = await asyncio.gather(*(remote.book(n) for n in futures))  # several books of a partition at once
            assert remote.source.catch_ups == len(futures)  # each sought back to its latest snapshot, not offset 0
            assert remote.source.messages < sink.delivered
            assert all(b.book.snapshots == 1 and b.book.gaps == 0 for b in books)
            book = books[futures.index(BTC)]
            await assert_equal_after_halt(sim, dk, book)
        finally:
            await remote.close()
    finally:
        await sink.stop()


@asynccontextmanager
async def book_pipeline(kafka: LocalKafka, prefix: str, dk: Deribit,
                        changes: int) -> AsyncIterator[tuple[KafkaSink, Remote, LiveBook]]:
    """The sink publishing BTC's book, a remote reading it, and the remote's book once it has applied
    ``changes`` changes; the remote is closed and the sink stopped on the way out."""
    sink = await KafkaSink(dk.broker, kafka.bootstrap, prefix=prefix, channels=[BOOK], linger_ms=5).start()
    remote = Remote(kafka.bootstrap, prefix)
    try:
        book = await remote.book()
        await until(lambda: book.book.changes >= changes)
        yield sink, remote, book
    finally:
        await remote.close()
        await sink.stop()


async def test_a_skipped_change_id_reaches_the_remote_as_a_resync(kafka: LocalKafka, prefix: str, sim: Simulator,
                                                                 dk: Deribit) -> None:
    async with book_pipeline(kafka, prefix, dk, changes=5) as (sink, remote, book):
        sim.faults.skip_change_id(BTC)
        await until(lambda: book.book.gaps >= 1 and book.book.resyncs >= 1 and book.state == "live")
        local = dk.broker.books[BTC].book
        assert (book.book.gaps, book.book.resyncs) == (local.gaps, local.resyncs)  # the live book's counts
        assert sink.markers.get("resync", 0) >= 1 and remote.source.breaks >= 1
        await assert_equal_after_halt(sim, dk, book)


async def test_duplicates_and_malformed_values_are_skipped(kafka: LocalKafka, prefix: str, sim: Simulator,
                                                          dk: Deribit) -> None:
    async with book_pipeline(kafka, prefix, dk, changes=10) as (_sink, remote, book):
        sim.faults.halt(BTC)
        want = (await exchange_book(dk, BTC))["change_id"]
        await until(lambda: book.book.change_id == want)
        topic = f"{prefix}.book"
        part = partition_for(BTC.encode(), 4)
        values = [v for p, _o, v in read_topic(kafka.bootstrap, topic) if p == part and isinstance(v, dict)]
        changes = [v for v in values if v["k"] == "change"][-5:]
        again = Producer({"bootstrap.servers": kafka.bootstrap, "log_level": 0})
        for v in changes:  # delivered twice, as after a rebalance: same sequence numbers, same change_ids
            again.produce(topic, orjson.dumps(v), BTC.encode(), part)
        replayed = {**changes[-1], "sid": "another"}  # another writer's copy: an old change_id
        again.produce(topic, orjson.dumps(replayed), BTC.encode(), part)
        again.produce(topic, b"{not json", BTC.encode(), part)
        again.produce(topic, orjson.dumps({**changes[-1], "v": 99}), BTC.encode(), part)
        assert again.flush(10) == 0
        before = (book.book.changes, book.book.snapshots, remote.source.forwarded)
        await until(lambda: remote.source.malformed == 1 and remote.source.unknown_version == 1
                    and remote.source.duplicates >= 6)
        assert (book.book.changes, book.book.snapshots, remote.source.forwarded) == before  # nothing applied twice
        assert "not JSON" in (remote.source.last_malformed or "") or remote.source.malformed == 1
        assert book.state == "live" and book.book.gaps == 0
        sim.faults.halt(BTC, False)
        await until(lambda: book.book.changes >= before[0] + 3)  # the rest is unaffected
        await assert_equal_after_halt(sim, dk, book)


async def test_a_full_producer_queue_gives_a_gap_marker(kafka: LocalKafka, prefix: str, sim: Simulator,
                                                       dk: Deribit) -> None:
    sink = await KafkaSink(dk.broker, kafka.bootstrap, prefix=prefix, channels=[BOOK, f"book.{ETH}.100ms"],
                           linger_ms=400, max_buffer=4, batch_messages=1000).start()
    remote = Remote(kafka.bootstrap, prefix)
    try:
        book = await remote.book()
        await until(lambda: sink.gaps >= 1 and sink.lost >= 1)
        await until(lambda: book.book.gaps >= 1 and book.state == "live")
        values = [v for _p, _o, v in read_topic(kafka.bootstrap, f"{prefix}.book") if isinstance(v, dict)]
        gaps = [i for i, v in enumerate(values) if v["k"] == "gap"]
        assert gaps and all(values[i]["d"] is None and values[i]["lost"] >= 1 for i in gaps)
        first = values[gaps[0]]
        after = [v for v in values[gaps[0] + 1:] if v["ch"] == first["ch"]]
        assert after and after[0]["k"] == "snapshot"  # a fresh snapshot right after the marker
        assert sink.stats()["lost"] == sink.lost and sink.errors.get("queue_full", 0) >= 1
        await assert_equal_after_halt(sim, dk, book)
    finally:
        await remote.close()
        await sink.stop()


async def test_kafka_stopped_and_started_again_mid_stream(prefix: str, sim: Simulator, dk: Deribit) -> None:
    with LocalKafka() as kafka:  # its own broker: this one goes away and comes back empty
        sink = await KafkaSink(dk.broker, kafka.bootstrap, prefix=prefix, channels=[BOOK], linger_ms=5,
                               snapshot_every=40, stall_timeout=2.0).start()
        remote = Remote(kafka.bootstrap, prefix)
        try:
            book = await remote.book()
            await until(lambda: book.book.changes >= 5)
            kafka.stop()
            await until(lambda: sink.state == "outage")
            lost = sink.lost
            await until(lambda: sink.lost >= lost + 5)  # the exchange goes on: counted, not silently dropped
            kafka.start()
            await until(lambda: sink.rebuilds >= 1 and sink.gaps >= 1, timeout=30)
            await until(lambda: book.book.gaps >= 1 and book.book.resyncs >= 1 and book.state == "live", timeout=30)
            assert sink.outages >= 1 and sink.stats()["state"] in ("ok", "recovering", "backpressure")
            await assert_equal_after_halt(sim, dk, book)
        finally:
            await remote.close()
            await sink.stop(2.0)


class FakeClock:
    def __init__(self, when: datetime) -> None:
        self.t = when.timestamp()

    def __call__(self) -> float:
        return self.t


async def test_auto_discovery_follows_the_calendar(kafka: LocalKafka, prefix: str) -> None:
    clock = FakeClock(datetime(2025, 1, 6, 7, 59, 59, tzinfo=UTC))  # a Monday, a second before the daily expiry
    async with Simulator(seed=5, clock=clock, autostep=False, rate_limits=False) as sim:
        dk = await Deribit.connect(sim.ws_url)
        sink = await KafkaSink(dk.broker, kafka.bootstrap, prefix=prefix, books="ETH", kind="option",
                               chain_refresh=0.2, linger_ms=5).start()
        remote = Remote(kafka.bootstrap, prefix)
        try:
            daily = [c for c in sink.channels if "-6JAN25-" in c]
            assert daily and all(c.startswith("book.ETH-") for c in sink.channels)
            await remote.source.start()
            sim.step()
            clock.t += 2.0  # 08:00:01: the daily expires, the next one is listed
            sim.step()
            await until(lambda: not any("-6JAN25-" in c for c in sink.channels)
                        and any("-9JAN25-" in c for c in sink.channels))
            src = remote.source
            await until(lambda: all(src._published.get(c) is False for c in daily)
                        and any("-9JAN25-" in n for n in src._instruments))
            sim.step()
            listed = [i.instrument_name for i in await src.instruments("ETH", "option")]
            assert any("-9JAN25-" in n for n in listed) and not any("-6JAN25-" in n for n in listed)
            new = next(c for c in sink.channels if "-9JAN25-" in c)
            book = await remote.broker.book(new.split(".")[1], timeout=20)  # served from the topic
            assert book.state == "live"
        finally:
            await remote.close()
            await sink.stop()
            await dk.close()



async def test_the_sink_survives_reconnects_and_10028_session_ends(kafka: LocalKafka, prefix: str, sim: Simulator,
                                                                  dk: Deribit) -> None:
    sink = await KafkaSink(dk.broker, kafka.bootstrap, prefix=prefix, books="ETH", kind="future",
                           chain_refresh=0.2, linger_ms=5).start()
    chain = sink.channels
    remote = Remote(kafka.bootstrap, prefix)
    try:
        book = await remote.book(ETH)
        await until(lambda: book.book.changes >= 3)
        reconnected = asyncio.ensure_future(dk.reconnected.wait(10))
        sim.faults.drop_connections()  # the upstream drops: epoch_end markers, then the exchange's snapshots
        await reconnected
        await until(lambda: book.book.resyncs >= 1 and book.state == "live")
        n = book.book.changes
        await until(lambda: book.book.changes >= n + 3)  # the chain goes on in the new epoch
        reconnected = asyncio.ensure_future(dk.reconnected.wait(10))
        limited = asyncio.ensure_future(dk.rate_limited.wait(10))
        sim.faults.rate_limit_storm(1)  # Deribit answers 10028 and ends the session
        assert await dk.get_time() > 0
        await limited
        await reconnected
        await until(lambda: book.book.resyncs >= 2 and book.state == "live")
        n = book.book.changes
        await until(lambda: book.book.changes >= n + 3)
        assert sink.markers.get("epoch_end", 0) >= 2 * len(chain) and sink.lost == 0
        assert (await sink.refresh()) == ([], []) and sink.channels == chain  # the followed chain is whole
        local = dk.broker.books[ETH].book
        assert (book.book.gaps, book.book.resyncs) == (local.gaps, local.resyncs)
        await assert_equal_after_halt(sim, dk, book, ETH)
    finally:
        await remote.close()
        await sink.stop()
