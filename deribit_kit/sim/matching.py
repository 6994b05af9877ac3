"""The embedded exchange's matching engine and ledger: user orders, price-time priority matching
against resting user orders and market-maker liquidity, trigger orders, and per-account balances,
positions, profit and loss and margins.

No JSON-RPC here: :mod:`.trading` turns requests into calls on :class:`Engine` and publishes what
each call changed (a :class:`Changes`) on the private channels.

Conventions (deribit-api.md 6-7):

* amounts are USD for inverse futures (multiples of ``contract_size``), coin for everything else;
* inverse futures settle in the coin: PnL ``size * (1/avg - 1/price)``, average prices are
  USD-weighted harmonic means; linear futures settle in USDC: PnL ``size * (price - avg)``;
* inverse options are priced in the coin; premium moves the balance at the trade, so equity is
  ``balance + futures floating PnL + options value`` (``size * mark``);
* futures PnL and all fees are booked into the balance at once (no 08:00 session settlement);
* spot moves both balances of the pair and keeps no position;
* at one price level market-maker quotes are older than user orders, so they fill first;
* an order never trades with its own account's orders: an incoming order that would reach one is
  rejected (``self_trading_reject_mode`` ``reject_taker``, error 10003 ``order_overlap``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..errors import error_for_code, invalid_params
from .instruments import currency_matches
from .market import ASK, BID, Instrument, Market, round_to
from .pricing import YEAR_MS, black76

if TYPE_CHECKING:
    from .accounts import Account

EPS = 1e-9
DEFAULT_FUNDS: dict[str, float] = {"BTC": 10.0, "ETH": 100.0, "USDC": 1_000_000.0, "USDT": 0.0, "SOL": 100.0}
"""What a new account holds (the demo account, and any account created with ``accounts.create``)."""

LIMIT_TYPES = frozenset({"limit", "stop_limit", "take_limit", "market_limit"})
MARKET_TYPES = frozenset({"market", "stop_market", "take_market", "trailing_stop"})
TRIGGER_TYPES = frozenset({"stop_limit", "stop_market", "take_limit", "take_market", "trailing_stop"})
ORDER_TYPES = ("limit", "stop_limit", "take_limit", "market", "stop_market", "take_market", "market_limit",
               "trailing_stop")
OPEN_STATES = frozenset({"open", "untriggered"})
TIME_IN_FORCE = ("good_til_cancelled", "good_til_day", "fill_or_kill", "immediate_or_cancel")
ROLLOVER_HOUR = 8  # good_til_day orders expire at the next 08:00 UTC
SHORT_OPTION_IM = (0.15, 0.10)  # max(0.15 - OTM/underlying, 0.10) + mark, per coin (standard margin)
SHORT_OPTION_MM = 0.075
OPTION_FEE_CAP = 0.125  # option fees never exceed 12.5% of the premium


def _r(x: float, digits: int = 10) -> float:
    """``x`` without binary noise (and without ``-0.0``)."""
    v = round(x, digits)
    return 0.0 if v == 0 else v


def settlement_currency(inst: Instrument) -> str:
    """The currency an instrument's PnL, fees and margin are in (quote currency for spot)."""
    info = inst.info
    return str(info.get("settlement_currency") or info["quote_currency"])


def is_inverse_future(inst: Instrument) -> bool:
    return inst.kind == "future" and not inst.linear


def contract_step(inst: Instrument) -> float:
    """The amount granularity: whole contracts, or the minimum trade amount when that is finer."""
    return min(float(inst.info["contract_size"]), float(inst.info["min_trade_amount"]))


def on_grid(value: float, step: float) -> bool:
    n = value / step
    return abs(n - round(n)) < 1e-6


def next_rollover_ms(now_ms: int) -> int:
    """The next 08:00 UTC after ``now_ms`` (when ``good_til_day`` orders expire)."""
    now = datetime.fromtimestamp(now_ms / 1000, UTC)
    at = now.replace(hour=ROLLOVER_HOUR, minute=0, second=0, microsecond=0)
    if at <= now:
        at += timedelta(days=1)
    return int(at.timestamp() * 1000)


# ---------------------------------------------------------------- state


@dataclass(eq=False)
class SimOrder:
    """One user order, open or closed."""

    order_id: str
    account: Account
    inst: Instrument
    direction: str  # buy | sell
    order_type: str
    amount: float
    price: float | None  # limit price; None for market-type orders
    label: str = ""
    time_in_force: str = "good_til_cancelled"
    post_only: bool = False
    reject_post_only: bool = False
    reduce_only: bool = False
    trigger: str | None = None
    trigger_price: float | None = None
    trigger_offset: float | None = None
    trigger_reference_price: float | None = None
    triggered: bool | None = None
    display_amount: float | None = None
    advanced: str | None = None
    usd: float | None = None
    implv: float | None = None
    mmp: bool = False
    original_order_type: str | None = None
    state: str = "open"
    filled: float = 0.0
    cost: float = 0.0  # sum(amount * price), or sum(amount / price) for inverse futures
    commission: float = 0.0
    profit_loss: float = 0.0
    created: int = 0
    updated: int = 0
    seq: int = 0  # time priority
    cancel_reason: str | None = None
    replaced: bool = False
    session: Any = None  # the WebSocket session that placed it (cancel on disconnect)
    visible: float = 0.0  # the amount it shows in the book while resting
    resting: bool = False
    expires_ms: int | None = None  # good_til_day

    @property
    def remaining(self) -> float:
        return _r(self.amount - self.filled)

    @property
    def side(self) -> int:
        return BID if self.direction == "buy" else ASK

    @property
    def sign(self) -> int:
        return 1 if self.direction == "buy" else -1

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES

    @property
    def average_price(self) -> float:
        if self.filled <= EPS or self.cost <= 0:
            return 0.0
        if is_inverse_future(self.inst):
            return self.filled / self.cost
        return self.cost / self.filled

    def to_dict(self) -> dict[str, Any]:
        """The Deribit order object (deribit-api.md 6.2), with the legacy fields ccxt reads."""
        inst = self.inst
        spot = inst.kind == "spot"
        market_like = self.price is None
        out: dict[str, Any] = {
            "order_id": self.order_id,
            "instrument_name": inst.name,
            "direction": self.direction,
            "order_type": self.order_type,
            "order_state": self.state,
            "price": "market_price" if market_like else self.price,
            "amount": _r(self.amount, 8),
            "contracts": _r(self.amount / float(inst.info["contract_size"]), 8),
            "filled_amount": _r(self.filled, 8),
            "average_price": _r(self.average_price, 8),
            "label": self.label,
            "time_in_force": self.time_in_force,
            "post_only": self.post_only,
            "creation_timestamp": self.created,
            "last_update_timestamp": self.updated,
            "api": True,
            "web": False,
            "replaced": self.replaced,
            "risk_reducing": False,
            "mmp": self.mmp,
            "commission": _r(self.commission, 10),
            "profit_loss": _r(self.profit_loss, 10),
            "max_show": _r(self.display_amount if self.display_amount is not None else self.amount, 8),
        }
        if self.post_only:
            out["reject_post_only"] = self.reject_post_only
        if spot:
            out["is_rebalance"] = False
        else:
            out["reduce_only"] = self.reduce_only
            out["is_liquidation"] = False
        if self.cancel_reason is not None:
            out["cancel_reason"] = self.cancel_reason
        if self.original_order_type is not None:
            out["original_order_type"] = self.original_order_type
        if self.display_amount is not None:
            out["display_amount"] = _r(min(self.display_amount, self.remaining), 8)
            out["refresh_amount"] = _r(self.display_amount, 8)
        if self.advanced is not None:
            out["advanced"] = self.advanced
            if self.advanced == "usd" and self.usd is not None:
                out["usd"] = self.usd
            if self.advanced == "implv" and self.implv is not None:
                out["implv"] = self.implv
        if self.order_type in TRIGGER_TYPES:
            out["trigger"] = self.trigger
            out["triggered"] = bool(self.triggered)
            if self.trigger_price is not None:
                out["trigger_price"] = self.trigger_price
            if self.trigger_offset is not None:
                out["trigger_offset"] = self.trigger_offset
            if self.trigger_reference_price is not None:
                out["trigger_reference_price"] = self.trigger_reference_price
        return out


@dataclass(eq=False)
class PositionState:
    """One instrument's position of one account; ``size`` is signed (USD for inverse futures)."""

    inst: Instrument
    size: float = 0.0
    avg: float = 0.0
    realized: float = 0.0  # realized PnL since the account opened (settlement currency)


@dataclass(eq=False)
class AccountState:
    """Everything the exchange keeps for one account."""

    account: Account
    balances: dict[str, float]
    created: int
    open: dict[str, SimOrder] = field(default_factory=dict)  # open and untriggered orders
    orders: dict[str, SimOrder] = field(default_factory=dict)  # every order, in creation order
    trades: list[dict[str, Any]] = field(default_factory=list)
    trades_by_order: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    positions: dict[str, PositionState] = field(default_factory=dict)
    cod_account: bool = False  # cancel on disconnect, account scope
    subs: dict[str, tuple[Any, set[Any]]] = field(default_factory=dict)  # private channel -> (Channel, sessions)
    session_rpl: dict[str, float] = field(default_factory=dict)  # "futures:BTC" / "options:BTC" -> realized

    def position(self, inst: Instrument) -> PositionState:
        pos = self.positions.get(inst.name)
        if pos is None:
            pos = self.positions[inst.name] = PositionState(inst)
        return pos


@dataclass(eq=False)
class AccountChanges:
    """What one operation changed for one account."""

    state: AccountState
    orders: dict[str, SimOrder] = field(default_factory=dict)
    trades: list[dict[str, Any]] = field(default_factory=list)
    instruments: dict[str, Instrument] = field(default_factory=dict)
    currencies: set[str] = field(default_factory=set)


class Changes:
    """What one request (or one market tick) changed: per account, and the public tape and books."""

    def __init__(self) -> None:
        self.accounts: dict[int, AccountChanges] = {}
        self.public: dict[str, tuple[Instrument, list[dict[str, Any]]]] = {}
        self.books: dict[str, Instrument] = {}

    def _for(self, st: AccountState) -> AccountChanges:
        key = id(st)
        ac = self.accounts.get(key)
        if ac is None:
            ac = self.accounts[key] = AccountChanges(st)
        return ac

    def order(self, st: AccountState, o: SimOrder) -> None:
        ac = self._for(st)
        ac.orders.pop(o.order_id, None)
        ac.orders[o.order_id] = o
        ac.instruments[o.inst.name] = o.inst
        ac.currencies.update(_currencies_of(o.inst))

    def trade(self, st: AccountState, inst: Instrument, trade: dict[str, Any]) -> None:
        ac = self._for(st)
        ac.trades.append(trade)
        ac.instruments[inst.name] = inst
        ac.currencies.update(_currencies_of(inst))

    def currency(self, st: AccountState, currency: str) -> None:
        self._for(st).currencies.add(currency)

    def public_trade(self, inst: Instrument, trade: dict[str, Any]) -> None:
        self.public.setdefault(inst.name, (inst, []))[1].append(trade)
        self.books[inst.name] = inst

    def book(self, inst: Instrument) -> None:
        self.books[inst.name] = inst


def _currencies_of(inst: Instrument) -> tuple[str, ...]:
    if inst.kind == "spot":
        return (str(inst.info["base_currency"]), str(inst.info["quote_currency"]))
    return (settlement_currency(inst),)


@dataclass(slots=True)
class Fill:
    price: float
    amount: float
    maker: SimOrder | None  # None: market-maker liquidity


# ---------------------------------------------------------------- the engine


class Engine:
    """Orders, matching and the ledger of every account of one embedded exchange."""

    def __init__(self, market: Market) -> None:
        self.market = market
        # resting user orders: instrument -> (bids, asks), price -> FIFO queue
        self.queues: dict[str, tuple[dict[float, list[SimOrder]], dict[float, list[SimOrder]]]] = {}
        self.untriggered: dict[str, SimOrder] = {}
        self.states: list[AccountState] = []
        self._ids = itertools.count(40_000_000_001)
        self._seq = itertools.count(1)

    # ------------------------------------------------------------ accounts
    def state(self, account: Account) -> AccountState:
        st = account.state
        if not isinstance(st, AccountState):
            st = AccountState(account, dict(DEFAULT_FUNDS), self.market.now_ms())
            account.state = st
            self.states.append(st)
        return st

    def fund(self, account: Account, currency: str, amount: float) -> float:
        """Credit (or with a negative amount debit) ``currency``; returns the new balance."""
        st = self.state(account)
        cur = currency.upper()
        st.balances[cur] = _r(st.balances.get(cur, 0.0) + amount)
        return st.balances[cur]

    def now(self) -> int:
        return max(self.market.now_ms(), self.market.last_step_ms)

    # ------------------------------------------------------------ book queues
    def _queue(self, inst: Instrument, side: int, price: float) -> list[SimOrder]:
        sides = self.queues.get(inst.name)
        if sides is None:
            return []
        return sides[side].get(price, [])

    def _show(self, o: SimOrder) -> None:
        """Bring the book's user amount at ``o``'s price in line with what ``o`` shows now."""
        want = 0.0
        if o.resting and o.is_open:
            rem = o.remaining
            want = min(o.display_amount, rem) if o.display_amount is not None else rem
        delta = _r(want - o.visible)
        if abs(delta) > EPS and o.price is not None:
            o.inst.book.add_user(o.side, o.price, delta)
        o.visible = want

    def _rest(self, o: SimOrder, ch: Changes) -> None:
        assert o.price is not None
        sides = self.queues.setdefault(o.inst.name, ({}, {}))
        sides[o.side].setdefault(o.price, []).append(o)
        o.resting = True
        self._show(o)
        ch.book(o.inst)

    def _unrest(self, o: SimOrder, ch: Changes) -> None:
        if not o.resting or o.price is None:
            return
        o.resting = False
        self._show(o)
        sides = self.queues.get(o.inst.name)
        if sides is not None:
            q = sides[o.side].get(o.price)
            if q is not None:
                if o in q:
                    q.remove(o)
                if not q:
                    del sides[o.side][o.price]
            if not sides[0] and not sides[1]:
                del self.queues[o.inst.name]
        ch.book(o.inst)

    def _close(self, o: SimOrder, state: str, ch: Changes, reason: str | None = None) -> None:
        """Take ``o`` off the book and out of the open orders, in its final ``state``."""
        self._unrest(o, ch)
        o.state = state
        if reason is not None:
            o.cancel_reason = reason
        o.updated = self.now()
        st = self.state(o.account)
        st.open.pop(o.order_id, None)
        self.untriggered.pop(o.order_id, None)
        ch.order(st, o)

    def cancel(self, o: SimOrder, ch: Changes, reason: str = "user_request") -> SimOrder:
        if o.is_open:
            self._close(o, "cancelled", ch, reason)
        return o

    # ------------------------------------------------------------ checks
    def check_amount(self, inst: Instrument, amount: float, param: str = "amount") -> None:
        if not math.isfinite(amount) or amount <= 0:
            raise invalid_params(param, "must be a positive number")
        minimum = float(inst.info["min_trade_amount"])
        if amount < minimum - EPS:
            raise invalid_params(param, f"must be at least min_trade_amount {minimum:g}")
        step = contract_step(inst)
        if not on_grid(amount, step):
            unit = "USD" if is_inverse_future(inst) else inst.coin
            raise invalid_params(param, f"must be a multiple of contract size {step:g} {unit}")

    def check_price(self, inst: Instrument, price: float, param: str = "price") -> None:
        if not math.isfinite(price) or price <= 0:
            raise invalid_params(param, "must be a positive number")
        tick = inst.tick_at(price)
        if not on_grid(price, tick):
            raise invalid_params(param, f"must conform to tick size {tick:g}")

    def band(self, inst: Instrument) -> tuple[float, float]:
        """``(min_price, max_price)``: sells below / buys above are clamped to these (get_margins)."""
        t = self.market.ticker(inst)
        return float(t["min_price"]), float(t["max_price"])

    def advanced_price(self, inst: Instrument, advanced: str, value: float) -> float:
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

    # ------------------------------------------------------------ margins
    def _short_option_margin(self, inst: Instrument, maintenance: bool = False) -> float:
        """Standard-margin requirement per coin of a short inverse option, in the coin."""
        if maintenance:
            return SHORT_OPTION_MM + inst.mark_price
        under = self.market.index[inst.coin]
        otm = max(0.0, (inst.strike - under) if inst.call else (under - inst.strike))
        return max(SHORT_OPTION_IM[0] - otm / under, SHORT_OPTION_IM[1]) + inst.mark_price

    def _unit_margin(self, inst: Instrument, direction: str, price: float) -> float:
        """Initial margin per unit of amount that opens exposure in ``direction``."""
        if inst.kind == "future":
            lev = float(inst.info.get("max_leverage") or 50)
            mark = inst.mark_price or price
            return 1.0 / (mark * lev) if not inst.linear else mark / lev
        if inst.kind == "option":
            return price if direction == "buy" else self._short_option_margin(inst)
        return 0.0

    def orders_margin(self, st: AccountState, inst: Instrument, extra: tuple[str, float, float] | None = None) -> float:
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
        total = 0.0
        for o in st.open.values():
            if o.inst.kind != "spot" or o.state != "open":
                continue
            if o.direction == "buy" and o.inst.info["quote_currency"] == currency:
                total += o.remaining * (o.price or 0.0)
            elif o.direction == "sell" and o.inst.info["base_currency"] == currency:
                total += o.remaining
        return total

    # ------------------------------------------------------------ placing
    def reducible(self, st: AccountState, inst: Instrument, direction: str) -> float:
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

    def new_order(self, st: AccountState, inst: Instrument, direction: str, order_type: str, amount: float,
                  price: float | None, **kw: Any) -> SimOrder:
        now = self.now()
        return SimOrder(order_id=str(next(self._ids)), account=st.account, inst=inst, direction=direction,
                        order_type=order_type, amount=amount, price=price, created=now, updated=now,
                        seq=next(self._seq), **kw)

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

    def _register(self, st: AccountState, o: SimOrder, ch: Changes) -> None:
        st.orders[o.order_id] = o
        st.open[o.order_id] = o
        if o.time_in_force == "good_til_day":
            o.expires_ms = next_rollover_ms(o.created)
        ch.order(st, o)

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

    # ------------------------------------------------------------ trades and the ledger
    def fee(self, inst: Instrument, liquidity: str, price: float, amount: float) -> float:
        info = inst.info
        rate = float(info["maker_commission"] if liquidity == "M" else info["taker_commission"])
        if inst.kind == "future":
            return rate * amount / price if not inst.linear else rate * amount * price
        if inst.kind == "option":
            fee = rate * amount
            return min(fee, OPTION_FEE_CAP * price * amount) if fee > 0 else fee
        return rate * amount * price

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

    def _ledger(self, st: AccountState, inst: Instrument, direction: str, price: float, amount: float,
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
    def _blend(inst: Instrument, size: float, avg: float, amount: float, price: float) -> float:
        if size <= EPS:
            return price
        if is_inverse_future(inst):
            return (size + amount) / (size / avg + amount / price)
        return (size * avg + amount * price) / (size + amount)

    # ------------------------------------------------------------ edit
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

    # ------------------------------------------------------------ triggers, expiry, crossing
    def trigger_value(self, o: SimOrder) -> float:
        inst = o.inst
        if o.trigger == "index_price":
            return self.market.index[inst.coin]
        if o.trigger == "mark_price":
            return inst.mark_price
        return inst.last_price if inst.last_price is not None else inst.mark_price

    def check_triggers(self, ch: Changes) -> None:
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

    def expire_day_orders(self, now: int, ch: Changes) -> None:
        for st in self.states:
            for o in list(st.open.values()):
                if o.expires_ms is not None and now >= o.expires_ms:
                    self._close(o, "cancelled", ch)

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

    def settle(self, inst: Instrument, ch: Changes) -> None:
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

    # ------------------------------------------------------------ views
    def floating(self, pos: PositionState) -> float:
        inst, size = pos.inst, pos.size
        if abs(size) <= EPS or pos.avg <= 0:
            return 0.0
        mark = inst.mark_price
        if is_inverse_future(inst):
            return size * (1.0 / pos.avg - 1.0 / mark)
        return size * (mark - pos.avg)

    def delta(self, pos: PositionState) -> float:
        inst, size = pos.inst, pos.size
        if inst.kind == "option":
            return size * float(inst.greeks.get("delta", 0.0))
        if is_inverse_future(inst):
            return size / inst.mark_price if inst.mark_price else 0.0
        return size

    def position_view(self, st: AccountState, inst: Instrument) -> dict[str, Any]:
        """A Deribit position object (deribit-api.md 7.1)."""
        pos = st.positions.get(inst.name) or PositionState(inst)
        size = pos.size
        im, mm = self.position_margins(pos)
        floating = self.floating(pos)
        index = self.market.index[inst.coin]
        out: dict[str, Any] = {
            "instrument_name": inst.name,
            "kind": inst.kind,
            "direction": "buy" if size > EPS else "sell" if size < -EPS else "zero",
            "size": _r(size, 8),
            "average_price": _r(pos.avg, 8),
            "mark_price": inst.mark_price,
            "index_price": round(index, 4),
            "settlement_price": round(inst.mark_price, 4),
            "floating_profit_loss": _r(floating, 10),
            "realized_profit_loss": _r(pos.realized, 10),
            "total_profit_loss": _r(floating + pos.realized, 10),
            "initial_margin": _r(im, 10),
            "maintenance_margin": _r(mm, 10),
            "open_orders_margin": _r(self.orders_margin(st, inst), 10),
            "delta": _r(self.delta(pos), 8),
        }
        if inst.kind == "future":
            out["size_currency"] = _r(size / inst.mark_price if not inst.linear else size, 10)
            out["leverage"] = int(inst.info.get("max_leverage") or 50)
            if inst.perpetual:
                out["realized_funding"] = 0.0
                out["interest_value"] = 0.0
        if inst.kind == "option":
            g = inst.greeks
            out["average_price_usd"] = _r(pos.avg * index, 4)
            out["floating_profit_loss_usd"] = _r(floating * index, 4)
            out["gamma"] = _r(size * float(g.get("gamma", 0.0)), 10)
            out["vega"] = _r(size * float(g.get("vega", 0.0)), 6)
            out["theta"] = _r(size * float(g.get("theta", 0.0)), 6)
        return out

    def positions(self, st: AccountState, currency: str = "any", kind: str | None = None) -> list[PositionState]:
        return [p for p in st.positions.values()
                if p.inst.name in self.market.instruments and p.inst.kind != "spot"
                and (currency == "any" or currency_matches(p.inst.info, currency))
                and (kind is None or p.inst.kind == kind)]

    def _initial_margin(self, st: AccountState, currency: str) -> float:
        total = 0.0
        for inst in self._instruments_in(st, currency):
            pos = st.positions.get(inst.name)
            if pos is not None:
                total += self.position_margins(pos)[0]
            total += self.orders_margin(st, inst)
        return total

    def _instruments_in(self, st: AccountState, currency: str) -> Iterator[Instrument]:
        seen: dict[str, Instrument] = {}
        for pos in st.positions.values():
            seen[pos.inst.name] = pos.inst
        for o in st.open.values():
            seen.setdefault(o.inst.name, o.inst)
        for inst in seen.values():
            if inst.kind != "spot" and settlement_currency(inst) == currency:
                yield inst

    def summary_numbers(self, st: AccountState, currency: str) -> dict[str, Any]:
        """The numeric part of ``get_account_summary`` / ``user.portfolio`` for ``currency``."""
        cur = currency.upper()
        balance = st.balances.get(cur, 0.0)
        fut_upl = opt_upl = opt_value = 0.0
        im = mm = 0.0
        delta = opt_delta = opt_gamma = opt_vega = opt_theta = 0.0
        deltas: dict[str, float] = {}
        gammas: dict[str, float] = {}
        vegas: dict[str, float] = {}
        thetas: dict[str, float] = {}
        for pos in st.positions.values():
            inst = pos.inst
            if inst.kind == "spot" or settlement_currency(inst) != cur or abs(pos.size) <= EPS:
                continue
            f = self.floating(pos)
            p_im, p_mm = self.position_margins(pos)
            im += p_im
            mm += p_mm
            d = self.delta(pos)
            delta += d
            idx = inst.index_name
            deltas[idx] = deltas.get(idx, 0.0) + d
            if inst.kind == "option":
                opt_upl += f
                opt_value += pos.size * inst.mark_price
                g = inst.greeks
                opt_delta += d
                gamma, vega, theta = (pos.size * float(g.get(k, 0.0)) for k in ("gamma", "vega", "theta"))
                gammas[idx] = gammas.get(idx, 0.0) + gamma
                vegas[idx] = vegas.get(idx, 0.0) + vega
                thetas[idx] = thetas.get(idx, 0.0) + theta
                opt_gamma += gamma
                opt_vega += vega
                opt_theta += theta
            else:
                fut_upl += f
        for inst in self._instruments_in(st, cur):
            im += self.orders_margin(st, inst)
        spot_reserve = self.spot_reserve(st, cur)
        fut_rpl = st.session_rpl.get(f"futures:{cur}", 0.0)
        opt_rpl = st.session_rpl.get(f"options:{cur}", 0.0)
        equity = balance + fut_upl + opt_value
        available = equity - im - spot_reserve
        return {
            "currency": cur,
            "balance": _r(balance),
            "equity": _r(equity),
            "margin_balance": _r(equity),
            "available_funds": _r(available),
            "available_withdrawal_funds": _r(max(0.0, min(balance, available))),
            "initial_margin": _r(im),
            "maintenance_margin": _r(mm),
            "projected_initial_margin": _r(im),
            "projected_maintenance_margin": _r(mm),
            "delta_total": _r(delta, 8),
            "projected_delta_total": _r(delta, 8),
            "total_pl": _r(fut_upl + opt_upl + fut_rpl + opt_rpl),
            "session_rpl": _r(fut_rpl + opt_rpl),
            "session_upl": _r(fut_upl + opt_upl),
            "futures_pl": _r(fut_upl + fut_rpl),
            "futures_session_rpl": _r(fut_rpl),
            "futures_session_upl": _r(fut_upl),
            "options_pl": _r(opt_upl + opt_rpl),
            "options_session_rpl": _r(opt_rpl),
            "options_session_upl": _r(opt_upl),
            "options_value": _r(opt_value),
            "options_delta": _r(opt_delta, 8),
            "options_gamma": _r(opt_gamma, 10),
            "options_vega": _r(opt_vega, 6),
            "options_theta": _r(opt_theta, 6),
            "options_gamma_map": {k: _r(v, 10) for k, v in gammas.items()},
            "options_vega_map": {k: _r(v, 6) for k, v in vegas.items()},
            "options_theta_map": {k: _r(v, 6) for k, v in thetas.items()},
            "delta_total_map": {k: _r(v, 8) for k, v in deltas.items()},
            "fee_balance": 0.0,
            "additional_reserve": 0.0,
            "spot_reserve": _r(spot_reserve),
            "estimated_liquidation_ratio": 0.0,
            "estimated_liquidation_ratio_map": {},
            "portfolio_margining_enabled": False,
            "cross_collateral_enabled": False,
            "margin_model": "segregated_sm",
        }

    def has_exposure(self, st: AccountState) -> set[str]:
        """Currencies in which ``st`` holds positions (their PnL moves every tick)."""
        return {settlement_currency(p.inst) for p in st.positions.values()
                if abs(p.size) > EPS and p.inst.kind != "spot"}

    def margins(self, st: AccountState, inst: Instrument, amount: float, price: float) -> dict[str, Any]:
        """``private/get_margins``: initial margin to buy / sell ``amount`` at ``price``."""
        lo, hi = self.band(inst)
        out = {}
        for d in ("buy", "sell"):
            if inst.kind == "spot":
                m = amount * price if d == "buy" else amount
            else:
                m = self.orders_margin(st, inst, (d, amount, price)) - self.orders_margin(st, inst)
            out[d] = _r(max(0.0, m), 10)
        return {"buy": out["buy"], "sell": out["sell"], "min_price": lo, "max_price": hi}


def _self_trade() -> Exception:
    return error_for_code(10003, data={"reason": "order would trade with an order of the same account "
                                                 "(self_trading_reject_mode reject_taker)"})
