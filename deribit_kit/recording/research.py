"""pandas frames straight from a recording, without a broker: book tops sampled on a time grid,
trades and tickers.

Where a record is folded: :func:`book_tops` reads the ``book.*`` frames and checkpoints
(:func:`~deribit_kit.recording.reader.iter_raw`) into one small L2 book per channel
(:class:`_Book`: the same ``change_id`` chain rules as :class:`deribit_kit.live.OrderBook` — a
snapshot or checkpoint loads it, a change applies only when its ``prev_change_id`` continues the
chain, a gap or a disconnect leaves it unsynced until the next snapshot; ``live/`` is not imported
here: ``recording/`` stays free of the kit's upper layers), and samples every synced book at each
grid point. :func:`trades` and :func:`tickers` flatten the notifications' ``data``.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from ..wire.channels import ChannelError, parse_channel
from .format import CHECKPOINT, EVENT, FRAME
from .reader import ReadReport, iter_raw

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["book_tops", "tickers", "trades"]


class _Book:
    """An L2 book of one channel: price -> amount per side, and the chain's state."""

    __slots__ = ("asks", "bids", "change_id", "synced", "timestamp")

    def __init__(self) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.change_id: int | None = None
        self.synced = False
        self.timestamp: int | None = None

    def load(self, data: dict[str, Any]) -> None:
        self.bids = {float(p): float(a) for act, p, a in data["bids"] if act != "delete" and a}
        self.asks = {float(p): float(a) for act, p, a in data["asks"] if act != "delete" and a}
        self.change_id = data["change_id"]
        self.timestamp = data.get("timestamp")
        self.synced = True

    def apply(self, data: dict[str, Any]) -> None:
        if data.get("type") == "snapshot":
            self.load(data)
            return
        if not self.synced or data.get("prev_change_id") != self.change_id:
            cid = data.get("change_id")
            if self.synced and self.change_id is not None and cid is not None and cid > self.change_id:
                self.synced = False  # a gap: nothing applies until the next snapshot
            return
        for side, entries in ((self.bids, data["bids"]), (self.asks, data["asks"])):
            for act, p, a in entries:
                if act == "delete" or not a:
                    side.pop(float(p), None)
                else:
                    side[float(p)] = float(a)
        self.change_id = data["change_id"]
        self.timestamp = data.get("timestamp")

    def top(self, depth: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        bids = heapq.nlargest(depth, self.bids.items())
        asks = heapq.nsmallest(depth, self.asks.items())
        return bids, asks


def _instrument_of(channel: str) -> str | None:
    try:
        return parse_channel(channel).instrument
    except ChannelError:
        return None


def _family(channel: str) -> str:
    try:
        return parse_channel(channel).family
    except ChannelError:
        return ""


class _Picker(dict[str, bool]):
    """channel -> kept (channels of ``families``, of ``instruments`` when given), decided once each."""

    def __init__(self, families: tuple[str, ...], instruments: set[str] | None) -> None:
        super().__init__()
        self.families = families
        self.instruments = instruments

    def __missing__(self, channel: str) -> bool:
        keep = self[channel] = _family(channel) in self.families and (
            self.instruments is None or _instrument_of(channel) in self.instruments)
        return keep


def book_tops(directory: str | Path, interval: str = "1s", depth: int = 1, *, instruments: Iterable[str] | None = None,
              start: Any = None, end: Any = None, report: ReadReport | None = None) -> pd.DataFrame:
    """Best ``depth`` levels of every recorded book, sampled every ``interval`` (a pandas offset:
    ``"100ms"``, ``"1s"``, ``"1min"``) on the receive-time grid: one row per instrument and grid
    point while its book is synced, with ``bid_price``/``bid_amount``/``ask_price``/``ask_amount``
    (``_1`` ... ``_{depth}`` when ``depth > 1``), ``mid``, ``spread``, ``change_id`` and
    ``timestamp`` (the exchange's, of the book's last update). Indexed by ``time`` (UTC)."""
    import pandas as pd

    if depth < 1:
        raise ValueError("depth must be >= 1")
    d = Path(directory)
    keep = None if instruments is None else set(instruments)
    picked = _Picker(("book",), keep)
    step = int(pd.Timedelta(interval).value)
    if step <= 0:
        raise ValueError("interval must be positive")
    books: dict[str, _Book] = {}
    inst_of: dict[str, str] = {}
    rows: list[tuple[Any, ...]] = []
    next_t: int | None = None

    def sample(at: int) -> None:
        for ch, book in books.items():
            if not book.synced:
                continue
            bids, asks = book.top(depth)
            bid = bids[0][0] if bids else None
            ask = asks[0][0] if asks else None
            levels: list[Any] = []
            for k in range(depth):
                levels += [bids[k][0] if k < len(bids) else None, bids[k][1] if k < len(bids) else None,
                           asks[k][0] if k < len(asks) else None, asks[k][1] if k < len(asks) else None]
            mid = (bid + ask) / 2 if bid is not None and ask is not None else None
            spread = ask - bid if bid is not None and ask is not None else None
            rows.append((at, inst_of[ch], *levels, mid, spread, book.change_id, book.timestamp))

    for t, _e, kind, ch, payload in iter_raw(d, start=start, end=end, report=report):
        if kind != EVENT and not picked[ch]:
            continue
        if next_t is None:
            next_t = (t // step + 1) * step
        while t >= next_t:
            sample(next_t)
            next_t += step
        if kind == EVENT:
            if ch == "disconnected":
                for book in books.values():
                    book.synced = False
            elif ch == "gap":
                for name in orjson.loads(payload).get("channels") or []:
                    if name in books:
                        books[name].synced = False
            continue
        found = books.get(ch)
        if found is None:
            book = books[ch] = _Book()
            inst_of[ch] = _instrument_of(ch) or ch
        else:
            book = found
        try:
            data = orjson.loads(payload)["params"]["data"]
            if kind == CHECKPOINT:
                if not book.synced:
                    book.load(data)
            elif kind == FRAME:
                book.apply(data)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            book.synced = False
            if report is not None:
                report.add_corrupt("", -1, f"{ch}: {exc}", payload)
    names = ["bid_price", "bid_amount", "ask_price", "ask_amount"]
    level_cols = names if depth == 1 else [f"{n}_{k}" for k in range(1, depth + 1) for n in names]
    cols = ["time", "instrument", *level_cols, "mid", "spread", "change_id", "timestamp"]
    frame = pd.DataFrame(rows, columns=cols)
    frame["time"] = pd.to_datetime(frame["time"], unit="ns", utc=True)
    return frame.set_index("time")


def _rows(directory: Path, families: tuple[str, ...], instruments: set[str] | None, start: Any, end: Any,
          report: ReadReport | None) -> list[tuple[int, str, Any]]:
    picked = _Picker(families, None)
    out = []
    for t, _e, _kind, ch, payload in iter_raw(directory, start=start, end=end, kinds=(FRAME,), report=report):
        if not picked[ch]:
            continue
        try:
            data = orjson.loads(payload)["params"]["data"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            if report is not None:
                report.add_corrupt("", -1, f"{ch}: {exc}", payload)
            continue
        out.append((t, ch, data))
    return out


def trades(directory: str | Path, *, instruments: Iterable[str] | None = None, start: Any = None, end: Any = None,
           report: ReadReport | None = None) -> pd.DataFrame:
    """Every recorded public trade (``trades.*`` channels, each trade once), indexed by the
    exchange's ``time``; ``received`` is when the recorder got it, ``channel`` where."""
    import pandas as pd

    keep = None if instruments is None else set(instruments)
    seen: set[Any] = set()
    rows: list[dict[str, Any]] = []
    for t, ch, data in _rows(Path(directory), ("trades", "trades_kind"), keep, start, end, report):
        for trade in data if isinstance(data, list) else [data]:
            if not isinstance(trade, dict):
                continue
            if keep is not None and trade.get("instrument_name") not in keep:
                continue
            tid = trade.get("trade_id")
            if tid is not None:
                if tid in seen:
                    continue
                seen.add(tid)
            rows.append({**trade, "received": t, "channel": ch})
    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame(columns=["timestamp", "instrument_name", "price", "amount", "direction", "received",
                                      "channel"])
    frame["time"] = pd.to_datetime(frame["timestamp"], unit="ms", utc=True)
    frame["received"] = pd.to_datetime(frame["received"], unit="ns", utc=True)
    return frame.set_index("time").sort_index(kind="stable")


def tickers(directory: str | Path, *, instruments: Iterable[str] | None = None, start: Any = None, end: Any = None,
            report: ReadReport | None = None) -> pd.DataFrame:
    """Every recorded ticker (``ticker.*``), nested fields flattened (``stats_volume``,
    ``greeks_delta``), indexed by the exchange's ``time``; ``received`` and ``channel`` as in
    :func:`trades`."""
    import pandas as pd

    keep = None if instruments is None else set(instruments)
    rows = []
    for t, ch, data in _rows(Path(directory), ("ticker",), keep, start, end, report):
        if not isinstance(data, dict) or (keep is not None and data.get("instrument_name") not in keep):
            continue
        rows.append({**data, "received": t, "channel": ch})
    frame = pd.json_normalize(rows, sep="_") if rows else pd.DataFrame(
        columns=["timestamp", "instrument_name", "mark_price", "received", "channel"])
    frame["time"] = pd.to_datetime(frame["timestamp"], unit="ms", utc=True)
    frame["received"] = pd.to_datetime(frame["received"], unit="ns", utc=True)
    return frame.set_index("time").sort_index(kind="stable")
