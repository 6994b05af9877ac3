"""Broker consumers: one contract for every stream a notebook, a dashboard, the port, a recorder
or a sink sees — a bounded buffer per consumer with a stated overflow policy.

* ``"conflate"``: keep only the latest message per channel (for book channels the broker hands
  the consumer the live :class:`~deribit_kit.live.LiveBook`, never a broken chain);
* ``"drop_oldest"``: drop the oldest messages and put an explicit :class:`Gap` marker in the
  stream (before the next message) saying how many were lost on which channel;
* ``"disconnect"``: close the consumer with a reason when its buffer overflows.

Delivery is a direct method call from the broker's dispatch (no task per consumer); a waiting
reader is woken through one future. A consumer that is slow or stuck never delays the others:
its buffer is bounded (``maxsize``) and only its own messages are dropped or conflated. A
``callback`` consumer gets every message at once (a coroutine function runs as a task).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from ..errors import ConsumerClosed

if TYPE_CHECKING:
    from .broker import Broker

__all__ = ["POLICIES", "Consumer", "ConsumerClosed", "Gap", "Notification", "Policy"]

log = logging.getLogger("deribit_kit.broker")

Policy = Literal["conflate", "drop_oldest", "disconnect"]
POLICIES: Final = ("conflate", "drop_oldest", "disconnect")


class Notification:
    """One message of a channel: its ``data`` (decoded once, shared by every consumer) and ``raw``,
    the frame exactly as the upstream received it (``None`` when the source has none)."""

    __slots__ = ("channel", "data", "raw")

    def __init__(self, channel: str, data: Any, raw: str | bytes | None = None) -> None:
        self.channel = channel
        self.data = data
        self.raw = raw

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Notification) and other.channel == self.channel
                and other.data == self.data)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Notification(channel={self.channel!r}, data={self.data!r})"


@dataclass(slots=True, frozen=True)
class Gap:
    """Marker in a ``drop_oldest`` stream: ``dropped`` messages of ``channel`` were lost here."""

    channel: str
    dropped: int


Item = Notification | Gap


class Consumer:
    """One in-process reader of broker channels: ``async for``, ``await get(timeout)`` or a callback.

    Create it with :meth:`Broker.consumer`; ``await consumer.start()`` (or ``async with`` /
    ``async for``) subscribes, ``await consumer.close()`` leaves (the last consumer of a channel
    unsubscribes it upstream).
    """

    def __init__(self, broker: Broker, channels: Iterable[str], policy: Policy = "drop_oldest",
                 maxsize: int = 1000, callback: Callable[[Item], Any] | None = None, name: str = "") -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, not {policy!r}")
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.broker = broker
        self.channels: list[str] = list(dict.fromkeys(channels))
        self.accepted: list[str] = []  # the channels the upstream accepted (after start)
        self.policy: Policy = policy
        self.maxsize = maxsize
        self.callback = callback
        self.name = name or f"consumer-{id(self):x}"
        self.delivered = 0  # messages put in the buffer (or passed to the callback)
        self.consumed = 0  # messages taken out by get()/iteration
        self.dropped = 0  # messages lost to drop_oldest or conflation
        self.max_depth = 0
        self.latency_ms: float | None = None  # exchange timestamp -> get(), last message
        self.closed_reason: str | None = None
        self._buf: deque[Notification] = deque()
        self._latest: dict[str, Notification] = {}  # conflate: channel -> latest, in arrival order
        self._gaps: dict[str, int] = {}  # drop_oldest: channel -> dropped since last read
        self._waiter: asyncio.Future[None] | None = None
        self._started = False
        self._closed = False
        self._done: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------ delivery (called by the broker)
    def _push(self, n: Notification) -> None:
        """Accept one message; never blocks, never grows past ``maxsize``."""
        self.delivered += 1
        cb = self.callback
        if cb is not None:
            try:
                result = cb(n)
            except Exception:
                log.exception("consumer %s callback failed on %s", self.name, n.channel)
                return
            if result is not None and inspect.isawaitable(result):
                self._spawn(result)
            return
        if self.policy == "conflate":
            latest = self._latest
            if n.channel in latest:
                self.dropped += 1
                del latest[n.channel]  # re-insert at the end: arrival order of the latest messages
            elif len(latest) >= self.maxsize:
                del latest[next(iter(latest))]
                self.dropped += 1
            latest[n.channel] = n
            depth = len(latest)
        else:
            buf = self._buf
            if len(buf) >= self.maxsize:
                if self.policy == "disconnect":
                    self._close_now(f"buffer overflow: {self.maxsize} messages unread")
                    return
                old = buf.popleft()
                self.dropped += 1
                self._gaps[old.channel] = self._gaps.get(old.channel, 0) + 1
            buf.append(n)
            depth = len(buf)
        if depth > self.max_depth:
            self.max_depth = depth
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    @property
    def depth(self) -> int:
        """Messages waiting in the buffer."""
        return len(self._latest) if self.policy == "conflate" else len(self._buf)

    @property
    def closed(self) -> bool:
        """True once the consumer has left its channels (closed by its owner or by the broker)."""
        return self._closed

    async def wait_closed(self, timeout: float | None = None) -> None:
        """Wait until the consumer is closed, e.g. after ``break`` out of ``async for``."""
        if not self._closed:
            if self._done is None:
                self._done = asyncio.get_running_loop().create_future()
            await asyncio.wait_for(asyncio.shield(self._done), timeout)
        await self.broker.synced(10.0 if timeout is None else timeout)

    def _spawn(self, aw: Any) -> None:
        """Run a coroutine callback's awaitable as a task (kept alive, its failure logged)."""
        task: asyncio.Task[Any] = asyncio.ensure_future(aw)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("consumer %s callback failed", self.name, exc_info=task.exception())

    # ------------------------------------------------------------ reading
    def get_nowait(self) -> Item | None:
        """The next item if one is ready, else ``None`` (raises :class:`ConsumerClosed` once closed)."""
        if self._gaps:
            ch = next(iter(self._gaps))
            return Gap(ch, self._gaps.pop(ch))
        n: Notification | None = None
        if self.policy == "conflate":
            if self._latest:
                ch = next(iter(self._latest))
                n = self._latest.pop(ch)
        elif self._buf:
            n = self._buf.popleft()
        if n is not None:
            self.consumed += 1
            data = n.data
            if isinstance(data, dict):
                ts = data.get("timestamp")
                if isinstance(ts, int | float):
                    self.latency_ms = time.time() * 1000.0 - ts
            return n
        if self._closed:
            raise ConsumerClosed(self.closed_reason or "closed")
        return None

    async def get(self, timeout: float | None = None) -> Item:
        """The next :class:`Notification` or :class:`Gap`, waiting at most ``timeout`` s."""
        if not self._started:
            await self.start()
        item = self.get_nowait()
        if item is not None:
            return item
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            fut = self._waiter
            if fut is None or fut.done():
                fut = self._waiter = loop.create_future()
            left = None if deadline is None else max(0.0, deadline - loop.time())
            await asyncio.wait_for(asyncio.shield(fut), left)
            item = self.get_nowait()
            if item is not None:
                return item

    def drain(self) -> list[Item]:
        """Everything buffered now, without waiting."""
        out: list[Item] = []
        while True:
            try:
                item = self.get_nowait()
            except ConsumerClosed:
                break
            if item is None:
                break
            out.append(item)
        return out

    def __aiter__(self) -> AsyncIterator[Item]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Item]:
        try:
            while True:
                try:
                    yield await self.get()
                except ConsumerClosed:
                    return
        finally:
            await self.close()

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> Consumer:
        """Join the channels (subscribing upstream those no other consumer holds yet). Raises
        :class:`~deribit_kit.errors.SubscriptionError` when the upstream accepts none of them, and
        :class:`ConsumerClosed` when it was closed before it started (it never joins then)."""
        if not self._started:
            if self._closed:  # closed before this start ran: joining now would hold its channels for ever
                raise ConsumerClosed(self.closed_reason or "closed")
            self._started = True
            self.accepted = await self.broker._attach(self, self.channels)
            self._let_go_refused(self.channels)
        return self

    @property
    def refused(self) -> list[str]:
        """The channels asked for that the upstream refused, once started: let go at once (no book or
        reference is kept); :meth:`add_channels` asks again. A start or add still waiting for its
        answer counts its channels here until it is answered."""
        return [c for c in self.channels if c not in self.accepted] if self._started else []

    def _let_go_refused(self, asked: list[str]) -> None:
        refused = [c for c in asked if c not in self.accepted]
        if refused:
            self.broker._detach(self, refused)

    async def add_channels(self, channels: Iterable[str]) -> None:
        """Also receive ``channels`` (the ones not held yet join at once when the consumer is running;
        one the upstream refused before is asked again). Raises
        :class:`~deribit_kit.errors.SubscriptionError` when the upstream accepts none of them."""
        new = [c for c in dict.fromkeys(channels) if c not in (self.accepted if self._started else self.channels)]
        if new:
            self.channels += [c for c in new if c not in self.channels]
            if self._started and not self._closed:
                self.accepted += await self.broker._attach(self, new)  # none accepted: raises, let go already
                self._let_go_refused(new)

    async def remove_channels(self, channels: Iterable[str]) -> None:
        """Stop receiving ``channels`` (the broker unsubscribes them upstream when nobody else holds them)."""
        gone = [c for c in channels if c in self.channels]
        if gone:
            self.channels = [c for c in self.channels if c not in gone]
            self.accepted = [c for c in self.accepted if c not in gone]
            for c in gone:
                self._latest.pop(c, None)
            if self._started and not self._closed:
                self.broker._detach(self, gone)

    def close_nowait(self, reason: str = "closed") -> None:
        """Leave every channel now (what :meth:`close` does, without awaiting)."""
        self._close_now(reason)

    def _close_now(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self.closed_reason = reason
        self._buf.clear()
        self._latest.clear()
        if reason != "closed":
            log.warning("consumer %s closed: %s", self.name, reason)
        if self._started:
            self.broker._detach(self, self.channels)
        for w in (self._waiter, self._done):
            if w is not None and not w.done():
                w.set_result(None)

    async def close(self, reason: str = "closed") -> None:
        """Leave every channel; returns once the broker has unsubscribed upstream what nobody else
        reads (without waiting when the upstream is down: its channels go with the connection)."""
        self._close_now(reason)
        await self.broker.synced()

    async def __aenter__(self) -> Consumer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def metrics(self) -> dict[str, Any]:
        """Counts of this consumer: delivered, consumed, dropped, queue depth, latency (:meth:`Broker.metrics`)."""
        return {
            "name": self.name, "policy": self.policy, "maxsize": self.maxsize, "channels": len(self.channels),
            "delivered": self.delivered, "consumed": self.consumed, "dropped": self.dropped,
            "depth": self.depth, "max_depth": self.max_depth, "latency_ms": self.latency_ms,
            "closed": self._closed, "closed_reason": self.closed_reason,
        }

    def __repr__(self) -> str:
        state = f"closed ({self.closed_reason})" if self._closed else "open"
        return (f"<Consumer {self.name} {self.policy} {state} channels={len(self.channels)} "
                f"depth={self.depth}/{self.maxsize} dropped={self.dropped}>")
