"""The subscription broker: the only fan-out. One upstream, any number of consumers.

    broker = Broker(upstream)                          # an Upstream (live, a recording, a topic)
    fast = await broker.consumer(["trades.BTC-PERPETUAL.100ms"], policy="drop_oldest").start()
    book = await broker.book("BTC-PERPETUAL")          # LiveBook, synced
    chain = await broker.subscribe_chain("BTC", strikes_around=5)

Where a message arrives: the upstream calls :meth:`Broker._on_notification` (its one sink) with
the decoded data and the raw frame; it is folded into the channel's :class:`LiveBook` (book
channels) and leaves through each consumer's ``_push`` — a direct call, no task or queue per
consumer (``bench/broker_fanout.py``: a fraction of a µs per delivery, where a queue and a task
per consumer cost microseconds).

Channels are reference counted: consumers and book holds take references; the first one makes
the channel wanted upstream, the last one to leave makes it unwanted. What is wanted and what is
on the wire are reconciled by **one worker** (:meth:`Broker._sync`), which sends the calls in
order — unsubscribes, then resyncs, then subscribes, batched per event-loop turn and chunked to
<= 100 channels and < 32 kB per call — so an unsubscribe never overtakes the subscribe after it,
whatever order consumers come and go in (a close while a subscribe is in flight included). A
call that fails because the link dropped is retried once the upstream is back.

``book.*`` channels feed a :class:`~deribit_kit.live.LiveBook`. A ``change_id`` gap (or a
malformed or crossed change) resyncs that instrument only (:meth:`Upstream.resync`: a fresh
snapshot). On a disconnect every book is marked resyncing; the upstream restores its channels and
the snapshots make the books live again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

from ..client import Client
from ..errors import DeribitError, DeribitKitError, SubscriptionError, TransportError, ValidationError
from ..events import Event
from ..live.chain import OptionChain
from ..live.livebook import LiveBook
from ..live.orderbook import LIVE, RESYNCING
from ..models import Instrument
from ..upstream.live import LiveUpstream
from ..upstream.protocol import Upstream, clock_ms
from ..wire.channels import ChannelError, parse_channel
from ..wire.names import parse_instrument_name
from . import metrics
from .consumer import Consumer, Item, Notification, Policy

__all__ = ["Broker"]

log = logging.getLogger("deribit_kit.broker")


class _Channel:
    """One upstream channel: its references, consumers, wire state and (for books) the live book."""

    __slots__ = ("book_note", "book_pushes", "consumers", "first_at", "info", "is_book", "latency_ms", "live",
                 "messages", "name", "on_wire", "outcome", "private", "pushes", "refs", "refused", "resync_wanted",
                 "resyncs_requested")

    def __init__(self, name: str) -> None:
        self.name = name
        self.info = info = parse_channel(name)
        self.private = info.private
        self.is_book = info.family == "book"
        self.pushes: list[Callable[[Notification], None]] = []  # consumers of every message
        self.book_pushes: list[Callable[[Notification], None]] = []  # conflating consumers of a book
        self.consumers: set[Consumer] = set()
        self.refs = 0  # consumers + book holds
        self.on_wire = False  # subscribed upstream (the upstream accepted it)
        self.refused: DeribitKitError | None = None  # the upstream refused it (kept until nobody wants it)
        self.outcome: asyncio.Future[None] | None = None  # settles when the pending subscribe is answered
        self.resync_wanted = False
        self.live: LiveBook | None = None
        self.book_note: Notification | None = None
        self.messages = 0
        self.first_at = time.monotonic()
        self.latency_ms: float | None = None  # exchange timestamp -> broker, sampled every 8th message
        self.resyncs_requested = 0

    def __repr__(self) -> str:
        return f"<_Channel {self.name} refs={self.refs} on_wire={self.on_wire}>"


class Broker:
    """Shares one :class:`~deribit_kit.upstream.Upstream` among in-process consumers.

    ``Broker(client)`` with a :class:`~deribit_kit.client.Client` wraps it in a
    :class:`~deribit_kit.upstream.LiveUpstream`; ``Broker(dk)`` takes the facade's upstream. An
    upstream feeds one broker (its one sink): share it rather than making a second.
    """

    def __init__(self, upstream: Upstream | Client | Any, *, book_interval: str = "100ms", chain_refresh: float = 60.0,
                 stale_after: float | None = 30.0) -> None:
        if isinstance(upstream, Client):
            upstream = LiveUpstream(upstream)
        elif not isinstance(upstream, Upstream) and isinstance(getattr(upstream, "upstream", None), Upstream):
            upstream = upstream.upstream  # the Deribit facade: its upstream (it feeds one broker only)
        self.upstream: Upstream = upstream
        self.stale_after = stale_after  # a live book with no update for this long is marked stale
        self.book_interval = book_interval
        self.chain_refresh = chain_refresh
        self.notification = Event("notification")  # every notification: (channel, data)
        self.resyncing = Event("resyncing")  # a book's chain broke; a fresh snapshot was asked for: (channel)
        self._channels: dict[str, _Channel] = {}
        self._books: dict[str, LiveBook] = {}
        self._chains: set[OptionChain] = set()
        self._consumers: set[Consumer] = set()
        self._recently_closed: deque[Consumer] = deque(maxlen=100)  # kept for metrics
        # what else feeds on this broker and reports figures (a recorder, a Kafka sink): name -> Component
        self.components: dict[str, Component] = {}
        self._dirty: dict[str, _Channel] = {}  # channels whose wire state may need a call
        self._worker: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._refresh_task: asyncio.Task[None] | None = None
        self._stale_task: asyncio.Task[None] | None = None
        self.started_at = time.monotonic()
        self.connected_since: float | None = time.monotonic()
        self.reconnects = 0
        self.disconnects = 0
        self.subscribe_calls = 0
        self.unsubscribe_calls = 0
        self.book_resyncs = 0
        self.unrouted = 0  # notifications for channels nobody holds (late after an unsubscribe)
        self._last_metrics: tuple[float, dict[str, int]] = (time.monotonic(), {})
        self._closed = False
        upstream.set_sink(self._on_notification)
        upstream.disconnected.connect(self._on_disconnected)
        upstream.connected.connect(self._on_connected)
        interrupted = getattr(upstream, "interrupted", None)  # optional member of the protocol
        if isinstance(interrupted, Event):
            interrupted.connect(self._on_interrupted)

    @property
    def client(self) -> Any:
        """The client of a live upstream (``None`` for other sources)."""
        return getattr(self.upstream, "client", None)

    # ------------------------------------------------------------ the hot path
    def _on_notification(self, channel: str, data: Any, raw: str | bytes | None) -> None:
        """The upstream's sink: fold into the book, then hand to every consumer of the channel."""
        chan = self._channels.get(channel)
        if chan is None:
            self.unrouted += 1
            return
        count = chan.messages = chan.messages + 1
        if not count & 7 or count == 1:  # latency is sampled: every 8th message (a clock read saved on the others)
            ts = data.get("timestamp") if type(data) is dict else None
            if ts is not None:
                chan.latency_ms = time.time() * 1000.0 - ts
        live = chan.live
        if live is not None:
            book = live.book
            try:
                ok = book.apply(data)
            except Exception:  # malformed: the book is resyncing (or unchanged for a bad snapshot)
                log.exception("bad book message on %s", channel)
                ok = False
            if not ok:
                if book.state == RESYNCING:
                    self._resync(chan)
            else:
                live.changed()
                if book.state == LIVE and chan.book_pushes:
                    note = chan.book_note
                    assert note is not None
                    for push in chan.book_pushes:
                        push(note)
        pushes = chan.pushes
        if pushes:
            n = Notification(channel, data, raw)
            for push in pushes:
                push(n)
        ev = self.notification
        if ev._handlers or ev._waiters:  # what ``bool(ev)`` says, without a call (the hot path)
            ev.emit(channel, data)

    # ------------------------------------------------------------ consumers
    def consumer(self, channels: str | Iterable[str], policy: Policy = "drop_oldest", maxsize: int = 1000, *,
                 callback: Callable[[Item], Any] | None = None, name: str = "") -> Consumer:
        """A consumer of ``channels``; ``await consumer.start()`` (or ``async with``/``async for``) joins."""
        chans = [channels] if isinstance(channels, str) else list(channels)
        for ch in chans:
            try:
                parse_channel(ch)
            except ChannelError as exc:
                raise ValidationError(str(exc)) from None
        return Consumer(self, chans, policy, maxsize, callback, name)

    async def _attach(self, consumer: Consumer, channels: list[str]) -> list[str]:
        """Join ``channels``; returns the accepted ones (raises when the upstream accepts none)."""
        self._consumers.add(consumer)
        states = []
        for ch in channels:
            chan = self._acquire(ch)
            if consumer.policy == "conflate" and chan.is_book and consumer.callback is None:
                self._ensure_book(chan)
                chan.book_pushes.append(consumer._push)
            else:
                chan.pushes.append(consumer._push)
            chan.consumers.add(consumer)
            states.append(chan)
        try:
            return await self._accepted(states)
        except BaseException:
            self._detach(consumer, channels)
            raise

    async def _accepted(self, states: list[_Channel]) -> list[str]:
        """Wait for the pending subscribes of ``states``; the accepted names, or the first error."""
        futs = [chan.outcome for chan in states if chan.outcome is not None]
        if futs:
            await asyncio.gather(*(asyncio.shield(f) for f in futs))
        accepted = [chan.name for chan in states if chan.on_wire]
        if states and not accepted:
            errors = [chan.refused for chan in states if chan.refused is not None]
            if errors and not all(isinstance(e, SubscriptionError) for e in errors):
                raise errors[0]
            raise SubscriptionError(11052, "subscribe_error_unsubscribed",
                                    {"reason": "the exchange accepted none of the channels",
                                     "channels": [chan.name for chan in states]}, method="public/subscribe")
        return accepted

    def _detach(self, consumer: Consumer, channels: list[str]) -> None:
        for ch in channels:
            chan = self._channels.get(ch)
            if chan is None or consumer not in chan.consumers:
                continue
            chan.consumers.discard(consumer)
            push = consumer._push
            for lst in (chan.pushes, chan.book_pushes):
                if push in lst:
                    lst.remove(push)
            self._release(chan)
        if consumer.closed and consumer in self._consumers:
            self._consumers.discard(consumer)
            self._recently_closed.append(consumer)

    # ------------------------------------------------------------ references and the wire
    def _acquire(self, ch: str) -> _Channel:
        if self._closed:
            raise DeribitKitError("the broker is closed")
        chan = self._channels.get(ch)
        if chan is None:
            chan = self._channels[ch] = _Channel(ch)
        chan.refs += 1
        if not chan.on_wire and chan.refused is None:
            if chan.outcome is None:
                chan.outcome = asyncio.get_running_loop().create_future()
            self._mark(chan)
        return chan

    def _release(self, chan: _Channel) -> None:
        if chan.refs <= 0:
            raise AssertionError(f"{chan.name}: released more often than acquired")
        chan.refs -= 1
        if chan.refs == 0:
            self._mark(chan)

    def _mark(self, chan: _Channel) -> None:
        """The wire state of ``chan`` may need a call: the worker looks at it next turn."""
        self._dirty[chan.name] = chan
        if self._worker is None or self._worker.done():
            self._worker = self._spawn(self._sync())

    def _resync(self, chan: _Channel) -> None:
        """Ask the upstream for a fresh snapshot of one book channel (once until it is sent)."""
        if chan.resync_wanted:
            return
        chan.resync_wanted = True
        chan.resyncs_requested += 1
        self.book_resyncs += 1
        log.warning("book %s: chain broken, resyncing", chan.name)
        self.resyncing.emit(chan.name)
        self._mark(chan)

    async def _sync(self) -> None:
        """The one worker that makes the wire match the references, one call after another."""
        while self._dirty and not self._closed:
            await asyncio.sleep(0)  # what is asked for in this loop turn goes in the same calls
            batch, self._dirty = self._dirty, {}
            try:
                await self._apply(batch)
            except TransportError as exc:  # the link dropped: retry once the upstream is back
                log.info("upstream calls failed (%s); retrying after the reconnect", exc)
                for name, chan in batch.items():
                    self._dirty.setdefault(name, chan)
                await self._upstream_back()

    async def _apply(self, batch: dict[str, _Channel]) -> None:
        table = self._channels
        unsub = [chan for chan in batch.values() if chan.refs == 0 and chan.on_wire]
        resub = [chan for chan in batch.values() if chan.refs > 0 and chan.on_wire and chan.resync_wanted]
        sub = [chan for chan in batch.values() if chan.refs > 0 and not chan.on_wire and chan.refused is None]
        for chan in batch.values():
            if chan.refs == 0 and not chan.on_wire:
                self._forget(chan)
        if unsub:
            self.unsubscribe_calls += 1
            try:
                await self.upstream.unsubscribe([chan.name for chan in unsub])
            except DeribitError as exc:
                log.warning("unsubscribe refused (%s); forgetting the channels anyway", exc)
            for chan in unsub:
                chan.on_wire = False
                if chan.refs == 0:
                    self._forget(chan)
                else:  # wanted again meanwhile
                    self._mark(chan)
        if resub:
            for chan in resub:
                chan.resync_wanted = False
            try:
                await self.upstream.resync([chan.name for chan in resub])
            except DeribitError as exc:
                log.warning("resync of %d channel(s) refused: %s", len(resub), exc)
            except TransportError:
                for chan in resub:
                    chan.resync_wanted = True
                raise
        if sub:
            accepted = await self._subscribe(sub)
            for chan in sub:
                if table.get(chan.name) is not chan:
                    continue
                if chan.name in accepted:
                    chan.on_wire = True
                elif chan.refused is None:
                    chan.refused = SubscriptionError(11052, "subscribe_error_unsubscribed",
                                                   {"reason": "the exchange left the channel out of its answer",
                                                    "channels": [chan.name]}, method="public/subscribe")
                self._settle(chan)
                if chan.refs == 0:  # everyone left while we were subscribing
                    self._mark(chan)

    async def _subscribe(self, sub: list[_Channel]) -> set[str]:
        """Subscribe ``sub``; the accepted names. When the upstream refuses the whole call (13778
        for a raw channel without auth, say), each channel is asked alone, so that one consumer's
        refused channel never costs another consumer the channels it asked for in the same turn."""
        self.subscribe_calls += 1
        try:
            return set(await self.upstream.subscribe([chan.name for chan in sub]))
        except DeribitError as exc:
            if len(sub) == 1:
                sub[0].refused = exc
                return set()
        accepted: set[str] = set()
        for chan in sub:
            accepted |= await self._subscribe([chan])
        return accepted

    def _settle(self, chan: _Channel) -> None:
        fut, chan.outcome = chan.outcome, None
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _forget(self, chan: _Channel) -> None:
        """Drop a channel nobody wants and the upstream no longer sends."""
        if self._channels.get(chan.name) is chan:
            del self._channels[chan.name]
        self._settle(chan)
        live = chan.live
        if live is not None and self._books.get(live.instrument) is live:
            del self._books[live.instrument]
            for other in self._channels.values():  # another interval of the same instrument
                if other.live is not None and other.live.instrument == live.instrument:
                    self._books[live.instrument] = other.live
                    break

    async def _upstream_back(self) -> None:
        """Wait until the upstream is open again (or closed for good)."""
        while self.upstream.state not in ("open", "closed", "ended") and not self._closed:
            try:
                await self.upstream.connected.wait(1.0)
            except TimeoutError:
                continue

    def _on_disconnected(self, *_: Any) -> None:
        self.disconnects += 1
        self.connected_since = None
        for chan in self._channels.values():
            if chan.live is not None:
                chan.live.book.mark_resyncing()
                chan.live.changed()

    def _on_interrupted(self, channels: list[str], gap: bool = True) -> None:
        """The source lost messages of these channels: their books resync (a gap when ``gap``)."""
        for name in channels:
            chan = self._channels.get(name)
            if chan is None or chan.live is None:
                continue
            book = chan.live.book
            if gap:
                book.mark_gap()
            else:
                book.mark_resyncing()
            chan.live.changed()
            self._resync(chan)

    def _on_connected(self, *_: Any) -> None:
        self.reconnects += 1
        self.connected_since = time.monotonic()
        # the upstream restored its channels (snapshots make the books live again); what it lost
        # (refused on the new connection) is subscribed again, or unsubscribed when nobody wants it
        wire = self.upstream.channels
        for chan in list(self._channels.values()):
            if chan.on_wire and chan.name not in wire:
                chan.on_wire = False
                self._mark(chan)
        for name in wire:
            if name not in self._channels:
                self._channels[name] = chan = _Channel(name)
                chan.on_wire = True
                self._mark(chan)  # nobody holds it: unsubscribe

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("broker task failed", exc_info=task.exception())

    # ------------------------------------------------------------ books
    def _ensure_book(self, chan: _Channel) -> LiveBook:
        if chan.live is None:
            inst = chan.info.instrument or ""
            cached = self.upstream.cached_instrument(inst)
            chan.live = LiveBook(inst, chan.name, _fixed_tick(cached), release=self._release_book)
            chan.book_note = Notification(chan.name, chan.live)
            if chan.info.interval == self.book_interval or inst not in self._books:
                self._books[inst] = chan.live
            if cached is None and _may_have_fixed_tick(inst):
                self._spawn(self._learn_tick(chan.live))
            if self._stale_task is None and self.stale_after:
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:  # used outside a loop (a benchmark): check_stale() by hand
                    pass
                else:
                    self._stale_task = loop.create_task(self._watch_stale(self.stale_after))
        return chan.live

    def hold_book(self, channel: str) -> LiveBook:
        """Hold the live book of a ``book.{instrument}.{interval}`` channel without waiting for it
        to sync (the broker port serves snapshots from it); ``live.release()`` lets go."""
        info = parse_channel(channel)
        if info.family != "book":
            raise ValidationError(f"{channel} is not an incremental book channel")
        chan = self._acquire(channel)
        fresh = chan.live is None
        live = self._ensure_book(chan)
        live.holders += 1
        if fresh and chan.on_wire:  # its snapshot went by before the book existed: ask for a fresh one
            self._resync(chan)
        return live

    async def book(self, instrument: str, timeout: float | None = 10.0, *, interval: str | None = None) -> LiveBook:
        """The live book of ``instrument`` (``book.{instrument}.100ms``), once synced from a snapshot."""
        ch = f"book.{instrument}.{interval or self.book_interval}"
        live = self.hold_book(ch)
        chan = self._channels[ch]
        try:
            await self._accepted([chan])
            return await live.wait_live(timeout)
        except BaseException:
            live.release()
            raise

    def _release_book(self, live: LiveBook) -> None:
        if live.holders <= 0:
            return
        chan = self._channels.get(live.channel)
        if chan is None or chan.live is not live:
            live.holders = 0
            return
        live.holders -= 1
        self._release(chan)

    def check_stale(self, now_ms: int | None = None) -> list[str]:
        """Mark live books without an update for ``stale_after`` seconds as stale; returns their names.

        A stale book turns live again with its next update. Runs every few seconds by itself.
        """
        if not self.stale_after:
            return []
        now = clock_ms(self.upstream) if now_ms is None else now_ms
        gone_stale = []
        for live in list(self._books.values()):
            was = live.book.state
            if live.book.check_stale(now, int(self.stale_after * 1000)) and was != live.book.state:
                gone_stale.append(live.instrument)
                live.changed()
        return gone_stale

    async def _watch_stale(self, after: float) -> None:
        while True:
            await asyncio.sleep(min(max(after / 4, 0.05), 2.0))
            for name in self.check_stale():
                log.warning("book %s is stale: no update for %.0fs", name, after)

    async def _learn_tick(self, live: LiveBook) -> None:
        """Look the instrument up; with one fixed tick size its book becomes a (faster) tick ladder."""
        try:
            tick = _fixed_tick(await self.upstream.instrument(live.instrument))
        except DeribitKitError as exc:
            log.debug("no tick size for %s (%s): its book stays a sorted dict", live.instrument, exc)
            return
        if tick is not None and live.book.tick_size is None:
            live.book.tick_size = tick

    @property
    def books(self) -> dict[str, LiveBook]:
        """The live books by instrument (the ``book_interval`` channel's where there are several)."""
        return dict(self._books)

    # ------------------------------------------------------------ option chains
    async def subscribe_chain(self, currency: str, expiry: str | int | None = None, kind: str = "option", *,
                              strikes_around: int | None = None, channel_template: str = "ticker.{name}.100ms",
                              policy: Policy = "conflate", maxsize: int = 10_000,
                              callback: Callable[[Item], Any] | None = None,
                              refresh_interval: float | None = None) -> OptionChain:
        """Subscribe the channel of every matching instrument (in chunked calls); new expiries join at
        each refresh (every ``refresh_interval`` s, default the broker's ``chain_refresh``; 0 = never)."""
        cons = self.consumer([], policy, maxsize, callback=callback, name=f"chain-{currency}-{kind}")
        await cons.start()
        chain = OptionChain(self.upstream, currency, expiry, kind, strikes_around, channel_template, cons,
                            on_close=self._chains.discard)
        await chain.refresh()
        self._chains.add(chain)
        interval = self.chain_refresh if refresh_interval is None else refresh_interval
        if interval > 0 and self._refresh_task is None:
            self._refresh_task = self._spawn(self._refresh_loop(interval))
        return chain

    async def refresh_chain(self) -> None:
        """Re-list the instruments of every chain (new expiries join, expired ones leave)."""
        for chain in list(self._chains):
            try:
                await chain.refresh()
            except DeribitKitError as exc:
                log.warning("chain refresh failed: %s", exc)

    async def _refresh_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.refresh_chain()

    # ------------------------------------------------------------ metrics
    def metrics(self) -> dict[str, Any]:
        """Per channel and per consumer counts, rates, depths, drops; upstream health and latencies."""
        now = time.monotonic()
        last_t, last_counts = self._last_metrics
        dt = max(now - last_t, 1e-9)
        channels: dict[str, Any] = {}
        counts: dict[str, int] = {}
        for name, chan in self._channels.items():
            counts[name] = chan.messages
            entry: dict[str, Any] = {
                "messages": chan.messages, "consumers": len(chan.consumers), "upstream": chan.on_wire,
                "refs": chan.refs,
                "rate": (chan.messages - last_counts.get(name, 0)) / dt if name in last_counts
                else chan.messages / max(now - chan.first_at, 1e-9),
                "latency_ms": chan.latency_ms,
            }
            if chan.live is not None:
                b = chan.live.book
                entry.update(book_state=b.state, changes=b.changes, gaps=b.gaps, resyncs=b.resyncs,
                             crossed=b.crossed, malformed=b.malformed, change_id=b.change_id)
            channels[name] = entry
        self._last_metrics = (now, counts)
        up = self.upstream.stats()
        return {
            "upstream": {
                "state": self.upstream.state, "name": self.upstream.name, "epoch": self.upstream.epoch,
                "uptime_s": None if self.connected_since is None else now - self.connected_since,
                "broker_age_s": now - self.started_at,
                "reconnects": self.reconnects, "disconnects": self.disconnects,
                "rtt_ms": up.get("rtt_ms"), "rate_limited": up.get("rate_limited", 0),
                "rate_limit_wait_s": up.get("rate_limit_wait_s", 0.0),
                "subscribe_calls": self.subscribe_calls, "unsubscribe_calls": self.unsubscribe_calls,
                "book_resyncs": self.book_resyncs, "channels": len(self._channels), "unrouted": self.unrouted,
            },
            "channels": channels,
            "consumers": {c.name: c.metrics() for c in (*self._recently_closed, *self._consumers)},
            "components": {name: _component_stats(c) for name, c in self.components.items()},
        }

    def attach(self, name: str, component: Component) -> None:
        """List a component (a recorder, a Kafka sink or source) whose ``stats()`` join :meth:`metrics`
        under ``components`` and ``/metrics`` (``deribit_kit_broker_component_*``), and the ops page."""
        self.components[name] = component

    def detach(self, name: str, component: Component | None = None) -> None:
        """Unlist a component (only that one when given: a newer one with the same name stays)."""
        if component is None or self.components.get(name) is component:
            self.components.pop(name, None)

    def prometheus(self) -> str:
        """:meth:`metrics` in the Prometheus text exposition format."""
        return metrics.broker_text(self.metrics())

    # ------------------------------------------------------------ lifecycle
    async def settle(self, timeout: float = 10.0) -> None:
        """Wait until the wire matches the references and every pending call has been answered."""
        async def run() -> None:
            while True:
                worker = self._worker
                tasks = [t for t in self._tasks if t is not self._refresh_task and not t.done()]
                if not tasks and not self._dirty:
                    return
                if self._dirty and (worker is None or worker.done()):
                    self._worker = self._spawn(self._sync())
                await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.wait_for(run(), timeout)

    async def synced(self, timeout: float = 10.0) -> None:
        """Wait (at most ``timeout`` s, and only while the upstream is open) until the worker has
        sent every call asked for so far."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.upstream.state == "open" and not self._closed:
            worker = self._worker
            if worker is None or worker.done():
                return
            left = deadline - loop.time()
            if left <= 0:
                return
            await asyncio.wait({worker}, timeout=left)

    @property
    def channels(self) -> list[str]:
        """Channels subscribed upstream by the broker."""
        return sorted(n for n, chan in self._channels.items() if chan.on_wire)

    async def close(self) -> None:
        """Close every consumer and unsubscribe everything upstream."""
        if self._closed:
            return
        for c in list(self._consumers):
            await c.close()
        for live in list(self._books.values()):
            while live.holders > 0:
                live.release()
        for chan in list(self._channels.values()):  # anything still held
            if chan.live is not None:
                while chan.live.holders > 0:
                    chan.live.release()
        for task in (self._refresh_task, self._stale_task):
            if task is not None:
                task.cancel()
        if self.upstream.state == "open":  # else the upstream's channels go with its connection
            try:
                await self.settle(5.0)
            except (TimeoutError, DeribitKitError) as exc:
                log.info("closing the broker: unsubscribing did not finish (%s)", exc)
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        self.upstream.disconnected.disconnect(self._on_disconnected)
        self.upstream.connected.disconnect(self._on_connected)
        interrupted = getattr(self.upstream, "interrupted", None)
        if isinstance(interrupted, Event):
            interrupted.disconnect(self._on_interrupted)
        self.upstream.set_sink(None)

    def __repr__(self) -> str:
        return f"<Broker channels={len(self._channels)} consumers={len(self._consumers)} books={len(self._books)}>"


@runtime_checkable
class Component(Protocol):
    """Something attached to a broker that reports its figures (:meth:`Broker.attach`)."""

    def stats(self) -> dict[str, Any]: ...


def _component_stats(c: Component) -> dict[str, Any]:
    try:
        return dict(c.stats())
    except Exception as exc:  # a component's bug must not take the broker's metrics down
        return {"error": f"{type(exc).__name__}: {exc}"}


def _fixed_tick(inst: Instrument | None) -> float | None:
    """The instrument's tick size when its prices lie on one fixed grid (not with ``tick_size_steps``)."""
    if inst is None or inst.tick_size_steps or not inst.tick_size > 0:
        return None
    return inst.tick_size


def _may_have_fixed_tick(name: str) -> bool:
    """Futures and spot pairs have one tick size; options step theirs (worth no instrument lookup)."""
    try:
        return parse_instrument_name(name).kind != "option"
    except ValueError:
        return False
