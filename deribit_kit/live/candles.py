"""``LiveCandles``: the candles of one instrument at one resolution, updated in place.

    candles = await dk.candles("BTC-PERPETUAL", "1", live=True)
    candles.to_frame()                       # history + the open candle, oldest first
    await candles.updated.wait(5)            # the next change
    candles.last.close, candles.version

Where a message arrives: a broker consumer of ``chart.trades.{instrument}.{resolution}`` calls
:meth:`LiveCandles._on_message` (the owner's ``subscribe``, a callback consumer); it is parsed
into a :class:`~deribit_kit.models.Candle` there and folded by :meth:`LiveCandles.apply`: the
same ``tick`` replaces the open candle, a later one opens the next period, an earlier one corrects
a kept candle. The history comes once from ``public/get_tradingview_chart_data`` (the owner's
``candles``); the channel is subscribed first, and what arrives while the history is on its way
is applied after it when it is newer. A gap in the stream (a :class:`~deribit_kit.broker.Gap`)
or a reconnect fetches the periods since the last kept candle again (:meth:`LiveCandles.resync`).
State leaves through ``candles``, ``last``, ``to_frame()`` and the ``updated`` event.

Bounded: at most ``max_candles`` candles are kept (oldest dropped).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any, Protocol

import pandas as pd

from ..errors import DeribitKitError
from ..events import Event
from ..models import Candle, FrameList, convert
from ..wire.channels import chart_channel, chart_resolution, chart_resolution_ms
from ._common import Once, versions

log = logging.getLogger("deribit_kit.live.candles")

__all__ = ["DEFAULT_HISTORY", "MAX_CANDLES", "CandleSource", "LiveCandles"]

DEFAULT_HISTORY = 200
"""Periods of history fetched at start when no ``start`` is given (``history=``)."""
MAX_CANDLES = 2000
"""Candles a :class:`LiveCandles` keeps by default (the oldest are dropped beyond it)."""


class CandleSource(Protocol):
    """What live candles need of their owner (the :class:`~deribit_kit.Deribit` facade): the
    candle history, broker streams and the reconnect event."""

    reconnected: Event

    async def get_time(self) -> int:
        """The exchange's time in milliseconds (``public/get_time``)."""
        ...

    async def candles(self, instrument: str, resolution: str | int = "1", start: datetime | int | None = None,
                      end: datetime | int | None = None) -> FrameList[Candle]:
        """Candles of ``instrument`` at ``resolution`` between ``start`` and ``end``."""
        ...

    def subscribe(self, *channels: str, callback: Callable[[Any], Any] | None = None,
                  maxsize: int = 10_000) -> Any:
        """A broker consumer of ``channels`` (calling ``callback`` for each message when given)."""
        ...


class LiveCandles:
    """History plus the open candle of ``instrument`` at ``resolution``, kept live from the
    ``chart.trades`` channel (see the module doc). ``updated`` fires with this object after
    every change; ``version`` counts the changes; ``async for c in live`` yields on each."""

    def __init__(self, source: CandleSource, instrument: str, resolution: str | int = "1", *,
                 start: datetime | int | None = None, history: int = DEFAULT_HISTORY,
                 max_candles: int = MAX_CANDLES) -> None:
        self.source = source
        self.instrument = instrument
        self.resolution = chart_resolution(resolution)
        self.channel = chart_channel(instrument, self.resolution)
        self.period_ms = chart_resolution_ms(self.resolution)
        self.start_at = start
        self.history = history
        self.max_candles = max_candles
        self.candles: list[Candle] = []  # oldest first, one per period
        self._ticks: list[int] = []  # the candles' ticks, for bisecting
        self.updated = Event("updated")
        self.version = 0
        self.messages = 0  # chart.trades messages applied
        self.resyncs = 0
        self._sub: Any = None
        self._pending: list[Candle] | None = None  # messages that arrive while history is loading
        self._started = Once()
        self._resync: asyncio.Future[None] | None = None

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> LiveCandles:
        """Subscribe, then load the history (once; later calls wait for the first)."""
        await self._started.run(self._start)
        return self

    async def _start(self) -> None:
        self._pending = []
        self._sub = self.source.subscribe(self.channel, callback=self._on_message)
        try:
            await self._sub.start()
            history = await self.source.candles(self.instrument, self.resolution, await self._history_start())
        except BaseException:
            await self._sub.close()
            self._sub = None
            raise
        pending, self._pending = self._pending, None
        self._load(history, pending)
        self.source.reconnected += self._on_reconnected

    async def _history_start(self) -> datetime | int:
        if self.start_at is not None:
            return self.start_at
        return await self.source.get_time() - self.history * self.period_ms

    def _load(self, history: list[Candle], pending: list[Candle]) -> None:
        for c in history:
            self._fold(c)
        last = self._ticks[-1] if self._ticks else None
        for c in pending:  # sent before the history's answer: only a later period is news
            if last is None or c.tick > last:
                self._fold(c)
        self._changed()

    async def close(self) -> None:
        """Leave the channel (the broker unsubscribes it when nobody else reads it)."""
        self.source.reconnected -= self._on_reconnected
        if self._sub is not None:
            await self._sub.close()
            self._sub = None
        if self._resync is not None:
            self._resync.cancel()

    # ------------------------------------------------------------ folding
    def _on_message(self, item: Any) -> None:
        if getattr(item, "channel", None) != self.channel:
            return
        if getattr(item, "dropped", None) is not None:  # a Gap marker: messages were lost
            self._schedule_resync()
            return
        try:
            candle = convert(item.data, Candle)
        except DeribitKitError as exc:
            log.warning("%s: unreadable candle: %s", self.channel, exc)
            return
        if self._pending is not None:
            self._pending.append(candle)
            return
        self.messages += 1
        self.apply(candle)

    def apply(self, candle: Candle) -> None:
        """Fold one candle in (the open candle again, the next period's, or a correction) and
        tell readers."""
        if self._fold(candle):
            self._changed()

    def _fold(self, c: Candle) -> bool:
        ticks = self._ticks
        if not ticks or c.tick > ticks[-1]:
            ticks.append(c.tick)
            self.candles.append(c)
            if len(ticks) > self.max_candles:
                del ticks[0], self.candles[0]
            return True
        i = bisect.bisect_left(ticks, c.tick)
        if i < len(ticks) and ticks[i] == c.tick:
            if self.candles[i] == c:
                return False
            self.candles[i] = c
            return True
        if i == 0 and len(ticks) >= self.max_candles:
            return False  # older than everything kept, and no room
        ticks.insert(i, c.tick)
        self.candles.insert(i, c)
        if len(ticks) > self.max_candles:
            del ticks[0], self.candles[0]
        return True

    def _changed(self) -> None:
        self.version += 1
        self.updated.emit(self)

    # ------------------------------------------------------------ resync
    def _on_reconnected(self, _source: Any) -> None:
        self._schedule_resync()

    def _schedule_resync(self) -> None:
        """One resync at a time: gaps and reconnects while one is in flight join it."""
        if self._resync is None or self._resync.done():
            self._resync = asyncio.ensure_future(self._resync_logged())

    async def _resync_logged(self) -> None:
        try:
            await self.resync()
        except DeribitKitError as exc:
            log.warning("%s: candle resync failed (%s); the next gap or reconnect tries again", self.channel, exc)

    async def resync(self) -> None:
        """Fetch the periods since the last kept candle again (after a gap or a reconnect)."""
        start = self._ticks[-1] if self._ticks else await self._history_start()
        fresh = await self.source.candles(self.instrument, self.resolution, start)
        for c in fresh:
            self._fold(c)
        self.resyncs += 1
        self._changed()

    # ------------------------------------------------------------ reading
    @property
    def last(self) -> Candle | None:
        """The newest candle (the open one, or the last filler)."""
        return self.candles[-1] if self.candles else None

    def __len__(self) -> int:
        return len(self.candles)

    def to_frame(self) -> pd.DataFrame:
        """One row per candle, oldest first: ``tick, open, high, low, close, volume, cost, time``."""
        return FrameList(self.candles, item_type=Candle).to_frame()

    async def wait_version(self, after: int, timeout: float | None = None) -> int:
        """Wait until ``version`` > ``after``; returns the new version."""
        async def until() -> int:
            while self.version <= after:
                await self.updated.wait()
            return self.version

        return await asyncio.wait_for(until(), timeout)

    def __aiter__(self) -> AsyncIterator[LiveCandles]:
        return versions(self)

    def __repr__(self) -> str:
        last = self.last
        head = f"<LiveCandles {self.instrument} {self.resolution}: {len(self.candles)} candle(s)"
        return head + (f", last {last.close} at {last.time:%Y-%m-%d %H:%M}>" if last and last.time else ">")

    def _repr_html_(self) -> str:
        frame = self.to_frame().tail(20)
        with contextlib.suppress(KeyError):
            frame = frame[["time", "open", "high", "low", "close", "volume", "cost"]]
        return f"<b>{repr(self).strip('<>')}</b>" + str(frame.to_html(index=False))
