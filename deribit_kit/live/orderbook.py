"""Local L2 order book kept from Deribit ``book.{instrument}.{interval}`` messages.

Deribit sends one ``snapshot`` (every level as ``new``) and then ``change`` messages whose
``prev_change_id`` must equal the ``change_id`` of the message before (change ids increase but
are not consecutive). :class:`OrderBook` applies that stream and makes its integrity visible:

* ``state`` is one of :data:`SYNCING` (no snapshot yet), :data:`LIVE`, :data:`RESYNCING`
  (a gap in the chain, a crossed book, a malformed change, or :meth:`OrderBook.mark_resyncing`;
  only a snapshot makes the book live again) and :data:`STALE` (:meth:`OrderBook.check_stale`
  saw no update for too long; the next applied update makes it live again).
* counters: ``changes``, ``snapshots``, ``resyncs``, ``gaps``, ``crossed``, ``unknown_deletes``,
  ``discarded``, ``malformed``, plus ``change_id`` and ``last_update_ms``.

A change that does not continue the chain is never applied: :meth:`OrderBook.apply` returns
``False`` and the owner (the broker) resubscribes or loads a REST snapshot
(:meth:`OrderBook.apply_snapshot`). While the book waits for that snapshot, further changes are
discarded without counting more gaps.

The layout of each side (a tick ladder or a sorted dict) is :mod:`deribit_kit.live.ladder`.
:attr:`OrderBook.layout` tells which one a book uses; both hold exactly the prices given. Prices
and amounts are JSON numbers, kept as ``float`` (never ``Decimal``); levels are returned as
``(price, amount)`` tuples in book order.

::

    book = OrderBook("BTC-PERPETUAL", tick_size=0.5)
    book.apply(snapshot_data)          # params.data of a book.BTC-PERPETUAL.100ms notification
    book.apply(change_data)            # True, or False on a gap (book.state == "resyncing")
    book.best_bid, book.spread, book.vwap(50_000, "buy"), book.to_frame(20)
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal

from .ladder import Level, Side, _Ladder, _Misfit, _Sorted, make_side, valid_tick

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["LIVE", "RESYNCING", "STALE", "SYNCING", "OrderBook"]

SYNCING: Final = "syncing"
LIVE: Final = "live"
RESYNCING: Final = "resyncing"
STALE: Final = "stale"


class OrderBook:
    """L2 book of one instrument, updated in place from snapshot and change messages.

    ``tick_size`` is the instrument's price grid when it is one fixed grid (a future's
    ``Instrument.tick_size``; not options, whose ``tick_size_steps`` change it): both sides are then
    kept as tick ladders, else as a dict plus a sorted price list (see the module docs). Either
    way the book holds exactly the prices it was given.
    """

    __slots__ = (
        "_asks",
        "_bids",
        "_is_crossed",
        "_synced",
        "_tick_size",
        "change_id",
        "changes",
        "crossed",
        "discarded",
        "gaps",
        "instrument_name",
        "last_update_ms",
        "malformed",
        "resyncs",
        "snapshots",
        "state",
        "unknown_deletes",
    )

    def __init__(self, instrument_name: str = "", tick_size: float | None = None) -> None:
        self.instrument_name: str = instrument_name
        self._tick_size = valid_tick(tick_size)
        self._bids: Side = make_side(self._tick_size, True, [])
        self._asks: Side = make_side(self._tick_size, False, [])
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
        self.malformed = 0

    @property
    def tick_size(self) -> float | None:
        """The price grid the sides are laid out on (``None``: no fixed grid)."""
        return self._tick_size

    @tick_size.setter
    def tick_size(self, tick: float | None) -> None:
        self._tick_size = tick = valid_tick(tick)
        self._bids = make_side(tick, True, self._bids.all())
        self._asks = make_side(tick, False, self._asks.all())

    @property
    def layout(self) -> str:
        """``"ladder"`` (both sides tick ladders), ``"sorted"`` (dict + sorted prices) or ``"mixed"``."""
        kinds = {type(self._bids), type(self._asks)}
        return "mixed" if len(kinds) > 1 else "ladder" if _Ladder in kinds else "sorted"

    # ------------------------------------------------------------------ updates

    def apply(self, data: Mapping[str, Any]) -> bool:
        """Apply the ``data`` of a ``book.{instrument}.{interval}`` notification.

        Returns ``True`` when the message was applied. A ``change`` whose ``prev_change_id`` is
        not the book's ``change_id`` is a gap: nothing is applied, ``gaps`` grows, the state
        becomes ``resyncing`` and ``False`` is returned. While resyncing or syncing, changes
        are discarded (``discarded`` grows) until a snapshot arrives; so are changes that are
        not newer than the book (``change_id`` <= the book's, e.g. after a REST snapshot).

        A change with a malformed entry raises (``TypeError``, ``ValueError``, ``OverflowError``,
        ``KeyError``...) after applying the entries before it: the book counts it in ``malformed``
        and is ``resyncing`` (untrusted until a snapshot), like after a gap.
        """
        kind = data["type"]
        if kind == "change":
            if not self._synced or data.get("prev_change_id") != self.change_id:
                return self._reject(data)
            try:
                try:
                    unknown = self._bids.apply(data["bids"])
                except _Misfit as exc:
                    unknown = self._demote(True, exc)
                try:
                    unknown += self._asks.apply(data["asks"])
                except _Misfit as exc:
                    unknown += self._demote(False, exc)
            except Exception:  # applied in part: only a snapshot makes the book right again
                self.malformed += 1
                self._synced = False
                self.state = RESYNCING
                raise
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

    def _demote(self, bids: bool, misfit: _Misfit) -> int:
        """Turn a ladder side that cannot hold a price into a sorted one; apply the rest there."""
        side = _Sorted(bids, (self._bids if bids else self._asks).all())
        if bids:
            self._bids = side
        else:
            self._asks = side
        return misfit.unknown + side.apply(misfit.rest)

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

    def mark_gap(self) -> None:
        """Messages of this book were lost upstream (a source said so): count a gap, apply no
        change until the next snapshot, as after a ``change_id`` gap."""
        if self._synced:
            self.gaps += 1
        self._synced = False
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
        tick = self._tick_size
        self._bids = make_side(tick, True, list({float(p): float(a) for p, a in bids if a}.items()))
        self._asks = make_side(tick, False, list({float(p): float(a) for p, a in asks if a}.items()))
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
        bp, ap = self._bids.best_price, self._asks.best_price
        if bp is not None and ap is not None and bp >= ap:
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
        bp, ap = self._bids.best_price, self._asks.best_price
        return bp is not None and ap is not None and bp >= ap

    @property
    def is_live(self) -> bool:
        """True when the book is synced from a snapshot and its change chain is intact."""
        return self.state == LIVE

    @property
    def n_bids(self) -> int:
        """Number of bid levels."""
        return len(self._bids)

    @property
    def n_asks(self) -> int:
        """Number of ask levels."""
        return len(self._asks)

    @property
    def best_bid(self) -> Level | None:
        """The best bid level ``(price, amount)``, or ``None`` when the side is empty."""
        return self._bids.best()

    @property
    def best_ask(self) -> Level | None:
        """The best ask level ``(price, amount)``, or ``None`` when the side is empty."""
        return self._asks.best()

    @property
    def best_bid_price(self) -> float | None:
        """The best bid price, or ``None``."""
        return self._bids.best_price

    @property
    def best_ask_price(self) -> float | None:
        """The best ask price, or ``None``."""
        return self._asks.best_price

    @property
    def spread(self) -> float | None:
        """Best ask minus best bid, or ``None`` when a side is empty."""
        bp, ap = self._bids.best_price, self._asks.best_price
        if bp is None or ap is None:
            return None
        return ap - bp

    @property
    def mid(self) -> float | None:
        """The mid price (best bid + best ask) / 2, or ``None`` when a side is empty."""
        bp, ap = self._bids.best_price, self._asks.best_price
        if bp is None or ap is None:
            return None
        return (ap + bp) / 2.0

    def bids(self, n: int | None = None) -> list[Level]:
        """Bid levels, best (highest) first; the top ``n`` or all."""
        if n is None:
            return self._bids.all()
        return self._bids.head(n) if n > 0 else []

    def asks(self, n: int | None = None) -> list[Level]:
        """Ask levels, best (lowest) first; the top ``n`` or all."""
        if n is None:
            return self._asks.all()
        return self._asks.head(n) if n > 0 else []

    def depth(self, n: int = 10) -> tuple[list[Level], list[Level]]:
        """``(bids(n), asks(n))``."""
        return self.bids(n), self.asks(n)

    def volume_at(self, price: float, side: Literal["bid", "ask"] | None = None) -> float:
        """Amount resting at ``price`` (on ``side``, or on whichever side holds it); 0.0 if none."""
        if side == "bid":
            return self._bids.get(price)
        if side == "ask":
            return self._asks.get(price)
        if side is not None:
            raise ValueError(f"side must be 'bid', 'ask' or None, not {side!r}")
        return self._bids.get(price) or self._asks.get(price)

    def vwap(self, size: float, side: Literal["buy", "sell"]) -> float | None:
        """Average price to buy ``size`` from the asks (``"buy"``) or sell it into the bids (``"sell"``).

        ``None`` when the book does not hold enough liquidity.
        """
        if size <= 0:
            raise ValueError("size must be positive")
        if side == "buy":
            levels = iter(self._asks)
        elif side == "sell":
            levels = iter(self._bids)
        else:
            raise ValueError(f"side must be 'buy' or 'sell', not {side!r}")
        left = size
        cost = 0.0
        for p, a in levels:
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
        return {
            "bids": [[p, a] for p, a in self._bids],
            "asks": [[p, a] for p, a in self._asks],
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
