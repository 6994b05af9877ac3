"""The lifecycle of trigger orders (stop, take, trailing): watching their trigger and firing them.
No I/O; part of the engine (:mod:`.orders`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .matching import Matching
from .orders import (
    Changes,
    SimOrder,
    _r,
)

if TYPE_CHECKING:
    pass


class Triggers(Matching):
    """Trigger orders: watched every tick, fired when their trigger price is reached."""

    def check_triggers(self, ch: Changes) -> None:
        """Fire every untriggered order whose trigger price (index, mark or last) was reached
        (stops through it, takes back to it; a trailing stop follows the best price by its offset),
        skipping halted and unlisted instruments; changes go to ``ch``."""
        for o in list(self.untriggered.values()):
            if o.inst.halted or o.inst.name not in self.market.instruments:
                continue
            px = self.trigger_value(o)
            tp = o.trigger_price or 0.0
            t = o.order_type
            if t == "trailing_stop":
                ref = o.trigger_reference_price if o.trigger_reference_price is not None else px
                off = o.trigger_offset or 0.0
                ref = max(ref, px) if o.direction == "sell" else min(ref, px)
                o.trigger_reference_price = ref
                o.trigger_price = tp = _r(ref - off if o.direction == "sell" else ref + off)
                fire = px <= tp if o.direction == "sell" else px >= tp
            elif t.startswith("stop"):
                fire = px >= tp if o.direction == "buy" else px <= tp
            else:  # take_*
                fire = px <= tp if o.direction == "buy" else px >= tp
            if fire:
                self.fire(o, ch)

    def fire(self, o: SimOrder, ch: Changes) -> None:
        """Trigger ``o``: it becomes a working limit order, or executes as a market order."""
        st = self.state(o.account)
        self.untriggered.pop(o.order_id, None)
        o.triggered = True
        o.state = "open"
        o.updated = self.now()
        o.seq = next(self._seq)
        try:
            self.clamp_reduce_only(st, o)
        except Exception:
            self._close(o, "rejected", ch)
            return
        fills, _ = self._plan(o, self._limit_for(o))  # stops short of the account's own orders
        self._execute(st, o, fills, ch)
