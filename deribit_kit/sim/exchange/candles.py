"""Candles (OHLCV) of the embedded exchange, built from its own trades; pure state, no I/O.

Where a trade arrives: :meth:`CandleStore.on_trade`, called by
:meth:`deribit_kit.sim.exchange.market.Market.record_trade` for every public trade (the market
makers' and the users'). It is folded into one candle per resolution Deribit lists (``1, 3, 5, 10, 15,
30, 60, 120, 180, 360, 720`` minutes and ``1D``); periods start at multiples of the resolution
since the UNIX epoch (UTC midnight for ``1D``), as Deribit's ``tick`` does. Where candles leave:
:meth:`CandleStore.chart_data` is the result of ``public/get_tradingview_chart_data`` (columnar,
``status`` ``"ok"`` or ``"no_data"``; :mod:`deribit_kit.sim.rpc.public`) and
:meth:`CandleStore.due` is the message of ``chart.trades.{instrument}.{resolution}`` for one tick
(the open candle again when it traded, a filler candle when a new period begins without trades;
published by :mod:`deribit_kit.sim.pubsub`).

Units, as Deribit's: ``volume`` is in the base currency and ``cost`` in the quote currency (for
inverse futures, whose amounts are USD, ``volume = amount / price`` and ``cost = amount``; for the
others ``volume = amount`` and ``cost = amount * price``); the caller converts.

Filler candles (periods without trades after the first trade) are not stored: they are made on
demand from the previous close (``open = high = low = close``, ``volume = cost = 0``), which is
what Deribit sends for them.

Bounded memory: each (instrument, resolution) keeps at most ``max_candles`` traded candles
(:data:`MAX_CANDLES` by default) in compact columns; when a new period would exceed that, the
oldest candle is dropped, so history reaches back ``max_candles`` traded periods (from the start
of the run until then). One answer holds at most :data:`MAX_RESULT` candles, the newest of the
range. :meth:`CandleStore.forget` drops an instrument (the exchange calls it on expiry).
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Any

from ...wire.channels import CHART_RESOLUTIONS, chart_resolution_ms

RESOLUTIONS: tuple[str, ...] = CHART_RESOLUTIONS
"""The resolutions Deribit offers, as its ``resolution`` param spells them (minutes, or ``1D``)."""
MAX_CANDLES = 1000
"""Traded candles kept per instrument and resolution; the oldest is dropped beyond this."""
MAX_RESULT = 5000
"""Candles in one ``get_tradingview_chart_data`` answer at most (the newest of the range)."""

def resolution_ms(resolution: str) -> int:
    """The length of one period of ``resolution`` (``"1"`` ... ``"720"`` minutes, ``"1D"``) in ms."""
    if resolution not in RESOLUTIONS:
        raise ValueError(f"unknown resolution {resolution!r}; one of {', '.join(RESOLUTIONS)}")
    return chart_resolution_ms(resolution)


def period_start(timestamp_ms: int, resolution: str) -> int:
    """The ``tick`` (start, ms) of the period of ``resolution`` that contains ``timestamp_ms``."""
    step = resolution_ms(resolution)
    return timestamp_ms - timestamp_ms % step


def filler(tick: int, close: float) -> dict[str, Any]:
    """The candle of a period without trades: the previous close four times, no volume."""
    return {"tick": tick, "open": close, "high": close, "low": close, "close": close,
            "volume": 0.0, "cost": 0.0}


@dataclass(slots=True)
class CandleSeries:
    """The traded candles of one instrument at one resolution, oldest first, in columns."""

    step: int
    max_candles: int
    ticks: array[int] = field(default_factory=lambda: array("q"))
    open: array[float] = field(default_factory=lambda: array("d"))
    high: array[float] = field(default_factory=lambda: array("d"))
    low: array[float] = field(default_factory=lambda: array("d"))
    close: array[float] = field(default_factory=lambda: array("d"))
    volume: array[float] = field(default_factory=lambda: array("d"))
    cost: array[float] = field(default_factory=lambda: array("d"))

    def __len__(self) -> int:
        return len(self.ticks)

    def add(self, timestamp: int, price: float, volume: float, cost: float) -> None:
        """Fold one trade in: a new candle when it starts a period, else update the last one."""
        tick = timestamp - timestamp % self.step
        if self.ticks and tick <= self.ticks[-1]:
            # same period (a trade stamped earlier than the last candle counts in the last one)
            self.high[-1] = max(self.high[-1], price)
            self.low[-1] = min(self.low[-1], price)
            self.close[-1] = price
            self.volume[-1] += volume
            self.cost[-1] += cost
            return
        if len(self.ticks) >= self.max_candles:
            for col in self._columns():
                del col[0]
        self.ticks.append(tick)
        for col, value in ((self.open, price), (self.high, price), (self.low, price), (self.close, price),
                           (self.volume, volume), (self.cost, cost)):
            col.append(value)

    def _columns(self) -> tuple[array[Any], ...]:
        return (self.ticks, self.open, self.high, self.low, self.close, self.volume, self.cost)

    def candle(self, i: int) -> dict[str, Any]:
        """The ``i``-th stored candle as a ``chart.trades`` message."""
        return {"tick": self.ticks[i], "open": self.open[i], "high": self.high[i], "low": self.low[i],
                "close": self.close[i], "volume": round(self.volume[i], 8), "cost": round(self.cost[i], 8)}

    def at(self, tick: int) -> dict[str, Any] | None:
        """The candle of the period starting at ``tick``: the traded one, a filler after the first
        trade, or None before it (or before the oldest kept candle)."""
        if not self.ticks or tick < self.ticks[0]:
            return None
        i = self._bisect(tick)  # index of the last stored tick <= tick
        if self.ticks[i] == tick:
            return self.candle(i)
        return filler(tick, self.close[i])

    def _bisect(self, tick: int) -> int:
        lo, hi = 0, len(self.ticks)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.ticks[mid] <= tick:
                lo = mid + 1
            else:
                hi = mid
        return lo - 1

    def range(self, start: int, end: int, limit: int = MAX_RESULT) -> list[dict[str, Any]]:
        """Every period from the one containing ``start`` to the one containing ``end``, traded
        candles and fillers between and after them, from the oldest kept candle on; the newest
        ``limit`` of them."""
        if not self.ticks or end < start:
            return []
        step = self.step
        first = max(start - start % step, self.ticks[0])
        last = end - end % step
        if last < first:
            return []
        first = max(first, last - (limit - 1) * step)
        out: list[dict[str, Any]] = []
        i = self._bisect(first)
        n = len(self.ticks)
        close = self.close[i] if i >= 0 else None
        tick = first
        while tick <= last:
            while i + 1 < n and self.ticks[i + 1] <= tick:
                i += 1
                close = self.close[i]
            if i >= 0 and self.ticks[i] == tick:
                out.append(self.candle(i))
            elif close is not None:
                out.append(filler(tick, close))
            tick += step
        return out


class CandleStore:
    """Candles of every instrument at every resolution, fed trade by trade (see the module doc)."""

    def __init__(self, max_candles: int = MAX_CANDLES, resolutions: tuple[str, ...] = RESOLUTIONS) -> None:
        self.max_candles = max_candles
        self.resolutions = resolutions
        self._steps = tuple((r, resolution_ms(r)) for r in resolutions)
        self.series: dict[str, dict[str, CandleSeries]] = {}
        self._sent: dict[tuple[str, str], int] = {}  # (instrument, resolution) -> tick last published

    def on_trade(self, instrument: str, timestamp: int, price: float, volume: float, cost: float) -> None:
        """Fold one trade (``volume`` in base currency, ``cost`` in quote currency) into every resolution."""
        by_res = self.series.get(instrument)
        if by_res is None:
            by_res = self.series[instrument] = {
                r: CandleSeries(step, self.max_candles) for r, step in self._steps}
        for s in by_res.values():
            s.add(timestamp, price, volume, cost)

    def get(self, instrument: str, resolution: str) -> CandleSeries | None:
        """The stored series, or None when ``instrument`` has not traded (or ``resolution`` is unknown)."""
        by_res = self.series.get(instrument)
        return None if by_res is None else by_res.get(resolution)

    def chart_data(self, instrument: str, resolution: str, start: int, end: int, now: int) -> dict[str, Any]:
        """The result of ``public/get_tradingview_chart_data``: the periods from ``start`` to
        ``min(end, now)`` in columns (``ticks, open, high, low, close, volume, cost``) and
        ``status`` ``"ok"``, or empty columns and ``"no_data"``."""
        s = self.get(instrument, resolution)
        candles = s.range(start, min(end, now)) if s is not None else []
        out: dict[str, Any] = {
            "ticks": [c["tick"] for c in candles],
            "open": [c["open"] for c in candles],
            "high": [c["high"] for c in candles],
            "low": [c["low"] for c in candles],
            "close": [c["close"] for c in candles],
            "volume": [c["volume"] for c in candles],
            "cost": [c["cost"] for c in candles],
            "status": "ok" if candles else "no_data",
        }
        return out

    def current(self, instrument: str, resolution: str, now: int) -> dict[str, Any] | None:
        """The candle of the period containing ``now`` (the open one, or a filler), None before any trade."""
        s = self.get(instrument, resolution)
        return None if s is None else s.at(now - now % s.step)

    def due(self, instrument: str, resolution: str, now: int, traded: bool) -> dict[str, Any] | None:
        """The ``chart.trades`` message to publish for this tick, or None: the open candle again when
        ``traded``, the current period's candle (a filler) when a period began since the last one
        published, nothing otherwise (and nothing before the instrument's first trade)."""
        candle = self.current(instrument, resolution, now)
        if candle is None:
            return None
        key = (instrument, resolution)
        if not traded and self._sent.get(key) == candle["tick"]:
            return None
        self._sent[key] = candle["tick"]
        return candle

    def forget(self, instrument: str) -> None:
        """Drop ``instrument``'s candles (it expired)."""
        self.series.pop(instrument, None)
        for r in self.resolutions:
            self._sent.pop((instrument, r), None)
