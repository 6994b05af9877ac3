"""The two layouts of an order book side, chosen by measurement (``bench/book_ingest.py``).

Per side:

* ``tick_size`` given (an instrument on one fixed price grid, e.g. a future; the broker passes
  it): a **tick ladder**, a ``list`` whose slot ``i`` holds the ``(price, amount)`` level ``i``
  ticks away from an origin beyond the best price, or ``None``; a dict maps each price seen to
  its slot. Slots grow away from the other side, so on both sides the best level is the lowest
  occupied slot, kept in a pointer, and a top-N read is a slice from it. A price outside the list
  re-bases it (rebuilt around the side's levels with spare room), which is rare. A side that would
  span more than ``_MAX_SLOTS`` ticks, or meets two prices on one tick (a wrong ``tick_size``),
  turns into the other layout; so does a snapshot side whose best 16 levels spread over more than
  ``_MAX_TOP_SPAN`` ticks (reads would walk too many empty slots).
* otherwise (no tick, or options with ``tick_size_steps``): a ``dict`` price -> amount plus a
  ``bisect``-sorted ``list`` of prices, both ascending; bids are read from the end of the list.

The ladder's update loop and top-N read also exist compiled (``deribit_kit/live/_speedups.c``, built by ``pip
install`` where there is a C compiler, else skipped). The update loop computes a price's slot
instead of hashing the price and takes every entry but a price new to the side or a malformed
one, which go through the Python loop one at a time, so both give the same books and the same
errors (the property tests run both). Apply of a 20-level change: ~5.7 -> ~2.9 µs
(``bench/book_ingest.py``).

:class:`~deribit_kit.live.orderbook.OrderBook` picks one per side and applies changes through it.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable, Iterator, Sequence
from heapq import nlargest, nsmallest
from itertools import chain, compress, islice, repeat
from itertools import count as counter
from math import isfinite
from operator import is_not
from typing import Any

try:  # the ladder's hot loops, compiled (optional: the same loops run in Python without them)
    from ._speedups import ladder_apply as _ladder_apply
    from ._speedups import ladder_head as _ladder_head
except ImportError:  # pragma: no cover - depends on the build
    _ladder_apply = None  # type: ignore[assignment]
    _ladder_head = None  # type: ignore[assignment]

__all__ = ["Entries", "Level", "Side", "make_side", "valid_tick"]

Level = tuple[float, float]
Entries = Iterable[Sequence[Any]]

_MAX_SLOTS = 1 << 18  # a ladder side never spans more ticks than this (2 x 2 MB of lists)
_MAX_TOP_SPAN = 256  # ticks: when a snapshot's best 16 levels spread wider, reads would walk many empty slots
_ROOM = 64  # least number of free slots left beyond each end of a ladder side when it is (re)built
_CHUNK = 64  # slots looked at per step when skipping empty slots


class _Misfit(Exception):
    """A ladder side cannot hold a price: the book turns it into a sorted side, which applies ``rest``."""

    def __init__(self, unknown: int, rest: Entries) -> None:
        super().__init__()
        self.unknown = unknown  # unknown deletes among the entries applied before
        self.rest = rest  # the entry that did not fit, then the ones after it


def _seek(slots: list[Level | None], i: int) -> int:
    """The first slot from ``i`` on that is not ``None`` (``len(slots)`` if none)."""
    size = len(slots)
    end = min(i + 8, size)
    while i < end:  # the next level is usually a tick or two away
        if slots[i] is not None:
            return i
        i += 1
    while i < size:  # a sparse stretch: skip empty chunks at C speed
        chunk = slots[i : i + _CHUNK]
        if chunk.count(None) < len(chunk):
            return next(compress(counter(i), map(is_not, chunk, repeat(None))))
        i += _CHUNK
    return size


class _Ladder:
    """One side on a fixed tick grid.

    ``slots[i]`` is the ``(price, amount)`` level ``i`` ticks from ``origin``, away from the other
    side (bids downwards, asks upwards), or ``None``: ``i = round((price - origin) * scale)``.
    ``first`` is the lowest occupied slot (the best level), ``count`` the number of levels.
    ``index`` remembers the slot of each price seen since the last layout (hashing a float is
    cheaper than rounding it) and ``owners`` the price of each slot in ``index``: one slot, one
    price, or the tick is not this book's grid.
    """

    __slots__ = ("best_price", "count", "first", "index", "origin", "owners", "scale", "slots")

    def __init__(self, tick: float, desc: bool) -> None:
        self.scale = -1.0 / tick if desc else 1.0 / tick
        self.origin = 0.0
        self.slots: list[Level | None] = []
        self.owners: list[float | None] = []
        self.index: dict[float, int] = {}
        self.first = 0
        self.count = 0
        self.best_price: float | None = None

    @classmethod
    def build(cls, tick: float, desc: bool, levels: list[Level]) -> _Ladder | None:
        """A ladder side holding ``levels`` (distinct prices), or ``None`` when they do not fit one
        or are too sparse at the top (a sorted side reads those faster)."""
        side = cls(tick, desc)
        if levels:
            prices = [p for p, _ in levels]
            top = nlargest(16, prices) if desc else nsmallest(16, prices)
            if abs(top[-1] - top[0]) > _MAX_TOP_SPAN * tick or not side._place(levels):
                return None
        return side

    def _place(self, levels: list[Level], extra: float | None = None) -> bool:
        """Lay the side out anew: ``levels`` (distinct prices, any order) with room for ``extra``
        and spare slots beyond both ends. False (and nothing changed) when they do not fit."""
        prices = [p for p, _ in levels]
        if extra is not None:
            prices.append(extra)
        scale = self.scale
        lo, hi = min(prices), max(prices)
        span = round((hi - lo) * abs(scale))
        room = max(_ROOM, span // 4)
        size = span + 2 * room + 1
        if size > _MAX_SLOTS:
            return False
        origin = (hi if scale < 0 else lo) - room / scale  # the best price sits at slot ``room``
        slots: list[Level | None] = [None] * size
        owners: list[float | None] = [None] * size
        index: dict[float, int] = {}
        for level in levels:
            p = level[0]
            i = round((p - origin) * scale)
            if owners[i] is not None:  # two prices on one tick
                return False
            slots[i], owners[i], index[p] = level, p, i
        self.origin, self.slots, self.owners, self.index = origin, slots, owners, index
        self.count = len(levels)
        self.first = _seek(slots, 0)
        self.best_price = slots[self.first][0] if levels else None  # type: ignore[index]
        return True

    def _slot(self, price: float) -> int:
        """The slot of a price not in ``index`` yet, now remembered; ``-1`` when it lies beyond the
        ladder, ``-2`` when another price has it (raises for a price that is not a finite number)."""
        i = round((price - self.origin) * self.scale)
        if not 0 <= i < len(self.slots):
            return -1
        if self.owners[i] is not None:
            return -2
        self.owners[i] = price + 0.0  # a float, as the compiled loop expects
        self.index[price] = i
        return i

    def apply(self, entries: Entries) -> int:
        """Apply ``[action, price, amount]`` entries; return the number of unknown deletes.

        Raises :class:`_Misfit`, after applying the entries before it, at a price the ladder
        cannot hold.
        """
        if _ladder_apply is not None and type(entries) is list:  # the C loop; the common case inline
            slots = self.slots
            pos, first, count, unknown = _ladder_apply(slots, self.owners, self.origin, self.scale, entries, 0,
                                                       self.first, self.count)
            if pos < len(entries):
                return self._apply_compiled(entries, pos, first, count, unknown)
            if count and slots[first] is not None:  # the best level is still there
                self.first, self.count, self.best_price = first, count, slots[first][0]  # type: ignore[index]
            else:
                self._settle(first, count)
            return unknown
        slots, index = self.slots, self.index
        first, count = self.first, self.count
        unknown = 0
        it = iter(entries)
        for action, price, amount in it:
            try:
                i = index[price]
            except KeyError:
                if not amount or action == "delete":
                    if action == "delete":
                        unknown += 1
                    continue
                i = self._slot(price)
                if i < 0:  # beyond the ladder (lay it out again with room, then go on) or off the grid
                    self.first, self.count = first, count
                    return self._refit(i, chain(((action, price, amount),), it), unknown)
            old = slots[i]
            if amount and action != "delete":
                # ``x + 0.0``: a float of an int, faster than float(x) and the float itself otherwise
                slots[i] = (price + 0.0, amount + 0.0)
                if old is None:
                    count += 1
                    if i < first:
                        first = i
            elif old is not None:
                slots[i] = None
                count -= 1
            elif action == "delete":
                unknown += 1
        self._settle(first, count)
        return unknown

    def _apply_compiled(self, entries: list[Any], pos: int, first: int, count: int, unknown: int) -> int:
        """The rest of :meth:`apply` after the C loop (``_speedups.ladder_apply``) stopped at
        ``entries[pos]``: it takes every entry but a price new to the side or a malformed one; those
        go through the Python loop, one each, and the C loop goes on after them."""
        assert _ladder_apply is not None
        slots, owners, origin, scale, n = self.slots, self.owners, self.origin, self.scale, len(entries)
        while pos < n:
            self.first, self.count = first, count
            try:
                unknown += self.apply(iter(entries[pos : pos + 1]))  # the Python loop: its rules, its errors
            except _Misfit as exc:  # carry the entries after this one along
                raise _Misfit(unknown + exc.unknown, chain(exc.rest, entries[pos + 1 :])) from None
            if self.slots is not slots:  # laid out anew around a new price: the rest goes there
                return self._then(unknown, entries[pos + 1 :])
            pos, first, count, u = _ladder_apply(slots, owners, origin, scale, entries, pos + 1, self.first,
                                                 self.count)
            unknown += u
        self._settle(first, count)
        return unknown

    def _refit(self, i: int, rest: Iterator[Sequence[Any]], unknown: int) -> int:
        """A price outside the slots (``i == -1``): lay the side out again with room for it and
        apply ``rest`` (that entry first); off the grid (``-2``) or too wide: :class:`_Misfit`.
        ``unknown``: unknown deletes among the entries applied before."""
        entry = next(rest)
        rest = chain((entry,), rest)
        if i == -2 or not self._place(list(filter(None, self.slots)), float(entry[1])):
            raise _Misfit(unknown, rest) from None
        return self._then(unknown, list(rest))

    def _then(self, unknown: int, entries: list[Any]) -> int:
        """``unknown`` (deletes so far) plus those of applying ``entries``, also when they misfit."""
        try:
            return unknown + self.apply(entries)
        except _Misfit as exc:
            exc.unknown += unknown
            raise

    def _settle(self, first: int, count: int) -> None:
        """Store ``first`` and ``count`` after an update; find the best level if it went."""
        slots = self.slots
        if count:
            if slots[first] is None:  # the best level went: the next one is close by
                first = _seek(slots, first)
            self.best_price = slots[first][0]  # type: ignore[index]
        else:
            first = len(slots)  # empty: any insert lowers it
            self.best_price = None
        self.first, self.count = first, count

    def __len__(self) -> int:
        return self.count

    def best(self) -> Level | None:
        return self.slots[self.first] if self.count else None

    def head(self, n: int) -> list[Level]:
        """The best ``n`` (> 0) levels."""
        if _ladder_head is not None:
            return _ladder_head(self.slots, self.first, min(n, self.count))
        slots, i = self.slots, self.first
        end = i + 2 * n + 8
        out = list(islice(filter(None, slots[i:end]), n))
        if len(out) < n and len(out) < self.count:  # a sparse stretch: look further, in growing windows
            want, step = min(n, self.count), end - i
            while len(out) < want:
                i, step = end, 2 * step
                end = i + step
                out += islice(filter(None, slots[i:end]), n - len(out))
        return out

    def all(self) -> list[Level]:
        return list(filter(None, self.slots[self.first :])) if self.count else []

    def __iter__(self) -> Iterator[Level]:
        return filter(None, islice(self.slots, self.first, None))

    def get(self, price: float) -> float:
        i = self.index.get(price)  # every level's price is in the index
        level = None if i is None else self.slots[i]
        return 0.0 if level is None else level[1]


class _Sorted:
    """One side as a dict price -> amount plus the prices in a ``bisect``-sorted ascending list."""

    __slots__ = ("best_price", "desc", "levels", "prices")

    def __init__(self, desc: bool, levels: Iterable[Level] = ()) -> None:
        self.desc = desc  # bids: the best price is the last one of ``prices``
        self.levels = dict(levels)
        self.prices = sorted(self.levels)
        self.best_price: float | None = None
        if self.prices:
            self.best_price = self.prices[-1] if desc else self.prices[0]

    def apply(self, entries: Entries) -> int:
        """Apply ``[action, price, amount]`` entries; return the number of unknown deletes."""
        levels, prices = self.levels, self.prices
        unknown = 0
        for action, price, amount in entries:
            if amount and action != "delete":
                if price in levels:
                    levels[price] = amount + 0.0  # a float, as in the ladder's loop
                else:
                    price += 0.0
                    insort(prices, price)
                    levels[price] = amount + 0.0
            elif price in levels:
                del levels[price]
                del prices[bisect_left(prices, price)]
            elif action == "delete":
                unknown += 1
        if prices:
            self.best_price = prices[-1] if self.desc else prices[0]
        else:
            self.best_price = None
        return unknown

    def __len__(self) -> int:
        return len(self.prices)

    def best(self) -> Level | None:
        p = self.best_price
        return None if p is None else (p, self.levels[p])

    def head(self, n: int) -> list[Level]:
        """The best ``n`` (> 0) levels."""
        levels = self.levels
        if self.desc:
            return [(p, levels[p]) for p in self.prices[: -n - 1 : -1]]
        return [(p, levels[p]) for p in self.prices[:n]]

    def all(self) -> list[Level]:
        return list(self)

    def __iter__(self) -> Iterator[Level]:
        levels = self.levels
        return ((p, levels[p]) for p in (reversed(self.prices) if self.desc else self.prices))

    def get(self, price: float) -> float:
        return self.levels.get(price, 0.0)


Side = _Ladder | _Sorted


def make_side(tick: float | None, desc: bool, levels: list[Level]) -> Side:
    """A ladder side when a tick is known and the levels (distinct prices) fit one, else a sorted side."""
    if tick is not None:
        ladder = _Ladder.build(tick, desc, levels)
        if ladder is not None:
            return ladder
    return _Sorted(desc, levels)


def valid_tick(tick: float | None) -> float | None:
    """``tick`` as a float when it is a positive finite number, ``None`` for none; raises ``ValueError`` otherwise."""
    if tick is None:
        return None
    tick = float(tick)
    if not (tick > 0 and isfinite(tick)):
        raise ValueError(f"tick_size must be a positive number or None, not {tick!r}")
    return tick


