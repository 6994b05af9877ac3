"""Matching: checking a new order (amount and price grid, band, funds, reduce-only), price-time
priority against resting user orders and market-maker liquidity, trades, edits, and resting
orders that market makers' quotes cross. No I/O; part of the engine (:mod:`.orders`)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ...errors import error_for_code, invalid_params
from ...wire.enums import LIMIT_TYPES, MARKET_TYPES, on_grid
from .market import ASK, BID, SimInstrument, round_to
from .orders import (
    EPS,
    TRIGGER_TYPES,
    AccountState,
    Changes,
    Fill,
    SimOrder,
    _r,
    _self_trade,
    contract_step,
    is_inverse_future,
    settlement_currency,
)
from .pricing import YEAR_MS, black76
from .views import Views

if TYPE_CHECKING:
    pass


class Matching(Views):
    """Order checks, price-time priority matching, trades and edits."""

    def check_amount(self, inst: SimInstrument, amount: float, param: str = "amount") -> None:
        """-32602 on ``param`` unless ``amount`` is positive, at least ``min_trade_amount`` and on the
        contract grid (USD for inverse futures, the coin otherwise)."""
        if not math.isfinite(amount) or amount <= 0:
            raise invalid_params(param, "must be a positive number")
        minimum = float(inst.info["min_trade_amount"])
        if amount < minimum - EPS:
            raise invalid_params(param, f"must be at least min_trade_amount {minimum:g}")
        step = contract_step(inst)
        if not on_grid(amount, step):
            unit = "USD" if is_inverse_future(inst) else inst.coin
            raise invalid_params(param, f"must be a multiple of contract size {step:g} {unit}")

    def check_price(self, inst: SimInstrument, price: float, param: str = "price") -> None:
        """-32602 on ``param`` unless ``price`` is positive and on the instrument's tick grid at that price."""
        if not math.isfinite(price) or price <= 0:
            raise invalid_params(param, "must be a positive number")
        tick = inst.tick_at(price)
        if not on_grid(price, tick):
            raise invalid_params(param, f"must conform to tick size {tick:g}")

    def advanced_price(self, inst: SimInstrument, advanced: str, value: float) -> float:
        """The coin price of an option order given in USD (``usd``) or implied volatility (``implv``)."""
        if inst.kind != "option":
            raise error_for_code(11038, data={"param": "advanced", "reason": "advanced orders are for options"})
        spot = self.market.index[inst.coin]
        if advanced == "usd":
            coin = value / spot
        else:
            t = max(1e-5, (inst.expiry_ms - self.market.last_step_ms) / YEAR_MS)
            fwd = inst.forward or spot
            coin = black76(fwd, inst.strike, t, value / 100.0, inst.call).price_usd / spot
        tick = inst.tick_at(coin)
        return max(tick, round_to(coin, tick))

    def reducible(self, st: AccountState, inst: SimInstrument, direction: str) -> float:
        """How much an order in ``direction`` can trade without increasing the position."""
        pos = st.positions.get(inst.name)
        size = pos.size if pos is not None else 0.0
        return max(0.0, -size) if direction == "buy" else max(0.0, size)

    def clamp_reduce_only(self, st: AccountState, o: SimOrder) -> None:
        """Cut a reduce-only order down to the position it reduces; 11030 when there is none."""
        if not o.reduce_only or o.inst.kind == "spot":
            return
        room = self.reducible(st, o.inst, o.direction) - self._pending_reduce(st, o)
        step = contract_step(o.inst)
        room = math.floor(room / step + 1e-6) * step
        if room < step - EPS:
            raise error_for_code(11030, data={"param": "reduce_only",
                                              "reason": "reduce_only order would increase the position"})
        if o.amount > room + EPS:
            o.amount = _r(max(room, o.filled))

    def _pending_reduce(self, st: AccountState, o: SimOrder) -> float:
        """Amount already working in other open reduce-only orders of the same instrument and side."""
        return sum(x.remaining for x in st.open.values()
                   if x is not o and x.inst is o.inst and x.direction == o.direction and x.reduce_only
                   and x.state == "open")

    def check_funds(self, st: AccountState, o: SimOrder, price: float, amount: float | None = None) -> None:
        """10009 unless the account can carry ``o`` (or ``amount`` more of it) at ``price``."""
        inst = o.inst
        amt = o.remaining if amount is None else amount
        if amt <= EPS:
            return
        if inst.kind == "spot":
            if o.direction == "buy":
                cur, need = str(inst.info["quote_currency"]), amt * price
            else:
                cur, need = str(inst.info["base_currency"]), amt
            free = st.balances.get(cur, 0.0) - self.spot_reserve(st, cur) - self._initial_margin(st, cur)
        else:
            if o.reduce_only:
                return
            cur = settlement_currency(inst)
            need = self.orders_margin(st, inst, (o.direction, amt, price)) - self.orders_margin(st, inst)
            if inst.kind == "option" and o.direction == "buy":
                need += self.fee(inst, "T", price, amt)
            free = self.summary_numbers(st, cur)["available_funds"]
        if need > free + EPS:
            raise error_for_code(10009, data={"reason": f"not enough funds: {need:.8g} {cur} needed, "
                                                        f"{max(free, 0.0):.8g} available", "currency": cur})

    def submit(self, st: AccountState, o: SimOrder, ch: Changes) -> list[dict[str, Any]]:
        """Accept a checked new order: park a trigger order, or match and rest/cancel the rest.
        Raises (before anything changes) when the order is rejected. Returns ``o``'s fills."""
        if o.order_type in TRIGGER_TYPES:
            o.state = "untriggered"
            o.triggered = False
            o.price = o.price if o.order_type in LIMIT_TYPES else None
            if o.order_type == "trailing_stop":
                ref = self.trigger_value(o)
                o.trigger_reference_price = ref
                off = o.trigger_offset or 0.0
                o.trigger_price = _r(ref - off if o.direction == "sell" else ref + off)
            self._register(st, o, ch)
            self.untriggered[o.order_id] = o
            return []
        limit = self._limit_for(o)
        self._post_only(o, limit)
        if o.post_only and o.price is not None:
            limit = o.price
        fills, blocked = self._plan(o, limit)
        if blocked:
            raise _self_trade()
        self.check_funds(st, o, self._funds_price(o, fills))
        self._register(st, o, ch)
        return self._execute(st, o, fills, ch)

    @staticmethod
    def _funds_price(o: SimOrder, fills: list[Fill]) -> float:
        """The price margin is reserved at: the limit, or what a market order would pay."""
        if o.price is not None:
            return o.price
        amount = sum(f.amount for f in fills)
        if amount > EPS:
            return sum(f.amount * f.price for f in fills) / amount
        return o.inst.mark_price

    def _limit_for(self, o: SimOrder) -> float | None:
        """The worst price ``o`` may trade at: its limit, or the price band for market-type orders."""
        lo, hi = self.band(o.inst)
        if o.order_type == "market_limit" and o.price is None:
            best = o.inst.book.best(ASK if o.direction == "buy" else BID)
            o.original_order_type = "market_limit"
            o.price = best if best is not None else (hi if o.direction == "buy" else lo)
        if o.price is None:
            return hi if o.direction == "buy" else lo
        if o.direction == "buy" and o.price > hi:
            o.price = hi
        elif o.direction == "sell" and o.price < lo:
            o.price = lo
        return o.price

    def _post_only(self, o: SimOrder, limit: float | None) -> None:
        """Reprice a crossing post-only order one tick inside the spread, or reject it (11054)."""
        if not o.post_only or o.price is None:
            return
        inst = o.inst
        opp = inst.book.best(ASK if o.direction == "buy" else BID)
        if opp is None:
            return
        crosses = o.price >= opp - EPS if o.direction == "buy" else o.price <= opp + EPS
        if not crosses:
            return
        if o.reject_post_only:
            raise error_for_code(11054, data={"reason": "post_only order would take liquidity",
                                              "param": "price"})
        if o.direction == "buy":
            tick = inst.tick_at(opp - inst.tick)
            new = round_to(opp - tick, tick)
        else:
            tick = inst.tick_at(opp)
            new = round_to(opp + tick, tick)
        if new <= 0:
            raise error_for_code(11021, data={"reason": "no price inside the spread for a post_only order"})
        o.price = new

    def _plan(self, o: SimOrder, limit: float | None) -> tuple[list[Fill], bool]:
        """The fills ``o`` would get now (price-time priority; market makers first at a level), and
        whether it stopped at an order of its own account."""
        inst = o.inst
        opp = ASK if o.direction == "buy" else BID
        book = inst.book
        need = o.remaining
        fills: list[Fill] = []
        if need <= EPS:
            return fills, False
        for price in sorted(book.levels[opp], reverse=(opp == BID)):
            if limit is not None and (price > limit + EPS if o.direction == "buy" else price < limit - EPS):
                break
            mm = book.mm[opp].get(price, 0.0)
            if mm > EPS:
                take = min(need, mm)
                fills.append(Fill(price, take, None))
                need = _r(need - take)
            for maker in self._queue(inst, opp, price):
                if need <= EPS:
                    break
                if maker.account is o.account:
                    return fills, True
                take = min(need, maker.remaining)
                fills.append(Fill(price, take, maker))
                need = _r(need - take)
            if need <= EPS:
                break
        return fills, False

    def _execute(self, st: AccountState, o: SimOrder, fills: list[Fill], ch: Changes) -> list[dict[str, Any]]:
        """Apply planned fills to the taker ``o``, then rest, fill or cancel what is left."""
        total = sum(f.amount for f in fills)
        if o.time_in_force == "fill_or_kill" and total < o.remaining - EPS:
            self._close(o, "cancelled", ch)
            return []
        trades: list[dict[str, Any]] = []
        for f in fills:
            trades.append(self._trade(o, f.maker, f.price, f.amount, ch))
        if o.remaining <= EPS:
            self._close(o, "filled", ch)
        elif o.price is None or o.time_in_force in ("immediate_or_cancel", "fill_or_kill"):
            self._close(o, "cancelled", ch)
        elif not o.resting:
            self._rest(o, ch)
            ch.order(st, o)
        for t in trades:  # the order's state after this request, as Deribit reports it
            t["state"] = o.state
        return trades

    def _trade(self, taker: SimOrder | None, maker: SimOrder | None, price: float, amount: float,
               ch: Changes, aggressor: str | None = None) -> dict[str, Any]:
        """One trade between a user taker (or a market maker) and a user maker (or a market maker)."""
        order = taker or maker
        assert order is not None
        inst = order.inst
        book = inst.book
        direction = taker.direction if taker is not None else (aggressor or "buy")
        now = self.now()
        public = self.market.record_trade(inst, price, amount, direction, now)
        ch.public_trade(inst, public)
        if maker is None:
            opp = ASK if direction == "buy" else BID
            book.set_mm(opp, price, _r(book.mm[opp].get(price, 0.0) - amount))
        else:
            maker.filled = _r(maker.filled + amount)
            maker.cost += amount / price if is_inverse_future(inst) else amount * price
            maker.updated = now
            self._show(maker)
            mst = self.state(maker.account)
            mt = self._book_fill(mst, maker, public, price, amount, "M", ch)
            if maker.remaining <= EPS:
                self._close(maker, "filled", ch)
            mt["state"] = maker.state
        result: dict[str, Any] = {}
        if taker is not None:
            taker.filled = _r(taker.filled + amount)
            taker.cost += amount / price if is_inverse_future(inst) else amount * price
            taker.updated = now
            result = self._book_fill(self.state(taker.account), taker, public, price, amount, "T", ch)
        return result

    def _book_fill(self, st: AccountState, o: SimOrder, public: dict[str, Any], price: float, amount: float,
                   liquidity: str, ch: Changes) -> dict[str, Any]:
        inst = o.inst
        fee = self.fee(inst, liquidity, price, amount)
        pnl = self._ledger(st, inst, o.direction, price, amount, fee)
        o.commission += fee
        o.profit_loss += pnl
        cur = settlement_currency(inst) if inst.kind != "spot" else str(inst.info["quote_currency"])
        trade: dict[str, Any] = {
            "trade_id": public["trade_id"],
            "trade_seq": public["trade_seq"],
            "timestamp": public["timestamp"],
            "tick_direction": public["tick_direction"],
            "instrument_name": inst.name,
            "order_id": o.order_id,
            "order_type": "market" if o.order_type in MARKET_TYPES else "limit",
            "direction": o.direction,
            "price": price,
            "amount": _r(amount, 8),
            "contracts": _r(amount / float(inst.info["contract_size"]), 8),
            "fee": _r(fee, 10),
            "fee_currency": cur,
            "liquidity": liquidity,
            "state": "filled" if o.remaining <= EPS else "open",
            "index_price": public["index_price"],
            "mark_price": inst.mark_price,
            "label": o.label,
            "post_only": o.post_only,
            "reduce_only": o.reduce_only,
            "mmp": o.mmp,
            "api": True,
            "profit_loss": _r(pnl, 10),
            "matching_id": None,
            "risk_reducing": False,
            "self_trade": False,
        }
        if inst.kind == "option":
            trade["iv"] = public.get("iv", round(inst.iv * 100, 2))
            trade["underlying_price"] = round(inst.forward or self.market.index[inst.coin], 4)
            if o.advanced is not None:
                trade["advanced"] = o.advanced
        st.trades.append(trade)
        st.trades_by_order.setdefault(o.order_id, []).append(trade)
        ch.trade(st, inst, trade)
        ch.order(st, o)
        return trade

    def edit(self, st: AccountState, o: SimOrder, ch: Changes, *, amount: float | None, price: float | None,
             trigger_price: float | None = None, trigger_offset: float | None = None,
             post_only: bool | None = None, reject_post_only: bool | None = None,
             reduce_only: bool | None = None, display_amount: float | None = None,
             advanced: tuple[str, float] | None = None, mmp: bool | None = None) -> list[dict[str, Any]]:
        """Change price and/or amount of an open order. Time priority is kept only when nothing but
        a decrease of the amount changed."""
        inst = o.inst
        if amount is not None:
            self.check_amount(inst, amount)
            if amount < o.filled - EPS:
                raise invalid_params("amount", "must not be below the filled amount")
        new_price = o.price
        if advanced is not None:
            new_price = self.advanced_price(inst, advanced[0], advanced[1])
        elif price is not None and o.order_type in LIMIT_TYPES:
            self.check_price(inst, price)
            new_price = price
        if trigger_price is not None:
            if o.order_type not in TRIGGER_TYPES or o.order_type == "trailing_stop":
                raise invalid_params("trigger_price", "only for stop and take orders")
            self.check_price(inst, trigger_price, "trigger_price")
        if post_only is not None:
            o.post_only = post_only
        if reject_post_only is not None:
            o.reject_post_only = reject_post_only
        if reduce_only is not None:
            o.reduce_only = reduce_only
        if mmp is not None:
            o.mmp = mmp
        if display_amount is not None:
            o.display_amount = display_amount
        if advanced is not None:
            o.advanced = advanced[0]
            o.usd = advanced[1] if advanced[0] == "usd" else None
            o.implv = advanced[1] if advanced[0] == "implv" else None
        new_amount = amount if amount is not None else o.amount
        now = self.now()
        if o.state == "untriggered":
            o.amount, o.price = new_amount, new_price
            if trigger_price is not None:
                o.trigger_price = trigger_price
            if trigger_offset is not None:
                o.trigger_offset = trigger_offset
            o.replaced, o.updated = True, now
            ch.order(st, o)
            return []
        if o.reduce_only and new_amount > o.amount + EPS:
            o_amount = o.amount
            o.amount = new_amount
            try:
                self.clamp_reduce_only(st, o)
            except Exception:
                o.amount = o_amount
                raise
            new_amount = o.amount
        reprice = new_price != o.price
        grows = new_amount > o.amount + EPS
        if grows:
            self.check_funds(st, o, new_price or inst.mark_price, amount=new_amount - o.amount)
        if reprice:
            old = o.price, o.amount
            o.price, o.amount = new_price, new_amount
            _, blocked = self._plan(o, o.price)
            o.price, o.amount = old
            if blocked:
                raise _self_trade()
        o.replaced, o.updated = True, now
        if not (reprice or grows):
            o.amount = _r(new_amount)
            if o.remaining <= EPS:
                self._close(o, "filled", ch)
            else:
                self._show(o)
                ch.order(st, o)
                ch.book(inst)
            return []
        # loses its place: off the book, then in again as if new (it may trade now)
        self._unrest(o, ch)
        o.amount, o.price, o.seq = _r(new_amount), new_price, next(self._seq)
        try:
            self._post_only(o, o.price)
        except Exception:
            self._close(o, "cancelled", ch, "edit_post_only_reject")
            raise
        fills, _ = self._plan(o, self._limit_for(o))
        return self._execute(st, o, fills, ch)

    def cross_resting(self, ch: Changes) -> None:
        """Fill resting user orders that market-maker quotes now cross (the user is the maker)."""
        for name, sides in list(self.queues.items()):
            inst = self.market.get(name)
            if inst is None or inst.halted:
                continue
            mm_side_of = {BID: ASK, ASK: BID}
            for side in (BID, ASK):
                mm = inst.book.mm[mm_side_of[side]]
                for price in sorted(sides[side], reverse=(side == BID)):
                    crossing = sorted((p for p in mm if (p <= price + EPS if side == BID else p >= price - EPS)),
                                      reverse=(side == ASK))
                    if not crossing:
                        break
                    for o in list(sides[side].get(price, ())):
                        for p in crossing:
                            avail = mm.get(p, 0.0)
                            take = min(avail, o.remaining)
                            if take <= EPS:
                                continue
                            inst.book.set_mm(mm_side_of[side], p, _r(avail - take))
                            self._trade(None, o, price, take, ch,
                                        aggressor="sell" if side == BID else "buy")
                            if o.remaining <= EPS:
                                break
