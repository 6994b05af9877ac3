"""Local L2 order book kept from Deribit ``book.{instrument}.{interval}`` messages.

Deribit sends one ``snapshot`` (every level as ``new``) and then ``change`` messages whose
``prev_change_id`` must equal the ``change_id`` of the message before (change ids increase but
are not consecutive). :class:`OrderBook` applies that stream and makes its integrity visible:

* ``state`` is one of :data:`SYNCING` (no snapshot yet), :data:`LIVE`, :data:`RESYNCING`
  (a gap in the chain, a crossed book, or :meth:`OrderBook.mark_resyncing`; only a snapshot
  makes the book live again) and :data:`STALE` (:meth:`OrderBook.check_stale` saw no update for
  too long; the next applied update makes it live again).
* counters: ``changes``, ``snapshots``, ``resyncs``, ``gaps``, ``crossed``, ``unknown_deletes``,
  ``discarded``, plus ``change_id`` and ``last_update_ms``.

A change that does not continue the chain is never applied: :meth:`OrderBook.apply` returns
``False`` and the owner (the broker) resubscribes or loads a REST snapshot
(:meth:`OrderBook.apply_snapshot`). While the book waits for that snapshot, further changes are
discarded without counting more gaps.

Layout, chosen by measurement (``bench/book_ingest.py``, perf-baselines table row 2): per side a
``dict`` price -> amount plus a ``bisect``-sorted ``list`` of prices, both ascending. Bids are read
from the end of their list, so the best levels of both sides sit where inserts are cheap and a
top-N read is one slice. Prices and amounts are ``float`` (never ``Decimal``).

::

    book = OrderBook("BTC-PERPETUAL")
    book.apply(snapshot_data)          # params.data of a book.BTC-PERPETUAL.100ms notification
    book.apply(change_data)            # True, or False on a gap (book.state == "resyncing")
    book.best_bid, book.spread, book.vwap(50_000, "buy"), book.to_frame(20)
"""

from __future__ import annotations

import html
from bisect import bisect_left, insort
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["LIVE", "RESYNCING", "STALE", "SYNCING", "OrderBook"]

SYNCING: Final = "syncing"
LIVE: Final = "live"
RESYNCING: Final = "resyncing"
STALE: Final = "stale"

Level = tuple[float, float]


def _apply_side(levels: dict[float, float], prices: list[float], entries: Iterable[Sequence[Any]]) -> int:
    """Apply ``[action, price, amount]`` entries to one side; return the number of unknown deletes."""
    unknown = 0
    for action, price, amount in entries:
        if amount and action != "delete":
            if price in levels:
                levels[price] = float(amount)
            else:
                price = float(price)
                insort(prices, price)
                levels[price] = float(amount)
        elif price in levels:
            del levels[price]
            del prices[bisect_left(prices, price)]
        elif action == "delete":
            unknown += 1
    return unknown


class OrderBook:
    """L2 book of one instrument, updated in place from snapshot and change messages."""

    __slots__ = (
        "_ask_prices",
        "_asks",
        "_bid_prices",
        "_bids",
        "_is_crossed",
        "_synced",
        "change_id",
        "changes",
        "crossed",
        "discarded",
        "gaps",
        "instrument_name",
        "last_update_ms",
        "resyncs",
        "snapshots",
        "state",
        "unknown_deletes",
    )

    def __init__(self, instrument_name: str = "") -> None:
        self.instrument_name: str = instrument_name
        self._bids: dict[float, float] = {}
        self._asks: dict[float, float] = {}
        self._bid_prices: list[float] = []  # ascending; best bid is the last element
        self._ask_prices: list[float] = []  # ascending; best ask is the first element
        self._synced = False  # a snapshot was applied and the chain has not broken since
        self._is_crossed = False
        self.state: str = SYNCING
        self.change_id: int | None = None
        self.last_update_ms: int | None = None
        self.changes = 0
        self.snapshots = 0
        self.resyncs = 0
        self.gaps = 0
        self.crossed = 0
        self.unknown_deletes = 0
        self.discarded = 0

    # ------------------------------------------------------------------ updates

    def apply(self, data: Mapping[str, Any]) -> bool:
        """Apply the ``data`` of a ``book.{instrument}.{interval}`` notification.

        Returns ``True`` when the message was applied. A ``change`` whose ``prev_change_id`` is
        not the book's ``change_id`` is a gap: nothing is applied, ``gaps`` grows, the state
        becomes ``resyncing`` and ``False`` is returned. While resyncing or syncing, changes
        are discarded (``discarded`` grows) until a snapshot arrives; so are changes that are
        not newer than the book (``change_id`` <= the book's, e.g. after a REST snapshot).
        """
        kind = data["type"]
        if kind == "change":
            if not self._synced or data.get("prev_change_id") != self.change_id:
                return self._reject(data)
            unknown = _apply_side(self._bids, self._bid_prices, data["bids"])
            unknown += _apply_side(self._asks, self._ask_prices, data["asks"])
            if unknown:
                self.unknown_deletes += unknown
            self.change_id = data["change_id"]
            self.last_update_ms = data["timestamp"]
            self.changes += 1
            self._after_update()
            return True
        if kind == "snapshot":
            name = data.get("instrument_name")
            if name:
                if self.instrument_name and name != self.instrument_name:
                    raise ValueError(f"snapshot for {name} applied to the book of {self.instrument_name}")
                self.instrument_name = name
            self._load(
                ((p, a) for action, p, a in data["bids"] if action != "delete"),
                ((p, a) for action, p, a in data["asks"] if action != "delete"),
                data["change_id"],
                data["timestamp"],
            )
            return True
        raise ValueError(f"unknown book message type {kind!r}")

    def apply_snapshot(
        self,
        bids: Iterable[Sequence[float]],
        asks: Iterable[Sequence[float]],
        change_id: int,
        timestamp: int,
    ) -> None:
        """Replace the book with a REST snapshot (``public/get_order_book``: ``[[price, amount], ...]``)."""
        self._load(((p, a) for p, a in bids), ((p, a) for p, a in asks), change_id, timestamp)

    def mark_resyncing(self) -> None:
        """Flag the book as untrusted until the next snapshot (e.g. the owner is resubscribing)."""
        self.state = RESYNCING

    def check_stale(self, now_ms: int, max_age_ms: int) -> bool:
        """Mark a live book stale when its last update is older than ``max_age_ms``; return whether stale."""
        if (
            self.state == LIVE
            and self.last_update_ms is not None
            and now_ms - self.last_update_ms > max_age_ms
        ):
            self.state = STALE
        return self.state == STALE

    def _reject(self, data: Mapping[str, Any]) -> bool:
        change_id = data.get("change_id")
        if (
            not self._synced
            or self.change_id is None
            or (change_id is not None and change_id <= self.change_id)
        ):
            self.discarded += 1
        else:
            self.gaps += 1
            self._synced = False
            self.state = RESYNCING
        return False

    def _load(
        self,
        bids: Iterable[tuple[float, float]],
        asks: Iterable[tuple[float, float]],
        change_id: int,
        timestamp: int,
    ) -> None:
        self._bids = {float(p): float(a) for p, a in bids if a}
        self._asks = {float(p): float(a) for p, a in asks if a}
        self._bid_prices = sorted(self._bids)
        self._ask_prices = sorted(self._asks)
        self.change_id = change_id
        self.last_update_ms = timestamp
        if self.snapshots:
            self.resyncs += 1
        self.snapshots += 1
        self._synced = True
        self._is_crossed = False
        self.state = LIVE
        self._after_update()

    def _after_update(self) -> None:
        bp, ap = self._bid_prices, self._ask_prices
        if bp and ap and bp[-1] >= ap[0]:
            if not self._is_crossed:
                self._is_crossed = True
                self.crossed += 1
            self.state = RESYNCING
            return
        self._is_crossed = False
        if self.state == STALE:
            self.state = LIVE

    # ------------------------------------------------------------------ reads

    @property
    def is_crossed(self) -> bool:
        """Best bid >= best ask (the book must not be trusted)."""
        bp, ap = self._bid_prices, self._ask_prices
        return bool(bp and ap and bp[-1] >= ap[0])

    @property
    def is_live(self) -> bool:
        return self.state == LIVE

    @property
    def n_bids(self) -> int:
        return len(self._bid_prices)

    @property
    def n_asks(self) -> int:
        return len(self._ask_prices)

    @property
    def best_bid(self) -> Level | None:
        if not self._bid_prices:
            return None
        p = self._bid_prices[-1]
        return (p, self._bids[p])

    @property
    def best_ask(self) -> Level | None:
        if not self._ask_prices:
            return None
        p = self._ask_prices[0]
        return (p, self._asks[p])

    @property
    def best_bid_price(self) -> float | None:
        return self._bid_prices[-1] if self._bid_prices else None

    @property
    def best_ask_price(self) -> float | None:
        return self._ask_prices[0] if self._ask_prices else None

    @property
    def spread(self) -> float | None:
        if not self._bid_prices or not self._ask_prices:
            return None
        return self._ask_prices[0] - self._bid_prices[-1]

    @property
    def mid(self) -> float | None:
        if not self._bid_prices or not self._ask_prices:
            return None
        return (self._ask_prices[0] + self._bid_prices[-1]) / 2.0

    def bids(self, n: int | None = None) -> list[Level]:
        """Bid levels, best (highest) first; the top ``n`` or all."""
        levels = self._bids
        if n is None:
            return [(p, levels[p]) for p in reversed(self._bid_prices)]
        if n <= 0:
            return []
        return [(p, levels[p]) for p in self._bid_prices[: -n - 1 : -1]]

    def asks(self, n: int | None = None) -> list[Level]:
        """Ask levels, best (lowest) first; the top ``n`` or all."""
        levels = self._asks
        if n is None:
            return [(p, levels[p]) for p in self._ask_prices]
        if n <= 0:
            return []
        return [(p, levels[p]) for p in self._ask_prices[:n]]

    def depth(self, n: int = 10) -> tuple[list[Level], list[Level]]:
        """``(bids(n), asks(n))``."""
        return self.bids(n), self.asks(n)

    def volume_at(self, price: float, side: Literal["bid", "ask"] | None = None) -> float:
        """Amount resting at ``price`` (on ``side``, or on whichever side holds it); 0.0 if none."""
        if side == "bid":
            return self._bids.get(price, 0.0)
        if side == "ask":
            return self._asks.get(price, 0.0)
        if side is not None:
            raise ValueError(f"side must be 'bid', 'ask' or None, not {side!r}")
        return self._bids.get(price) or self._asks.get(price, 0.0)

    def vwap(self, size: float, side: Literal["buy", "sell"]) -> float | None:
        """Average price to buy ``size`` from the asks (``"buy"``) or sell it into the bids (``"sell"``).

        ``None`` when the book does not hold enough liquidity.
        """
        if size <= 0:
            raise ValueError("size must be positive")
        if side == "buy":
            levels, prices = self._asks, iter(self._ask_prices)
        elif side == "sell":
            levels, prices = self._bids, reversed(self._bid_prices)
        else:
            raise ValueError(f"side must be 'buy' or 'sell', not {side!r}")
        left = size
        cost = 0.0
        for p in prices:
            a = levels[p]
            if a >= left:
                cost += p * left
                return cost / size
            cost += p * a
            left -= a
        return None

    def imbalance(self, n: int = 10) -> float | None:
        """``(bid volume - ask volume) / (bid volume + ask volume)`` over the top ``n`` levels."""
        bv = sum(a for _, a in self.bids(n))
        av = sum(a for _, a in self.asks(n))
        total = bv + av
        if total == 0:
            return None
        return (bv - av) / total

    def snapshot_levels(self) -> dict[str, list[list[float]]]:
        """The whole book as ``{"bids": [[price, amount], ...], "asks": [...]}`` in book order."""
        bids, asks = self._bids, self._asks
        return {
            "bids": [[p, bids[p]] for p in reversed(self._bid_prices)],
            "asks": [[p, asks[p]] for p in self._ask_prices],
        }

    def to_frame(self, n: int | None = None) -> pd.DataFrame:
        """Top ``n`` levels (or all) as a DataFrame: ``side`` ("bid"/"ask"), ``price``, ``amount``,
        ``cumulative`` (running amount from the best price outward). Bids first, then asks,
        each in book order."""
        import pandas as pd

        rows: list[tuple[str, float, float, float]] = []
        for side, levels in (("bid", self.bids(n)), ("ask", self.asks(n))):
            cum = 0.0
            for p, a in levels:
                cum += a
                rows.append((side, p, a, cum))
        return pd.DataFrame(rows, columns=["side", "price", "amount", "cumulative"]).astype(
            {"price": "float64", "amount": "float64", "cumulative": "float64"}
        )

    def __repr__(self) -> str:
        bb, ba = self.best_bid, self.best_ask
        bid = f"{bb[1]:g}@{bb[0]:g}" if bb else "-"
        ask = f"{ba[1]:g}@{ba[0]:g}" if ba else "-"
        return (
            f"<OrderBook {self.instrument_name or '?'} {self.state} bid {bid} ask {ask} "
            f"levels {self.n_bids}/{self.n_asks} change_id={self.change_id}>"
        )

    def _repr_html_(self) -> str:
        bids, asks = self.bids(10), self.asks(10)
        empty = "<td></td><td></td>"
        rows = []
        for i in range(max(len(bids), len(asks))):
            bid = f"<td>{bids[i][1]:g}</td><td><b>{bids[i][0]:g}</b></td>" if i < len(bids) else empty
            ask = f"<td><b>{asks[i][0]:g}</b></td><td>{asks[i][1]:g}</td>" if i < len(asks) else empty
            rows.append(f"<tr>{bid}{ask}</tr>")
        name = html.escape(self.instrument_name or "?")
        spread = self.spread
        caption = (
            f"{name} &middot; {html.escape(self.state)} &middot; change_id {self.change_id} &middot; "
            f"spread {'-' if spread is None else f'{spread:g}'} &middot; "
            f"changes {self.changes} gaps {self.gaps} resyncs {self.resyncs}"
        )
        return (
            '<table class="deribit-kit-book">'
            f"<caption>{caption}</caption>"
            "<thead><tr><th>bid amount</th><th>bid</th><th>ask</th><th>ask amount</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>"
        )
