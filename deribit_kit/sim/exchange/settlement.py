"""Expiries and settlement: ``good_til_day`` orders at the rollover, instruments at expiry (orders
cancelled, positions settled at the delivery price). No I/O; part of the engine (:mod:`.orders`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .market import SimInstrument
from .orders import (
    EPS,
    Changes,
    _r,
    is_inverse_future,
    settlement_currency,
)
from .triggers import Triggers

if TYPE_CHECKING:
    pass


class Settlement(Triggers):
    """Expiries: good_til_day orders at the rollover, instruments' settlement at expiry."""

    def expire_day_orders(self, now: int, ch: Changes) -> None:
        """Cancel every ``good_til_day`` order whose expiry (the 08:00 UTC rollover) ``now`` (ms) has reached."""
        for st in self.states:
            for o in list(st.open.values()):
                if o.expires_ms is not None and now >= o.expires_ms:
                    self._close(o, "cancelled", ch)

    def settle(self, inst: SimInstrument, ch: Changes) -> None:
        """An instrument expired: cancel its orders and settle positions at the delivery price."""
        price = inst.delivery_price or self.market.index[inst.coin]
        for st in self.states:
            for o in [o for o in st.open.values() if o.inst is inst]:
                self._close(o, "cancelled", ch, "settlement")
            pos = st.positions.pop(inst.name, None)
            if pos is None or abs(pos.size) <= EPS:
                continue
            cur = settlement_currency(inst)
            if inst.kind == "option":
                payoff = max(0.0, (price - inst.strike) if inst.call else (inst.strike - price)) / price
                pnl = pos.size * (payoff - pos.avg)
                st.balances[cur] = _r(st.balances.get(cur, 0.0) + pos.size * payoff)
                key = f"options:{cur}"
            else:
                if is_inverse_future(inst):
                    pnl = pos.size * (1.0 / pos.avg - 1.0 / price)
                else:
                    pnl = pos.size * (price - pos.avg)
                st.balances[cur] = _r(st.balances.get(cur, 0.0) + pnl)
                key = f"futures:{cur}"
            st.session_rpl[key] = _r(st.session_rpl.get(key, 0.0) + pnl)
            ch.currency(st, cur)
        self.queues.pop(inst.name, None)
