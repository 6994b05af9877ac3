"""Margins: initial and maintenance margin of positions and open orders (standard margin), the spot
reserve. No I/O; part of the engine (:mod:`.orders`)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from .ledger import Ledger
from .market import SimInstrument
from .orders import (
    EPS,
    AccountState,
    PositionState,
    settlement_currency,
)

if TYPE_CHECKING:
    pass

SHORT_OPTION_IM = (0.15, 0.10)  # max(0.15 - OTM/underlying, 0.10) + mark, per coin (standard margin)
SHORT_OPTION_MM = 0.075


class Margin(Ledger):
    """Initial and maintenance margins of positions and open orders, and the spot reserve."""

    def _short_option_margin(self, inst: SimInstrument, maintenance: bool = False) -> float:
        """Standard-margin requirement per coin of a short inverse option, in the coin."""
        if maintenance:
            return SHORT_OPTION_MM + inst.mark_price
        under = self.market.index[inst.coin]
        otm = max(0.0, (inst.strike - under) if inst.call else (under - inst.strike))
        return max(SHORT_OPTION_IM[0] - otm / under, SHORT_OPTION_IM[1]) + inst.mark_price

    def _unit_margin(self, inst: SimInstrument, direction: str, price: float) -> float:
        """Initial margin per unit of amount that opens exposure in ``direction``."""
        if inst.kind == "future":
            lev = float(inst.info.get("max_leverage") or 50)
            mark = inst.mark_price or price
            return 1.0 / (mark * lev) if not inst.linear else mark / lev
        if inst.kind == "option":
            return price if direction == "buy" else self._short_option_margin(inst)
        return 0.0

    def orders_margin(self, st: AccountState, inst: SimInstrument,
                      extra: tuple[str, float, float] | None = None) -> float:
        """Initial margin of ``inst``'s open orders (plus a hypothetical ``(direction, amount, price)``),
        netted against the position: the larger of the buy and sell sides, beyond what they close."""
        if inst.kind == "spot":
            return 0.0
        pos = st.positions.get(inst.name)
        size = pos.size if pos is not None else 0.0
        sides = {"buy": [0.0, 0.0], "sell": [0.0, 0.0]}  # amount, amount*price
        orders: Iterable[tuple[str, float, float]] = (
            (o.direction, o.remaining, o.price if o.price is not None else inst.mark_price)
            for o in st.open.values()
            if o.inst is inst and o.state == "open" and not o.reduce_only
        )
        for d, amt, px in itertools.chain(orders, [extra] if extra else []):
            sides[d][0] += amt
            sides[d][1] += amt * px
        best = 0.0
        for d, (amt, notional) in sides.items():
            closes = max(0.0, -size) if d == "buy" else max(0.0, size)
            opens = max(0.0, amt - closes)
            if opens <= EPS:
                continue
            avg_px = notional / amt if amt > 0 else inst.mark_price
            best = max(best, opens * self._unit_margin(inst, d, avg_px))
        return best

    def position_margins(self, pos: PositionState) -> tuple[float, float]:
        """``(initial, maintenance)`` margin of a position, in its settlement currency."""
        inst, size = pos.inst, pos.size
        if abs(size) <= EPS:
            return 0.0, 0.0
        if inst.kind == "future":
            im = abs(size) * self._unit_margin(inst, "buy", inst.mark_price)
            return im, im / 2.0
        if inst.kind == "option" and size < 0:
            return -size * self._short_option_margin(inst), -size * self._short_option_margin(inst, True)
        return 0.0, 0.0

    def spot_reserve(self, st: AccountState, currency: str) -> float:
        """How much of ``currency`` open spot orders hold: the quote of open buys (remaining x price),
        the base of open sells (remaining)."""
        total = 0.0
        for o in st.open.values():
            if o.inst.kind != "spot" or o.state != "open":
                continue
            if o.direction == "buy" and o.inst.info["quote_currency"] == currency:
                total += o.remaining * (o.price or 0.0)
            elif o.direction == "sell" and o.inst.info["base_currency"] == currency:
                total += o.remaining
        return total

    def _initial_margin(self, st: AccountState, currency: str) -> float:
        total = 0.0
        for inst in self._instruments_in(st, currency):
            pos = st.positions.get(inst.name)
            if pos is not None:
                total += self.position_margins(pos)[0]
            total += self.orders_margin(st, inst)
        return total

    def _instruments_in(self, st: AccountState, currency: str) -> Iterator[SimInstrument]:
        seen: dict[str, SimInstrument] = {}
        for pos in st.positions.values():
            seen[pos.inst.name] = pos.inst
        for o in st.open.values():
            seen.setdefault(o.inst.name, o.inst)
        for inst in seen.values():
            if inst.kind != "spot" and settlement_currency(inst) == currency:
                yield inst
