"""``LiveBook``: an :class:`~deribit_kit.live.orderbook.OrderBook` kept live by the broker.

The broker folds every message of a ``book.{instrument}.{interval}`` channel into the book
(:meth:`LiveBook.apply`) and resyncs the instrument when the chain breaks; the LiveBook tells
readers: ``updated`` fires after every applied message, ``version`` counts them, and
``async for book in live`` yields the newest state each time (skipping intermediate ones when
the reader is slow). :meth:`LiveBook.snapshot` is the book as a Deribit ``snapshot`` message with
its ``change_id`` (the broker port serves late joiners from it). ``close()`` releases one hold.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from ..events import Event
from ._common import versions
from .orderbook import LIVE, OrderBook

__all__ = ["LiveBook"]


class LiveBook:
    """The live book of one channel. Reads (``best_bid``, ``spread``, ``to_frame()``, ...) go to
    :attr:`book`; ``state`` is ``syncing``, ``live``, ``resyncing`` or ``stale``."""

    def __init__(self, instrument: str, channel: str, tick_size: float | None = None, *,
                 release: Callable[[LiveBook], None] | None = None) -> None:
        self.instrument = instrument
        self.channel = channel
        self.book = OrderBook(instrument, tick_size=tick_size)
        self.updated = Event("updated")
        self.version = 0
        self.holders = 0  # open holds (each one a reference on the channel)
        self._release = release
        self._waiter: asyncio.Future[None] | None = None
        self._snap: tuple[int | None, dict[str, Any]] | None = None

    def changed(self) -> None:
        """Tell readers the book changed (its state, or its levels)."""
        self.version += 1
        u = self.updated
        if u._handlers or u._waiters:  # what ``bool(u)`` says, without a call (the hot path)
            u.emit(self)
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    async def wait_version(self, after: int, timeout: float | None = None) -> int:
        """Wait until ``version`` > ``after``; returns the new version."""
        while self.version <= after:
            fut = self._waiter
            if fut is None or fut.done():
                fut = self._waiter = asyncio.get_running_loop().create_future()
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        return self.version

    async def wait_live(self, timeout: float | None = 10.0) -> LiveBook:
        """Wait until the book is live (synced from a snapshot)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self.book.state != LIVE:
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                raise TimeoutError(f"{self.instrument} book not live within {timeout}s (state {self.book.state})")
            await self.wait_version(self.version, left)
        return self

    def snapshot(self) -> dict[str, Any] | None:
        """The book as the ``data`` of a Deribit ``snapshot`` notification (every level ``new``),
        with its ``change_id``; ``None`` unless the book is live. Built once per ``change_id``."""
        book = self.book
        if book.state != LIVE:
            return None
        snap = self._snap
        if snap is not None and snap[0] == book.change_id:
            return snap[1]
        lv = book.snapshot_levels()
        data = {"type": "snapshot", "timestamp": book.last_update_ms, "instrument_name": self.instrument,
                "change_id": book.change_id,
                "bids": [["new", p, a] for p, a in lv["bids"]], "asks": [["new", p, a] for p, a in lv["asks"]]}
        self._snap = (book.change_id, data)
        return data

    def __aiter__(self) -> AsyncIterator[LiveBook]:
        return versions(self)

    def __getattr__(self, name: str) -> Any:
        if name == "book":  # not yet set (during __init__)
            raise AttributeError(name)
        return getattr(self.book, name)

    @property
    def state(self) -> str:
        """The book's state: ``syncing``, ``live``, ``resyncing`` or ``stale``."""
        return self.book.state

    async def close(self) -> None:
        """Release this hold (the broker unsubscribes the channel when nobody holds or reads it)."""
        self.release()

    def release(self) -> None:
        """Release one hold, at once (see :meth:`close`)."""
        if self.holders > 0 and self._release is not None:
            self._release(self)

    def __repr__(self) -> str:
        return f"<LiveBook {self.book!r}>"

    def _repr_html_(self) -> str:
        return self.book._repr_html_()
