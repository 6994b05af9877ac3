"""The ledger and fees: funding an account, the fee of a fill, moving balances and the position
for one fill (realized PnL, average prices). No I/O; part of the engine (:mod:`.orders`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .market import SimInstrument
from .orders import (
    EPS,
    AccountState,
    OrderState,
    _r,
    is_inverse_future,
    settlement_currency,
)

if TYPE_CHECKING:
    from .accounts import Account

OPTION_FEE_CAP = 0.125  # option fees never exceed 12.5% of the premium


class Ledger(OrderState):
    """The ledger and fees of every account: funding, fees, balances and positions per fill."""

    def fund(self, account: Account, currency: str, amount: float) -> float:
        """Credit (or with a negative amount debit) ``currency``; returns the new balance."""
        st = self.state(account)
        cur = currency.upper()
        st.balances[cur] = _r(st.balances.get(cur, 0.0) + amount)
        return st.balances[cur]

    def fee(self, inst: SimInstrument, liquidity: str, price: float, amount: float) -> float:
        """The fee of one fill at the maker (``liquidity`` ``M``) or taker commission, in the settlement
        currency: inverse futures ``rate * amount / price`` (amount in USD), linear futures and spot
        ``rate * amount * price``, options ``rate * amount`` capped at 12.5% of the premium."""
        info = inst.info
        rate = float(info["maker_commission"] if liquidity == "M" else info["taker_commission"])
        if inst.kind == "future":
            return rate * amount / price if not inst.linear else rate * amount * price
        if inst.kind == "option":
            fee = rate * amount
            return min(fee, OPTION_FEE_CAP * price * amount) if fee > 0 else fee
        return rate * amount * price

    def _ledger(self, st: AccountState, inst: SimInstrument, direction: str, price: float, amount: float,
                fee: float) -> float:
        """Move balances and the position for one fill; returns the realized PnL."""
        b = st.balances
        if inst.kind == "spot":
            base, quote = str(inst.info["base_currency"]), str(inst.info["quote_currency"])
            sign = 1 if direction == "buy" else -1
            b[base] = _r(b.get(base, 0.0) + sign * amount)
            b[quote] = _r(b.get(quote, 0.0) - sign * amount * price - fee)
            return 0.0
        cur = settlement_currency(inst)
        pos = st.position(inst)
        dq = amount if direction == "buy" else -amount
        size, avg = pos.size, pos.avg
        pnl = 0.0
        if abs(size) <= EPS or (size > 0) == (dq > 0):
            pos.avg = self._blend(inst, abs(size), avg, amount, price)
        else:
            closed = min(amount, abs(size))
            sgn = 1.0 if size > 0 else -1.0
            per_unit = (1.0 / avg - 1.0 / price) if is_inverse_future(inst) else (price - avg)
            pnl = sgn * closed * per_unit
            left = amount - closed
            if abs(size + dq) <= EPS:
                pos.avg = 0.0
            elif left > EPS:
                pos.avg = price  # flipped: the rest opens at this price
        pos.size = _r(size + dq)
        pos.realized = _r(pos.realized + pnl)
        kind = "options" if inst.kind == "option" else "futures"
        key = f"{kind}:{cur}"
        st.session_rpl[key] = _r(st.session_rpl.get(key, 0.0) + pnl)
        if inst.kind == "option":
            b[cur] = _r(b.get(cur, 0.0) - dq * price - fee)  # premium changes hands now
        else:
            b[cur] = _r(b.get(cur, 0.0) + pnl - fee)
        return pnl

    @staticmethod
    def _blend(inst: SimInstrument, size: float, avg: float, amount: float, price: float) -> float:
        if size <= EPS:
            return price
        if is_inverse_future(inst):
            return (size + amount) / (size / avg + amount / price)
        return (size * avg + amount * price) / (size + amount)
