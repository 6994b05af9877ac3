"""``KafkaSource``: the topics a :class:`~deribit_kit.sinks.kafka.KafkaSink` writes, as the broker's
upstream — books, chains, consumers, dashboards and the Deribit port on another machine.

    source = await KafkaSource("kafka:9092", "deribit").start()
    broker = Broker(source)
    book = await broker.book("BTC-PERPETUAL")        # bootstrapped from deribit.book.snapshots

Where a message arrives: one worker thread polls librdkafka (``Consumer.poll``/``consume``, assigned
to every partition of the prefix's topics: no consumer group to wait for) and hands each batch to
the loop; :meth:`KafkaSource._on_batch` decodes each value (:func:`deribit_kit.pipeline.schema.decode`:
a malformed or unknown-version value is counted, logged and skipped), checks the sink's numbering of
its partition (a jump is lost messages: the books of that partition resync; a repeat is a duplicate)
and folds book messages into each channel's :class:`~deribit_kit.pipeline.continuity.BookContinuity`.
What the rules forward leaves through the broker's sink ``sink(channel, data, raw)``, ``raw`` a
Deribit notification frame around the exchange's ``data`` bytes.

* **bootstrap**: at start the compacted topics are read from their beginning (instruments, the
  channels the sink publishes, the latest snapshot per instrument with its offset in
  ``{prefix}.book``); the family topics are read from their end. A book subscribed then (or any
  time later) seeks its partition of ``{prefix}.book`` back to its latest snapshot and replays
  that partition for it alone up to where the others are: its book is exact without reading the
  topic from offset 0.
* **continuity**: a book waits for a snapshot; changes chain by ``prev_change_id``; duplicates
  (``change_id`` not newer, a repeated sequence number) are ignored; a broken chain reaches the
  broker as it came (its book counts the gap and resyncs), and a ``gap``, ``resync`` or
  ``epoch_end`` marker of the sink, or lost messages of a partition, make the book resync
  (``interrupted``); the next snapshot on the topic serves it.
* **resync** asks nothing of the sink: the sink writes snapshots every N changes or T seconds
  and after every gap.
* **lookups**: instruments from ``{prefix}.instruments`` (as of now: expired ones leave, so remote
  option chains follow the calendar), index prices and tickers from their topics,
  ``public/get_order_book`` from the broker's live book (:attr:`KafkaSource.book_source`);
  ``private/*`` is refused: a topic has no account.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec
import orjson
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, KafkaException, Message, TopicPartition

from ..errors import DeribitKitError, KafkaUnavailable, error_for_code
from ..events import Event
from ..models import Instrument
from ..pipeline import continuity as cont
from ..pipeline import schema
from ..pipeline.murmur2 import partition_for
from ..transport.kafka import ensure_topics, pipeline_topics
from ..wire.channels import ChannelError, parse_channel
from ._offline import UNANSWERED, OfflineUpstream, instrument_name, matches, order_book_reply
from .protocol import Sink

__all__ = ["KafkaSource", "parse_kafka_url"]

log = logging.getLogger("deribit_kit.upstream.kafka")

REPORTED = 20  # malformed messages logged one by one; past that, counted


def parse_kafka_url(url: str) -> tuple[str, str]:
    """``kafka://HOST:PORT[,HOST:PORT...]/PREFIX`` -> (bootstrap, prefix); the prefix defaults to ``deribit``."""
    if not url.startswith("kafka://"):
        raise ValueError(f"not a kafka:// URL: {url!r}")
    rest = url[len("kafka://"):]
    bootstrap, _, prefix = rest.partition("/")
    if not bootstrap:
        raise ValueError(f"{url!r}: no bootstrap address")
    return bootstrap, prefix.strip("/") or "deribit"


class _Sub:
    """A subscribed channel: where its messages are, and (books) its chain."""

    __slots__ = ("book", "chain", "expect_resync", "name", "partition", "want_snapshot")

    def __init__(self, name: str, book: bool, partition: int) -> None:
        self.name = name
        self.book = book
        self.partition = partition
        self.chain = cont.BookContinuity() if book else None
        self.expect_resync = False  # the broker will ask a resync for what this source told it (a break, a gap)
        self.want_snapshot = False  # the broker's book broke on its own (malformed, crossed): the next snapshot serves


class KafkaSource(OfflineUpstream):
    """The pipeline's topics as an :class:`~deribit_kit.upstream.Upstream` (see the module docs)."""

    _what = "this Kafka source"

    def __init__(self, bootstrap: str, prefix: str = "deribit", *, fetch_wait_ms: int = 5,
                 bootstrap_timeout: float = 15.0, config: dict[str, Any] | None = None,
                 name: str | None = None) -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.topics = schema.topics(prefix)
        self.name = name or f"kafka {bootstrap}/{prefix}"
        self.bootstrap_timeout = bootstrap_timeout
        self.config: dict[str, Any] = {
            "bootstrap.servers": bootstrap, "group.id": f"deribit-kit-{os.urandom(4).hex()}",
            "enable.auto.commit": False, "auto.offset.reset": "earliest", "enable.partition.eof": True,
            "fetch.wait.max.ms": fetch_wait_ms, "statistics.interval.ms": 1000, "logger": log.getChild("librdkafka"),
            "socket.nagle.disable": True, "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 1000,
            **(config or {}),
        }
        self.connected = Event("connected")
        self.disconnected = Event("disconnected")
        self.interrupted = Event("interrupted")  # (channels, gap): a marker or lost messages of these books
        self.book_source: Callable[[str], dict[str, Any] | None] | None = None
        self._sink: Sink | None = None
        self._state = "new"
        self._epoch = 1
        self._subs: dict[str, _Sub] = {}
        self._by_part: dict[int, set[str]] = {}  # book partition -> subscribed book channels
        self._seqs: dict[tuple[str, int], cont.PartitionSequence] = {}
        self._nparts: dict[str, int] = {}
        self._instruments: dict[str, Instrument] = {}
        self._published: dict[str, bool] = {}  # channel -> the sink publishes it (from {prefix}.channels)
        self._snaps: dict[str, tuple[str, int, int]] = {}  # instrument -> (channel, partition, offset) of its snapshot
        self._tickers: dict[str, Any] = {}
        self._index: dict[str, float] = {}
        self._replay: dict[int, tuple[int, set[str]]] = {}  # book partition -> (until offset, catching channels)
        self._seeks: deque[tuple[int, int, str]] = deque()  # (partition, offset, channel) for the worker
        self._sought: dict[int, int] = {}  # book partition -> where a seek put it before anything was read
        self._eof: set[tuple[str, int]] = set()
        self._compacted: set[tuple[str, int]] = set()
        self._bootstrapped = asyncio.Event()
        self._lags: dict[str, int] = {}
        self._consumer: Consumer | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._down = False
        self._recheck = False  # the cluster came back: partitions whose log restarted are read again
        self._clock_ms = 0  # the newest exchange timestamp seen (the stream's clock)
        # counters
        self.messages = 0
        self.bytes = 0
        self.forwarded = 0
        self.kinds: dict[str, int] = {}
        self.malformed = 0
        self.unknown_version = 0
        self.duplicates = 0
        self.lost = 0
        self.breaks = 0
        self.interrupts = 0
        self.resyncs_asked = 0
        self.catch_ups = 0
        self.errors = 0
        self.last_malformed: str | None = None

    # ------------------------------------------------------------ the protocol
    @property
    def state(self) -> str:
        """``new``, ``connecting``, ``open`` or ``closed`` (:meth:`stats` says ``down`` during a cluster outage)."""
        return self._state

    @property
    def epoch(self) -> int:
        """Always 1: the topics are one stream (a book that breaks resyncs from a later snapshot on them)."""
        return self._epoch

    @property
    def channels(self) -> frozenset[str]:
        """The channels subscribed (read from the topics)."""
        return frozenset(self._subs)

    async def subscribe(self, channels: list[str]) -> list[str]:
        """Every public channel is accepted (it is served once the sink publishes it); a book
        starts from its latest snapshot on the topic."""
        if self._state == "new":
            await self.start()
        accepted = []
        book_parts = self._nparts.get(self.topics["book"]) or 1
        for ch in dict.fromkeys(channels):
            try:
                info = parse_channel(ch)
            except ChannelError:
                continue
            if info.user:
                continue
            accepted.append(ch)
            if ch in self._subs:
                continue
            book = info.family == "book"
            key = schema.channel_key(ch).encode()
            nparts = book_parts if book else self._nparts.get(schema.family_topic(self.prefix, ch), 1)
            part = partition_for(key, nparts)
            self._subs[ch] = _Sub(ch, book, part)
            if book:
                self._by_part.setdefault(part, set()).add(ch)
                self._catch_up(ch)
        return accepted

    def _catch_up(self, ch: str) -> None:
        """Seek the book's partition back to its latest snapshot (the worker does it before its next poll).
        Only for a book that never synced: one that broke waits for the next snapshot in order (an older
        one read again would take it back in time)."""
        found = self._snaps.get(schema.channel_key(ch))
        if found is None or found[0] != ch:
            return  # no snapshot on the topic yet: the next one serves it
        _, part, offset = found
        self._seeks.append((part, offset, ch))
        self.catch_ups += 1
        log.debug("kafka source %s: %s catches up from offset %d of partition %d", self.name, ch, offset, part)

    async def unsubscribe(self, channels: list[str]) -> None:
        """Stop forwarding ``channels`` (the topics are still read; nothing is sent on a wire)."""
        for ch in channels:
            sub = self._subs.pop(ch, None)
            if sub is not None and sub.book:
                self._by_part.get(sub.partition, set()).discard(ch)

    async def resync(self, channels: list[str]) -> None:
        """Nothing to ask on the wire: the sink's next snapshot serves each book. A resync this
        source caused (it forwarded a broken chain, or said a book was interrupted) is already under
        way; any other (the broker's book found a change malformed or crossed) takes the next snapshot
        even when it holds the change_id this source follows."""
        self.resyncs_asked += 1
        for ch in channels:
            sub = self._subs.get(ch)
            if sub is None or sub.chain is None:
                continue
            log.debug("kafka source %s: the broker asks a resync of %s (expected: %s)", self.name, ch,
                      sub.expect_resync)
            if sub.expect_resync:
                sub.expect_resync = False
            else:
                sub.want_snapshot = True

    def clock_ms(self) -> int:
        """The stream's clock: the newest exchange timestamp on the topics (the wall clock before any)."""
        return self._clock_ms or int(time.time() * 1000)

    async def instruments(self, currency: str = "any", kind: str | None = None) -> list[Instrument]:
        """The instruments on ``{prefix}.instruments`` of ``currency`` (base, settlement or counter) and
        ``kind`` that have not expired by the stream's clock and whose book the sink has not stopped publishing."""
        now = self.clock_ms()
        out = []
        for name, inst in sorted(self._instruments.items()):
            if not matches(inst, currency, kind):
                continue
            if inst.expiration_timestamp <= now or self._published.get(f"book.{name}.100ms") is False:
                continue
            out.append(inst)
        return out

    def _not_held(self) -> str:
        """An instrument not read from ``{prefix}.instruments`` (13020)."""
        return f"not on {self.topics['instruments']}"

    async def index_price(self, index_name: str) -> float:
        """The latest ``deribit_price_index.{index_name}`` value read from ``{prefix}.price_index``;
        DeribitKitError when the sink has not published it yet."""
        value = self._index.get(index_name)
        if value is None:
            raise DeribitKitError(f"no deribit_price_index.{index_name} on {self.prefix}.price_index yet (publish that "
                                  "channel to pick strikes around the index)")
        return value

    async def call(self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None) -> Any:
        """Public lookups answered from the topics: ``public/get_time`` (the stream's clock),
        ``public/test``, ``public/hello``, ``public/status``, ``public/get_instruments``,
        ``public/get_instrument``, ``public/ticker`` (the latest ticker read), ``public/get_index_price``
        and ``public/get_order_book`` (from the broker's live book; 13020 without one). Anything else,
        private methods included, is -32601."""
        p = params or {}
        answer = await self._answer(method, p)
        if answer is not UNANSWERED:
            return answer
        if method == "public/get_instruments":
            insts = await self.instruments(str(p.get("currency", "any")), p.get("kind"))
            return [msgspec.to_builtins(i) for i in insts]
        if method == "public/ticker":
            name = instrument_name(p)
            if name in self._tickers:
                return self._tickers[name]
            raise error_for_code(13020, data={"param": "instrument_name", "reason": f"no ticker of {name} on the topic "
                                              "yet"}, method=method)
        if method == "public/get_order_book":
            name = instrument_name(p)
            snap = self.book_source(name) if self.book_source is not None else None
            if snap is None:
                raise error_for_code(13020, data={"param": "instrument_name", "reason": f"no live book of {name}: "
                                                  f"subscribe book.{name}.100ms"}, method=method)
            return order_book_reply(name, snap, p.get("depth") if isinstance(p.get("depth"), int) else None)
        raise error_for_code(-32601, data={"reason": "a Kafka source answers public lookups and refuses private "
                                                     "methods (a topic has no account)"}, method=method)

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> KafkaSource:
        """Assign the topics, read the compacted ones to their end (instruments, channels, snapshots)."""
        if self._state != "new":
            await asyncio.wait_for(self._bootstrapped.wait(), self.bootstrap_timeout)
            return self
        self._state = "connecting"
        loop = asyncio.get_running_loop()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="deribit-kit-kafka-source")
        conf = {**self.config, "error_cb": self._on_error_threaded, "stats_cb": self._on_stats}
        try:  # the topics exist from now on, so this source may start before the sink
            await loop.run_in_executor(self._pool, lambda: ensure_topics(self.bootstrap, self.prefix,
                                                                        timeout=self.bootstrap_timeout))
        except KafkaUnavailable:
            self._state = "closed"
            raise
        try:
            self._consumer = Consumer(conf)
            await loop.run_in_executor(self._pool, self._assign)
        except KafkaException as exc:
            self._state = "closed"
            raise KafkaUnavailable(f"Kafka at {self.bootstrap} did not answer: {exc}") from None
        self._loop = loop
        self._task = loop.create_task(self._run())
        try:
            await asyncio.wait_for(self._bootstrapped.wait(), self.bootstrap_timeout)
        except TimeoutError:
            log.warning("kafka source %s: the compacted topics were not read to their end within %.0f s; going on",
                        self.name, self.bootstrap_timeout)
            self._bootstrapped.set()
        self._state = "open"
        return self

    def _assign(self) -> None:
        """(worker) Assign every partition: compacted topics from the beginning, the others from the end."""
        assert self._consumer is not None
        md = self._consumer.list_topics(timeout=self.bootstrap_timeout)
        plain, compacted = pipeline_topics(self.prefix)
        tps = []
        for topic in (*plain, *compacted):
            meta = md.topics.get(topic)
            if meta is None or meta.error is not None:
                continue
            n = len(meta.partitions)
            self._nparts[topic] = n
            start = OFFSET_BEGINNING if topic in compacted else OFFSET_END
            for p in range(n):
                tps.append(TopicPartition(topic, p, start))
                if topic in compacted:
                    self._compacted.add((topic, p))
        if self.topics["book"] not in self._nparts:
            raise KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART,
                                            f"no topic {self.topics['book']}: start a sink on this prefix first"))
        self._consumer.assign(tps)

    def _fetch(self) -> list[Message]:
        """(worker) Apply pending seeks, then one batch (waits at most 50 ms for the first message)."""
        c = self._consumer
        assert c is not None
        if self._recheck:
            self._recheck = False
            self._reread_restarted(c)
        wanted: dict[int, tuple[int, set[str]]] = {}
        while self._seeks:  # appended on the loop, taken here (deque operations are atomic)
            part, offset, ch = self._seeks.popleft()
            low, chans = wanted.get(part, (offset, set()))
            wanted[part] = (min(low, offset), chans | {ch})
        book = self.topics["book"]
        for part, (offset, chans) in wanted.items():
            pos = c.position([TopicPartition(book, part)])[0].offset
            replay = None
            if pos < 0:  # nothing read here yet: every message from the offset on is new to everyone
                earlier = self._sought.get(part)
                target = offset if earlier is None else min(offset, earlier)
            else:
                if offset >= pos:
                    continue  # the snapshot is ahead of the position: it will be read in order
                rep = self._replay.get(part)
                replay = (pos if rep is None else max(rep[0], pos), chans | (rep[1] if rep is not None else set()))
                target = offset
            try:
                c.seek(TopicPartition(book, part, target))
            except KafkaException as exc:  # the partition's fetch has not started yet: again next time
                log.debug("kafka source %s: seek of %s [%d] deferred (%s)", self.name, book, part, exc)
                for ch in chans:
                    self._seeks.append((part, offset, ch))
                continue
            if replay is None:
                self._sought[part] = target
            else:
                self._sought.pop(part, None)
                self._replay[part] = replay
        first = c.poll(0.05)
        if first is None:
            return []
        return [first, *c.consume(2000, 0)]

    def _reread_restarted(self, c: Consumer) -> None:
        """(worker) After an outage: a partition whose log now ends before our position was made
        anew (a cluster that came back empty): read it again from its beginning (what was read
        before is recognised as duplicates)."""
        for tp in c.assignment():
            try:
                pos = c.position([tp])[0].offset
                _lo, hi = c.get_watermark_offsets(tp, timeout=2.0, cached=False)
            except KafkaException:
                continue
            if pos >= 0 and hi < pos:
                log.warning("kafka source %s: %s [%d] restarted (its end %d is before our position %d): reading it "
                            "again from its beginning", self.name, tp.topic, tp.partition, hi, pos)
                c.seek(TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._pool is not None
        while True:
            try:
                batch = await loop.run_in_executor(self._pool, self._fetch)
            except KafkaException as exc:
                self.errors += 1
                log.warning("kafka source %s: %s", self.name, exc)
                await asyncio.sleep(0.5)
                continue
            except RuntimeError:  # the consumer was closed under us
                return
            if batch:
                self._on_batch(batch)
            else:
                await asyncio.sleep(0)

    # ------------------------------------------------------------ the hot path
    def _on_batch(self, batch: list[Message]) -> None:
        book_topic = self.topics["book"]
        for msg in batch:
            err = msg.error()
            topic = msg.topic() or ""
            part = msg.partition() or 0
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    self._eof.add((topic, part))
                    if not self._bootstrapped.is_set() and self._compacted <= self._eof:
                        self._bootstrapped.set()
                else:
                    self.errors += 1
                    log.warning("kafka source %s: %s [%s]: %s", self.name, topic, part, err.str())
                continue
            value = msg.value()
            self.messages += 1
            self.bytes += len(value or b"")
            offset = msg.offset() or 0
            rep = self._replay.get(part) if topic == book_topic else None
            if rep is not None and offset >= rep[0]:
                del self._replay[part]
                rep = None
            try:
                env = schema.decode(value)
            except schema.SchemaError as exc:
                self._malformed(topic, part, offset, exc)
                continue
            kind = env.kind
            self.kinds[kind] = self.kinds.get(kind, 0) + 1
            data = env.data
            ts = data.get("timestamp") if type(data) is dict else None
            if type(ts) is int and ts > self._clock_ms:
                self._clock_ms = ts
            if rep is not None:  # replaying this partition for the books catching up, only them
                if env.channel in rep[1]:
                    self._book(env, self._subs.get(env.channel), replay=True)
                continue
            missed = 0
            if (topic, part) not in self._compacted:  # compaction leaves holes there, and copies keep their numbers
                seq = self._seqs.get((topic, part))
                if seq is None:
                    seq = self._seqs[(topic, part)] = cont.PartitionSequence()
                missed = seq.see(env.sid, env.seq)
                if missed < 0:
                    self.duplicates += 1
                    continue
            if missed and topic == book_topic:
                self.lost += missed
                log.warning("kafka source %s: %d message(s) of %s [%d] are missing before offset %d: its books resync",
                            self.name, missed, topic, part, offset)
                self._interrupt(sorted(self._by_part.get(part, ())), True)
            if topic == book_topic:
                self._book(env, self._subs.get(env.channel))
            elif topic == self.topics["snapshots"]:
                src = env.extra.get("src")
                if isinstance(src, list) and len(src) == 2 and all(type(x) is int for x in src):
                    self._snaps[schema.channel_key(env.channel)] = (env.channel, src[0], src[1])
                    sub = self._subs.get(env.channel)
                    if sub is not None and sub.chain is not None and sub.chain.change_id is None:
                        self._catch_up(env.channel)  # a book that never synced: this snapshot serves it
            elif topic == self.topics["instruments"]:
                self._instrument(env, topic, part, offset)
            elif topic == self.topics["channels"]:
                if type(env.data) is dict:
                    self._published[env.channel] = bool(env.data.get("on"))
            else:
                self._other(env)

    def _book(self, env: schema.Envelope, sub: _Sub | None, replay: bool = False) -> None:
        if sub is None or sub.chain is None:
            return
        chain = sub.chain
        kind = env.kind
        if kind == "change":
            verdict = chain.change(env.data, env.epoch)
        elif kind == "snapshot":
            verdict = chain.snapshot(env.data, env.epoch, exchange=not replay and env.extra.get("by") != "sink")
        elif kind == "resync":  # the sink's book broke on data this book gets too: it breaks here by itself
            return
        elif kind in schema.MARKERS:
            if chain.interrupt() == cont.INTERRUPT:
                self.interrupts += 1
                sub.expect_resync = True
                self.interrupted.emit([sub.name], kind == "gap")
            return
        else:
            return
        if verdict == cont.DUPLICATE:
            self.duplicates += 1
            return
        if verdict == cont.REDUNDANT and sub.want_snapshot:
            verdict = cont.FORWARD
        if kind == "snapshot" and verdict == cont.FORWARD:
            sub.want_snapshot = False
        if kind == "snapshot":
            log.debug("kafka source %s: %s snapshot %s (epoch %s, seq %s): %s", self.name, sub.name,
                      env.data.get("change_id"), env.epoch, env.seq, verdict)
        if verdict in (cont.FORWARD, cont.BREAK):
            if verdict == cont.BREAK:
                self.breaks += 1
                sub.expect_resync = True
                log.debug("kafka source %s: %s chain broken at change %s (prev %s, seq %s)", self.name, sub.name,
                          env.data.get("change_id"), env.data.get("prev_change_id"), env.seq)
            self._forward(env)

    def _forward(self, env: schema.Envelope) -> None:
        sink = self._sink
        if sink is None:
            return
        raw = schema.notification_frame(env.channel, env.data_bytes) if env.data_bytes is not None else None
        self.forwarded += 1
        sink(env.channel, env.data, raw)

    def _other(self, env: schema.Envelope) -> None:
        if env.kind != "data":
            return
        data = env.data
        try:
            info = parse_channel(env.channel)
        except ChannelError:
            return
        if info.family == "ticker" and type(data) is dict and info.instrument:
            self._tickers[info.instrument] = data
        elif info.family == "price_index" and type(data) is dict and info.index_name:
            price = data.get("price")
            if isinstance(price, int | float):
                self._index[info.index_name] = float(price)
        if env.channel in self._subs:
            self._forward(env)

    def _instrument(self, env: schema.Envelope, topic: str, part: int, offset: int) -> None:
        try:
            inst = msgspec.convert(env.data, Instrument)
        except (msgspec.ValidationError, TypeError) as exc:
            self._malformed(topic, part, offset, schema.SchemaError(f"not an instrument ({exc})"))
            return
        self._instruments[inst.instrument_name] = inst

    def _interrupt(self, channels: list[str], gap: bool) -> None:
        hit = []
        for ch in channels:
            sub = self._subs.get(ch)
            if sub is not None and sub.chain is not None and sub.chain.interrupt() == cont.INTERRUPT:
                sub.expect_resync = True
                hit.append(ch)
        if hit:
            self.interrupts += len(hit)
            self.interrupted.emit(hit, gap)

    def _malformed(self, topic: str, part: int, offset: int, exc: schema.SchemaError) -> None:
        if exc.version is not None:
            self.unknown_version += 1
        else:
            self.malformed += 1
        n = self.malformed + self.unknown_version
        self.last_malformed = f"{topic} [{part}] @{offset}: {exc}"
        if n <= REPORTED:
            log.warning("kafka source %s: skipped %s", self.name, self.last_malformed)
        elif n == REPORTED + 1:
            log.warning("kafka source %s: more malformed messages; counted in stats() from now on", self.name)

    # ------------------------------------------------------------ librdkafka callbacks (worker thread)
    def _on_error_threaded(self, err: KafkaError) -> None:
        loop = getattr(self, "_loop", None)
        if loop is not None:
            loop.call_soon_threadsafe(self._on_error, err)

    def _on_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            if not self._down:
                self._down = True
                self.errors += 1
                log.warning("kafka source %s: Kafka is out (%s); books keep their state until the topic says more",
                            self.name, err.str())
        else:
            log.debug("kafka source %s: %s", self.name, err.str())

    def _on_stats(self, text: str) -> None:
        try:
            s = orjson.loads(text)
        except ValueError:
            return
        lags = {}
        for topic, t in (s.get("topics") or {}).items():
            short = topic[len(self.prefix) + 1:].replace(".", "_")
            for p, ps in (t.get("partitions") or {}).items():
                lag = ps.get("consumer_lag")
                if p != "-1" and isinstance(lag, int) and lag >= 0:
                    lags[f"lag_{short}_p{p}"] = lag
        self._lags = lags
        if self._down and s.get("brokers"):
            up = any(b.get("state") == "UP" for b in s["brokers"].values() if b.get("nodeid", -1) >= 0)
            if up:
                self._down = False
                self._recheck = True

    # ------------------------------------------------------------ figures and close
    def stats(self) -> dict[str, Any]:
        """The source's figures: state (``down`` during an outage), messages and bytes read, forwarded,
        malformed, duplicates, lost, breaks, interrupts, resyncs and catch-ups, consumer lag per topic
        partition (``lag_{topic}_p{n}``, ``lag_total``, ``lag_max``) and the book states' counts."""
        states: dict[str, int] = {"books_live": 0, "books_syncing": 0, "books_resyncing": 0}
        for sub in self._subs.values():
            if sub.chain is not None:
                states[f"books_{sub.chain.state}"] += 1
        lags = dict(self._lags)
        return {"state": "down" if self._down and self._state == "open" else self._state, "epoch": self._epoch,
                "messages": self.messages, "bytes": self.bytes, "forwarded": self.forwarded,
                "subscribed": len(self._subs), "instruments": len(self._instruments),
                "malformed": self.malformed, "unknown_version": self.unknown_version, "duplicates": self.duplicates,
                "lost": self.lost, "breaks": self.breaks, "interrupts": self.interrupts,
                "resyncs_asked": self.resyncs_asked, "catch_ups": self.catch_ups, "errors": self.errors,
                "lag_total": sum(lags.values()), "lag_max": max(lags.values(), default=0), **lags, **states,
                "last_malformed": self.last_malformed, "rtt_ms": None, "rate_limited": 0}

    def book_states(self) -> dict[str, str]:
        """Each subscribed book channel's state as the source follows it."""
        return {ch: s.chain.state for ch, s in sorted(self._subs.items()) if s.chain is not None}

    async def close(self) -> None:
        """Stop reading and close the consumer; the source is ``closed`` and feeds no broker."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        consumer, self._consumer = self._consumer, None
        pool, self._pool = self._pool, None
        if consumer is not None and pool is not None:
            await asyncio.get_running_loop().run_in_executor(pool, consumer.close)
        if pool is not None:
            pool.shutdown(wait=True)
        self._state = "closed"
        self._sink = None

    def __repr__(self) -> str:
        return f"<KafkaSource {self.bootstrap}/{self.prefix} {self._state} subscribed={len(self._subs)}>"
