"""``KafkaSink``: a broker consumer that publishes its channels to Kafka with Deribit's continuity.

    sink = await KafkaSink(dk.broker, "127.0.0.1:9092", channels=["book.BTC-PERPETUAL.100ms"],
                           books="BTC", kind="option").start()
    ...
    await sink.stop()

Where a message arrives: the broker calls :meth:`KafkaSink._on_item` (a callback consumer: once
per frame, synchronously, right after the broker folded it into its live book). The callback
splices the exchange's ``data`` bytes out of the raw frame (no parse, no re-encode), puts the
envelope of :mod:`deribit_kit.pipeline.schema` around them, picks the partition (murmur2 of the
instrument, numbered per partition) and hands the value to librdkafka's queue
(``Producer.produce``: never blocks). librdkafka batches (``batch_messages``/``linger_ms``),
compresses (Snappy by default) and sends with idempotence and ``acks=all``; that is where a
message leaves. Delivery reports come back through :meth:`Producer.poll`, run from the loop.

* **snapshots**: the exchange's own (a subscribe, a resync, a reconnect) pass as they came; the sink
  adds one from the broker's :class:`~deribit_kit.live.LiveBook` when a book channel joins live,
  every ``snapshot_every`` changes (an int) or seconds (a float), and after a gap. Each one is also
  written to the compacted ``{prefix}.book.snapshots`` (once delivered, with its partition and
  offset in ``{prefix}.book``: a late reader starts there).
* **markers**: a ``resync`` when the broker's book broke its chain, ``epoch_end`` for every
  channel when the upstream connection ended (a new epoch follows), ``gap`` when the sink lost
  messages of a channel (below).
* **never a silent drop**: librdkafka's queue is bounded (``max_buffer`` messages). A full queue
  (backpressure), a delivery error, or an outage (every broker down, or nothing delivered for
  ``stall_timeout`` s) stops the affected channels: their messages are counted as lost, and once
  the cluster takes messages again each gets a ``gap`` marker (with the count) and a fresh
  snapshot. After an outage the producer is made anew (a cluster that came back empty does not
  know the old producer id) and the topics are created again if they are gone.
* **auto-discovery** (``books="BTC", kind="option"``): the book channel of every instrument of the
  currency and kind, re-listed every ``chain_refresh`` s (:class:`~deribit_kit.live.OptionChain`):
  new expiries join, expired ones leave; the list lives in the upstream (the client reconnects
  and restores it after a drop or a 10028 session end). Instruments go to ``{prefix}.instruments``
  and each channel's joining and leaving to ``{prefix}.channels``.
* **statistics**: :meth:`stats` (flat, numeric, with a ``state``) is listed on the broker
  (:meth:`Broker.attach`): ``/metrics`` and the dashboards show it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

import msgspec
import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from ..broker.broker import Broker
from ..broker.consumer import Consumer, Item, Notification
from ..errors import DeribitKitError, KafkaUnavailable
from ..live.chain import OptionChain
from ..pipeline import schema
from ..pipeline.murmur2 import partition_for
from ..transport.kafka import ensure_topics
from ..wire.channels import ChannelError, parse_channel
from ._chain import (
    KINDS,
    BrokerEvents,
    ChainChannels,
    HeldBooks,
    check_kind,
    checked_channels,
    consumer_channels,
    sink_broker,
)

__all__ = ["KafkaSink"]

log = logging.getLogger("deribit_kit.sinks.kafka")

COMPRESSIONS = ("snappy", "zstd", "lz4", "gzip", "none")
SINK_SNAPSHOT = {"by": "sink"}  # a snapshot the sink built from the broker's book (not the exchange's)


class _Chan:
    """One published channel: where its messages go, and what the sink knows of it."""

    __slots__ = ("book", "data_prefix", "header_tail", "key", "lost", "name", "partition", "pkey", "produced",
                 "since_snap", "snap_at", "topic")

    def __init__(self, name: str, topic: str, key: bytes, partition: int, book: bool) -> None:
        self.name = name
        self.topic = topic
        self.key = key
        self.partition = partition
        self.pkey = (topic, partition)
        self.book = book
        self.data_prefix = schema.data_prefix(name)
        self.header_tail = b',"ch":' + orjson.dumps(name) + b',"d":'
        self.lost: int | None = None  # not None: messages are being lost (a gap marker is due)
        self.produced = 0
        self.since_snap = 0
        self.snap_at = time.monotonic()


class KafkaSink:
    """Publishes broker channels (and whole currencies' books) to Kafka; see the module docs.

    ``broker`` is a :class:`~deribit_kit.broker.Broker` (or the facade). ``snapshot_every``: an int
    is a number of changes, a float a number of seconds (``"1000"`` / ``"30s"`` from the command
    line). ``config`` adds or overrides librdkafka settings.
    """

    def __init__(self, broker: Broker | Any, bootstrap: str, *, prefix: str = "deribit", channels: Iterable[str] = (),
                 books: str | Iterable[str] | None = None, kind: str = "option", book_interval: str = "100ms",
                 snapshot_every: int | float | str = 1000, compression: str = "snappy", linger_ms: float = 100.0,
                 batch_messages: int = 100, batch_bytes: int = 1 << 20, acks: str = "all", idempotence: bool = True,
                 retries: int = 2_147_483_647, retry_backoff_ms: int = 100, retry_backoff_max_ms: int = 1000,
                 max_buffer: int = 100_000, max_buffer_kbytes: int = 1 << 20, delivery_timeout_ms: int = 30_000,
                 stall_timeout: float = 5.0, partitions: int = 4, chain_refresh: float = 60.0,
                 chain_templates: Iterable[str] | None = None, config: dict[str, Any] | None = None,
                 name: str = "kafka-sink") -> None:
        broker = sink_broker(broker, "KafkaSink")
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {COMPRESSIONS}, not {compression!r}")
        check_kind(kind)
        self.broker = broker
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.topics = schema.topics(prefix)
        self.requested = checked_channels(channels)
        self.currencies = [books] if isinstance(books, str) else list(books or [])
        self.kind = kind
        self.book_interval = book_interval
        # the channels of each instrument of a followed chain (``{name}``: the instrument)
        self.chain_templates = list(chain_templates or (f"book.{{name}}.{book_interval}",))
        self.snap_changes, self.snap_seconds = _snapshot_every(snapshot_every)
        self.partitions = partitions
        self.chain_refresh = chain_refresh
        self.stall_timeout = stall_timeout
        self.max_buffer = max_buffer
        self.name = name
        self.config: dict[str, Any] = {
            "bootstrap.servers": bootstrap, "enable.idempotence": idempotence, "acks": acks,
            "compression.type": compression, "linger.ms": linger_ms, "batch.num.messages": batch_messages,
            "batch.size": batch_bytes, "retries": retries, "retry.backoff.ms": retry_backoff_ms,
            "retry.backoff.max.ms": retry_backoff_max_ms, "queue.buffering.max.messages": max_buffer,
            "queue.buffering.max.kbytes": max_buffer_kbytes, "message.timeout.ms": delivery_timeout_ms,
            "partitioner": "murmur2_random", "statistics.interval.ms": 1000, "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 1000, "socket.nagle.disable": True, "logger": log.getChild("librdkafka"),
            **(config or {}),
        }
        self.sid = os.urandom(4).hex()
        # counters (stats)
        self.produced = 0
        self.produced_bytes = 0
        self.delivered = 0
        self.delivered_bytes = 0
        self.snapshots = 0
        self.markers: dict[str, int] = {}
        self.encoded = 0  # frames without a spliceable raw text: their data encoded once
        self.lost = 0  # messages not published (each one covered by a gap marker)
        self.gaps = 0  # gap markers written
        self.errors: dict[str, int] = {}
        self.last_error: str | None = None
        self.outages = 0
        self.rebuilds = 0
        self.state = "new"
        self._latencies: deque[float] = deque(maxlen=4096)
        self._stats: dict[str, Any] = {}
        self._rate: tuple[float, int, int] = (time.monotonic(), 0, 0)
        # per channel / partition
        self._chans: dict[str, _Chan] = {}
        self._by_key: dict[tuple[str, bytes], list[_Chan]] = {}
        self._seq: dict[tuple[str, int], int] = {}
        self._nparts: dict[str, int] = {}
        self._held = HeldBooks(broker)
        self._epoch = 0
        self._gapped: set[str] = set()
        self._outage = False
        self._last_delivery = time.monotonic()
        self._n = 0
        # plumbing
        self._producer: Producer | None = None
        self._consumer: Consumer | None = None
        self._chains: list[OptionChain] = []
        self._chain_consumers: list[Consumer] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self._events = BrokerEvents(broker, self._on_connected, self._on_disconnected, self._on_resyncing)
        self._stopped = asyncio.Event()

    # ------------------------------------------------------------ the hot path
    def _on_item(self, n: Item) -> None:
        """One frame from the broker: envelope the exchange's data bytes and queue them (never waits)."""
        if type(n) is not Notification:
            return
        st = self._chans.get(n.channel)
        if st is None:
            st = self._new_channel(n.channel)
        if st.lost is not None:
            st.lost += 1
            self.lost += 1
            return
        data = n.data
        d = schema.splice_data(n.raw, st.data_prefix)
        if d is None:
            d = orjson.dumps(data)
            self.encoded += 1
        if st.book:
            kind = data.get("type") if type(data) is dict else None
            if kind == "change":
                hdr = b'{"v":1,"k":"change","t":'
            elif kind == "snapshot":
                hdr = b'{"v":1,"k":"snapshot","t":'
            else:
                hdr = b'{"v":1,"k":"data","t":'
        else:
            kind = None
            hdr = b'{"v":1,"k":"data","t":'
        pkey = st.pkey
        seq = self._seq[pkey] + 1
        value = b"".join((hdr, b'%d,"e":%d,"sid":"%s","s":%d' % (time.time_ns(), self._epoch, self._sid_b, seq),
                          st.header_tail, d, b"}"))
        if not self._send(st, value, seq, kind == "snapshot"):
            return
        if kind == "snapshot":
            st.since_snap = 0
            st.snap_at = time.monotonic()
        elif kind == "change":
            st.since_snap += 1
            if st.since_snap >= self.snap_changes:
                self._snapshot(st)

    def _send(self, st: _Chan, value: bytes, seq: int, snapshot: bool = False) -> bool:
        """Queue one value of ``st``; on a full queue the channel starts losing (a gap marker is due)."""
        producer = self._producer
        if producer is None or self._outage:
            self._start_loss(st)
            return False
        try:
            if snapshot:
                producer.produce(st.topic, value, st.key, st.partition, on_delivery=self._on_snapshot_delivery)
            else:
                producer.produce(st.topic, value, st.key, st.partition)
        except BufferError:
            self._start_loss(st)
            self._count_error("queue_full")
            return False
        except KafkaException as exc:
            self._start_loss(st)
            self._count_error(str(exc.args[0].name() if exc.args else exc))
            return False
        self._seq[st.pkey] = seq
        st.produced += 1
        self.produced += 1
        self.produced_bytes += len(value)
        n = self._n = self._n + 1
        if not n & 127:
            producer.poll(0)
        return True

    def _start_loss(self, st: _Chan) -> None:
        if st.lost is None:
            st.lost = 0
            self._gapped.add(st.name)
        st.lost += 1
        self.lost += 1

    def _new_channel(self, ch: str) -> _Chan:
        topic = schema.family_topic(self.prefix, ch)
        key = schema.channel_key(ch)
        nparts = self._nparts.get(topic) or self.partitions
        book = parse_channel(ch).family == "book"
        kb = key.encode()
        st = self._chans[ch] = _Chan(ch, topic, kb, partition_for(kb, nparts), book)
        self._by_key.setdefault((topic, st.key), []).append(st)
        self._seq.setdefault(st.pkey, 0)
        return st

    # ------------------------------------------------------------ snapshots and markers
    def _snapshot(self, st: _Chan) -> bool:
        """A snapshot of ``st``'s book as the broker holds it now (only when it is live)."""
        live = self._held.live(st.name)
        if live is None:
            return False
        data = live.snapshot()
        if data is None:
            return False
        seq = self._seq[st.pkey] + 1
        value = schema.envelope("snapshot", time.time_ns(), self._epoch, self.sid, seq, st.name, orjson.dumps(data),
                                SINK_SNAPSHOT)
        if self._send(st, value, seq, True):
            self.snapshots += 1
            st.since_snap = 0
            st.snap_at = time.monotonic()
            return True
        return False

    def _marker(self, st: _Chan, kind: str, **fields: Any) -> bool:
        seq = self._seq[st.pkey] + 1
        value = schema.marker(kind, time.time_ns(), self._epoch, self.sid, seq, st.name, **fields)
        if self._send(st, value, seq):
            self.markers[kind] = self.markers.get(kind, 0) + 1
            return True
        return False

    def _on_snapshot_delivery(self, err: KafkaError | None, msg: Message) -> None:
        """A snapshot reached ``{prefix}.book``: its copy goes to the compacted snapshots topic, with
        where it is (a late reader starts reading the book topic there)."""
        self._on_delivery(err, msg)
        if err is not None or self._producer is None:
            return
        value = msg.value()
        key = msg.key()
        if value is None or key is None:
            return
        ext = b',"src":[%d,%d]}' % (msg.partition() or 0, msg.offset() or 0)
        topic = self.topics["snapshots"]
        nparts = self._nparts.get(topic) or self.partitions
        copy = value[:-1] + ext
        with contextlib.suppress(BufferError, KafkaException):  # the next snapshot replaces it anyway
            self._producer.produce(topic, copy, key, partition_for(key, nparts))
            self.produced += 1
            self.produced_bytes += len(copy)

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered += 1
            self.delivered_bytes += len(msg)
            lat = msg.latency()
            if lat is not None:
                self._latencies.append(lat)
            self._last_delivery = time.monotonic()
            return
        code = err.name()
        self._count_error(code)
        topic, key = msg.topic(), msg.key()
        for st in self._by_key.get((topic or "", key or b""), ()):
            self._start_loss(st)
        if code not in ("_PURGE_QUEUE", "_PURGE_INFLIGHT"):
            log.warning("kafka sink %s: delivery to %s [%s] key %s failed: %s (the channel gets a gap marker and a "
                        "snapshot once the cluster takes messages again)", self.name, topic, msg.partition(),
                        key, err.str())

    def _count_error(self, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1
        self.last_error = code

    def _on_error(self, err: KafkaError) -> None:
        """The librdkafka error callback (on the loop, from poll): an outage starts here."""
        code = err.name()
        if code == "_ALL_BROKERS_DOWN" or err.fatal():
            self._count_error(code)
            self._enter_outage(err.str())
        else:
            log.debug("kafka sink %s: %s", self.name, err.str())

    def _on_stats(self, text: str) -> None:
        with contextlib.suppress(ValueError):
            self._stats = orjson.loads(text)

    # ------------------------------------------------------------ events of the upstream and the broker
    def _on_connected(self, epoch: Any = None) -> None:
        if isinstance(epoch, int):
            self._epoch = epoch

    def _on_disconnected(self, reason: Any = "") -> None:
        for st in list(self._chans.values()):
            if st.lost is None:
                self._marker(st, "epoch_end", reason=str(reason))

    def _on_resyncing(self, channel: str) -> None:
        st = self._chans.get(channel)
        if st is not None and st.lost is None:
            self._marker(st, "resync")

    # ------------------------------------------------------------ outages and gaps
    def _enter_outage(self, why: str) -> None:
        if self._outage:
            return
        self._outage = True
        self.outages += 1
        self.state = "outage"
        log.warning("kafka sink %s: Kafka at %s is out (%s): messages are counted as lost until it is back, then "
                    "each channel gets a gap marker and a snapshot", self.name, self.bootstrap, why)

    def _healthy(self) -> bool:
        p = self._producer
        return p is not None and not self._outage and len(p) < self.max_buffer // 2

    def _recover(self) -> None:
        """Every channel that lost messages: a gap marker with the count, then a snapshot (books)."""
        for name in sorted(self._gapped):
            st = self._chans.get(name)
            if st is None or st.lost is None:
                self._gapped.discard(name)
                continue
            lost, st.lost = st.lost, None
            if not self._marker(st, "gap", lost=lost):
                return  # the queue is full again: try later
            self._gapped.discard(name)
            self.gaps += 1
            if st.book:
                self._snapshot(st)  # when the broker's book is not live, the exchange's snapshot follows
        log.info("kafka sink %s: gap markers and snapshots written; publishing again", self.name)

    async def _supervise(self) -> None:
        """Polls delivery reports, writes periodic snapshots, rebuilds the producer after an outage."""
        loop = asyncio.get_running_loop()
        tick = 0.01
        last_check = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            p = self._producer
            if p is not None:
                p.poll(0)
            now = time.monotonic()
            if self._outage:
                await self._rebuild(loop)
                continue
            if p is not None and len(p) and now - self._last_delivery > self.stall_timeout:
                self._enter_outage(f"nothing delivered for {self.stall_timeout:g} s")
                continue
            if self._gapped and self._healthy():
                self._recover()
            if now - last_check >= 0.1:
                last_check = now
                if self.snap_seconds:
                    for st in list(self._chans.values()):
                        due = st.book and st.lost is None and now - st.snap_at >= self.snap_seconds
                        if due and not self._snapshot(st):
                            st.snap_at = now
                if not self._outage:
                    self.state = "backpressure" if self._gapped else "ok"

    async def _rebuild(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait for the cluster (backoff), then a new producer and the topics again."""
        delay = 0.1
        while True:
            try:
                parts = await loop.run_in_executor(None, lambda: ensure_topics(self.bootstrap, self.prefix,
                                                                             partitions=self.partitions, timeout=2.0))
                break
            except KafkaUnavailable as exc:
                log.debug("kafka sink %s: still out: %s", self.name, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        old = self._producer
        self._producer = None
        if old is not None:  # what the old producer still holds is reported lost (gap markers cover it)
            with contextlib.suppress(KafkaException):
                old.purge(True, True, False)
            old.poll(0)
            await loop.run_in_executor(None, old.flush, 1.0)
            old.poll(0)
        self._nparts.update(parts)
        self._producer = self._make_producer()
        self.rebuilds += 1
        self._outage = False
        self._last_delivery = time.monotonic()
        for st in self._chans.values():  # messages lost while out: every channel resumes with a gap marker
            if st.lost is None:
                st.lost = 0
                self._gapped.add(st.name)
        self.state = "recovering"
        log.warning("kafka sink %s: Kafka at %s is back (producer made anew)", self.name, self.bootstrap)

    def _make_producer(self) -> Producer:
        conf = {**self.config, "on_delivery": self._on_delivery, "error_cb": self._on_error,
                "stats_cb": self._on_stats}
        return Producer(conf)

    # ------------------------------------------------------------ channels and books
    async def _joined(self, channels: list[str]) -> None:
        """Channels that joined: their instrument and a channel record, and a snapshot of books already live."""
        for ch in channels:
            st = self._chans.get(ch) or self._new_channel(ch)
            self._meta("channels", ch, "channel", orjson.dumps({"on": True}))
            if st.book and st.lost is None:
                self._snapshot(st)
        for ch in channels:
            inst_name = schema.channel_key(ch)
            try:
                info = parse_channel(ch)
            except ChannelError:
                continue
            if not info.instrument:
                continue
            inst = self.broker.upstream.cached_instrument(inst_name)
            if inst is None:
                try:
                    inst = await asyncio.wait_for(self.broker.upstream.instrument(inst_name), 5.0)
                except Exception as exc:  # any source: the instruments topic misses one entry, no more
                    log.debug("kafka sink %s: no instrument data for %s (%s)", self.name, inst_name, exc)
                    continue
            self._meta("instruments", inst_name, "instrument", orjson.dumps(msgspec.to_builtins(inst)))

    def _left(self, channels: list[str]) -> None:
        for ch in channels:
            self._meta("channels", ch, "channel", orjson.dumps({"on": False}))
            self._held.release((ch,))
            st = self._chans.pop(ch, None)
            if st is not None:
                self._gapped.discard(ch)
                lst = self._by_key.get((st.topic, st.key))
                if lst and st in lst:
                    lst.remove(st)

    def _meta(self, which: str, key: str, kind: str, data: bytes) -> None:
        p = self._producer
        if p is None:
            return
        topic = self.topics[which]
        kb = key.encode()
        part = partition_for(kb, self._nparts.get(topic) or (1 if which == "channels" else self.partitions))
        seq = self._seq[(topic, part)] = self._seq.get((topic, part), 0) + 1
        value = schema.envelope(kind, time.time_ns(), self._epoch, self.sid, seq, key if which == "channels"
                                else f"instrument.{key}", data)
        try:
            p.produce(topic, value, kb, part)
        except (BufferError, KafkaException) as exc:
            self._count_error("meta_" + type(exc).__name__)
        else:
            self.produced += 1
            self.produced_bytes += len(value)

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> KafkaSink:
        """Create the topics, start the producer and join the channels."""
        if self._started:
            return self
        self._started = True
        loop = asyncio.get_running_loop()
        self._sid_b = self.sid.encode()
        parts = await loop.run_in_executor(None, lambda: ensure_topics(self.bootstrap, self.prefix,
                                                                     partitions=self.partitions))
        self._nparts.update(parts)
        self._producer = self._make_producer()
        self.state = "ok"
        up = self.broker.upstream
        self._epoch = int(up.epoch)
        self._events.hook()
        attach = getattr(self.broker, "attach", None)
        if attach is not None:
            attach(self.name, self)
        self._tasks.append(loop.create_task(self._supervise()))
        try:
            if self.requested:
                self._held.hold(self.requested)
                self._consumer = self.broker.consumer(self.requested, "drop_oldest", 1, callback=self._on_item,
                                                      name=f"{self.name}:channels")
                await self._consumer.start()
                missing = sorted(set(self.requested) - set(self._consumer.accepted))
                if missing:
                    log.warning("kafka sink %s: the upstream refused %s", self.name, ", ".join(missing))
                    self._held.release(missing)
                await self._joined(list(self._consumer.accepted))
            for currency in self.currencies:
                for kind in (KINDS if self.kind == "any" else (self.kind,)):
                    await self._add_chain(currency, kind)
            if self.currencies and self.chain_refresh > 0:
                self._tasks.append(loop.create_task(self._refresh_loop()))
        except BaseException:
            await self.stop()
            raise
        return self

    async def _add_chain(self, currency: str, kind: str) -> None:
        for template in self.chain_templates:
            cons = self.broker.consumer([], "drop_oldest", 1, callback=self._on_item,
                                        name=f"{self.name}:{currency}-{kind}:{template.split('.')[0]}")
            await cons.start()
            self._chain_consumers.append(cons)
            channels = ChainChannels(cons, self._held.hold, self._joined, self._left)
            chain = OptionChain(self.broker.upstream, currency, None, kind, None, template, channels)
            self._chains.append(chain)
            added, _ = await chain.refresh()
            log.info("kafka sink %s: %d %s %s channel(s) (%s)", self.name, len(added), currency, kind, template)

    async def refresh(self) -> tuple[list[str], list[str]]:
        """List the followed chains' instruments again now; returns (joined, left) channels."""
        added: list[str] = []
        removed: list[str] = []
        for chain in list(self._chains):
            try:
                a, r = await chain.refresh()
            except DeribitKitError as exc:
                log.warning("kafka sink %s: chain refresh failed: %s", self.name, exc)
                continue
            added += a
            removed += r
            if a or r:
                log.info("kafka sink %s: %s %s: %d joined, %d left", self.name, chain.currency, chain.kind,
                         len(a), len(r))
        return added, removed

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.chain_refresh)
            await self.refresh()

    @property
    def channels(self) -> list[str]:
        """Every channel published now."""
        return consumer_channels(self._consumer, self._chain_consumers)

    async def flush(self, timeout: float = 10.0) -> int:
        """Wait until librdkafka delivered what is queued (or ``timeout``); returns what is left."""
        p = self._producer
        if p is None:
            return 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(p) and loop.time() < deadline:
            p.poll(0)
            await asyncio.sleep(0.005)  # librdkafka's own thread delivers; the loop serves the reports
        p.poll(0)
        return len(p)

    async def stop(self, timeout: float = 10.0) -> None:
        """Leave the channels, deliver what is queued (at most ``timeout`` s), stop."""
        if not self._started or self._stopped.is_set():
            return
        for c in [self._consumer, *self._chain_consumers]:
            if c is not None:
                c.close_nowait()
        self._held.release_all()
        self._events.unhook()
        left = await self.flush(timeout)
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if left:
            log.warning("kafka sink %s: %d message(s) were not delivered before stopping", self.name, left)
        self.state = "stopped"
        detach = getattr(self.broker, "detach", None)
        if detach is not None:
            detach(self.name, self)
        self._producer = None
        self._stopped.set()

    async def run(self, seconds: float | None = None) -> None:
        """Start (if needed), publish for ``seconds`` (``None``: until cancelled), then stop."""
        await self.start()
        try:
            await asyncio.wait_for(self._stopped.wait(), seconds)
        except TimeoutError:
            pass
        finally:
            await self.stop()

    async def __aenter__(self) -> KafkaSink:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------ figures
    def latency_ms(self) -> tuple[float | None, float | None]:
        """Delivery latency (produce to broker acknowledgement) p50 and p99 over the last messages, ms."""
        lat = sorted(self._latencies)
        if not lat:
            return None, None
        return lat[len(lat) // 2] * 1000.0, lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000.0

    def stats(self) -> dict[str, Any]:
        """Flat figures for the broker's metrics and the dashboards (numbers, and a ``state``)."""
        now = time.monotonic()
        t0, m0, b0 = self._rate
        dt = now - t0
        if dt >= 0.5:
            self._rate = (now, self.produced, self.produced_bytes)
        rate = (self.produced - m0) / dt if dt > 0 else 0.0
        brate = (self.produced_bytes - b0) / dt if dt > 0 else 0.0
        p50, p99 = self.latency_ms()
        s = self._stats
        topics = s.get("topics") or {}
        batch_avg = [t.get("batchcnt", {}).get("avg", 0) for t in topics.values() if t.get("batchcnt")]
        batch_bytes = [t.get("batchsize", {}).get("avg", 0) for t in topics.values() if t.get("batchsize")]
        wire = sum(b.get("txbytes", 0) for b in (s.get("brokers") or {}).values())
        p = self._producer
        return {
            "state": self.state, "channels": len(self._chans), "produced": self.produced,
            "produced_bytes": self.produced_bytes, "messages_per_s": rate, "bytes_per_s": brate,
            "delivered": self.delivered, "delivered_bytes": self.delivered_bytes,
            "queue_depth": len(p) if p is not None else 0, "queue_max": self.max_buffer,
            "batch_messages_avg": max(batch_avg) if batch_avg else 0,
            "batch_bytes_avg": max(batch_bytes) if batch_bytes else 0,
            "compression_ratio": (self.delivered_bytes / wire) if wire else 0.0,
            "delivery_p50_ms": p50, "delivery_p99_ms": p99, "snapshots": self.snapshots,
            "markers": sum(self.markers.values()), "gap_markers": self.gaps, "lost": self.lost,
            "gapped_channels": len(self._gapped), "errors": sum(self.errors.values()),
            "last_error": self.last_error, "outages": self.outages, "producer_rebuilds": self.rebuilds,
            "encoded": self.encoded, "epoch": self._epoch,
        }

    def __repr__(self) -> str:
        return f"<KafkaSink {self.bootstrap} {self.prefix} {self.state} channels={len(self._chans)}>"


def _snapshot_every(value: int | float | str) -> tuple[int, float]:
    """(changes, seconds): ``1000`` or ``"1000"`` is a number of changes, ``30.0`` or ``"30s"`` seconds."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text.endswith("s"):
            return 1 << 62, float(text[:-1])
        if "." in text:
            return 1 << 62, float(text)
        value = int(text)
    if isinstance(value, bool) or value <= 0:
        raise ValueError(f"snapshot_every must be a positive number of changes or seconds, not {value!r}")
    if isinstance(value, float):
        return 1 << 62, value
    return value, 0.0
