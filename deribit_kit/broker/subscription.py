"""Broker consumers: a bounded buffer per consumer with a stated overflow policy.

* ``"conflate"``: keep only the latest message per channel (for book channels the broker hands
  the consumer the live :class:`~deribit_kit.broker.broker.LiveBook`, never a broken chain);
* ``"drop_oldest"``: drop the oldest messages and put an explicit :class:`Gap` marker in the
  stream (before the next message) saying how many were lost on which channel;
* ``"disconnect"``: close the consumer with a reason when its buffer overflows.

Delivery is a direct method call from the broker's dispatch (no task per consumer); a waiting
reader is woken through one future. A consumer that is slow or stuck never delays the others:
its buffer is bounded (``maxsize``) and only its own messages are dropped or conflated.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from ..client import Notification
from ..errors import DeribitKitError

if TYPE_CHECKING:
    from .broker import Broker

__all__ = ["POLICIES", "Consumer", "ConsumerClosed", "Gap", "Policy"]

log = logging.getLogger("deribit_kit.broker")

Policy = Literal["conflate", "drop_oldest", "disconnect"]
POLICIES: Final = ("conflate", "drop_oldest", "disconnect")


@dataclass(slots=True, frozen=True)
class Gap:
    """Marker in a ``drop_oldest`` stream: ``dropped`` messages of ``channel`` were lost here."""

    channel: str
    dropped: int


class ConsumerClosed(DeribitKitError):
    """The consumer was closed (by its owner, or by the broker with a reason such as an overflow)."""


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

    # ------------------------------------------------------------ delivery (called by the broker)
    def _push(self, n: Notification) -> None:
        """Accept one message; never blocks, never grows past ``maxsize``."""
        self.delivered += 1
        cb = self.callback
        if cb is not None:
            try:
                cb(n)
            except Exception:
                log.exception("consumer %s callback failed on %s", self.name, n.channel)
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
        return self._closed

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
        """The next :class:`~deribit_kit.client.Notification` or :class:`Gap`, waiting at most ``timeout`` s."""
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
        """Join the channels (subscribing upstream those no other consumer holds yet)."""
        if not self._started:
            self._started = True
            await self.broker._attach(self, self.channels)
        return self

    async def add_channels(self, channels: Iterable[str]) -> None:
        new = [c for c in channels if c not in self.channels]
        if new:
            self.channels += new
            if self._started and not self._closed:
                await self.broker._attach(self, new)

    async def remove_channels(self, channels: Iterable[str]) -> None:
        gone = [c for c in channels if c in self.channels]
        if gone:
            self.channels = [c for c in self.channels if c not in gone]
            for c in gone:
                self._latest.pop(c, None)
            if self._started and not self._closed:
                self.broker._detach(self, gone)

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
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def close(self, reason: str = "closed") -> None:
        """Leave every channel (the broker unsubscribes upstream what nobody else reads)."""
        self._close_now(reason)

    async def __aenter__(self) -> Consumer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def metrics(self) -> dict[str, Any]:
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
