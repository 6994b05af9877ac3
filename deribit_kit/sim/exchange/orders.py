"""The exchange's order state, no I/O: :class:`SimOrder` (one user order and its Deribit JSON view),
each account's :class:`AccountState` (balances, open orders, trades, positions), the
:class:`Changes` an operation collects for publishing, and :class:`OrderState`, the base of the
engine: the resting queues per price level and an order's way onto the book and off it.

The engine is split by job, each a class on top of the one before (``orders`` -> ``ledger`` ->
``margin`` -> ``views`` -> ``matching`` -> ``triggers`` -> ``settlement``: :class:`~.engine.Engine`).
Requests reach it from :mod:`deribit_kit.sim.rpc.trading`; what each call changed (a
:class:`Changes`) is published by :mod:`deribit_kit.sim.pubsub`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ...errors import error_for_code
from ...wire.enums import OPEN_STATES, TRIGGER_ORDER_TYPES
from .market import ASK, BID, Market, SimInstrument

if TYPE_CHECKING:
    from .accounts import Account

EPS = 1e-9
DEFAULT_FUNDS: dict[str, float] = {"BTC": 10.0, "ETH": 100.0, "USDC": 1_000_000.0, "USDT": 0.0, "SOL": 100.0}
"""What a new account holds (the demo account, and any account created with ``accounts.create``)."""
TRIGGER_TYPES = frozenset(TRIGGER_ORDER_TYPES)
ROLLOVER_HOUR = 8  # good_til_day orders expire at the next 08:00 UTC


def _r(x: float, digits: int = 10) -> float:
    """``x`` without binary noise (and without ``-0.0``)."""
    v = round(x, digits)
    return 0.0 if v == 0 else v


def settlement_currency(inst: SimInstrument) -> str:
    """The currency an instrument's PnL, fees and margin are in (quote currency for spot)."""
    info = inst.info
    return str(info.get("settlement_currency") or info["quote_currency"])


def is_inverse_future(inst: SimInstrument) -> bool:
    """Whether ``inst`` is an inverse future (amounts in USD, settled in the coin)."""
    return inst.kind == "future" and not inst.linear


def contract_step(inst: SimInstrument) -> float:
    """The amount granularity: whole contracts, or the minimum trade amount when that is finer."""
    return min(float(inst.info["contract_size"]), float(inst.info["min_trade_amount"]))


def next_rollover_ms(now_ms: int) -> int:
    """The next 08:00 UTC after ``now_ms`` (when ``good_til_day`` orders expire)."""
    now = datetime.fromtimestamp(now_ms / 1000, UTC)
    at = now.replace(hour=ROLLOVER_HOUR, minute=0, second=0, microsecond=0)
    if at <= now:
        at += timedelta(days=1)
    return int(at.timestamp() * 1000)


@dataclass(eq=False)
class SimOrder:
    """One user order, open or closed."""

    order_id: str
    account: Account
    inst: SimInstrument
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
        """The amount not filled yet."""
        return _r(self.amount - self.filled)

    @property
    def side(self) -> int:
        """The book side it rests on: ``BID`` for buys, ``ASK`` for sells."""
        return BID if self.direction == "buy" else ASK

    @property
    def sign(self) -> int:
        """+1 for a buy, -1 for a sell."""
        return 1 if self.direction == "buy" else -1

    @property
    def is_open(self) -> bool:
        """Whether it can still fill or be cancelled (``open`` or ``untriggered``)."""
        return self.state in OPEN_STATES

    @property
    def average_price(self) -> float:
        """The average fill price (0.0 before any fill; from USD over coin for inverse futures)."""
        if self.filled <= EPS or self.cost <= 0:
            return 0.0
        if is_inverse_future(self.inst):
            return self.filled / self.cost
        return self.cost / self.filled

    def to_dict(self) -> dict[str, Any]:
        """The Deribit order object (https://docs.deribit.com), with the legacy fields ccxt reads."""
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

    inst: SimInstrument
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

    def position(self, inst: SimInstrument) -> PositionState:
        """The account's position in ``inst``, created flat on first use."""
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
    instruments: dict[str, SimInstrument] = field(default_factory=dict)
    currencies: set[str] = field(default_factory=set)


class Changes:
    """What one request (or one market tick) changed: per account, and the public tape and books."""

    def __init__(self) -> None:
        self.accounts: dict[int, AccountChanges] = {}
        self.public: dict[str, tuple[SimInstrument, list[dict[str, Any]]]] = {}
        self.books: dict[str, SimInstrument] = {}

    def _for(self, st: AccountState) -> AccountChanges:
        key = id(st)
        ac = self.accounts.get(key)
        if ac is None:
            ac = self.accounts[key] = AccountChanges(st)
        return ac

    def order(self, st: AccountState, o: SimOrder) -> None:
        """Record that order ``o`` of ``st``'s account changed (``user.orders.*``)."""
        ac = self._for(st)
        ac.orders.pop(o.order_id, None)
        ac.orders[o.order_id] = o
        ac.instruments[o.inst.name] = o.inst
        ac.currencies.update(_currencies_of(o.inst))

    def trade(self, st: AccountState, inst: SimInstrument, trade: dict[str, Any]) -> None:
        """Record one of the account's own trades in ``inst`` (``user.trades.*``)."""
        ac = self._for(st)
        ac.trades.append(trade)
        ac.instruments[inst.name] = inst
        ac.currencies.update(_currencies_of(inst))

    def currency(self, st: AccountState, currency: str) -> None:
        """Record that the account's ``currency`` balance changed (``user.portfolio.*``)."""
        self._for(st).currencies.add(currency)

    def public_trade(self, inst: SimInstrument, trade: dict[str, Any]) -> None:
        """Record a trade for the public tape (``trades.*``); its book changed too."""
        self.public.setdefault(inst.name, (inst, []))[1].append(trade)
        self.books[inst.name] = inst

    def book(self, inst: SimInstrument) -> None:
        """Record that ``inst``'s book changed (``book.*``)."""
        self.books[inst.name] = inst


def _currencies_of(inst: SimInstrument) -> tuple[str, ...]:
    if inst.kind == "spot":
        return (str(inst.info["base_currency"]), str(inst.info["quote_currency"]))
    return (settlement_currency(inst),)


@dataclass(slots=True)
class Fill:
    """One fill of a taking order: ``price``, ``amount`` and the resting user order it traded with
    (``maker``; None for the market makers' liquidity)."""

    price: float
    amount: float
    maker: SimOrder | None  # None: market-maker liquidity


def _self_trade() -> Exception:
    return error_for_code(10003, data={"reason": "order would trade with an order of the same account "
                                                 "(self_trading_reject_mode reject_taker)"})


class OrderState:
    """The engine's base: accounts' states, resting queues per price level, ids and time priority."""

    def __init__(self, market: Market) -> None:
        self.market = market
        # resting user orders: instrument -> (bids, asks), price -> FIFO queue
        self.queues: dict[str, tuple[dict[float, list[SimOrder]], dict[float, list[SimOrder]]]] = {}
        self.untriggered: dict[str, SimOrder] = {}
        self.states: list[AccountState] = []
        self._ids = itertools.count(40_000_000_001)
        self._seq = itertools.count(1)

    def state(self, account: Account) -> AccountState:
        """The account's trading state, created on first use with the default funds."""
        st = account.state
        if not isinstance(st, AccountState):
            st = AccountState(account, dict(DEFAULT_FUNDS), self.market.now_ms())
            account.state = st
            self.states.append(st)
        return st

    def now(self) -> int:
        """The engine's time in milliseconds: the clock, never before the last market tick."""
        return max(self.market.now_ms(), self.market.last_step_ms)

    def band(self, inst: SimInstrument) -> tuple[float, float]:
        """``(min_price, max_price)``: sells below / buys above are clamped to these (get_margins)."""
        t = self.market.ticker(inst)
        return float(t["min_price"]), float(t["max_price"])

    def trigger_value(self, o: SimOrder) -> float:
        """The price ``o``'s trigger watches: the index, mark or last price (the mark before any trade)."""
        inst = o.inst
        if o.trigger == "index_price":
            return self.market.index[inst.coin]
        if o.trigger == "mark_price":
            return inst.mark_price
        return inst.last_price if inst.last_price is not None else inst.mark_price

    def _queue(self, inst: SimInstrument, side: int, price: float) -> list[SimOrder]:
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
        """Cancel ``o`` if it is still open (``cancel_reason`` ``reason``), recorded in ``ch``; returns it."""
        if o.is_open:
            self._close(o, "cancelled", ch, reason)
        return o

    def new_order(self, st: AccountState, inst: SimInstrument, direction: str, order_type: str, amount: float,
                  price: float | None, **kw: Any) -> SimOrder:
        """A new order with the next order id and time priority (not yet placed in the book)."""
        now = self.now()
        return SimOrder(order_id=str(next(self._ids)), account=st.account, inst=inst, direction=direction,
                        order_type=order_type, amount=amount, price=price, created=now, updated=now,
                        seq=next(self._seq), **kw)

    def _register(self, st: AccountState, o: SimOrder, ch: Changes) -> None:
        st.orders[o.order_id] = o
        st.open[o.order_id] = o
        if o.time_in_force == "good_til_day":
            o.expires_ms = next_rollover_ms(o.created)
        ch.order(st, o)
